"""Built-in workflow actions: create_ticket, link_email_to_ticket, add_tags, set_priority,
assign, ignore. Each is a thin, typed wrapper over the ticket services."""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator

from mailticket.reading.ticketnumbers import TICKET_NUMBER_RE, canonical_ticket_number
from mailticket.settings import Priority
from mailticket.store.models import Ticket
from mailticket.ticketing import tickets
from mailticket.workflows.registry import ActionContext, ActionError, ActionParams, NoParams, action


class CreateTicketParams(ActionParams):
    customer_id: int | None = None
    assigned_to_user_id: int | None = None
    priority: Priority | None = None


class LinkParams(ActionParams):
    ticket_number: str

    @field_validator("ticket_number")
    @classmethod
    def _format(cls, value: str) -> str:
        if not TICKET_NUMBER_RE.fullmatch(value.strip()):
            raise ValueError("must look like TKT-YYYYMMDD-XXX")
        return value.strip().upper()


class TagsParams(ActionParams):
    tags: list[str] = Field(min_length=1)


class PriorityParams(ActionParams):
    priority: Priority


class AssignParams(ActionParams):
    user_id: int


def _require_tickets_enabled(ctx: ActionContext) -> None:
    if not ctx.settings.ticket_enabled:
        raise ActionError("the ticket system is disabled (TICKET_ENABLED=false)")
    if not ctx.settings.ticket_email_integration:
        raise ActionError("email integration is disabled (TICKET_EMAIL_INTEGRATION=false)")


def _result(ticket: Ticket, **flags: bool) -> dict[str, Any]:
    return {"ticket_id": ticket.id, "ticket_number": ticket.ticket_number, **flags}


def _link(ctx: ActionContext, ticket: Ticket) -> None:
    tickets.link_email(ctx.work, ticket, ctx.email, ctx.email_log, ctx.classification)
    ctx.ticket, ctx.linked = ticket, True


@action("create_ticket", CreateTicketParams, through_work=True)
def create_ticket(ctx: ActionContext, params: CreateTicketParams) -> dict[str, Any]:
    """Thread the email into its ticket when it is a reply, else open a new ticket."""
    _require_tickets_enabled(ctx)
    if ctx.ticket is not None:
        return _result(ctx.ticket, created=ctx.created, linked=ctx.linked)
    if ctx.thread is not None:
        _link(ctx, ctx.work.ticket(ctx.thread.ticket_id))
        assert ctx.ticket is not None
        return _result(ctx.ticket, created=False, linked=True)
    ticket = tickets.create_ticket_from_email(
        ctx.work,
        ctx.settings,
        ctx.email,
        ctx.email_log,
        customer_id=params.customer_id,
        assigned_to_user_id=params.assigned_to_user_id,
        priority=params.priority,
        now=ctx.now,
    )
    ctx.ticket, ctx.created = ticket, True
    return _result(ticket, created=True, linked=False)


@action("link_email_to_ticket", LinkParams, through_work=True)
def link_email_to_ticket(ctx: ActionContext, params: LinkParams) -> dict[str, Any]:
    """Attach the email to the named ticket; an unknown number fails, it never opens one."""
    _require_tickets_enabled(ctx)
    number = canonical_ticket_number(params.ticket_number) or params.ticket_number
    ticket = tickets.ticket_by_number(ctx.work, number)
    if ticket is None:
        raise ActionError(f"ticket {number} does not exist")
    if ctx.ticket is not None and ctx.ticket.id != ticket.id:
        raise ActionError(
            f"email already belongs to {ctx.ticket.ticket_number}; refusing to also link {number}"
        )
    if ctx.ticket is None:
        _link(ctx, ticket)
    return _result(ticket, linked=True)


def _ticket_or_fail(ctx: ActionContext, what: str) -> Ticket:
    ticket = ctx.ticket
    if ticket is None and ctx.thread is not None:
        ticket = ctx.work.ticket(ctx.thread.ticket_id)
    if ticket is None:
        raise ActionError(f"{what} needs a ticket: put create_ticket or link_email_to_ticket first")
    return ticket


@action("add_tags", TagsParams, through_work=True)
def add_tags(ctx: ActionContext, params: TagsParams) -> dict[str, Any]:
    """Add tags to the email's ticket (lower-cased, at most 10 in all)."""
    ticket = _ticket_or_fail(ctx, "add_tags")
    return {"ticket_number": ticket.ticket_number, "tags": tickets.add_tags(ticket, params.tags)}


@action("set_priority", PriorityParams, through_work=True)
def set_priority(ctx: ActionContext, params: PriorityParams) -> dict[str, Any]:
    """Set the ticket's priority."""
    ticket = _ticket_or_fail(ctx, "set_priority")
    ticket.priority = params.priority.value
    return {"ticket_number": ticket.ticket_number, "priority": ticket.priority}


@action("assign", AssignParams, through_work=True)
def assign(ctx: ActionContext, params: AssignParams) -> dict[str, Any]:
    """Assign the ticket to a user."""
    ticket = _ticket_or_fail(ctx, "assign")
    ticket.assigned_to_user_id = params.user_id
    return {"ticket_number": ticket.ticket_number, "assigned_to_user_id": params.user_id}


@action("ignore", NoParams, through_work=True)
def ignore(ctx: ActionContext, params: NoParams) -> dict[str, Any]:
    """Log the email only: no ticket, no reply."""
    ctx.ignored = True
    return {"ignored": True}
