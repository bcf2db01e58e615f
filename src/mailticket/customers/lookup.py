"""Customer lookups inside a unit of work (`store.batch.Batch`): the pipeline and event runs.

The directory is reference data the batch never writes, so what it reads is cached for the
batch's life (`Batch.memo`): the pipeline prefetches the rules for every address of its
messages in one query, and each ticket created afterwards maps its sender without another.
Reads go through `work.quietly()`, so they never make the batch write early.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import select

from mailticket.customers.matcher import (
    CONTACT,
    DOMAIN,
    LOOKUP_PARTS,
    CustomerMatch,
    CustomerRef,
    Detection,
    lookup_params,
    read_rules,
    resolve,
    rules_for_normal,
)
from mailticket.customers.models import Customer, TicketCustomer
from mailticket.customers.shared import SharedDomains, shared_domains
from mailticket.reading.maildomains import InvalidDomain, normalise_address
from mailticket.settings import Settings
from mailticket.store.batch import Batch, MailLookup
from mailticket.store.db import new_row
from mailticket.store.models import Ticket

_RULES = "customers.rules"
_BY_ID = "customers.by_id"
_BY_KEY = "customers.by_key"


@lru_cache(maxsize=8)
def _shared(entries: tuple[str, ...] | None, extra: tuple[str, ...]) -> SharedDomains:
    return shared_domains(list(entries) if entries is not None else None, extra)


def shared_for(settings: Settings) -> SharedDomains:
    """The deployment's shared-domain list, built once per distinct setting."""
    entries = settings.customer_shared_domains
    return _shared(
        tuple(entries) if entries is not None else None,
        tuple(settings.customer_shared_domains_extra),
    )


class _Rules:
    def __init__(self) -> None:
        self.contacts: dict[str, CustomerRef] = {}
        self.domains: dict[str, CustomerRef] = {}
        self.asked: set[str] = set()


def _rules(work: Batch) -> _Rules:
    rules: _Rules | None = work.memo.get(_RULES)
    if rules is None:
        rules = work.memo[_RULES] = _Rules()
    return rules


def prefetch(work: Batch, addresses: Iterable[str]) -> None:
    """Load the rules that could map any of `addresses`, one query for all of them."""
    rules = _rules(work)
    wanted = _not_asked(rules, addresses)
    if not wanted:
        return
    with work.quietly() as session:
        contacts, domains = rules_for_normal(session, wanted)
    rules.contacts.update(contacts)
    rules.domains.update(domains)


def prefetch_lookup(work: Batch, addresses: Iterable[str]) -> MailLookup | None:
    """`prefetch` as a lookup the batch asks in its own prefetch query (one round trip for
    both); None when every address was asked already."""
    rules = _rules(work)
    wanted = _not_asked(rules, addresses)
    if not wanted:
        return None

    def found(rows: list[tuple[str, Any, Any, Any]]) -> None:
        contacts, domains = read_rules(rows)
        rules.contacts.update(contacts)
        rules.domains.update(domains)

    return MailLookup(LOOKUP_PARTS, lookup_params(wanted), frozenset((CONTACT, DOMAIN)), found)


def _not_asked(rules: _Rules, addresses: Iterable[str]) -> list[str]:
    """The normalised addresses not asked about yet, marked as asked."""
    wanted: list[str] = []
    for address in addresses:
        try:
            normal = normalise_address(address)
        except InvalidDomain:
            continue
        if normal not in rules.asked:
            rules.asked.add(normal)
            wanted.append(normal)
    return wanted


def detect(
    work: Batch, settings: Settings, addresses: Sequence[str], *, trusted: bool
) -> list[Detection]:
    """One Detection per address (see matcher.resolve). `trusted=False` (the sender failed
    validation): only exact contact addresses map, never a domain."""
    prefetch(work, addresses)
    rules = _rules(work)
    shared = shared_for(settings)
    return [
        resolve(address, rules.contacts, rules.domains, shared, allow_domain=trusted)
        for address in addresses
    ]


def involved(
    work: Batch, settings: Settings, addresses: Sequence[str], *, trusted: bool
) -> list[CustomerMatch]:
    """The distinct customers among `addresses`, each once, in address order."""
    seen: set[int] = set()
    out: list[CustomerMatch] = []
    for detection in detect(work, settings, addresses, trusted=trusted):
        match = detection.match
        if match is not None and match.customer_id not in seen:
            seen.add(match.customer_id)
            out.append(match)
    return out


def customer(work: Batch, ref: int | str) -> CustomerRef | None:
    """A customer by id or by key (any state), cached for the batch."""
    by_id: dict[int, CustomerRef | None] = work.memo.setdefault(_BY_ID, {})
    by_key: dict[str, CustomerRef | None] = work.memo.setdefault(_BY_KEY, {})
    cache: dict[Any, CustomerRef | None] = by_id if isinstance(ref, int) else by_key
    if ref not in cache:
        column = Customer.id if isinstance(ref, int) else Customer.key
        with work.quietly() as session:
            row = session.execute(select(Customer.id, Customer.key).where(column == ref)).first()
        found = CustomerRef(row.id, row.key) if row is not None else None
        cache[ref] = found
        if found is not None:
            by_id[found.id], by_key[found.key] = found, found
    return cache[ref]


def assign_customer(
    work: Batch,
    ticket: Ticket,
    customer_id: int,
    *,
    matched_by: str,
    matched_value: str | None,
    email_log_id: int | None,
    now: datetime,
) -> None:
    """Give a ticket opened in this unit of work its customer, with the evidence row
    beside it (written with the batch: one INSERT per table, no UPDATE afterwards)."""
    ticket.customer_id = customer_id
    work.add(
        new_row(
            TicketCustomer,
            ticket_id=ticket.id,
            customer_id=customer_id,
            matched_by=matched_by,
            matched_value=matched_value,
            email_log_id=email_log_id,
            created_at=now,
        )
    )

