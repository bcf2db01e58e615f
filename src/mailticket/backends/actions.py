"""The `push_to_backend` workflow action, and follow-up mail becoming remote comments.

A push opens a pending link and queues the remote create in the message's own transaction;
from then on every further email linked to the ticket is queued as a comment (with its
attachments) to each instance the ticket is linked to. A broken link blocks both: the
action reports it and does nothing unless `new_if_broken` asks for a fresh remote ticket.

Local status changes go out the same way, whatever made them: each link remembers the
status its remote twin should have (`expected_status`), and a ticket whose status differs
(an agent's PATCH, a customer's reply reopening a resolved ticket) queues the change.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from pydantic import Field, field_validator
from sqlalchemy import select
from sqlalchemy.orm import Session

from mailticket.backends import links
from mailticket.backends.base import TicketDraft
from mailticket.backends.delivery import draft_to_payload, enqueue_op
from mailticket.backends.models import RemoteLink
from mailticket.backends.registry import BackendConfigError, UnknownBackend, registry_for
from mailticket.store.models import Attachment, Comment, Ticket
from mailticket.workflows.registry import ActionContext, ActionError, ActionParams, action

log = logging.getLogger(__name__)

PUSHED_NOTE = "backend_pushed"


class PushToBackendParams(ActionParams):
    backend: str
    # Local custom field -> remote field (per project; on top of the instance's mappings).
    field_mappings: dict[str, str] = Field(default_factory=dict)
    # Fixed remote field values for this workflow (e.g. a component or queue).
    fields: dict[str, str | int | float | bool] = Field(default_factory=dict)
    attachments: bool = True
    # A broken link (remote ticket deleted) blocks the push unless this asks for a new one.
    new_if_broken: bool = False

    @field_validator("backend")
    @classmethod
    def _name(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must name a configured backend instance")
        return value.strip()


def _draft(ctx: ActionContext, ticket: Ticket, params: PushToBackendParams,
           instance_mappings: dict[str, str]) -> TicketDraft:
    mappings = {**instance_mappings, **params.field_mappings}
    custom: dict[str, Any] = {
        remote: ticket.custom_fields[local]
        for local, remote in mappings.items()
        if local in (ticket.custom_fields or {})
    }
    custom.update(params.fields)
    return TicketDraft(
        subject=ticket.subject,
        text=ticket.description,
        html=ctx.email.html if ctx.email is not None else None,
        requester_email=ticket.requester_email,
        requester_name=(ctx.email.from_name or None) if ctx.email is not None else None,
        priority=ticket.priority,
        tags=tuple(ticket.tags or ()),
        local_number=ticket.ticket_number,
        custom_fields=custom,
    )


def _queue_attachments(ctx: ActionContext, ticket_id: int, backend: str, link_id: int) -> int:
    """The message's attachments; for an event-triggered push (no message), every
    attachment the ticket's mail brought."""
    if ctx.email_log is not None and ctx.email is not None:
        which = Attachment.email_log_id == ctx.email_log.id
    else:
        which = Attachment.ticket_id == ticket_id
    rows = ctx.session.scalars(
        select(Attachment).where(which).order_by(Attachment.email_log_id, Attachment.part_index)
    ).all()
    for row in rows:
        mail_key = ctx.email.message_id if ctx.email is not None else f"log:{row.email_log_id}"
        enqueue_op(
            ctx.session, backend=backend, operation="create_attachment", ticket_id=ticket_id,
            payload={
                "email_log_id": row.email_log_id, "part_index": row.part_index,
                "filename": row.filename, "content_type": row.content_type, "public": True,
            },
            key_parts=(mail_key, row.part_index, link_id),
        )
    return len(rows)


@action("push_to_backend", PushToBackendParams)
def push_to_backend(ctx: ActionContext, params: PushToBackendParams) -> dict[str, Any]:
    """Mirror the ticket into an external system (queued; delivered by the outbox)."""
    if ctx.ticket is None:
        raise ActionError("no ticket to push: put create_ticket before push_to_backend")
    try:
        instance = registry_for(ctx.settings.backends_file).get(params.backend)
    except (UnknownBackend, BackendConfigError) as exc:
        raise ActionError(str(exc)) from exc
    ticket = ctx.ticket
    current = links.current_link(ctx.session, ticket.id, params.backend)
    if current is not None and current.state != "broken":
        return {"pushed": False, "reason": f"already {current.state}", "link_id": current.id}
    if current is not None and not params.new_if_broken:
        # Blocked, but not an error of this message: raising would roll back the whole
        # workflow, and with it the email's link to its ticket.
        log.warning("%s: link to %s is broken; not pushed", ticket.ticket_number, params.backend)
        return {
            "pushed": False,
            "reason": f"link to {params.backend} is broken ({current.broken_reason}); "
            "re-link it or push with new_if_broken",
            "link_id": current.id,
        }
    link = links.open_pending(ctx.session, ticket.id, params.backend, status=ticket.status)
    draft = _draft(ctx, ticket, params, dict(instance.config.custom_field_mappings))
    item = enqueue_op(
        ctx.session, backend=params.backend, operation="create_ticket", ticket_id=ticket.id,
        payload={"draft": draft_to_payload(draft)}, key_parts=(ticket.id, link.id),
    )
    queued = _queue_attachments(ctx, ticket.id, params.backend, link.id) if params.attachments else 0
    if ctx.created:
        # This email is the remote ticket's body; a reply that triggered the first push
        # still becomes a comment (mirror_followup), its attachments queued only once
        # because both use the same operation key.
        ctx.notes.setdefault(PUSHED_NOTE, []).append(params.backend)
    return {"pushed": True, "link_id": link.id, "outbox_id": item.id, "attachments": queued}


