"""Built-in workflow actions: create_ticket, link_email_to_ticket, add_tags, set_priority,
assign, ignore, quarantine. Each is a thin, typed wrapper over the ticket services.

Multi-ticket threading: a message can open or join several tickets. `create_ticket` with
`split_by: customer` opens one per customer among the message's addresses; a second
workflow's `create_ticket` opens a ticket of its own; a reply joins every ticket its
original belongs to. The tickets a workflow opened or joined are its group: add_tags,
set_priority and assign act on each of them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from mailticket.customers import lookup
from mailticket.customers.matcher import CustomerMatch
from mailticket.customers.schema import KEY_PATTERN
from mailticket.outbound.loop import own_addresses
from mailticket.reading.ticketnumbers import TICKET_NUMBER_RE, canonical_ticket_number
from mailticket.settings import Priority
from mailticket.sla import service as sla_service
from mailticket.store.models import Ticket
from mailticket.ticketing import tickets
from mailticket.types import OWN_MAIL
from mailticket.workflows.registry import (
    BOTH,
    MAIL,
    ActionContext,
    ActionError,
    ActionParams,
    Mail,
    NoParams,
    action,
)

MAIL_ONLY = frozenset({MAIL})


class CreateTicketParams(ActionParams):
    # The ticket's customer, by id or by key; wins over detection from the sender.
    customer_id: int | None = Field(default=None, ge=1)
    customer: str | None = Field(default=None, pattern=KEY_PATTERN)
    assigned_to_user_id: int | None = None
    priority: Priority | None = None
    # customer: one ticket per customer among From, To and Cc (at least one ticket).
    split_by: Literal["customer"] | None = None

    @model_validator(mode="after")
    def _one_customer_source(self) -> CreateTicketParams:
        if self.customer_id is not None and self.customer is not None:
            raise ValueError("name the customer once: customer_id or customer")
        if self.split_by is not None and (self.customer_id is not None or self.customer):
            raise ValueError("split_by: customer finds the customers itself; drop customer")
        return self


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


class QuarantineParams(ActionParams):
    reason: str = Field(default="held by a workflow", min_length=1, max_length=500)


def _require_tickets_enabled(ctx: ActionContext) -> None:
    if not ctx.settings.ticket_enabled:
        raise ActionError("the ticket system is disabled (TICKET_ENABLED=false)")
    if not ctx.settings.ticket_email_integration:
        raise ActionError("email integration is disabled (TICKET_EMAIL_INTEGRATION=false)")


def _result(ticket: Ticket, **flags: bool) -> dict[str, Any]:
    return {"ticket_id": ticket.id, "ticket_number": ticket.ticket_number, **flags}


def _group_result(ctx: ActionContext, **flags: bool) -> dict[str, Any]:
    assert ctx.group
    out = _result(ctx.group[0], **flags)
    if len(ctx.group) > 1:
        out["tickets"] = [t.ticket_number for t in ctx.group]
    return out


def _link(ctx: ActionContext, mail: Mail, ticket: Ticket) -> None:
    if all(t.id != ticket.id for t in ctx.tickets):
        tickets.link_email(
            ctx.work, ticket, mail.email, mail.email_log, mail.classification, now=ctx.now
        )
    ctx.attach(ticket)
    ctx.linked = True


def _open(ctx: ActionContext, mail: Mail, params: CreateTicketParams,
          customer: CustomerMatch | None, explicit: int | None) -> Ticket:
    ticket = tickets.create_ticket_from_email(
        ctx.work,
        ctx.settings,
        mail.email,
        mail.email_log,
        assigned_to_user_id=params.assigned_to_user_id,
        priority=params.priority,
        now=ctx.now,
    )
    stamp = ctx.now or datetime.now(UTC)
    if explicit is not None:
        lookup.assign_customer(
            ctx.work, ticket, explicit, matched_by="workflow", matched_value=ctx.workflow,
            email_log_id=mail.email_log.id, now=stamp,
        )
    elif customer is not None:
        lookup.assign_customer(
            ctx.work, ticket, customer.customer_id, matched_by=customer.matched_by,
            matched_value=customer.matched_value, email_log_id=mail.email_log.id, now=stamp,
        )
    ctx.attach(ticket)
    ctx.created = True
    return ticket


def _explicit_customer(ctx: ActionContext, params: CreateTicketParams) -> int | None:
    if params.customer_id is None and params.customer is None:
        return None
    ref = params.customer_id if params.customer_id is not None else params.customer
    assert ref is not None
    found = lookup.customer(ctx.work, ref)
    if found is None:
        raise ActionError(f"no customer {ref!r} (create_ticket's customer)")
    return found.id


def _split_customers(ctx: ActionContext, mail: Mail) -> list[CustomerMatch]:
    ours = own_addresses(ctx.settings)
    addresses = [
        a for a in dict.fromkeys([mail.email.from_address, *mail.email.to, *mail.email.cc])
        if a and a.lower() not in ours
    ]
    return lookup.involved(ctx.work, ctx.settings, addresses, trusted=not ctx.suspect)


@action("create_ticket", CreateTicketParams, through_work=True, on=MAIL_ONLY)
def create_ticket(ctx: ActionContext, params: CreateTicketParams) -> dict[str, Any]:
    """Thread the email into its ticket(s) when it is a reply, else open a new ticket (one
    per customer with `split_by: customer`); the customer is the workflow's, else the
    sender's (an exact contact, else its domain unless the sender failed validation).
    Our own mail (`own_mail`) never opens one."""
    _require_tickets_enabled(ctx)
    mail = ctx.mail("create_ticket")
    if ctx.group:  # this workflow opened or joined its tickets already
        return _group_result(ctx, created=ctx.created, linked=ctx.linked)
    if ctx.thread is not None:
        # A reply: it joins the ticket(s) its original belongs to, once, whichever
        # workflow asks first; later workflows work on the same tickets.
        for ticket_id in (ctx.thread.ticket_id, *ctx.joined):
            _link(ctx, mail, ctx.work.ticket(ticket_id))
        return _group_result(ctx, created=False, linked=True)
    if mail.classification.label == OWN_MAIL:
        # Our own mail (reading/ownmail.py) is logged, never a new ticket: an agent's copy
        # or our mail come back would otherwise open one with us as the requester.
        return {"created": False, "linked": False,
                "reason": "mail from one of our own addresses never opens a ticket"}
    explicit = _explicit_customer(ctx, params)
    if params.split_by == "customer":
        each: list[CustomerMatch | None] = [*_split_customers(ctx, mail)] or [None]
        for match in each:
            _open(ctx, mail, params, match, None)
        return _group_result(ctx, created=True, linked=False)
    sender = None
    if explicit is None:
        sender = lookup.detect(
            ctx.work, ctx.settings, [mail.email.from_address], trusted=not ctx.suspect
        )[0].match
    _open(ctx, mail, params, sender, explicit)
    return _group_result(ctx, created=True, linked=False)


@action("link_email_to_ticket", LinkParams, through_work=True, on=MAIL_ONLY)
def link_email_to_ticket(ctx: ActionContext, params: LinkParams) -> dict[str, Any]:
    """Attach the email to the named ticket (too, when it already belongs to another);
    an unknown number fails, it never opens one."""
    _require_tickets_enabled(ctx)
    mail = ctx.mail("link_email_to_ticket")
    number = canonical_ticket_number(params.ticket_number) or params.ticket_number
    ticket = tickets.ticket_by_number(ctx.work, number)
    if ticket is None:
        raise ActionError(f"ticket {number} does not exist")
    _link(ctx, mail, ticket)
    return _result(ticket, linked=True)


def _targets(ctx: ActionContext, what: str) -> list[Ticket]:
    """The tickets an action works on: the running workflow's group, else the message's
    (or event's) ticket, else the ticket threading found."""
    if ctx.group:
        return list(ctx.group)
    ticket = ctx.ticket
    if ticket is None and ctx.thread is not None:
        ticket = ctx.work.ticket(ctx.thread.ticket_id)
    if ticket is None:
        raise ActionError(f"{what} needs a ticket: put create_ticket or link_email_to_ticket first")
    return [ticket]


def _one(targets: list[Ticket], **values: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"ticket_number": targets[0].ticket_number, **values}
    if len(targets) > 1:
        out["tickets"] = [t.ticket_number for t in targets]
    return out


@action("add_tags", TagsParams, through_work=True, on=BOTH)
def add_tags(ctx: ActionContext, params: TagsParams) -> dict[str, Any]:
    """Add tags to the email's ticket (lower-cased, at most 10 in all)."""
    targets = _targets(ctx, "add_tags")
    tags: list[str] = []
    for ticket in targets:
        tags = tickets.add_tags(ticket, params.tags)
    return _one(targets, tags=tags)


@action("set_priority", PriorityParams, through_work=True, on=BOTH)
def set_priority(ctx: ActionContext, params: PriorityParams) -> dict[str, Any]:
    """Set the ticket's priority (its SLA policy may change with it)."""
    targets = _targets(ctx, "set_priority")
    for ticket in targets:
        ticket.priority = params.priority.value
    sla_service.touch(ctx.work, [t.id for t in targets])
    return _one(targets, priority=params.priority.value)


@action("assign", AssignParams, through_work=True, on=BOTH)
def assign(ctx: ActionContext, params: AssignParams) -> dict[str, Any]:
    """Assign the ticket to a user."""
    targets = _targets(ctx, "assign")
    for ticket in targets:
        ticket.assigned_to_user_id = params.user_id
    return _one(targets, assigned_to_user_id=params.user_id)


@action("ignore", NoParams, through_work=True, on=MAIL_ONLY)
def ignore(ctx: ActionContext, params: NoParams) -> dict[str, Any]:
    """Log the email only: no ticket, no reply."""
    ctx.ignored = True
    return {"ignored": True}


@action("quarantine", QuarantineParams, through_work=True, on=MAIL_ONLY)
def quarantine(ctx: ActionContext, params: QuarantineParams) -> dict[str, Any]:
    """Hold the message in quarantine with its raw bytes and this reason, instead of logging
    it (e.g. for `spoofed?` mail); `mailticket quarantine retry` runs it again."""
    ctx.mail("quarantine")
    ctx.quarantine = f"workflow {ctx.workflow!r}: {params.reason}" if ctx.workflow else params.reason
    return {"quarantined": True, "reason": params.reason}
