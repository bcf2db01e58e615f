"""An agent's public answer, mailed to the ticket's participants.

    from mailticket.conversation.agent_reply import post_public_reply, MailFile
    comment = post_public_reply(
        session, settings, ticket, body="...", author_email="anna@example.com",
        author_name="Anna", cc=["boss@customer.example"], attachments=[MailFile(...)],
        now=clock(), source="api",
    )

The comment, its outgoing log row (direction out, with the raw message and the attachment
rows), its thread ids and its outbox item are written in the caller's transaction, so either
all of them exist or none does; the outbox then delivers the mail like an auto-reply
(retries, back-off, dead letters). Nothing here commits.

The services take the caller's Session (the API's, the thread view's, a backend sync's) and
open their own unit of work on it for the outgoing rows; they are not meant to be called from
inside the pipeline's batch.

Internal notes never become mail: `mail_comment` refuses a comment marked internal, and
`post_public_reply` only ever makes public ones. Every path that mails a comment (the API,
the thread view, a backend's public comment) goes through `mail_comment`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from email.utils import format_datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailticket.conversation.markers import reply_marker
from mailticket.conversation.participants import recipients
from mailticket.outbound.compose import (
    MailFile,
    compose,
    new_message_id,
    reply_subject,
    thread_headers,
)
from mailticket.outbound.sending import QueuedMail, queue_message
from mailticket.outbound.templates import MailTemplates
from mailticket.reading.parsing import parse_email
from mailticket.settings import Settings
from mailticket.store.batch import open_batch
from mailticket.store.db import new_row
from mailticket.store.models import Attachment, Comment, EmailLog, RawMessage, Ticket
from mailticket.store.outbox_models import as_utc
from mailticket.threading.threadindex import answer_index, ticket_seed
from mailticket.ticketing import tickets as ticket_service
from mailticket.types import AUTOMATED_LABELS

__all__ = [
    "AGENT_REPLY_ACTION", "TEMPLATE", "AttachmentLimit", "InternalNote", "MailFile",
    "NoRecipients", "check_attachments", "mail_comment", "post_public_reply",
]

TEMPLATE = "agent_reply"
AGENT_REPLY_ACTION = "agent_reply"
RAW_SOURCE = "agent_reply"
# Lines of the customer's message quoted under the marker: enough for context, never a book.
MAX_QUOTED_LINES = 200


class InternalNote(ValueError):
    """An internal note was about to be mailed."""


class NoRecipients(ValueError):
    """The ticket has nobody to mail (no requester, every participant removed)."""


class AttachmentLimit(ValueError):
    """Too many files or too many bytes. `too_large`: a size limit (413), else 422."""

    def __init__(self, message: str, *, too_large: bool) -> None:
        super().__init__(message)
        self.too_large = too_large


def check_attachments(settings: Settings, files: Sequence[MailFile]) -> None:
    """REPLY_MAX_ATTACHMENTS and REPLY_MAX_ATTACHMENT_BYTES; AttachmentLimit when exceeded."""
    if len(files) > settings.reply_max_attachments:
        raise AttachmentLimit(
            f"at most {settings.reply_max_attachments} files per reply"
            f" (REPLY_MAX_ATTACHMENTS); got {len(files)}", too_large=False,
        )
    total = sum(len(f.data) for f in files)
    if total > settings.reply_max_attachment_bytes:
        raise AttachmentLimit(
            f"attachments are limited to {settings.reply_max_attachment_bytes} bytes in all"
            f" (REPLY_MAX_ATTACHMENT_BYTES); got {total}", too_large=True,
        )
    for f in files:
        if not f.filename.strip():
            raise AttachmentLimit("every attachment needs a file name", too_large=False)


def post_public_reply(
    session: Session,
    settings: Settings,
    ticket: Ticket,
    *,
    body: str,
    author_email: str | None,
    author_name: str = "",
    cc: Sequence[str] = (),
    attachments: Sequence[MailFile] = (),
    now: datetime,
    source: str = "api",
) -> Comment:
    """A public comment on `ticket`, mailed to its participants (and `cc`).

    Raises AttachmentLimit, NoRecipients or ParticipantError (a `cc` that is no address)
    before anything is written; TemplateRenderError when the agent_reply template fails."""
    check_attachments(settings, attachments)
    to, copied = recipients(session, settings, ticket, list(cc))
    if not to:
        raise NoRecipients(f"ticket {ticket.ticket_number} has no participant to mail")
    comment = ticket_service.add_comment(
        session, ticket, body, internal=False, author_email=author_email, source=source,
        now=now,  # the first public answer is the SLA's first response
    )
    mail_comment(
        session, settings, ticket, comment, author_name=author_name, cc=cc,
        attachments=attachments, now=now,
    )
    return comment


@dataclass(frozen=True)
class _Quoted:
    attribution: str
    lines: list[str]


def _last_customer_mail(session: Session, ticket: Ticket) -> EmailLog | None:
    return session.scalars(
        select(EmailLog)
        .where(
            EmailLog.ticket_id == ticket.id, EmailLog.direction == "in",
            EmailLog.classification.is_(None)
            | EmailLog.classification.not_in(AUTOMATED_LABELS),
        )
        .order_by(EmailLog.email_received_at.desc(), EmailLog.id.desc())
        .limit(1)
    ).first()


def _quote(entry: EmailLog) -> _Quoted:
    sender = entry.email_from_name or entry.email_from or "you"
    if entry.email_from_name and entry.email_from:
        sender = f"{entry.email_from_name} <{entry.email_from}>"
    when = format_datetime(as_utc(entry.email_received_at)) if entry.email_received_at else None
    attribution = f"On {when}, {sender} wrote:" if when else f"{sender} wrote:"
    lines = (entry.body_text or "").strip().splitlines()[:MAX_QUOTED_LINES]
    return _Quoted(attribution, [line.rstrip() for line in lines])


def _parent_ids(entry: EmailLog | None) -> tuple[str | None, list[str]]:
    if entry is None:
        return None, []
    data = entry.thread_data or {}
    chain = [*(data.get("references") or "").split(), *(data.get("in_reply_to") or "").split()]
    mid = entry.email_message_id
    # A synthetic id (the mail had none) is ours alone: the customer's mailer never saw it.
    return (None if "@synthetic." in mid else mid), chain


def mail_comment(
    session: Session,
    settings: Settings,
    ticket: Ticket,
    comment: Comment,
    *,
    author_name: str = "",
    cc: Sequence[str] = (),
    attachments: Sequence[MailFile] = (),
    now: datetime,
) -> QueuedMail:
    """Queue `comment` as mail to the ticket's participants; the comment then names its
    outgoing log row (`email_log_id`). InternalNote for an internal one, always."""
    if comment.is_internal:
        raise InternalNote(f"comment {comment.id} is an internal note and is never mailed")
    check_attachments(settings, attachments)
    to, copied = recipients(session, settings, ticket, list(cc))
    if not to:
        raise NoRecipients(f"ticket {ticket.ticket_number} has no participant to mail")
    parent = _last_customer_mail(session, ticket)
    in_reply_to, references = thread_headers(*_parent_ids(parent))
    shown_name = author_name.strip() if settings.agent_reply_show_name else ""
    rendered = MailTemplates.from_settings(settings).render(TEMPLATE, {
        "body": comment.body.replace("\r\n", "\n").strip("\n"),
        "agent_name": shown_name,
        "agent_email": comment.author_email or "",
        "ticket_number": ticket.ticket_number,
        "ticket_subject": ticket.subject,
        "ticket_status": ticket.status,
        "support_address": settings.mail_from_address,
        "support_name": settings.mail_from_name,
        "reply_marker": reply_marker(settings.agent_reply_language),
        "quoted": _quote(parent) if parent is not None and settings.agent_reply_quote else None,
    })
    from_name = shown_name or settings.mail_from_name
    message = compose(
        from_address=settings.mail_from_address,
        from_name=from_name,
        to_address=to[0][1],
        to_name=to[0][0],
        cc=copied,
        reply_to=settings.mail_from_address,
        automatic=False,
        subject=reply_subject(ticket.ticket_number, ticket.subject),
        message_id=new_message_id(ticket.ticket_number, settings.mail_domain),
        in_reply_to=in_reply_to,
        references=references,
        text_body=rendered.text,
        html_body=rendered.html,
        attachments=attachments,
        date=now,
        thread_index=answer_index(
            str((parent.thread_data or {}).get("thread_index") or "") if parent else None,
            ticket_seed(ticket, settings), now,
        ),
    )
    rcpt = [address for _, address in [*to, *copied]]
    with open_batch(session) as work:
        # The exact bytes we send, kept like inbound mail: the raw download and the
        # attachment rows (cut out of it on demand) work the same for both directions.
        raw_row = work.add(new_row(
            RawMessage, sha256=hashlib.sha256(message.raw).hexdigest(), size=len(message.raw),
            raw=message.raw, source=RAW_SOURCE,
        ))
        queued = queue_message(
            work, settings, ticket_id=ticket.id, message=message, rcpt_to=rcpt,
            action=AGENT_REPLY_ACTION, body_text=rendered.text,
            idempotency_key=f"{AGENT_REPLY_ACTION}:{comment.id}", now=now,
            from_name=from_name, raw_message_id=raw_row.id,
            thread_extra={"template": TEMPLATE, "comment_id": comment.id,
                          "cc": ", ".join(a for _, a in copied) or None},
        )
        if attachments:
            for part in parse_email(message.raw, domain=settings.mail_domain).attachments:
                work.add(new_row(
                    Attachment, ticket_id=ticket.id, email_log_id=queued.entry.id,
                    part_index=part.index, filename=part.filename[:500],
                    content_type=part.content_type[:255], size=part.size,
                    sha256=hashlib.sha256(part.payload).hexdigest(),
                ))
    comment.email_log_id = queued.entry.id
    return queued
