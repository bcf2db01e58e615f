"""Run the workflows that match a message, each inside its own checkpoint.

A workflow is all-or-nothing: when a step fails, everything the workflow wrote is rolled
back, the remaining steps do not run, and an execution row saying why is kept (it is added
after the rollback, so it survives). One failing workflow never stops the message: the
pipeline still logs it, and later workflows still get their turn.

The checkpoint belongs to the message's unit of work (`ctx.work`): kept in memory when
every step is a `through_work` action, else backed by a SAVEPOINT. The engine never
commits; the pipeline does.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import OperationalError

from mailticket.store.batch import CheckpointLost
from mailticket.store.db import new_row
from mailticket.store.models import Ticket, WorkflowExecution
from mailticket.workflows.registry import ActionContext, ActionError, get_action
from mailticket.workflows.schema import Step, Workflow, WorkflowSet

log = logging.getLogger(__name__)

OK, FAILED, SKIPPED = "ok", "failed", "skipped"
NOT_RUN, ROLLED_BACK = "not_run", "rolled_back"


def run_workflows(
    ctx: ActionContext,
    workflows: WorkflowSet,
    *,
    customer: Callable[[], tuple[int, str] | None] | None = None,
) -> list[WorkflowExecution]:
    """Run every workflow triggered by the message's labels, in order; return their rows
    (added to the unit of work, ids assigned). `customer`: the message's customer (id,
    key), asked only when a triggered workflow is limited to customers."""
    assert ctx.classification is not None, "a mail-triggered run needs its classification"
    executions: list[WorkflowExecution] = []
    extra = tuple(label for label in ctx.labels if label != ctx.classification.label)
    for wf in workflows.triggered(ctx.classification, labels=extra, customer=customer):
        # A workflow that only the `spoofed?` label triggered is not about the classifier's
        # confidence.
        by_label = wf.triggered_by(ctx.classification.label)
        if by_label and wf.below_threshold(ctx.classification.confidence):
            execution = _skipped(ctx, wf)
        else:
            execution = _run(ctx, wf)
        ctx.work.add(execution)
        executions.append(execution)
        if execution.status == OK and wf.stop:
            break
    return executions


def run_event_workflows(
    ctx: ActionContext,
    workflows: WorkflowSet,
    *,
    customer: Callable[[], tuple[int, str] | None] | None = None,
) -> list[WorkflowExecution]:
    """Run every workflow whose event trigger matches `ctx.event`, in order, exactly as
    mail-triggered ones run (checkpoint per workflow, `stop`); rows added to the unit of
    work with the event as their trigger."""
    assert ctx.event is not None, "an event-triggered run needs its event"
    executions: list[WorkflowExecution] = []
    for wf in workflows.for_event(ctx.event, customer):
        execution = _run(ctx, wf)
        ctx.work.add(execution)
        executions.append(execution)
        if execution.status == OK and wf.stop:
            break
    return executions


def _through_work(steps: Sequence[Step]) -> bool:
    return all(get_action(step.action).through_work for step in steps)


@dataclass(frozen=True)
class _CtxState:
    """What actions may change on the context; put back when their writes are rolled back,
    so later workflows and the pipeline never see a ticket that no longer exists."""

    ticket: Ticket | None
    created: bool
    linked: bool
    ignored: bool
    notes: dict[str, Any]
    tickets: tuple[Ticket, ...]
    group: tuple[Ticket, ...]
    quarantine: str | None

    @classmethod
    def of(cls, ctx: ActionContext) -> _CtxState:
        return cls(
            ctx.ticket, ctx.created, ctx.linked, ctx.ignored, dict(ctx.notes),
            tuple(ctx.tickets), tuple(ctx.group), ctx.quarantine,
        )

    def restore(self, ctx: ActionContext) -> None:
        ctx.ticket, ctx.created, ctx.linked, ctx.ignored = (
            self.ticket,
            self.created,
            self.linked,
            self.ignored,
        )
        ctx.notes = dict(self.notes)
        ctx.tickets, ctx.group = list(self.tickets), list(self.group)
        ctx.quarantine = self.quarantine


def _run(ctx: ActionContext, wf: Workflow) -> WorkflowExecution:
    started = time.perf_counter()
    steps: list[dict[str, Any]] = []
    tolerated: list[str] = []
    before = _CtxState.of(ctx)
    # What this workflow opens or joins is its own group (a second workflow's create_ticket
    # opens a ticket of its own: multi-ticket threading).
    ctx.workflow, ctx.group = wf.name, []
    error: str | None = None
    failure: BaseException | None = None
    mark = ctx.work.checkpoint(durable=not _through_work(wf.steps))
    released = False
    try:
        for step in wf.steps:
            if step.continue_on_error:
                problem = _run_tolerated(ctx, wf, step, steps)
                if problem is not None:
                    tolerated.append(f"{step.action}: {problem}")
            else:
                _run_step(ctx, step, steps)
        # A SAVEPOINT-backed checkpoint writes here: constraint violations surface inside it.
        ctx.work.release(mark)
        released = True
    except (OperationalError, CheckpointLost):
        # The database itself is unusable, or the batch must be redone: not this
        # workflow's fault, and the message must not be acknowledged. The pipeline decides.
        raise
    except ActionError as exc:
        error, failure = _describe(exc), exc
        log.warning("workflow %r failed for %s: %s", wf.name, _subject(ctx), error)
    except Exception as exc:
        # The per-workflow boundary: a bug in one action must not take the message down.
        error, failure = _describe(exc), exc
        log.exception("workflow %r crashed for %s", wf.name, _subject(ctx))
    if not released:
        ctx.work.rollback_to(mark, failure)
        before.restore(ctx)
        _mark_after_failure(steps, wf)
    merged: dict[str, Any] = {}
    for entry in steps:
        if entry["status"] == OK:
            merged.update(entry["result"])
    return _execution(
        ctx,
        wf,
        status=OK if error is None else FAILED,
        steps=steps,
        result=merged if error is None else None,
        # An ok run still names the `on_error: continue` steps that failed.
        error=error if error is not None else "; ".join(tolerated) or None,
        started=started,
    )


def _run_step(ctx: ActionContext, step: Step, steps: list[dict[str, Any]]) -> None:
    started = time.perf_counter()
    try:
        result = _json_safe(get_action(step.action).func(ctx, step.params))
    except Exception as exc:
        steps.append(_step(step.action, FAILED, started, error=_describe(exc)))
        raise
    steps.append(_step(step.action, OK, started, result=result))


def _run_tolerated(
    ctx: ActionContext, wf: Workflow, step: Step, steps: list[dict[str, Any]]
) -> str | None:
    """An `on_error: continue` step: its own checkpoint, so its failure undoes only its own
    writes and the workflow goes on. Returns the failure, None when it succeeded."""
    before = _CtxState.of(ctx)
    mark = ctx.work.checkpoint(durable=not _through_work([step]))
    try:
        _run_step(ctx, step, steps)
        ctx.work.release(mark)
    except (OperationalError, CheckpointLost):
        raise
    except Exception as exc:
        # A step boundary the admin asked for; logged like a failed workflow.
        problem = _describe(exc)
        log.warning(
            "workflow %r: step %s failed for %s, continuing: %s",
            wf.name,
            step.action,
            _subject(ctx),
            problem,
            exc_info=not isinstance(exc, ActionError),
        )
        ctx.work.rollback_to(mark, exc)
        before.restore(ctx)
        if steps[-1]["status"] == OK:  # the action succeeded, its write did not
            steps[-1].update(status=FAILED, error=problem)
            steps[-1].pop("result", None)
        return problem
    return None


def _subject(ctx: ActionContext) -> str:
    """What a run was for, in log lines: the message's id, or the event and its ticket."""
    if ctx.email is not None:
        return ctx.email.message_id
    event = ctx.event
    return f"{event.trigger} of ticket {event.ticket_id}" if event is not None else "?"


