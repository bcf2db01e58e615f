"""Read queries shared by the JSON API and the thread view. Take a Session, never commit."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, func, or_, select, text, true, tuple_, type_coerce
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


def _thread_anchor(ticket_id: int, after_id: int) -> Any:
    """The received time of mail `after_id`, provided it is in the ticket's thread (its own
    mail or mail linked to it): a cursor cannot anchor on another ticket's mail and learn
    where that mail sits in time."""
    linked = select(EmailTicket.email_log_id).where(EmailTicket.ticket_id == ticket_id)
    return (
        select(EmailLog.email_received_at)
        .where(EmailLog.id == after_id, or_(EmailLog.ticket_id == ticket_id, EmailLog.id.in_(linked)))
        .scalar_subquery()
    )


def thread(
    session: Session, ticket_id: int, *, limit: int | None = None, cursor: str | None = None
) -> tuple[list[Any], str | None]:
    """A ticket's mail in the order it reached us, (email_received_at, id), with the mail of
    other tickets linked to it too (multi-ticket threading); at most `limit` rows after the
    mail the cursor names, and the cursor of the next page (None on the last one).

    Keyset, never OFFSET: each query reads `limit + 1` rows past the anchor from an index
    (ix_email_log_ticket_received for the ticket's own mail), so a page costs the same deep
    in a long thread as at its start, and mail arriving meanwhile cannot shift or repeat a
    page. Such mail has the newest received time and so lands on a later page; mail stamped
    earlier than the cursor (a backdated import) is not on this walk's pages, as it was not
    there when the walk passed its place. The anchor's received time is read back from the
    database, as list_tickets does: the comparison never depends on how a driver formats
    timestamps. Every writer stamps a received time (pipeline.received_at_of, outbound), so
    the comparison never meets a NULL.

    A well-formed cursor that names no mail of this thread (another ticket's, an unknown id)
    gives an empty page, as in list_tickets: the OpenAPI document states the cursor's format
    (CURSOR), and a value of that format is a position, never a refused request.

    Plain rows of the listed columns, not ORM objects: the thread endpoint is the hottest
    read path and needs neither identity map nor the wide columns (body, thread data).
    """
    after: list[ColumnElement[bool]] = []
    after_id = decode_cursor(cursor) if cursor is not None else None
    if after_id is not None:
        # A row-value comparison, not `t > a OR (t = a AND id > b)`: PostgreSQL and SQLite
        # seek the index to the anchor with it, where the OR form walks the ticket's index
        # from its first mail and filters (a page deep in a long thread cost its depth).
        anchor = _thread_anchor(ticket_id, after_id)
        after.append(tuple_(EmailLog.email_received_at, EmailLog.id) > tuple_(anchor, after_id))
    order = (EmailLog.email_received_at, EmailLog.id)
    fetch = None if limit is None else limit + 1
    own = session.execute(
        select(*THREAD_COLUMNS)
        .where(EmailLog.ticket_id == ticket_id, *after)
        .order_by(*order)
        .limit(fetch)
    ).all()
    # The linked mail is its own indexed query (email_ticket's key) rather than an OR in the
    # first one, which would cost the first its index; each side holds at most `fetch` rows.
    linked = session.execute(
        select(*THREAD_COLUMNS)
        .join(EmailTicket, EmailTicket.email_log_id == EmailLog.id)
        .where(EmailTicket.ticket_id == ticket_id, EmailLog.ticket_id != ticket_id, *after)
        .order_by(*order)
        .limit(fetch)
    ).all()
    rows = list(own) if not linked else sorted(
        [*own, *linked], key=lambda r: (_utc(r.email_received_at), r.id)
    )
    if limit is not None and len(rows) > limit:
        rows = rows[:limit]
        return rows, encode_cursor(rows[-1].id)
    return rows, None


@dataclass(frozen=True)
class Excerpt:
    """The first characters of a mail's text, and how many characters the whole text has."""

    text: str
    length: int


@dataclass(frozen=True)
class MailWindow:
    """A stretch of a ticket's own mail for the thread view, in thread order, whether there
    is mail before and after it, and the start of each mail's text by mail id."""

    mails: list[EmailLog]
    earlier: bool
    later: bool
    bodies: dict[int, Excerpt]


def mail_window(
    session: Session, ticket_id: int, *, limit: int, body_chars: int,
    before: str | None = None, after: str | None = None,
) -> MailWindow:
    """The thread view's page of the ticket's own mail: the `limit` mails just before the
    mail `before` names, or just after the one `after` names, or without either the newest
    `limit` (the mail an agent answers, next to the answer form).

    Of each body only the first `body_chars` characters are read (with the whole length),
    cut in the database: a mail's text may be megabytes, and a page of them is not read
    whole. The rows keep body_text deferred; read the text from `bodies`.

    Keyset on (email_received_at, id) both ways: descending for "before" and for the newest
    (the same index read backwards), ascending for "after", so mail arriving while someone
    reads never shifts a page. A mark that names no mail of the ticket gives no mail; a
    malformed one, or both marks at once, is a BadCursor.
    """
    if before is not None and after is not None:
        raise BadCursor("before or after, not both")
    mark = before if before is not None else after
    mark_id = decode_cursor(mark) if mark is not None else None
    received, ident = EmailLog.email_received_at, EmailLog.id
    body = EmailLog.body_text
    query = (
        select(EmailLog, func.substr(body, 1, body_chars), func.length(body))
        .where(EmailLog.ticket_id == ticket_id).limit(limit + 1)
    )
    if mark_id is not None:
        at = (
            select(received).where(EmailLog.id == mark_id, EmailLog.ticket_id == ticket_id)
            .scalar_subquery()
        )
        # Row values seek the index to the mark (see thread()).
        if after is not None:
            query = query.where(tuple_(received, ident) > tuple_(at, mark_id))
        else:
            query = query.where(tuple_(received, ident) < tuple_(at, mark_id))
    forward = after is not None
    query = query.order_by(received, ident) if forward else query.order_by(
        received.desc(), ident.desc()
    )
    found = list(session.execute(query).tuples())
    more = len(found) > limit
    found = found[:limit]
    if not forward:
        found.reverse()
    rows = [mail for mail, _, _ in found]
    bodies = {mail.id: Excerpt(start or "", length or 0) for mail, start, length in found}
    if forward:
        return MailWindow(rows, earlier=True, later=more, bodies=bodies)
    return MailWindow(rows, earlier=more, later=mark_id is not None, bodies=bodies)


def _utc(moment: datetime | None) -> datetime:
    if moment is None:
        return datetime.min.replace(tzinfo=UTC)
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _by_email_clause(address: str, scope: int | None) -> list[ColumnElement[bool]]:
    from_log = select(EmailLog.ticket_id).where(
        EmailLog.email_from == address, EmailLog.ticket_id.is_not(None)
    ).union(
        select(EmailTicket.ticket_id)
        .join(EmailLog, EmailLog.id == EmailTicket.email_log_id)
        .where(EmailLog.email_from == address)
    )
    conds = [or_(Ticket.requester_email == address, Ticket.id.in_(from_log))]
    if scope is not None:
        conds.append(ticket_clause(scope))
    return conds


def tickets_by_email(
    session: Session,
    address: str,
    *,
    scope: int | None = None,
    limit: int | None = None,
    cursor: str | None = None,
) -> tuple[list[Ticket], str | None]:
    """Tickets opened by the address or carrying mail from it, oldest first on
    (created_at, id); addresses are stored lower-case. The caller passes a real address: a
    blank one would match mail with an empty From. `scope`: only that customer's tickets.

    At most `limit` tickets after the one the cursor names, and the next page's cursor (None
    on the last page); keyset like list_tickets, so tickets opened meanwhile come on a later
    page and never shift one. The cursor anchors only on a ticket of this very list (for a
    scope: of that customer): any other id, another customer's ticket included, gives the
    same empty page, so the answer tells nothing of what exists outside the list.
    """
    addr = address.strip().lower()
    if not addr:
        return [], None
    conds = _by_email_clause(addr, scope)
    after_id = decode_cursor(cursor) if cursor is not None else None
    query = select(Ticket).where(*conds)
    if after_id is not None:
        anchor = select(Ticket.created_at).where(Ticket.id == after_id, *conds).scalar_subquery()
        query = query.where(tuple_(Ticket.created_at, Ticket.id) > tuple_(anchor, after_id))
    query = query.order_by(Ticket.created_at, Ticket.id)
    rows = list(session.scalars(query.limit(None if limit is None else limit + 1)))
    if limit is not None and len(rows) > limit:
        rows = rows[:limit]
        return rows, encode_cursor(rows[-1].id)
    return rows, None


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
