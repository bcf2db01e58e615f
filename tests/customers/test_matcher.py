"""Sender -> customer on SQLite and PostgreSQL: exact address > domain > parent domain;
shared domains never by domain; inactive customers never; untrusted senders only exactly."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from mailticket.customers.directory import sync_from_config
from mailticket.customers.matcher import customers_involved, detect, match_sender
from tests.customers.helpers import SHARED, load

NOW = datetime(2025, 12, 15, 10, tzinfo=UTC)
CUSTOMERS = """
customers:
  - key: acme
    name: ACME
    domains: [acme.example, bücher.example]
    contacts: [boss@gmail.com]
  - key: acme-eu
    name: ACME Europe
    domains: [eu.acme.example]
  - key: consultants
    name: Consultants Ltd
    domains: [consult.example]
    contacts: [jane@acme.example]
  - key: gone
    name: Gone Inc
    active: false
    domains: [gone.example]
    contacts: [ceo@gone.example]
"""


@pytest.fixture
def db(session_factory: sessionmaker[Session], tmp_path: Path) -> Iterator[Session]:
    with session_factory() as session:
        sync_from_config(session, load(tmp_path, CUSTOMERS), now=NOW)
        session.commit()
        yield session


def who(db: Session, address: str, **kw: bool) -> tuple[str | None, str | None, str | None]:
    detection = match_sender(db, address, SHARED, **kw)
    match = detection.match
    if match is None:
        return None, None, detection.reason
    return match.customer_key, match.matched_by, match.matched_value


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("bob@acme.example", ("acme", "domain", "acme.example")),
        ("Bob@ACME.Example", ("acme", "domain", "acme.example")),
        ("bob@sales.acme.example", ("acme", "domain", "acme.example")),  # parent domain
        ("bob@eu.acme.example", ("acme-eu", "domain", "eu.acme.example")),  # domain > parent
        ("bob@paris.eu.acme.example", ("acme-eu", "domain", "eu.acme.example")),
        ("jane@acme.example", ("consultants", "address", "jane@acme.example")),  # address > domain
        ("JANE@acme.example", ("consultants", "address", "jane@acme.example")),
        ("boss@gmail.com", ("acme", "address", "boss@gmail.com")),  # exact on a shared domain
        ("info@xn--bcher-kva.example", ("acme", "domain", "xn--bcher-kva.example")),
        ("info@Bücher.example", ("acme", "domain", "xn--bcher-kva.example")),
        ("<bob@acme.example>", ("acme", "domain", "acme.example")),
    ],
)
def test_rules(db: Session, address: str, expected: tuple[str, str, str]) -> None:
    assert who(db, address) == expected


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("someone@gmail.com", "shared_domain:gmail.com"),
        ("someone@yahoo.co.uk", "shared_domain:yahoo.*"),
        ("someone@nobody.example", "no_rule"),
        ("someone@acme.example.evil.example", "no_rule"),  # a suffix is not a parent
        ("someone@notacme.example", "no_rule"),
        ("ceo@gone.example", "no_rule"),  # inactive customer: neither address nor domain
        ("x@sub.gone.example", "no_rule"),
        ("not an address", "no_address"),
        ("", "no_address"),
        ("@acme.example", "no_address"),
    ],
)
def test_no_match_and_why(db: Session, address: str, reason: str) -> None:
    assert who(db, address) == (None, None, reason)


def test_untrusted_sender_maps_only_by_exact_address(db: Session) -> None:
    assert who(db, "bob@acme.example", allow_domain=False) == (None, None, "domain_not_trusted")
    assert who(db, "jane@acme.example", allow_domain=False)[0] == "consultants"


def test_evidence_is_json_ready(db: Session) -> None:
    match = match_sender(db, "bob@eu.acme.example", SHARED).match
    assert match is not None
    evidence = match.evidence()
    assert evidence["customer"] == "acme-eu" and evidence["matched_by"] == "domain"
    assert evidence["matched_value"] == "eu.acme.example"
    assert evidence["address"] == "bob@eu.acme.example"
    assert isinstance(evidence["customer_id"], int)


def test_customers_involved_are_distinct_in_address_order(db: Session) -> None:
    found = customers_involved(db, [
        "bob@eu.acme.example",  # acme-eu
        "support@support.example",  # us: no customer
        "alice@acme.example",  # acme
        "carol@acme.example",  # acme again
        "jane@acme.example",  # consultants (exact)
        "friend@gmail.com",  # shared
        "boss@gmail.com",  # acme again, exact
    ], SHARED)
    assert [(m.customer_key, m.address) for m in found] == [
        ("acme-eu", "bob@eu.acme.example"),
        ("acme", "alice@acme.example"),
        ("consultants", "jane@acme.example"),
    ]


def test_detect_keeps_order_and_length(db: Session) -> None:
    got = detect(db, ["x@acme.example", "bad", "x@acme.example"], SHARED)
    assert [d.reason for d in got] == [None, "no_address", None]
    assert detect(db, [], SHARED) == []