def _skipped(ctx: ActionContext, wf: Workflow) -> WorkflowExecution:
    assert ctx.classification is not None
    reason = (
        f"confidence {ctx.classification.confidence:.3f} is below the workflow's "
        f"threshold {wf.confidence_threshold:.3f}"
    )
    return _execution(
        ctx,
        wf,
        status=SKIPPED,
        steps=[{"action": step.action, "status": NOT_RUN} for step in wf.steps],
        result={"skipped": True, "reason": reason},
        error=None,
        started=time.perf_counter(),
    )


def _mark_after_failure(steps: list[dict[str, Any]], wf: Workflow) -> None:
    for done in steps:
        if done["status"] == OK:
            done["status"] = ROLLED_BACK
    steps.extend({"action": step.action, "status": NOT_RUN} for step in wf.steps[len(steps) :])


def _step(
    action: str,
    status: str,
    started: float,
    *,
    result: dict[str, Any] | None = None,
    error: str | None = None,
) -> dict[str, Any]:
    entry: dict[str, Any] = {"action": action, "status": status}
    if result is not None:
        entry["result"] = result
    if error is not None:
        entry["error"] = error
    entry["duration_ms"] = round((time.perf_counter() - started) * 1000, 3)
    return entry


def _execution(
    ctx: ActionContext,
    wf: Workflow,
    *,
    status: str,
    steps: list[dict[str, Any]],
    result: dict[str, Any] | None,
    error: str | None,
    started: float,
) -> WorkflowExecution:
    duration = round((time.perf_counter() - started) * 1000, 3)
    if ctx.event is not None:
        return new_row(
            WorkflowExecution,
            workflow_name=wf.name,
            email_log_id=None,
            email_message_id=None,
            classification=None,
            confidence=None,
            status=status,
            steps=steps,
            result=result,
            error=error,
            duration_ms=duration,
            trigger=ctx.event.trigger,
            ticket_id=ctx.event.ticket_id,
        )
    assert ctx.email_log is not None and ctx.email is not None and ctx.classification
    return new_row(
        WorkflowExecution,
        workflow_name=wf.name,
        email_log_id=ctx.email_log.id,
        email_message_id=ctx.email.message_id,
        classification=ctx.classification.label,
        confidence=ctx.classification.confidence,
        status=status,
        steps=steps,
        result=result,
        error=error,
        duration_ms=duration,
    )


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return text if isinstance(exc, ActionError) and text else f"{type(exc).__name__}: {text}"


