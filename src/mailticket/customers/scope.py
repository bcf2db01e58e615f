"""Which customer a ticket or an email belongs to: the queries the API's customer scoping,
its filters and the thread view's badge build on. Each takes the caller's session.

An email belongs to a customer when the ticket its log row names does, or any further
ticket it is linked to (multi-ticket threading): a message split between two customers is
visible to both, and each sees it in their own ticket's thread.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import ColumnElement, or_, select
from sqlalchemy.orm import Session

from mailticket.customers.models import Customer, TicketCustomer
from mailticket.store.models import EmailLog, EmailTicket, Ticket


@dataclass(frozen=True)
class CustomerBadge:
    """What the ticket list and the thread view show: who, and why it is theirs."""

    customer_id: int
    key: str
    name: str
    matched_by: str | None  # address | domain | workflow | api; None: no evidence kept
    matched_value: str | None


def ticket_clause(customer_id: int) -> ColumnElement[bool]:
    """Tickets of the customer (for `select(Ticket).where(...)`)."""
    return Ticket.customer_id == customer_id


def email_clause(customer_id: int) -> ColumnElement[bool]:
    """Log rows (mail, and through them attachments and raw messages) of the customer's
    tickets, including mail linked to one of them (for `select(EmailLog).where(...)`)."""
    theirs = select(Ticket.id).where(Ticket.customer_id == customer_id)
    linked = select(EmailTicket.email_log_id).where(EmailTicket.ticket_id.in_(theirs))
    return or_(EmailLog.ticket_id.in_(theirs), EmailLog.id.in_(linked))


def email_visible(session: Session, email_id: int, customer_id: int | None) -> bool:
    """The log row exists and, for a customer scope, belongs to the customer (one answer for
    "no such email" and "another customer's email": ids must not reveal what exists)."""
    query = select(EmailLog.id).where(EmailLog.id == email_id)
    if customer_id is not None:
        query = query.where(email_clause(customer_id))
    return session.scalar(query) is not None


def visible_ticket_ids(
    session: Session, ticket_ids: Iterable[int | None], customer_id: int | None
) -> set[int]:
    """The ids among `ticket_ids` the scope may name (all of them without a scope): an
    answer that mentions a ticket (an attachment's first ticket, a merge target) leaves out
    another customer's."""
    ids = {tid for tid in ticket_ids if tid is not None}
    if customer_id is None or not ids:
        return ids
    return set(
        session.scalars(select(Ticket.id).where(Ticket.id.in_(sorted(ids)), ticket_clause(customer_id)))
    )


def badges(session: Session, ticket_ids: Iterable[int]) -> dict[int, CustomerBadge]:
    """Ticket id -> its customer and the evidence, for the tickets that have one."""
    ids = sorted(set(ticket_ids))
    if not ids:
        return {}
    rows = session.execute(
        select(Ticket.id, Customer.id, Customer.key, Customer.name,
               TicketCustomer.matched_by, TicketCustomer.matched_value)
        .join(Customer, Customer.id == Ticket.customer_id)
        .outerjoin(TicketCustomer, TicketCustomer.ticket_id == Ticket.id)
        .where(Ticket.id.in_(ids))
    )
    return {
        tid: CustomerBadge(cid, key, name, how, value)
        for tid, cid, key, name, how, value in rows
    }
