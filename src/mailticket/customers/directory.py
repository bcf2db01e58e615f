"""The customer directory: one source of truth per deployment.

YAML mode (CUSTOMERS_PATH set): the file is the truth. `sync_from_config` makes the
database an exact copy at start-up (and on reload); the API may read but every write
raises CustomersReadOnly (HTTP 409). A customer that disappears from the file is
deactivated, not deleted: tickets keep pointing at its id.

Database mode (CUSTOMERS_PATH unset): the API's CRUD writes the same tables.

Either way the matcher reads only the database, so detection has one code path.
Every function takes the caller's session and never commits.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import delete, func, select, text, update
from sqlalchemy.orm import Session

from mailticket.customers.loader import CustomersConfig
from mailticket.customers.matcher import CustomerMatch
from mailticket.customers.models import Customer, CustomerContact, CustomerDomain, TicketCustomer
from mailticket.customers.schema import ContactSpec, CustomerSpec
from mailticket.customers.shared import SharedDomains
from mailticket.reading.maildomains import is_public_suffix
from mailticket.store.models import Ticket
from mailticket.yamlconfig import ConfigFileError, ConfigIssue


class CustomersMode(enum.StrEnum):
    yaml = "yaml"
    db = "db"


class CustomersReadOnly(Exception):
    """A write through the API while the customers come from CUSTOMERS_PATH."""

    def __init__(self, source: str) -> None:
        super().__init__(f"customers are managed in {source}; change the file and reload")


class CustomerNotFound(LookupError):
    pass


class CustomerConflict(Exception):
    """The key, id, a domain or an address already belongs to another customer."""


class CustomerInvalid(ValueError):
    """A domain the directory refuses (shared mail domain, public suffix)."""


@dataclass(frozen=True)
class CustomerView:
    id: int
    key: str
    name: str
    active: bool
    source: str
    domains: tuple[str, ...]
    contacts: tuple[ContactSpec, ...]


@dataclass
class SyncReport:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    deactivated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)


# --- reading ---------------------------------------------------------------------------------


def get_customer(session: Session, customer_id: int) -> CustomerView:
    row = session.get(Customer, customer_id)
    if row is None:
        raise CustomerNotFound(f"no customer with id {customer_id}")
    return _views(session, [row])[0]


def get_customer_by_key(session: Session, key: str) -> CustomerView:
    row = session.scalar(select(Customer).where(Customer.key == key))
    if row is None:
        raise CustomerNotFound(f"no customer {key!r}")
    return _views(session, [row])[0]


def list_customers(session: Session, *, active: bool | None = None) -> list[CustomerView]:
    query = select(Customer).order_by(Customer.key)
    if active is not None:
        query = query.where(Customer.active.is_(active))
    return _views(session, list(session.scalars(query)))


def keys_by_id(session: Session, ids: set[int]) -> dict[int, str]:
    if not ids:
        return {}
    rows = session.execute(select(Customer.id, Customer.key).where(Customer.id.in_(sorted(ids))))
    return {cid: key for cid, key in rows}


def _views(session: Session, rows: list[Customer]) -> list[CustomerView]:
    ids = [row.id for row in rows]
    domains: dict[int, list[str]] = {i: [] for i in ids}
    contacts: dict[int, list[ContactSpec]] = {i: [] for i in ids}
    if ids:
        for cid, domain in session.execute(
            select(CustomerDomain.customer_id, CustomerDomain.domain)
            .where(CustomerDomain.customer_id.in_(ids))
            .order_by(CustomerDomain.domain)
        ):
            domains[cid].append(domain)
        for cid, address, name in session.execute(
            select(CustomerContact.customer_id, CustomerContact.address, CustomerContact.name)
            .where(CustomerContact.customer_id.in_(ids))
            .order_by(CustomerContact.address)
        ):
            contacts[cid].append(ContactSpec(address=address, name=name))
    return [
        CustomerView(
            id=row.id,
            key=row.key,
            name=row.name,
            active=row.active,
            source=row.source,
            domains=tuple(domains[row.id]),
            contacts=tuple(contacts[row.id]),
        )
        for row in rows
    ]


# --- writing through the API (database mode) ------------------------------------------------


def create_customer(
    session: Session,
    spec: CustomerSpec,
    *,
    mode: CustomersMode,
    shared: SharedDomains,
    now: datetime,
) -> CustomerView:
    _writable(mode)
    _check_domains(spec, shared)
    if session.scalar(select(Customer.id).where(Customer.key == spec.key)) is not None:
        raise CustomerConflict(f"customer key {spec.key!r} is taken")
    if spec.id is not None and session.get(Customer, spec.id) is not None:
        raise CustomerConflict(f"customer id {spec.id} is taken")
    _check_claims(session, spec, own_id=None)
    row = Customer(
        key=spec.key, name=spec.name, active=spec.active, source="api",
        created_at=now, updated_at=now,
    )
    if spec.id is not None:
        row.id = spec.id
    session.add(row)
    session.flush()
    if spec.id is not None:
        _advance_id_sequence(session)
    _write_children(session, row.id, spec)
    return get_customer(session, row.id)


def update_customer(
    session: Session,
    customer_id: int,
    spec: CustomerSpec,
    *,
    mode: CustomersMode,
    shared: SharedDomains,
    now: datetime,
) -> CustomerView:
    """Replace the customer with `spec` (PUT): name, key, active, domains and contacts."""
    _writable(mode)
    row = session.get(Customer, customer_id)
    if row is None:
        raise CustomerNotFound(f"no customer with id {customer_id}")
    if spec.id is not None and spec.id != customer_id:
        raise CustomerConflict(f"the id of customer {customer_id} cannot change")
    _check_domains(spec, shared)
    holder = session.scalar(select(Customer.id).where(Customer.key == spec.key))
    if holder is not None and holder != customer_id:
        raise CustomerConflict(f"customer key {spec.key!r} is taken")
    _check_claims(session, spec, own_id=customer_id)
    row.key, row.name, row.active, row.updated_at = spec.key, spec.name, spec.active, now
    _clear_children(session, customer_id)
    if spec.active:
        _write_children(session, customer_id, spec)
    session.flush()
    return get_customer(session, customer_id)


def deactivate_customer(
    session: Session, customer_id: int, *, mode: CustomersMode, now: datetime
) -> None:
    """DELETE: the row stays (tickets point at its id) but matches nothing any more, and its
    addresses and domains are free for another customer."""
    _writable(mode)
    row = session.get(Customer, customer_id)
    if row is None:
        raise CustomerNotFound(f"no customer with id {customer_id}")
    row.active, row.updated_at = False, now
    _clear_children(session, customer_id)
    session.flush()


def delete_customer(
    session: Session, customer_id: int, *, mode: CustomersMode, also_used_by: list[str]
) -> None:
    """DELETE: the row goes, with its addresses and domains, when nothing refers to it.
    A customer that tickets (or what the caller lists in `also_used_by`: tokens, workflow
    and SLA files) still name is refused with CustomerConflict: ids are not reused behind
    a ticket's back. Such a customer is deactivated instead (update with active=false)."""
    _writable(mode)
    row = session.get(Customer, customer_id)
    if row is None:
        raise CustomerNotFound(f"no customer with id {customer_id}")
    tickets = session.scalar(
        select(func.count()).select_from(Ticket).where(Ticket.customer_id == customer_id)
    ) or 0
    evidence = session.scalar(
        select(func.count()).select_from(TicketCustomer)
        .where(TicketCustomer.customer_id == customer_id)
    ) or 0
    uses = list(also_used_by)
    if tickets or evidence:
        uses.insert(0, f"{max(tickets, evidence)} ticket(s)")
    if uses:
        raise CustomerConflict(
            f"customer {row.key!r} is still used by {', '.join(uses)}; "
            "deactivate it instead (active: false)"
        )
    _clear_children(session, customer_id)
    session.delete(row)
    session.flush()