def _json_safe(result: Any) -> dict[str, Any]:
    """Action results go into a JSON column; a stray datetime or Decimal must not make the
    whole message fail when the row is flushed."""
    if not isinstance(result, dict):
        raise TypeError(f"action returned {type(result).__name__}, not a dict")
    copied = _plain_copy(result)
    if copied is not _NOT_PLAIN:
        return copied  # type: ignore[no-any-return]
    safe: dict[str, Any] = json.loads(json.dumps(result, default=str))
    return safe


_NOT_PLAIN = object()


def _plain_copy(value: Any, depth: int = 0) -> Any:
    """A copy of a value made only of JSON types (the usual case, no JSON round trip
    needed); _NOT_PLAIN when something else is inside."""
    if value is None or type(value) in (str, int, float, bool):
        return value
    if depth > 8:
        return _NOT_PLAIN
    if type(value) is dict:
        out = {}
        for key, item in value.items():
            copied = _plain_copy(item, depth + 1)
            if type(key) is not str or copied is _NOT_PLAIN:
                return _NOT_PLAIN
            out[key] = copied
        return out
    if type(value) is list:
        items = [_plain_copy(item, depth + 1) for item in value]
        return _NOT_PLAIN if any(i is _NOT_PLAIN for i in items) else items
    return _NOT_PLAIN
