"""One source of truth per deployment, on SQLite and PostgreSQL: YAML synced into the
tables (API read-only), or API CRUD on the same tables; ticket <-> customer evidence."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from mailticket.customers.directory import (
    CustomerConflict,
    CustomerInvalid,
    CustomerNotFound,
    CustomersMode,
    CustomersReadOnly,
    create_customer,
    deactivate_customer,
    get_customer,
    get_customer_by_key,
    keys_by_id,
    list_customers,
    record_detected_customer,
    record_ticket_customer,
    sync_from_config,
    ticket_customer_evidence,
    update_customer,
)
from mailticket.customers.matcher import match_sender
from mailticket.customers.models import Customer
from mailticket.customers.schema import CustomerSpec
from mailticket.store.models import EmailLog, Ticket
from mailticket.yamlconfig import ConfigFileError
from tests.customers.helpers import SHARED, load

NOW = datetime(2025, 12, 15, 10, tzinfo=UTC)
DB = CustomersMode.db


@pytest.fixture
def db(session_factory: sessionmaker[Session]) -> Iterator[Session]:
    with session_factory() as session:
        yield session


def spec(**values: object) -> CustomerSpec:
    values.setdefault("name", str(values["key"]).title())
    return CustomerSpec.model_validate(values)


def test_sync_creates_updates_and_deactivates(db: Session, tmp_path: Path) -> None:
    first = load(tmp_path, """
        customers:
          - {key: acme, name: ACME, id: 123, domains: [acme.example], contacts: [boss@gmail.com]}
          - {key: globex, name: Globex, domains: [globex.example]}
          - {key: initech, name: Initech, domains: [initech.example]}
    """)
    report = sync_from_config(db, first, now=NOW)
    assert (report.created, report.updated, report.deactivated) == (["acme", "globex", "initech"], [], [])
    acme = get_customer_by_key(db, "acme")
    assert (acme.id, acme.source, acme.domains) == (123, "yaml", ("acme.example",))
    globex_id = get_customer_by_key(db, "globex").id
    assert globex_id != 123

    # globex renamed; initech gone; acme.example moves to a new customer in the same sync.
    second = load(tmp_path, """
        customers:
          - {key: acme, name: ACME, id: 123, contacts: [boss@gmail.com]}
          - {key: globex, name: Globex Corporation, domains: [globex.example]}
          - {key: hooli, name: Hooli, domains: [acme.example]}
    """)
    report = sync_from_config(db, second, now=NOW)
    assert (report.created, report.updated, report.unchanged, report.deactivated) == (
        ["hooli"], ["globex"], ["acme"], ["initech"],
    )
    assert get_customer_by_key(db, "globex").id == globex_id  # ids never change
    initech = get_customer_by_key(db, "initech")
    assert (initech.active, initech.domains, initech.contacts) == (False, (), ())
    match = match_sender(db, "x@acme.example", SHARED).match
    assert match is not None and match.customer_key == "hooli"
    assert match_sender(db, "x@initech.example", SHARED).match is None
    # A sync of the same file changes nothing.
    again = sync_from_config(db, second, now=NOW)
    assert (again.created, again.updated, again.deactivated) == ([], [], [])
    db.commit()


def test_sync_refuses_to_change_an_id(db: Session, tmp_path: Path) -> None:
    sync_from_config(db, load(tmp_path, "customers:\n  - {key: acme, name: A}\n"), now=NOW)
    acme_id = get_customer_by_key(db, "acme").id
    bad = load(tmp_path, f"""
        customers:
          - {{key: acme, name: A, id: {acme_id + 50}}}
          - {{key: globex, name: G, id: {acme_id}}}
    """)
    with pytest.raises(ConfigFileError) as info:
        sync_from_config(db, bad, now=NOW)
    assert [(i.line, i.reason) for i in info.value.issues] == [
        (2, f"customer 'acme' has id {acme_id} in the database; ids cannot change (tickets refer to them)"),
        (3, f"id {acme_id} belongs to customer 'acme' in the database"),
    ]
    assert str(info.value).startswith(str(tmp_path / "customers.yaml") + ":2: ")


def test_explicit_ids_do_not_collide_with_assigned_ones(db: Session, tmp_path: Path) -> None:
    sync_from_config(db, load(tmp_path, """
        customers:
          - {key: a, name: A, id: 1}
          - {key: b, name: B, id: 2}
          - {key: c, name: C}
    """), now=NOW)
    ids = {view.key: view.id for view in list_customers(db)}
    assert ids["a"] == 1 and ids["b"] == 2 and ids["c"] not in (1, 2)
    created = create_customer(db, spec(key="d"), mode=DB, shared=SHARED, now=NOW)
    assert created.id not in ids.values()
    db.commit()


def test_yaml_mode_is_read_only_through_the_api(db: Session) -> None:
    yaml = CustomersMode.yaml
    with pytest.raises(CustomersReadOnly, match="CUSTOMERS_PATH"):
        create_customer(db, spec(key="acme"), mode=yaml, shared=SHARED, now=NOW)
    with pytest.raises(CustomersReadOnly):
        update_customer(db, 1, spec(key="acme"), mode=yaml, shared=SHARED, now=NOW)
    with pytest.raises(CustomersReadOnly):
        deactivate_customer(db, 1, mode=yaml, now=NOW)


def test_crud_in_database_mode(db: Session) -> None:
    acme = create_customer(
        db, spec(key="acme", domains=["acme.example"], contacts=["jane@acme.example"]),
        mode=DB, shared=SHARED, now=NOW,
    )
    assert (acme.source, acme.active, acme.domains) == ("api", True, ("acme.example",))
    with pytest.raises(CustomerConflict, match="key 'acme' is taken"):
        create_customer(db, spec(key="acme"), mode=DB, shared=SHARED, now=NOW)
    with pytest.raises(CustomerConflict, match="domain 'acme.example' belongs to customer 'acme'"):
        create_customer(db, spec(key="other", domains=["acme.example"]), mode=DB, shared=SHARED, now=NOW)
    with pytest.raises(CustomerConflict, match="contact 'jane@acme.example'"):
        create_customer(db, spec(key="other", contacts=["Jane@ACME.example"]), mode=DB, shared=SHARED, now=NOW)
    with pytest.raises(CustomerConflict, match=f"id {acme.id} is taken"):
        create_customer(db, spec(key="other", id=acme.id), mode=DB, shared=SHARED, now=NOW)
    with pytest.raises(CustomerInvalid, match="shared mail domain"):
        create_customer(db, spec(key="other", domains=["hotmail.fr"]), mode=DB, shared=SHARED, now=NOW)
    with pytest.raises(CustomerInvalid, match="public suffix"):
        create_customer(db, spec(key="other", domains=["co.uk"]), mode=DB, shared=SHARED, now=NOW)

    # PUT replaces everything; its own domain is no conflict.
    updated = update_customer(
        db, acme.id,
        spec(key="acme-corp", name="ACME Corp", domains=["acme.example", "acme.test"]),
        mode=DB, shared=SHARED, now=NOW,
    )
    assert (updated.key, updated.name, updated.domains, updated.contacts) == (
        "acme-corp", "ACME Corp", ("acme.example", "acme.test"), (),
    )
    with pytest.raises(CustomerConflict, match="cannot change"):
        update_customer(db, acme.id, spec(key="acme-corp", id=acme.id + 1), mode=DB, shared=SHARED, now=NOW)
    with pytest.raises(CustomerNotFound):
        update_customer(db, 999_999, spec(key="x"), mode=DB, shared=SHARED, now=NOW)

    # DELETE deactivates and frees the domains for someone else.
    deactivate_customer(db, acme.id, mode=DB, now=NOW)
    assert get_customer(db, acme.id).active is False
    assert match_sender(db, "x@acme.example", SHARED).match is None
    other = create_customer(db, spec(key="newco", domains=["acme.example"]), mode=DB, shared=SHARED, now=NOW)
    match = match_sender(db, "x@acme.example", SHARED).match
    assert match is not None and match.customer_id == other.id
    assert [c.key for c in list_customers(db, active=True)] == ["newco"]
    assert [c.key for c in list_customers(db, active=False)] == ["acme-corp"]
    assert keys_by_id(db, {acme.id, other.id, 999_999}) == {acme.id: "acme-corp", other.id: "newco"}
    with pytest.raises(CustomerNotFound):
        get_customer(db, 999_999)
    db.commit()


def test_ticket_customer_evidence(db: Session) -> None:
    acme = create_customer(db, spec(key="acme", domains=["acme.example"]), mode=DB, shared=SHARED, now=NOW)
    ticket = Ticket(ticket_number="TKT-20251215-001", subject="s", status="open", priority="normal")
    log = EmailLog(email_message_id="<m1@acme.example>", email_from="bob@acme.example")
    db.add_all([ticket, log])
    db.flush()
    match = match_sender(db, "bob@acme.example", SHARED).match
    assert match is not None
    record_detected_customer(db, ticket.id, match, email_log_id=log.id, now=NOW)
    db.commit()
    evidence = ticket_customer_evidence(db, ticket.id)
    assert evidence is not None
    assert (evidence.customer_id, evidence.matched_by, evidence.matched_value, evidence.email_log_id) == (
        acme.id, "domain", "acme.example", log.id,
    )
    assert db.scalar(select(Ticket.customer_id).where(Ticket.id == ticket.id)) == acme.id

    # A workflow's explicit customer wins over detection: both move together.
    globex = create_customer(db, spec(key="globex"), mode=DB, shared=SHARED, now=NOW)
    record_ticket_customer(
        db, ticket.id, globex.id, matched_by="workflow", matched_value="Globex routing", now=NOW
    )
    db.commit()
    db.expire_all()
    evidence = ticket_customer_evidence(db, ticket.id)
    assert evidence is not None and (evidence.customer_id, evidence.matched_by) == (globex.id, "workflow")
    assert db.get(Ticket, ticket.id).customer_id == globex.id  # type: ignore[union-attr]
    assert db.scalar(select(Customer.key).where(Customer.id == globex.id)) == "globex"
