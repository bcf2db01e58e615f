"""SLA bookkeeping in the database: status history, per-ticket state, once-only events,
and the sweep the scheduler runs. Every function takes the caller's session and never
commits.

Staleness: a ticket's stored state is recomputed when it is stale (computed_at NULL) or
when its next_check_at has come. record_status and record_first_response mark it stale
themselves; whoever changes a ticket's priority or customer calls mark_stale.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import Executable, and_, insert, or_, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from mailticket.customers.models import Customer
from mailticket.sla.clock import SlaState, StatusSpan, compute
from mailticket.sla.config import SlaConfig
from mailticket.sla.models import SlaEvent, TicketSla, TicketStatusChange
from mailticket.store.models import Ticket

SLA_WARNING = "sla_warning"
SLA_BREACHED = "sla_breached"
# pg_try_advisory_xact_lock key: one SLA sweep per cluster at a time ("SLA!" in ASCII).
SWEEP_LOCK_KEY = 0x534C4121


@dataclass(frozen=True)
class TicketFacts:
    ticket_id: int
    created_at: datetime
    priority: str | None
    customer_key: str | None
    history: tuple[StatusSpan, ...]
    first_response_at: datetime | None


@dataclass(frozen=True)
class FiredEvent:
    """An event for the workflows (kind sla_warning / sla_breached)."""

    ticket_id: int
    kind: str
    target: str
    at: datetime
    policy: str


@dataclass
class SweepReport:
    evaluated: int = 0
    events: list[FiredEvent] = field(default_factory=list)
    breaches: list[FiredEvent] = field(default_factory=list)  # also those not fired


# --- facts --------------------------------------------------------------------------------


def record_status(
    session: Session, ticket_id: int, status: str, at: datetime, *, source: str | None = None
) -> bool:
    """Append a status change (no-op when the status is unchanged); marks the SLA stale."""
    last = session.scalar(
        select(TicketStatusChange.status)
        .where(TicketStatusChange.ticket_id == ticket_id)
        .order_by(TicketStatusChange.changed_at.desc(), TicketStatusChange.id.desc())
        .limit(1)
    )
    if last == status or (last is None and status == "open"):
        # A ticket starts open at its creation; no row needed to say so.
        return False
    session.add(TicketStatusChange(ticket_id=ticket_id, status=status, changed_at=at, source=source))
    mark_stale(session, [ticket_id])
    return True


def record_first_response(session: Session, ticket_id: int, at: datetime) -> None:
    """The first public agent reply; later ones change nothing."""
    row = session.get(TicketSla, ticket_id)
    if row is None:
        session.add(TicketSla(ticket_id=ticket_id, first_response_at=at, paused=False))
    elif row.first_response_at is None or at < _aware(row.first_response_at):
        row.first_response_at, row.computed_at = at, None
    session.flush()


def mark_stale(session: Session, ticket_ids: Iterable[int] | None = None) -> None:
    """Recompute these tickets (None: all) on the next sweep."""
    stmt = update(TicketSla).values(computed_at=None)
    if ticket_ids is not None:
        stmt = stmt.where(TicketSla.ticket_id.in_(list(ticket_ids)))
    session.execute(stmt)


def load_histories(session: Session, ticket_ids: list[int]) -> dict[int, list[StatusSpan]]:
    out: dict[int, list[StatusSpan]] = {tid: [] for tid in ticket_ids}
    if not ticket_ids:
        return out
    rows = session.execute(
        select(TicketStatusChange.ticket_id, TicketStatusChange.status, TicketStatusChange.changed_at)
        .where(TicketStatusChange.ticket_id.in_(ticket_ids))
        .order_by(TicketStatusChange.ticket_id, TicketStatusChange.changed_at, TicketStatusChange.id)
    )
    for tid, status, changed_at in rows:
        out[tid].append(StatusSpan(status, _aware(changed_at)))
    return out


# --- evaluation ---------------------------------------------------------------------------


def evaluate(config: SlaConfig, facts: TicketFacts, now: datetime) -> SlaState | None:
    """Pure: the ticket's SLA state under `config`, or None when no policy applies."""
    policy = config.select_policy(facts.customer_key, facts.priority)
    if policy is None:
        return None
    return compute(
        policy,
        config.calendar_for(policy, facts.customer_key),
        created_at=facts.created_at,
        history=facts.history,
        first_response_at=facts.first_response_at,
        now=now,
    )


def save_state(session: Session, ticket_id: int, state: SlaState | None, now: datetime) -> TicketSla:
    row = session.get(TicketSla, ticket_id)
    if row is None:
        row = TicketSla(ticket_id=ticket_id, paused=False)
        session.add(row)
    first, res = (state.first_response, state.resolution) if state else (None, None)
    row.policy = state.policy if state else None
    row.calendar = state.calendar if state else None
    row.state = state.state if state else None
    row.paused = state.paused if state else False
    row.first_response_due_at = first.due_at if first else None
    row.first_response_state = first.state if first else None
    row.resolution_due_at = res.due_at if res else None
    row.resolution_state = res.state if res else None
    row.computed_at = now
    upcoming = [
        moment
        for target in (state.targets() if state else [])
        if target.completed_at is None and not target.paused
        for moment in (target.warning_at, target.due_at)
        if moment is not None and moment > now
    ]
    row.next_check_at = min(upcoming) if upcoming else None
    return row