def _writable(mode: CustomersMode) -> None:
    if mode is CustomersMode.yaml:
        raise CustomersReadOnly("CUSTOMERS_PATH")


def _check_domains(spec: CustomerSpec, shared: SharedDomains) -> None:
    for domain in spec.domains:
        entry = shared.entry_for(domain)
        if entry is not None:
            raise CustomerInvalid(
                f"{domain!r} is a shared mail domain (matches {entry!r}); "
                "add the customer's addresses as contacts instead"
            )
        if is_public_suffix(domain):
            raise CustomerInvalid(f"{domain!r} is a public suffix, not an organisation's domain")


def _check_claims(session: Session, spec: CustomerSpec, *, own_id: int | None) -> None:
    if spec.domains:
        for domain, key, cid in session.execute(
            select(CustomerDomain.domain, Customer.key, Customer.id)
            .join(Customer, Customer.id == CustomerDomain.customer_id)
            .where(CustomerDomain.domain.in_(spec.domains))
        ):
            if cid != own_id:
                raise CustomerConflict(f"domain {domain!r} belongs to customer {key!r}")
    addresses = [c.address for c in spec.contacts]
    if addresses:
        for address, key, cid in session.execute(
            select(CustomerContact.address, Customer.key, Customer.id)
            .join(Customer, Customer.id == CustomerContact.customer_id)
            .where(CustomerContact.address.in_(addresses))
        ):
            if cid != own_id:
                raise CustomerConflict(f"contact {address!r} belongs to customer {key!r}")


def _clear_children(session: Session, customer_id: int) -> None:
    session.execute(delete(CustomerDomain).where(CustomerDomain.customer_id == customer_id))
    session.execute(delete(CustomerContact).where(CustomerContact.customer_id == customer_id))


