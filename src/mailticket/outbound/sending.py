"""Queue one composed message: its log row (direction out), its thread ids, its outbox item.

Automatic answers (`auto_reply.py`) and agents' answers (`agent_reply.py`) both end here, in
the caller's unit of work, next to the change that caused them: either the log row, the
thread reference and the outbox item all exist, or none does. The log row is what lets a
reply to the message thread by its headers; the outbox delivers it (retries, back-off, dead
letters) whichever kind it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from mailticket.outbound.compose import Composed
from mailticket.settings import Settings
from mailticket.store.batch import Batch
from mailticket.store.db import new_row
from mailticket.store.models import EmailLog
from mailticket.store.outbox_models import OutboxItem, utcnow
from mailticket.threading import record_thread_refs
from mailticket.threading.threadindex import conversation_ref

SMTP_KIND = "smtp"
SMTP_TARGET = "smtp"
SEND_OPERATION = "send_mail"


@dataclass(frozen=True)
class QueuedMail:
    entry: EmailLog
    item: OutboxItem


def queue_message(
    work: Batch,
    settings: Settings,
    *,
    ticket_id: int,
    message: Composed,
    rcpt_to: list[str],
    action: str,
    body_text: str,
    idempotency_key: str,
    now: datetime,
    from_name: str = "",
    thread_extra: dict[str, Any] | None = None,
    raw_message_id: int | None = None,
) -> QueuedMail:
    """Log `message` as outgoing mail of the ticket and queue it for `rcpt_to`."""
    entry = work.add(
        new_row(
            EmailLog,
            ticket_id=ticket_id,
            email_message_id=message.message_id,
            email_subject=message.subject,
            email_from=settings.mail_from_address,
            email_from_name=from_name or None,
            email_to=", ".join(rcpt_to),
            email_received_at=now,
            is_reply=True,
            thread_data={
                "message_id": message.message_id,
                "in_reply_to": message.in_reply_to,
                "references": " ".join(message.references) or None,
                **(thread_extra or {}),
            },
            direction="out",
            action=action,
            body_text=body_text,
            raw_message_id=raw_message_id,
            created_at=now,
        )
    )
    work.note_logged(entry)
    # Our own id as "self" (a reply to it threads straight here), the ids it points at as refs.
    conversation = conversation_ref(message.thread_index)
    record_thread_refs(
        work, ticket_id, message.message_id,
        [*message.references, *([conversation] if conversation else [])],
    )
    payload = {
        "mail_from": settings.mail_from_address,
        "rcpt_to": list(rcpt_to),
        "message_id": message.message_id,
        "email_log_id": entry.id,
    }
    item = work.add(
        new_row(
            OutboxItem,
            kind=SMTP_KIND, target=SMTP_TARGET, operation=SEND_OPERATION, payload=payload,
            # The exact bytes: a retry sends the identical message, Message-ID included.
            message=message.raw, idempotency_key=idempotency_key, ticket_id=ticket_id,
            status="pending", attempts=0, next_attempt_at=utcnow(),
        )
    )
    work.note_outbox(item)
    return QueuedMail(entry, item)
