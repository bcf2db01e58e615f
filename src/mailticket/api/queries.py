"""Read queries shared by the JSON API and the thread view. Take a Session, never commit."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, or_, select, text, true, type_coerce
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Session

from mailticket.customers.scope import ticket_clause
from mailticket.store.models import Attachment, Comment, EmailLog, EmailTicket, Ticket


class BadCursor(ValueError):
    pass


@dataclass(frozen=True)
class TicketFilters:
    status: str | None = None
    priority: str | None = None
    tag: str | None = None
    customer_id: int | None = None
    assignee: int | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    search: str | None = None


# A cursor is the id of the last ticket of a page, in decimal: a format the OpenAPI document
# can state (CURSOR), so any value a client may send is either malformed (422) or a real
# position (an id that names no ticket gives an empty page).
CURSOR = r"^[0-9]{1,10}$"


def encode_cursor(ticket_id: int) -> str:
    return str(ticket_id)


def decode_cursor(cursor: str) -> int:
    if not (cursor.isascii() and cursor.isdigit() and len(cursor) <= 10):
        raise BadCursor("the cursor is not one this API handed out")
    return int(cursor)


def _like(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _has_tag(session: Session, tag: str) -> ColumnElement[bool]:
    if session.get_bind().dialect.name == "postgresql":
        # the column is JSON-with-a-JSONB-variant; @> needs the JSONB type at the SQL level
        return type_coerce(Ticket.tags, JSONB).contains([tag])
    return text(
        "EXISTS (SELECT 1 FROM json_each(tticket_tickets.tags) AS t WHERE t.value = :tag)"
    ).bindparams(tag=tag)  # type: ignore[return-value]


def list_tickets(
    session: Session,
    filters: TicketFilters,
    *,
    limit: int,
    cursor: str | None = None,
    scope: int | None = None,
) -> tuple[list[Ticket], str | None]:
    """Newest first, keyset-paginated on (created_at, id).

    The cursor names the last ticket seen and the comparison reads that ticket's stored
    created_at back from the database, so it never depends on how a driver formats
    timestamps; tickets inserted meanwhile sort before the cursor and never shift a page.

    `scope`: a customer-scoped caller's customer. Its cursor anchors on that customer's
    tickets only, so a cursor naming another customer's ticket gives the same empty page as
    an id that names no ticket (a page must not tell whether, or when, it exists).
    """
    query = select(Ticket)
    conds: list[ColumnElement[bool]] = []
    if scope is not None:
        conds.append(ticket_clause(scope))
    if filters.status:
        conds.append(Ticket.status == filters.status)
    if filters.priority:
        conds.append(Ticket.priority == filters.priority)
    if filters.customer_id is not None:
        conds.append(Ticket.customer_id == filters.customer_id)
    if filters.assignee is not None:
        conds.append(Ticket.assigned_to_user_id == filters.assignee)
    if filters.created_after is not None:
        conds.append(Ticket.created_at >= filters.created_after)
    if filters.created_before is not None:
        conds.append(Ticket.created_at < filters.created_before)
    if filters.tag:
        conds.append(_has_tag(session, filters.tag.lower()))
    if filters.search:
        pattern = _like(filters.search)
        conds.append(
            or_(
                Ticket.subject.ilike(pattern, escape="\\"),
                Ticket.description.ilike(pattern, escape="\\"),
            )
        )
    if cursor is not None:
        after_id = decode_cursor(cursor)
        anchor_query = select(Ticket.created_at).where(Ticket.id == after_id)
        if scope is not None:
            anchor_query = anchor_query.where(ticket_clause(scope))
        anchor = anchor_query.scalar_subquery()
        conds.append(
            or_(Ticket.created_at < anchor, and_(Ticket.created_at == anchor, Ticket.id < after_id))
        )
    query = query.where(*conds).order_by(Ticket.created_at.desc(), Ticket.id.desc())
    rows = list(session.scalars(query.limit(limit + 1)))
    if len(rows) > limit:
        rows = rows[:limit]
        return rows, encode_cursor(rows[-1].id)
    return rows, None


THREAD_COLUMNS = (
    EmailLog.id, EmailLog.email_message_id, EmailLog.email_from, EmailLog.email_subject,
    EmailLog.email_received_at, EmailLog.is_reply, EmailLog.created_at, EmailLog.direction,
    EmailLog.matched_by, EmailLog.classification,
)


def thread(session: Session, ticket_id: int) -> Sequence[Any]:
    """A ticket's mail in the order it reached us (ix_email_log_ticket_received serves it),
    with the mail of other tickets linked to it too (multi-ticket threading).

    Plain rows of the listed columns, not ORM objects: the thread endpoint is the hottest
    read path and needs neither identity map nor the wide columns (body, thread data).
    """
    own = session.execute(
        select(*THREAD_COLUMNS)
        .where(EmailLog.ticket_id == ticket_id)
        .order_by(EmailLog.email_received_at, EmailLog.id)
    ).all()
    linked = session.execute(
        select(*THREAD_COLUMNS)
        .join(EmailTicket, EmailTicket.email_log_id == EmailLog.id)
        .where(EmailTicket.ticket_id == ticket_id, EmailLog.ticket_id != ticket_id)
    ).all()
    if not linked:
        return own
    return sorted([*own, *linked], key=lambda r: (_utc(r.email_received_at), r.id))


def _utc(moment: datetime | None) -> datetime:
    if moment is None:
        return datetime.min.replace(tzinfo=UTC)
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def tickets_by_email(session: Session, address: str, *, scope: int | None = None) -> list[Ticket]:
    """Tickets opened by the address or carrying mail from it; addresses are stored lower-case.
    The caller passes a real address: a blank one would match mail with an empty From.
    `scope`: only that customer's tickets."""
    addr = address.strip().lower()
    if not addr:
        return []
    from_log = select(EmailLog.ticket_id).where(
        EmailLog.email_from == addr, EmailLog.ticket_id.is_not(None)
    ).union(
        select(EmailTicket.ticket_id)
        .join(EmailLog, EmailLog.id == EmailTicket.email_log_id)
        .where(EmailLog.email_from == addr)
    )
    return list(
        session.scalars(
            select(Ticket)
            .where(or_(Ticket.requester_email == addr, Ticket.id.in_(from_log)))
            .where(*([ticket_clause(scope)] if scope is not None else []))
            .order_by(Ticket.created_at, Ticket.id)
        )
    )


