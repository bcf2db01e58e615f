"""The escalation actions: `notify` and `close`. Both serve event runs (an SLA threshold,
an idle ticket) and mail runs alike; `set_priority`, `assign` and `push_to_backend` are the
general actions, which work on the event's ticket the same way."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import Field, field_validator

from mailticket.backends.actions import queue_ticket_update
from mailticket.conversation.participants import requester_address
from mailticket.escalation import notices
from mailticket.outbound.loop import own_addresses
from mailticket.outbound.templates import TemplateRenderError
from mailticket.sla import service as sla_service
from mailticket.store.models import Ticket
from mailticket.ticketing import tickets
from mailticket.workflows.registry import ActionContext, ActionError, ActionParams, action

ASSIGNEE, REQUESTER = "assignee", "requester"
_TEMPLATE_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_-")


def _template_name(value: str) -> str:
    value = value.lower()
    if not value or not set(value) <= _TEMPLATE_CHARS:
        raise ValueError("must be a template name like sla_warning (a-z, 0-9, _ and -)")
    return value


class NotifyParams(ActionParams):
    # Addresses, and/or `assignee` (ASSIGNEE_ADDRESSES maps user ids to addresses) and
    # `requester` (who opened the ticket).
    to: list[str] = Field(min_length=1)
    template: str
    # The subject after the ticket tag; default: what happened ("SLA breached: first
    # response") and the ticket's subject.
    subject: str | None = Field(default=None, max_length=200)
    extra: dict[str, str | int | float | bool] = Field(default_factory=dict)

    @field_validator("to", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("to")
    @classmethod
    def _recipients(cls, value: list[str]) -> list[str]:
        out = []
        for item in value:
            text = item.strip().lower()
            if text not in (ASSIGNEE, REQUESTER) and ("@" not in text or " " in text):
                raise ValueError(f"{item!r}: an address, `assignee` or `requester`")
            out.append(text)
        return out

    @field_validator("template")
    @classmethod
    def _template(cls, value: str) -> str:
        return _template_name(value)

    def mail_templates(self) -> tuple[str, ...]:
        return (self.template,)


class CloseParams(ActionParams):
    status: Literal["closed", "resolved"] = "closed"
    # A mail to the requester saying why (e.g. closed_no_answer); none by default.
    template: str | None = None
    subject: str | None = Field(default=None, max_length=200)
    extra: dict[str, str | int | float | bool] = Field(default_factory=dict)

    @field_validator("template")
    @classmethod
    def _template(cls, value: str | None) -> str | None:
        return None if value is None else _template_name(value)

    def mail_templates(self) -> tuple[str, ...]:
        return () if self.template is None else (self.template,)


def _ticket(ctx: ActionContext, what: str) -> Ticket:
    if ctx.group:
        return ctx.group[0]
    if ctx.ticket is not None:
        return ctx.ticket
    if ctx.thread is not None:
        return ctx.work.ticket(ctx.thread.ticket_id)
    raise ActionError(f"{what} needs a ticket: put create_ticket before it")


def _what_happened(ctx: ActionContext) -> str:
    event = ctx.event
    if event is None:
        return "New mail"
    if event.kind == "ticket_idle":
        return f"No customer reply for {event.idle_days:g} days"
    target = event.target.replace("_", " ")
    return f"SLA {'warning' if event.kind == 'sla_warning' else 'breached'}: {target}"


def _key(ctx: ActionContext, *parts: object) -> str:
    """One mail per event (or message), workflow and recipient, however often it runs."""
    if ctx.event is not None:
        origin: tuple[object, ...] = (
            ctx.event.trigger, ctx.event.ticket_id, ctx.event.at.isoformat()
        )
    else:
        mail = ctx.mail("a notice")
        origin = (mail.email.message_id,)
    return notices.key_for(*origin, ctx.workflow, *parts)


def _resolve(ctx: ActionContext, ticket: Ticket, wanted: list[str]) -> tuple[list[str], list[str]]:
    found: list[str] = []
    missing: list[str] = []
    for item in wanted:
        if item == ASSIGNEE:
            user = ticket.assigned_to_user_id
            address = ctx.settings.assignee_addresses.get(user) if user is not None else None
            if address is None:
                missing.append(
                    "assignee: the ticket has none" if user is None
                    else f"assignee: no address for user {user} in ASSIGNEE_ADDRESSES"
                )
                continue
        elif item == REQUESTER:
            address = ticket.requester_email
            if not address:
                missing.append("requester: the ticket has none")
                continue
        else:
            address = item
        if address not in found:
            found.append(address)
    return found, missing


def _now(ctx: ActionContext) -> datetime:
    return ctx.now or datetime.now(UTC)


@action("notify", NotifyParams, through_work=True)
def notify(ctx: ActionContext, params: NotifyParams) -> dict[str, Any]:
    """Mail a template about the ticket to addresses or its assignee (through the outbox)."""
    ticket = _ticket(ctx, "notify")
    recipients, missing = _resolve(ctx, ticket, params.to)
    if not recipients:
        raise ActionError("notify has no recipient: " + "; ".join(missing))
    data = notices.context(ctx.work, ctx.settings, ticket, event=ctx.event, extra=params.extra)
    subject = params.subject or f"{_what_happened(ctx)}: {ticket.subject}"
    queued: list[str] = []
    for address in recipients:
        try:
            mail = notices.queue_notice(
                ctx.work, ctx.settings, ticket, to=[address], template=params.template,
                subject=subject, template_context=data,
                key=_key(ctx, "notify", params.template, address), now=_now(ctx),
                action=notices.NOTIFY_ACTION,
            )
        except TemplateRenderError as exc:
            raise ActionError(str(exc)) from exc
        if mail is not None:
            queued.append(mail.entry.email_message_id)
    out: dict[str, Any] = {"notified": recipients, "message_ids": queued}
    if missing:
        out["skipped"] = missing
    return out


@action("close", CloseParams)
def close(ctx: ActionContext, params: CloseParams) -> dict[str, Any]:
    """Close (or resolve) the ticket; with `template`, tell the requester why."""
    ticket = _ticket(ctx, "close")
    if ticket.status in ("closed", "resolved", "merged"):
        return {"ticket_number": ticket.ticket_number, "closed": False,
                "reason": f"already {ticket.status}"}
    now = _now(ctx)
    tickets.set_status(ticket, params.status, now)
    ticket.resolved_at = now
    ticket.updated_at = now
    sla_service.note_status(ctx.work, ticket.id, params.status, now, source="workflow")
    out: dict[str, Any] = {"ticket_number": ticket.ticket_number, "closed": True,
                           "status": params.status}
    if params.template is not None:
        out["mail"] = _tell_requester(ctx, ticket, params, now)
    if ctx.settings.backends_file is not None:
        # Remote twins follow (the outbox delivers it); this reads links, so the action is
        # not `through_work`: its checkpoint is a SAVEPOINT.
        queue_ticket_update(ctx.session, ticket, status=params.status)
    return out


def _tell_requester(
    ctx: ActionContext, ticket: Ticket, params: CloseParams, now: datetime
) -> dict[str, Any]:
    assert params.template is not None
    with ctx.work.quietly() as session:
        address = requester_address(session, ctx.settings, ticket) or ""
    if not address or address in own_addresses(ctx.settings):
        return {"sent": False, "reason": "no requester to tell"}
    data = notices.context(ctx.work, ctx.settings, ticket, event=ctx.event, extra=params.extra)
    try:
        mail = notices.queue_notice(
            ctx.work, ctx.settings, ticket, to=[address], template=params.template,
            subject=params.subject or ticket.subject, template_context=data,
            key=_key(ctx, "close", params.template, address), now=now,
            action=notices.CLOSE_NOTICE_ACTION,
            parent=notices.customer_parent(ctx.work, ticket),
        )
    except TemplateRenderError as exc:
        raise ActionError(str(exc)) from exc
    if mail is None:
        return {"sent": False, "reason": "already queued for this event"}
    return {"sent": True, "to": address, "outbox_id": mail.item.id}
