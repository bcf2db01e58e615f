"""Ticket services: open a ticket from an email, thread a reply into one, merge, comment.

The pipeline's services take its unit of work (`Batch`); `add_comment` and `find_ticket`
serve the API and CLI with a plain session. None of them commits.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailticket.conversation import split_reply
from mailticket.reading.extraction import detect_priority, extract_tags, merge_tags
from mailticket.reading.ticketnumbers import canonical_ticket_number
from mailticket.settings import Priority, Settings
from mailticket.sla import service as sla_service
from mailticket.store.batch import Batch
from mailticket.store.db import new_row
from mailticket.store.models import Comment, EmailLog, EmailTicket, Ticket
from mailticket.threading import record_thread_refs
from mailticket.threading.threadindex import conversation_ref
from mailticket.ticketing.numbering import allocate_ticket_number
from mailticket.types import Classification, ParsedEmail

OPEN_STATUSES = frozenset({"open", "pending"})
REOPENABLE_STATUSES = frozenset({"resolved", "closed"})
MAX_SUBJECT = 998
# Ids are 32-bit integers in the schema; a larger number names no ticket (and must not
# reach the database driver, which would refuse it).
MAX_ID = 2_147_483_647


def set_status(ticket: Ticket, status: str, now: datetime) -> None:
    """The one way a ticket's status moves: it keeps `closed_at` (when the ticket stopped
    being worked on, which the reopen window is measured from) in step. Moving between
    resolved and closed keeps the first closing time."""
    if status in REOPENABLE_STATUSES:
        if ticket.status not in REOPENABLE_STATUSES or ticket.closed_at is None:
            ticket.closed_at = now
    else:
        ticket.closed_at = None
    ticket.status = status


def format_description(email: ParsedEmail, received_at: datetime | None) -> str:
    sender = f"{email.from_name} <{email.from_address}>" if email.from_name else email.from_address
    when = received_at.isoformat() if received_at else "unknown"
    return f"From: {sender or 'unknown sender'}\nReceived: {when}\n\n{email.text.strip()}\n"


def create_ticket_from_email(
    work: Batch,
    settings: Settings,
    email: ParsedEmail,
    log: EmailLog,
    *,
    customer_id: int | None = None,
    assigned_to_user_id: int | None = None,
    priority: Priority | None = None,
    now: datetime | None = None,
) -> Ticket:
    tags = extract_tags(email.text)
    if assigned_to_user_id is None and settings.ticket_auto_assign:
        assigned_to_user_id = settings.ticket_default_assignee_id
    ticket = new_row(
        Ticket,
        ticket_number=allocate_ticket_number(work, settings.tz, now),
        subject=(email.subject or "(no subject)")[:MAX_SUBJECT],
        description=format_description(email, log.email_received_at),
        status="open",
        priority=(priority or detect_priority(email.subject, tags, settings.ticket_default_priority)).value,
        customer_id=customer_id,
        assigned_to_user_id=assigned_to_user_id,
        tags=tags,
        custom_fields={
            "email_from": email.from_address,
            "email_message_id": email.message_id,
            "created_from_email": True,
        },
        requester_email=email.from_address or None,
        # The pipeline's clock, which dates the number too: the SLA clock starts here, and
        # an archive import dates the ticket by the mail's arrival.
        **({"created_at": now} if now is not None else {}),
    )
    work.add(ticket)
    work.keep_ticket(ticket)
    _attach_email(work, ticket, email, log, is_reply=False)
    return ticket


def link_email(
    work: Batch,
    ticket: Ticket,
    email: ParsedEmail,
    log: EmailLog,
    classification: Classification,
    *,
    now: datetime | None = None,
) -> Comment | None:
    """Thread a message into an existing ticket.

    A human reply becomes a public comment, reopens a resolved ticket and moves a ticket
    waiting for the customer (`pending`) back to `open`, which restarts its SLA clock; an
    auto-reply, a bounce or our own mail (an agent's copy) is logged on the ticket but never
    reopens it nor counts as the customer's word.
    """
    _attach_email(work, ticket, email, log, is_reply=True)
    if classification.is_automated:
        return None
    # A customer who writes "#printer" in a reply means it as much as in the first mail.
    # Quoted lines are left out: they repeat tags the ticket has (or that an agent removed).
    # Priority stays as it is: it is set when the ticket opens, later only by people.
    if "#" in email.text and (tags := extract_tags(_unquoted(email.text))):
        add_tags(ticket, tags)
    if ticket.status in REOPENABLE_STATUSES or ticket.status == "pending":
        moment = now or datetime.now(UTC)
        set_status(ticket, "open", moment)
        ticket.resolved_at = None
        sla_service.note_status(work, ticket.id, "open", moment, source="email")
    comment = new_row(
        Comment,
        ticket_id=ticket.id,
        body=reply_text(email),
        author_email=email.from_address or None,
        is_internal=False,
        source="email",
        email_log_id=log.id,
    )
    work.add(comment)
    ticket.updated_at = datetime.now(UTC)
    return comment


def _attach_email(
    work: Batch, ticket: Ticket, email: ParsedEmail, log: EmailLog, *, is_reply: bool
) -> None:
    if log.ticket_id is None or log.ticket_id == ticket.id:
        work.assign(log, ticket_id=ticket.id, is_reply=is_reply)
        # The message's attachment rows follow log.ticket_id when the pipeline finishes it.
    else:
        # A further ticket of the same message (multi-ticket threading): the log row keeps
        # naming the first, as the seed's SQL expects; the link table names this one.
        work.add(new_row(EmailTicket, email_log_id=log.id, ticket_id=ticket.id))
    conversation = conversation_ref(email.header("thread-index"))
    record_thread_refs(
        work, ticket.id, email.message_id,
        [*email.in_reply_to, *email.references, *([conversation] if conversation else [])],
    )


# A reply that only quotes earlier mail (a forward to ourselves, an empty "Re:") still
# makes its comment; the log row keeps the whole message.
NO_NEW_TEXT = "(no new text: the message only quotes earlier mail)"


def reply_text(email: ParsedEmail) -> str:
    """What the customer wrote now: the reply without the quoted mail and the signature
    (`tticket_email_log.body_text` and the raw message keep everything). Split ahead by the
    parse thread (`split_new_text`) for mail that looks like a reply."""
    return email.reply if email.reply is not None else split_new_text(email)


def split_new_text(email: ParsedEmail) -> str:
    """`reply_text`, computed: a pure function of the message, so it can run off the thread
    that holds the batch's transaction."""
    # `email.text` is rendered from the HTML when the mail has no text/plain part; the
    # splitter wants only a real text part as text.
    plain = email.text if "text/plain" in email.part_types else None
    parts = split_reply(plain, email.html)
    if parts.source == "none":
        return email.text.strip()
    return parts.new_text.strip() or NO_NEW_TEXT


def _unquoted(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith(">"))


def add_tags(ticket: Ticket, tags: Iterable[str]) -> list[str]:
    ticket.tags = merge_tags(ticket.tags or [], tags)
    return ticket.tags


def add_comment(
    session: Session,
    ticket: Ticket,
    body: str,
    *,
    internal: bool,
    author_email: str | None = None,
    source: str = "api",
    now: datetime | None = None,
) -> Comment:
    """An agent's comment. A public one is an answer to the customer: the first is the
    ticket's SLA first response (at `now`, the caller's clock)."""
    comment = Comment(
        ticket_id=ticket.id,
        body=body,
        author_email=author_email,
        is_internal=internal,
        source=source,
    )
    session.add(comment)
    ticket.updated_at = datetime.now(UTC)
    session.flush()
    if not internal:
        sla_service.record_first_response(session, ticket.id, now or datetime.now(UTC))
    return comment


def add_customer_comment(
    session: Session,
    ticket: Ticket,
    body: str,
    *,
    author_email: str | None,
    source: str,
) -> Comment:
    """A public comment the customer wrote (a customer-scoped API token): the customer's
    word like their mail, so never the SLA's first response, which is the team's answer."""
    comment = Comment(
        ticket_id=ticket.id, body=body, author_email=author_email, is_internal=False,
        source=source,
    )
    session.add(comment)
    ticket.updated_at = datetime.now(UTC)
    session.flush()
    return comment


def find_ticket(session: Session, ref: str | int, *, follow_merges: bool = True) -> Ticket | None:
    """A ticket by id or by number; a merged ticket resolves to the one it was merged into
    (unless `follow_merges` is false)."""
    ticket: Ticket | None
    if isinstance(ref, str) and ref.isascii() and ref.isdigit():
        # Only ASCII digits are an id: str.isdigit() is also true for "¹" or "١".
        ref = int(ref)
    if isinstance(ref, int):
        ticket = session.get(Ticket, ref) if 0 < ref <= MAX_ID else None
    else:
        number = canonical_ticket_number(ref) or ref.upper()  # "-0042" is ticket -042
        ticket = session.scalar(select(Ticket).where(Ticket.ticket_number == number))
    hops = 0
    while follow_merges and ticket is not None and ticket.merged_into_id is not None and hops < 20:
        ticket = session.get(Ticket, ticket.merged_into_id)
        hops += 1
    return ticket


def ticket_by_number(work: Batch, number: str) -> Ticket | None:
    """`find_ticket` for the pipeline: a ticket opened earlier in the batch counts too."""
    number = (canonical_ticket_number(number) or number).upper()
    found = work.tickets_by_number([number]).get(number)
    return work.live(found) if found is not None else None


def merge_tickets(
    work: Batch, target: Ticket, sources: Iterable[Ticket], *, now: datetime | None = None
) -> None:
    """Fold tickets that turned out to be one conversation into `target`.

    Happens when a message's own headers tie together tickets that were opened separately
    (e.g. its parent arrived after a reply to it). Mail, comments and thread ids move (the
    unit of work moves the stored ones when it is written); the old ticket stays as a
    pointer so its number keeps resolving.
    """
    for src in sources:
        if src.id == target.id or src.merged_into_id is not None:
            continue
        work.merge(src, target)
        target.tags = merge_tags(target.tags or [], src.tags or [])
        src.status = "merged"
        src.merged_into_id = target.id
        sla_service.note_status(work, src.id, "merged", now or datetime.now(UTC), source="system")
        work.add(
            new_row(
                Comment,
                ticket_id=target.id,
                body=f"{src.ticket_number} was merged into this ticket (same email thread).",
                author_email=None,
                is_internal=True,
                source="system",
                email_log_id=None,
            )
        )