def comment_visibility(scope: int | None) -> ColumnElement[bool]:
    """Which comments a caller may read. Staff (no scope) read every one; a customer-scoped
    caller reads public comments only: internal notes (agents' notes, backend work notes,
    the system's merge notes) are written for the support team, never for the customer, as
    in any helpdesk's customer portal. Every route that answers with comments or their text
    reads them through here (comments_for), so this is the one place that decides."""
    if scope is None:
        return true()
    return Comment.is_internal.is_(False)


def comments_for(session: Session, ticket_id: int, scope: int | None) -> list[Comment]:
    """The ticket's comments the caller may read, oldest first (`ticket.comments` would hand
    out the internal notes too)."""
    return list(session.scalars(
        select(Comment)
        .where(Comment.ticket_id == ticket_id, comment_visibility(scope))
        .order_by(Comment.id)
    ))


def attachments_of(session: Session, email_ids: list[int]) -> dict[int, list[Attachment]]:
    found: dict[int, list[Attachment]] = {i: [] for i in email_ids}
    if not email_ids:
        return found
    rows = session.scalars(
        select(Attachment)
        .where(Attachment.email_log_id.in_(email_ids))
        .order_by(Attachment.email_log_id, Attachment.part_index)
    )
    for row in rows:
        found[row.email_log_id].append(row)
    return found


def followup_links(session: Session, ticket: Ticket) -> tuple[Ticket | None, list[Ticket]]:
    """The closed ticket `ticket` follows up, and the tickets that follow it up (oldest
    first)."""
    before = session.get(Ticket, ticket.followup_of_id) if ticket.followup_of_id else None
    after = list(
        session.scalars(
            select(Ticket).where(Ticket.followup_of_id == ticket.id).order_by(Ticket.id)
        )
    )
    return before, after
