"""ticket_idle: tickets the customer has left without an answer for a workflow's N days.

A ticket's quiet period starts at the latest of its creation, the customer's last message
(human mail in, on the ticket or linked to it) and its last status change: an agent who
answers and sets the ticket to `pending` starts the wait for the customer. Each quiet
period raises the event once per trigger (`occurrence` is its start): the customer's next
reply, or a status change, starts a new one.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select, union_all
from sqlalchemy.orm import Session

from mailticket.sla.models import TicketStatusChange
from mailticket.sla.service import Claim
from mailticket.store.models import EmailLog, EmailTicket, Ticket
from mailticket.types import AUTOMATED_LABELS, TICKET_IDLE
from mailticket.workflows.schema import EventTrigger, idle_target

_CHUNK = 500


def quiet_since(session: Session, ticket_ids: Sequence[int]) -> dict[int, datetime]:
    """When each ticket's current quiet period began."""
    out: dict[int, datetime] = {}
    for start in range(0, len(ticket_ids), _CHUNK):
        chunk = list(ticket_ids[start : start + _CHUNK])
        human = EmailLog.direction == "in", EmailLog.classification.not_in(AUTOMATED_LABELS)
        own = select(EmailLog.ticket_id.label("tid"), EmailLog.email_received_at.label("at")).where(
            *human, EmailLog.ticket_id.in_(chunk)
        )
        linked = (
            select(EmailTicket.ticket_id.label("tid"), EmailLog.email_received_at.label("at"))
            .join(EmailLog, EmailLog.id == EmailTicket.email_log_id)
            .where(*human, EmailTicket.ticket_id.in_(chunk))
        )
        changes = select(
            TicketStatusChange.ticket_id.label("tid"), TicketStatusChange.changed_at.label("at")
        ).where(TicketStatusChange.ticket_id.in_(chunk))
        created = select(Ticket.id.label("tid"), Ticket.created_at.label("at")).where(
            Ticket.id.in_(chunk)
        )
        moments = union_all(own, linked, changes, created).subquery()
        rows = session.execute(
            select(moments.c.tid, func.max(moments.c.at)).group_by(moments.c.tid)
        )
        for tid, at in rows:
            if at is not None:
                out[tid] = _aware(at)
    return out


def idle_claims(
    session: Session, triggers: Sequence[EventTrigger], now: datetime
) -> list[Claim]:
    """The ticket_idle events due now, one per ticket, trigger and quiet period (to be
    claimed: a period already raised is not raised again)."""
    if not triggers:
        return []
    shortest = min(t.days or 0 for t in triggers)
    statuses = sorted({s for t in triggers for s in t.statuses})
    # A ticket younger than the shortest period cannot be idle for any trigger.
    status_of: dict[int, str] = {
        tid: status
        for tid, status in session.execute(
            select(Ticket.id, Ticket.status).where(
                Ticket.status.in_(statuses),
                Ticket.merged_into_id.is_(None),
                Ticket.created_at <= now - timedelta(days=shortest),
            )
        )
    }
    ids = sorted(status_of)
    if not ids:
        return []
    since = quiet_since(session, ids)
    claims: list[Claim] = []
    for trigger in triggers:
        period = timedelta(days=trigger.days or 0)
        for tid in ids:
            began = since.get(tid)
            if began is None or status_of.get(tid) not in trigger.statuses:
                continue
            if began + period <= now:
                claims.append(Claim(
                    tid, TICKET_IDLE, idle_target(trigger.days or 0), began + period,
                    occurrence=began.astimezone(UTC).isoformat(timespec="seconds"),
                ))
    return claims


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