def claim_event(
    session: Session,
    ticket_id: int,
    kind: str,
    target: str,
    at: datetime,
    *,
    occurrence: str = "",
    fired: bool = True,
) -> bool:
    """Insert the event unless it exists; True when this call inserted it. Safe against a
    concurrent claimer: the unique key decides, not a read before the write."""
    dialect = session.get_bind().dialect.name
    values = {
        "ticket_id": ticket_id, "kind": kind, "target": target, "occurrence": occurrence,
        "at": at, "fired": fired,
    }
    keys = ["ticket_id", "kind", "target", "occurrence"]
    stmt: Executable
    if dialect == "postgresql":
        stmt = postgresql.insert(SlaEvent).values(**values).on_conflict_do_nothing(index_elements=keys)
    elif dialect == "sqlite":
        stmt = sqlite.insert(SlaEvent).values(**values).on_conflict_do_nothing(index_elements=keys)
    else:  # pragma: no cover - the two supported databases are above
        stmt = insert(SlaEvent).values(**values)
    return bool(session.execute(stmt).rowcount)  # type: ignore[attr-defined]


def raise_events(session: Session, ticket_id: int, state: SlaState) -> tuple[list[FiredEvent], list[FiredEvent]]:
    """Claim the events `state` calls for: (fired for workflows, new breaches incl. unfired).

    A breach seen before its warning records the warning unfired: a "will breach soon"
    after the fact only misleads. A breach of a target already completed (late) is
    recorded for the figures but not fired: there is nothing left to escalate.
    """
    fired: list[FiredEvent] = []
    breaches: list[FiredEvent] = []
    for target in state.targets():
        name = target.target
        if target.state == "breached" and target.breached_at is not None:
            if target.warned_at is not None:
                claim_event(session, ticket_id, SLA_WARNING, name, target.warned_at, fired=False)
            live = target.completed_at is None
            if claim_event(session, ticket_id, SLA_BREACHED, name, target.breached_at, fired=live):
                event = FiredEvent(ticket_id, SLA_BREACHED, name, target.breached_at, state.policy)
                breaches.append(event)
                if live:
                    fired.append(event)
        elif target.state == "warning" and target.warned_at is not None:
            if claim_event(session, ticket_id, SLA_WARNING, name, target.warned_at):
                fired.append(FiredEvent(ticket_id, SLA_WARNING, name, target.warned_at, state.policy))
    return fired, breaches


# --- the sweep ------------------------------------------------------------------------------


def try_sweep_lock(session: Session) -> bool:
    """One sweeper per cluster: a PostgreSQL advisory lock held until the transaction ends.
    SQLite is one machine's file: its write lock already serialises sweepers."""
    if session.get_bind().dialect.name != "postgresql":
        return True
    return bool(session.scalar(text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": SWEEP_LOCK_KEY}))


def sweep(session: Session, config: SlaConfig, now: datetime, *, limit: int = 1000) -> SweepReport:
    """Recompute the tickets that need it (stale, never computed, or due for a look) and
    raise their events. Returns what fired, for the workflow engine."""
    report = SweepReport()
    for facts in _due_tickets(session, now, limit):
        state = evaluate(config, facts, now)
        save_state(session, facts.ticket_id, state, now)
        report.evaluated += 1
        if state is not None:
            fired, breaches = raise_events(session, facts.ticket_id, state)
            report.events += fired
            report.breaches += breaches
    session.flush()
    return report


def refresh_ticket(session: Session, config: SlaConfig, ticket_id: int, now: datetime) -> SlaState | None:
    """Recompute one ticket now (after a change the API shows at once); no events."""
    facts = _facts(session, [ticket_id])
    if not facts:
        return None
    state = evaluate(config, facts[0], now)
    save_state(session, ticket_id, state, now)
    session.flush()
    return state


def _due_tickets(session: Session, now: datetime, limit: int) -> list[TicketFacts]:
    ids = list(session.scalars(
        select(Ticket.id)
        .outerjoin(TicketSla, TicketSla.ticket_id == Ticket.id)
        .where(or_(
            TicketSla.ticket_id.is_(None),
            TicketSla.computed_at.is_(None),
            and_(TicketSla.next_check_at.is_not(None), TicketSla.next_check_at <= now),
        ))
        .order_by(Ticket.id)
        .limit(limit)
    ))
    return _facts(session, ids)


def _facts(session: Session, ids: list[int]) -> list[TicketFacts]:
    if not ids:
        return []
    histories = load_histories(session, ids)
    rows = session.execute(
        select(Ticket.id, Ticket.created_at, Ticket.priority, Customer.key, TicketSla.first_response_at)
        .outerjoin(Customer, Customer.id == Ticket.customer_id)
        .outerjoin(TicketSla, TicketSla.ticket_id == Ticket.id)
        .where(Ticket.id.in_(ids))
        .order_by(Ticket.id)
    )
    return [
        TicketFacts(
            ticket_id=tid,
            created_at=_aware(created),
            priority=priority,
            customer_key=key,
            history=tuple(histories[tid]),
            first_response_at=_aware(first) if first is not None else None,
        )
        for tid, created, priority, key, first in rows
    ]


def _aware(moment: datetime) -> datetime:
    """SQLite hands back naive datetimes for what was stored as UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)

