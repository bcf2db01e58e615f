"""The `send_auto_reply` workflow action."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pydantic import Field, field_validator

from mailticket.outbound.auto_reply import idempotency_key, queue_auto_reply
from mailticket.outbound.loop import arrival_time, should_auto_reply
from mailticket.outbound.templates import TemplateRenderError
from mailticket.workflows.registry import MAIL, ActionContext, ActionError, ActionParams, action

if TYPE_CHECKING:
    from mailticket.workflows.schema import WorkflowSet


class SendAutoReplyParams(ActionParams):
    template: str = "ticket_created"
    # Answer only mail that opened a ticket; replies into an existing ticket stay quiet.
    only_if_created: bool = True
    # Free values for the template, available there as `extra.<name>`.
    extra: dict[str, str | int | float | bool] = Field(default_factory=dict)

    @field_validator("template")
    @classmethod
    def _template_name(cls, value: str) -> str:
        if not value or not all(c.isascii() and (c.isalnum() or c in "_-") for c in value):
            raise ValueError("must be a template name like ticket_created (a-z, 0-9, _ and -)")
        return value.lower()

    def mail_templates(self) -> tuple[str, ...]:
        return (self.template,)


@action("send_auto_reply", SendAutoReplyParams, through_work=True, on=frozenset({MAIL}))
def send_auto_reply(ctx: ActionContext, params: SendAutoReplyParams) -> dict[str, Any]:
    """Queue a templated answer to the sender (loop-protected, rate-limited, sent once)."""
    mail = ctx.mail("send_auto_reply")
    if ctx.ticket is None:
        raise ActionError("no ticket to reply about: put create_ticket before send_auto_reply")
    if params.only_if_created and not ctx.created:
        return {"sent": False, "reason": "not a new ticket (only_if_created)"}
    now = ctx.now or datetime.now(UTC)
    ok, reason = should_auto_reply(
        ctx.work, ctx.settings, mail.email, mail.classification,
        now=ctx.clock_now or now,
        received_at=arrival_time(mail.email, mail.email_log.email_received_at),
    )
    if not ok:
        return {"sent": False, "reason": reason}
    try:
        queued = queue_auto_reply(
            ctx.work,
            ctx.settings,
            ctx.ticket,
            mail.email,
            template=params.template,
            now=now,
            extra=dict(params.extra),
        )
    except TemplateRenderError as exc:
        raise ActionError(str(exc)) from exc
    ctx.notes["auto_reply_queued"] = queued.message_id
    if queued.already_queued:
        return {
            "sent": False,
            "reason": "already queued for this message",
            "message_id": queued.message_id,
        }
    return {
        "sent": True,
        "queued": True,
        "message_id": queued.message_id,
        "outbox_id": queued.outbox_id,
    }


def auto_reply_keys(workflows: WorkflowSet, message_ids: Iterable[str]) -> list[str]:
    """The idempotency keys `send_auto_reply` may look up for these inbound messages: one
    per message and template the workflows name, so a batch asks for all of them at once
    (a message it answers is then never looked up on its own)."""
    templates = {
        step.params.template
        for workflow in workflows
        for step in workflow.steps
        if isinstance(step.params, SendAutoReplyParams)
    }
    return [idempotency_key(mid, template) for mid in message_ids for template in templates]