# How an internal note names the automatic mail it carries.
_AUTOMATED_KIND = {"auto_reply": "Automatic reply", "bounce": "Delivery failure (bounce)"}


def mirror_followup(ctx: ActionContext) -> list[str]:
    """Queue this email as a comment on every remote twin of its ticket; instance names.

    Called by the pipeline after workflows ran. The email that opened or pushed the ticket
    is already in the remote create, so it is skipped.
    """
    mail = ctx.mail("mirroring a follow-up")
    ticket_id = ctx.ticket.id if ctx.ticket is not None else mail.email_log.ticket_id
    if ticket_id is None or ctx.created or ctx.ignored:
        return []
    pushed = set(ctx.notes.get(PUSHED_NOTE, ()))
    queued: list[str] = []
    ticket = ctx.ticket if ctx.ticket is not None else ctx.session.get_one(Ticket, ticket_id)
    # A customer's reply reopens a resolved ticket: the reopen goes out before the comment.
    queue_ticket_update(ctx.session, ticket, status=ticket.status,
                        stamp=f"mail:{mail.email.message_id}")
    current: list[RemoteLink] = links.links_of(ctx.session, ticket_id)
    for link in current:
        if link.backend in pushed:
            continue
        if link.state == "broken":
            log.warning(
                "not mirroring %s to %s: link broken (%s)",
                mail.email.message_id, link.backend, link.broken_reason,
            )
            continue
        sender = mail.email.from_name or mail.email.from_address or "unknown sender"
        # Mail no person wrote (an out-of-office reply, a bounce) goes in as an internal
        # note: a public comment is the customer-facing conversation, which the vendor mails
        # to the requester (Zendesk's default triggers) or shows on its portal (Jira Service
        # Management), so the customer would get her own vacation notice or our bounce.
        automated = mail.classification.is_automated
        kind = _AUTOMATED_KIND.get(mail.classification.label, "automatic mail")
        said = f"{kind} from {sender}" if automated else f"{sender} wrote"
        enqueue_op(
            ctx.session, backend=link.backend, operation="create_comment", ticket_id=ticket_id,
            payload={
                "text": f"{said}:\n\n{mail.email.text.strip()}\n",
                "public": not automated,
                "author_email": mail.email.from_address or None,
                "email_log_id": mail.email_log.id,
            },
            key_parts=(mail.email.message_id, link.id),
        )
        _queue_attachments(ctx, ticket_id, link.backend, link.id)
        queued.append(link.backend)
    return queued


def _believed(link: RemoteLink) -> str:
    """The local status the remote twin is believed to be in."""
    if link.expected_status:
        return link.expected_status
    by_remote = {"open": "open", "pending": "pending", "resolved": "resolved",
                 "closed": "closed", "canceled": "closed"}
    return by_remote.get(link.last_status or "", "open")


def queue_ticket_update(
    session: Session, ticket: Ticket, *, status: str | None = None, priority: str | None = None,
    stamp: str | None = None,
) -> list[str]:
    """Queue a local status/priority change to every live remote twin; instance names.

    Called in the transaction that changes the ticket (API, CLI, a reopening reply). A
    status already sent, or already learned from the backend (sync.py keeps
    `expected_status`), queues nothing, so remote changes never echo back. `stamp` names
    the change, so the same change queued twice is one operation (a mail's Message-ID);
    without one, every call is a change of its own (two reopens within the same second of
    `updated_at` are still two).
    """
    if status is None and priority is None:
        return []
    when = stamp or uuid.uuid4().hex
    queued = []
    for link in links.links_of(session, ticket.id):
        if link.state == "broken":
            continue
        send_status = status if status is not None and status != _believed(link) else None
        if send_status is None and priority is None:
            continue
        if send_status is not None:
            link.expected_status = send_status
        if send_status in ("closed", "resolved") and priority is None:
            enqueue_op(
                session, backend=link.backend, operation="close_ticket", ticket_id=ticket.id,
                payload={"resolution": None, "local_status": send_status},
                key_parts=(ticket.id, link.id, send_status, when),
            )
        else:
            enqueue_op(
                session, backend=link.backend, operation="patch_ticket", ticket_id=ticket.id,
                payload={"patch": {"status": send_status, "priority": priority}},
                key_parts=(ticket.id, link.id, send_status, priority, when),
            )
        queued.append(link.backend)
    session.flush()
    return queued


def queue_comment(
    session: Session, ticket: Ticket, comment: Comment, *, text: str | None = None
) -> list[str]:
    """Queue an agent's comment (API) to every live remote twin; instance names.
    An internal note goes out as the vendor's internal/private note. `text`: what the
    remote gets instead of the body (a customer's comment says who wrote it, as a mirrored
    mail does: the integration's account posts it)."""
    queued = []
    for link in links.links_of(session, ticket.id):
        if link.state == "broken":
            continue
        enqueue_op(
            session, backend=link.backend, operation="create_comment", ticket_id=ticket.id,
            payload={
                "text": comment.body if text is None else text,
                "public": not comment.is_internal,
                "author_email": comment.author_email,
                "comment_id": comment.id,
            },
            key_parts=("comment", comment.id, link.id),
        )
        queued.append(link.backend)
    return queued
