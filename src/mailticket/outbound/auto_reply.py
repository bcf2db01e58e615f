"""Queue one automatic answer: render, log it as outgoing mail, record its thread id, enqueue.

All of it lands in the caller's transaction, next to the ticket it is about: either the
ticket, its log row, its thread reference and the outbox item all exist, or none does.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from mailticket.outbound.compose import compose, new_message_id, reply_subject, thread_headers
from mailticket.outbound.loop import reply_recipient
from mailticket.outbound.sending import SEND_OPERATION, SMTP_KIND, SMTP_TARGET, queue_message
from mailticket.outbound.templates import MailTemplates
from mailticket.settings import Settings
from mailticket.store.batch import AUTO_REPLY_ACTION, Batch
from mailticket.store.models import Ticket
from mailticket.store.outbox_models import as_utc
from mailticket.threading.threadindex import answer_index, ticket_seed
from mailticket.types import ParsedEmail

__all__ = [
    "SEND_OPERATION", "SMTP_KIND", "SMTP_TARGET", "QueuedReply", "idempotency_key",
    "queue_auto_reply", "template_context",
]


@dataclass(frozen=True)
class QueuedReply:
    message_id: str
    outbox_id: int
    email_log_id: int | None
    already_queued: bool


def idempotency_key(inbound_message_id: str, template: str) -> str:
    """One answer per inbound message and template, however often the message is processed."""
    digest = hashlib.sha256(f"{inbound_message_id}\n{template}".encode()).hexdigest()
    return f"auto_reply:{template}:{digest}"[:255]


def template_context(
    settings: Settings, ticket: Ticket, email: ParsedEmail, extra: dict[str, Any]
) -> dict[str, Any]:
    address, name = reply_recipient(email)
    return {
        "ticket_number": ticket.ticket_number,
        "ticket_subject": ticket.subject,
        "ticket_status": ticket.status,
        "ticket_priority": ticket.priority,
        "customer_email": address,
        "customer_name": name,
        "original_subject": email.subject,
        "support_address": settings.mail_from_address,
        "support_name": settings.mail_from_name,
        "extra": dict(extra),
    }


def queue_auto_reply(
    work: Batch,
    settings: Settings,
    ticket: Ticket,
    email: ParsedEmail,
    *,
    template: str,
    now: datetime,
    templates: MailTemplates | None = None,
    extra: dict[str, Any] | None = None,
) -> QueuedReply:
    key = idempotency_key(email.message_id, template)
    existing = work.outbox_item(key)
    if existing is not None:
        return QueuedReply(str(existing.payload.get("message_id")), existing.id, None, True)
    now = as_utc(now)
    templates = templates or MailTemplates.from_settings(settings)
    rendered = templates.render(template, template_context(settings, ticket, email, extra or {}))
    to_address, to_name = reply_recipient(email)
    in_reply_to, references = thread_headers(
        None if email.message_id_synthetic else email.message_id, email.references,
        email.in_reply_to,
    )
    message = compose(
        from_address=settings.mail_from_address,
        from_name=settings.mail_from_name,
        to_address=to_address,
        to_name=to_name,
        subject=reply_subject(ticket.ticket_number, email.subject or ticket.subject),
        message_id=new_message_id(ticket.ticket_number, settings.mail_domain),
        in_reply_to=in_reply_to,
        references=references,
        text_body=rendered.text,
        html_body=rendered.html,
        date=now,
        thread_index=answer_index(email.header("thread-index"), ticket_seed(ticket, settings), now),
    )
    queued = queue_message(
        work,
        settings,
        ticket_id=ticket.id,
        message=message,
        rcpt_to=[to_address],
        action=AUTO_REPLY_ACTION,
        body_text=rendered.text,
        idempotency_key=key,
        now=now,
        from_name=settings.mail_from_name,
        thread_extra={"template": template},
    )
    work.note_reply(to_address, now)
    return QueuedReply(message.message_id, queued.item.id, queued.entry.id, False)
