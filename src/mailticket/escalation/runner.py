"""Run the workflows of ticket events, through the same engine as mail.

Each event gets a context with its ticket and no email; each workflow runs in its own
checkpoint, and every run is a row of email_workflow_executions whose `trigger` names the
event. The unit of work is durable (every checkpoint a SAVEPOINT): events are few, and an
action that writes behind the batch's back (push_to_backend, close with backends) must be
undone exactly when its workflow fails.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from functools import partial

from sqlalchemy.orm import Session

from mailticket import metrics
from mailticket.customers import lookup as customers
from mailticket.settings import Settings
from mailticket.sla import service as sla_service
from mailticket.store.batch import Batch, open_batch
from mailticket.store.models import Ticket, WorkflowExecution
from mailticket.types import TicketEvent
from mailticket.workflows.engine import run_event_workflows
from mailticket.workflows.registry import ActionContext
from mailticket.workflows.schema import WorkflowSet

log = logging.getLogger(__name__)


def _customer(work: Batch, ticket: Ticket) -> tuple[int, str] | None:
    if ticket.customer_id is None:
        return None
    found = customers.customer(work, ticket.customer_id)
    return (found.id, found.key) if found is not None else None


def run_events(
    session: Session,
    settings: Settings,
    workflows: WorkflowSet,
    events: Sequence[TicketEvent],
    now: datetime,
) -> list[WorkflowExecution]:
    """Every event's workflows, in the caller's transaction (never commits)."""
    if not events or not workflows.has_events:
        return []
    executions: list[WorkflowExecution] = []
    work = open_batch(session, durable=True)
    try:
        for event in events:
            ticket = work.ticket(event.ticket_id)
            if ticket.merged_into_id is not None:
                continue  # its mail and clocks live on in the ticket it was merged into
            ctx = ActionContext(
                work=work, settings=settings, email=None, classification=None, thread=None,
                email_log=None, raw_message_id=None, now=now, clock_now=now, ticket=ticket,
                event=event,
                tickets=[ticket],
            )
            ran = run_event_workflows(ctx, workflows, customer=partial(_customer, work, ticket))
            for execution in ran:
                metrics.count_event_run(event.kind, execution.status)
                log.info(
                    "event workflow %r for %s of %s: %s", execution.workflow_name,
                    event.trigger, ticket.ticket_number, execution.status,
                )
            executions += ran
        work.finish()
        sla_service.mark_touched_stale(work)
    finally:
        work.close()
    return executions