def _write_children(session: Session, customer_id: int, spec: CustomerSpec) -> None:
    session.add_all(CustomerDomain(customer_id=customer_id, domain=d) for d in spec.domains)
    session.add_all(
        CustomerContact(customer_id=customer_id, address=c.address, name=c.name)
        for c in spec.contacts
    )
    session.flush()


def _advance_id_sequence(session: Session) -> None:
    """An explicit id bypasses PostgreSQL's sequence; move it past the largest id so the
    next assigned id does not collide. (SQLite assigns max(id)+1 by itself.)"""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(
            text(
                "SELECT setval(pg_get_serial_sequence('mailticket_customers', 'id'), "
                "(SELECT max(id) FROM mailticket_customers))"
            )
        )


# --- YAML mode ------------------------------------------------------------------------------


def sync_from_config(session: Session, config: CustomersConfig, *, now: datetime) -> SyncReport:
    """Make the tables an exact copy of the file. Raises ConfigFileError (file:line) when
    the file contradicts ids already in the database; then nothing is changed."""
    rows = {row.key: row for row in session.scalars(select(Customer))}
    by_id = {row.id: row for row in rows.values()}
    issues = []
    for spec in config.customers:
        row = rows.get(spec.key)
        if spec.id is None:
            continue
        line = config.line_of(spec.key)
        if row is not None and row.id != spec.id:
            issues.append(ConfigIssue(
                config.source, line,
                f"customer {spec.key!r} has id {row.id} in the database; ids cannot change "
                "(tickets refer to them)",
            ))
        holder = by_id.get(spec.id)
        if holder is not None and holder.key != spec.key:
            issues.append(ConfigIssue(
                config.source, line,
                f"id {spec.id} belongs to customer {holder.key!r} in the database",
            ))
    if issues:
        raise ConfigFileError(issues)

    report = SyncReport()
    wanted = {spec.key for spec in config.customers}
    explicit_ids = False
    # Free every address and domain first, so one moving between customers never meets
    # the unique constraints half-way; then write the file's.
    session.execute(delete(CustomerDomain))
    session.execute(delete(CustomerContact))
    for key, row in rows.items():
        if key not in wanted and row.active:
            row.active, row.updated_at = False, now
            report.deactivated.append(key)
    assigned: list[Customer] = []
    for spec in config.customers:
        row = rows.get(spec.key)
        if row is None:
            row = Customer(
                key=spec.key, name=spec.name, active=spec.active, source="yaml",
                created_at=now, updated_at=now,
            )
            if spec.id is not None:
                row.id = spec.id
                explicit_ids = True
                session.add(row)
            else:
                assigned.append(row)
            report.created.append(spec.key)
        elif (row.name, row.active, row.source) != (spec.name, spec.active, "yaml"):
            row.name, row.active, row.source, row.updated_at = spec.name, spec.active, "yaml", now
            report.updated.append(spec.key)
        else:
            report.unchanged.append(spec.key)
    # Rows with the file's ids first, then the sequence past them, then the rest: in one
    # flush PostgreSQL could hand a new row an id the file claims.
    session.flush()
    if explicit_ids:
        _advance_id_sequence(session)
    session.add_all(assigned)
    session.flush()
    ids = {key: cid for key, cid in session.execute(select(Customer.key, Customer.id))}
    for spec in config.customers:
        if spec.active:
            session.add_all(CustomerDomain(customer_id=ids[spec.key], domain=d) for d in spec.domains)
            session.add_all(
                CustomerContact(customer_id=ids[spec.key], address=c.address, name=c.name)
                for c in spec.contacts
            )
    session.flush()
    return report


# --- which customer a ticket belongs to ----------------------------------------------------


def record_ticket_customer(
    session: Session,
    ticket_id: int,
    customer_id: int,
    *,
    matched_by: str,
    matched_value: str | None,
    email_log_id: int | None = None,
    now: datetime,
) -> None:
    """Set tticket_tickets.customer_id and keep the evidence beside it, in one place so the
    two never disagree. A later call (a workflow's explicit customer, an agent's change)
    replaces both."""
    session.execute(update(Ticket).where(Ticket.id == ticket_id).values(customer_id=customer_id))
    row = session.get(TicketCustomer, ticket_id)
    if row is None:
        session.add(TicketCustomer(
            ticket_id=ticket_id, customer_id=customer_id, matched_by=matched_by,
            matched_value=matched_value, email_log_id=email_log_id, created_at=now,
        ))
    else:
        row.customer_id, row.matched_by, row.matched_value = customer_id, matched_by, matched_value
        row.email_log_id, row.created_at = email_log_id, now
    session.flush()


def record_detected_customer(
    session: Session, ticket_id: int, match: CustomerMatch, *, email_log_id: int | None, now: datetime
) -> None:
    record_ticket_customer(
        session, ticket_id, match.customer_id, matched_by=match.matched_by,
        matched_value=match.matched_value, email_log_id=email_log_id, now=now,
    )


def ticket_customer_evidence(session: Session, ticket_id: int) -> TicketCustomer | None:
    return session.get(TicketCustomer, ticket_id)

