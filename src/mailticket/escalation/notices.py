"""Mail that escalation sends: a notice to agents (`notify`) or to the customer (`close`),
rendered from templates/email and queued with the shared outgoing-mail function
(`outbound.sending.queue_message`): logged on the ticket, delivered by the outbox.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import or_, select

from mailticket.customers.models import Customer
from mailticket.outbound.compose import compose, new_message_id, reply_subject, thread_headers
from mailticket.outbound.sending import QueuedMail, queue_message
from mailticket.outbound.templates import MailTemplates
from mailticket.settings import Settings
from mailticket.sla.models import TicketSla
from mailticket.store.batch import Batch
from mailticket.store.models import EmailLog, EmailTicket, Ticket
from mailticket.store.outbox_models import as_utc
from mailticket.types import AUTOMATED_LABELS, TicketEvent

NOTIFY_ACTION = "notify"
CLOSE_NOTICE_ACTION = "close_notice"


@dataclass(frozen=True)
class Parent:
    """The customer's newest message on a ticket: what a mail to them answers."""

    message_id: str
    references: list[str]
    address: str
    name: str
    in_reply_to: list[str] = field(default_factory=list)


def _when(settings: Settings, moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return as_utc(moment).astimezone(settings.tz).strftime("%Y-%m-%d %H:%M %Z")


def context(
    work: Batch,
    settings: Settings,
    ticket: Ticket,
    *,
    event: TicketEvent | None,
    extra: dict[str, Any],
) -> dict[str, Any]:
    """What a notice template can use (every name always present; None when unknown)."""
    with work.quietly() as session:
        customer = (
            session.execute(
                select(Customer.key, Customer.name).where(Customer.id == ticket.customer_id)
            ).first()
            if ticket.customer_id is not None
            else None
        )
        sla = session.get(TicketSla, ticket.id)
    return {
        "ticket_id": ticket.id,
        "ticket_number": ticket.ticket_number,
        "ticket_subject": ticket.subject,
        "ticket_status": ticket.status,
        "ticket_priority": ticket.priority,
        "requester_email": ticket.requester_email,
        "assignee_id": ticket.assigned_to_user_id,
        "customer_key": customer.key if customer is not None else None,
        "customer_name": customer.name if customer is not None else None,
        "event": None if event is None else {
            "kind": event.kind,
            "target": event.target,
            "at": _when(settings, event.at),
            "policy": event.policy,
            "idle_days": event.idle_days,
        },
        "sla": None if sla is None or sla.policy is None else {
            "policy": sla.policy,
            "state": sla.state,
            "first_response_due": _when(settings, sla.first_response_due_at),
            "resolution_due": _when(settings, sla.resolution_due_at),
        },
        "support_address": settings.mail_from_address,
        "support_name": settings.mail_from_name,
        "extra": dict(extra),
    }


def customer_parent(work: Batch, ticket: Ticket) -> Parent | None:
    """The newest inbound message of the ticket (its own or linked to it)."""
    log = EmailLog
    linked = select(EmailTicket.email_log_id).where(EmailTicket.ticket_id == ticket.id)
    with work.quietly() as session:
        row = session.execute(
            select(log.email_message_id, log.thread_data, log.email_from, log.email_from_name)
            .where(
                log.direction == "in", or_(log.ticket_id == ticket.id, log.id.in_(linked)),
                # an out-of-office or a bounce is no message of the customer's to answer
                log.classification.is_(None) | log.classification.not_in(AUTOMATED_LABELS),
            )
            .order_by(log.email_received_at.desc(), log.id.desc())
            .limit(1)
        ).first()
    if row is None:
        return None
    data = row.thread_data or {}
    refs = str(data.get("references") or "").split()
    replied_to = str(data.get("in_reply_to") or "").split()
    return Parent(row.email_message_id, refs, row.email_from, row.email_from_name or "", replied_to)


def key_for(*parts: object) -> str:
    digest = hashlib.sha256("\n".join(map(str, parts)).encode()).hexdigest()
    return f"notice:{digest}"


def queue_notice(
    work: Batch,
    settings: Settings,
    ticket: Ticket,
    *,
    to: list[str],
    template: str,
    subject: str,
    template_context: dict[str, Any],
    key: str,
    now: datetime,
    action: str,
    parent: Parent | None = None,
) -> QueuedMail | None:
    """Render `template` and queue it to `to` as mail of the ticket; None when a mail with
    this idempotency key was queued before (the same event handled twice)."""
    if work.outbox_item(key) is not None:
        return None
    rendered = MailTemplates.from_settings(settings).render(template, template_context)
    in_reply_to, references = (
        thread_headers(parent.message_id, parent.references, parent.in_reply_to)
        if parent is not None else (None, [])
    )
    message = compose(
        from_address=settings.mail_from_address,
        from_name=settings.mail_from_name,
        to_address=to[0],
        to_name=parent.name if parent is not None and parent.address == to[0] else "",
        subject=reply_subject(ticket.ticket_number, subject),
        message_id=new_message_id(ticket.ticket_number, settings.mail_domain),
        in_reply_to=in_reply_to,
        references=references,
        text_body=rendered.text,
        html_body=rendered.html,
        date=as_utc(now),
    )
    return queue_message(
        work,
        settings,
        ticket_id=ticket.id,
        message=message,
        rcpt_to=to,
        action=action,
        body_text=rendered.text,
        idempotency_key=key,
        now=as_utc(now),
        from_name=settings.mail_from_name,
        thread_extra={"template": template},
    )
