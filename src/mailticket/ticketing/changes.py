"""An agent's change to a ticket (status, priority, assignee, tags), from the API or the
thread view: one code path, so the SLA clock and the external backends follow either way.
The caller commits."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy.orm import Session

from mailticket.backends.actions import queue_ticket_update
from mailticket.sla import service as sla_service
from mailticket.store.models import Ticket
from mailticket.ticketing.tickets import add_tags, set_status


@dataclass(frozen=True)
class TicketChange:
    """What to change; a field left out of `given` stays as it is."""

    status: str | None = None
    priority: str | None = None
    assigned_to_user_id: int | None = None
    tags: list[str] | None = None
    given: frozenset[str] = field(default_factory=frozenset)


def apply_change(
    session: Session, ticket: Ticket, change: TicketChange, *, now: datetime, source: str
) -> None:
    new_status = new_priority = None
    if "status" in change.given and change.status is not None and change.status != ticket.status:
        set_status(ticket, change.status, now)
        new_status = change.status
        ticket.resolved_at = now if change.status == "resolved" else None
    if "priority" in change.given and change.priority is not None:
        if change.priority != ticket.priority:
            new_priority = change.priority
        ticket.priority = change.priority
    if "assigned_to_user_id" in change.given:
        ticket.assigned_to_user_id = change.assigned_to_user_id
    if "tags" in change.given:
        ticket.tags = []
        add_tags(ticket, change.tags or [])
    ticket.updated_at = datetime.now(UTC)
    # The SLA clock follows (history row; a new priority may mean another policy).
    if new_status is not None:
        sla_service.record_status(session, ticket.id, new_status, now, source=source)
    if new_priority is not None:
        sla_service.mark_stale(session, [ticket.id])
    # Mirrored to external backends in the same transaction (the outbox delivers it).
    queue_ticket_update(session, ticket, status=new_status, priority=new_priority)
