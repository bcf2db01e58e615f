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
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, and_, or_, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session
from sqlalchemy.orm.util import identity_key

from mailticket import metrics
from mailticket.customers.models import Customer
from mailticket.sla.clock import SlaState, StatusSpan, compute
from mailticket.sla.config import SlaConfig
from mailticket.sla.models import SlaEvent, TicketSla, TicketStatusChange
from mailticket.store.batch import Batch
from mailticket.store.db import new_row
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
    at = _utc(at)
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


def record_first_response(session: Session, ticket_id: int, at: datetime) -> timedelta | None:
    """The first public agent reply; later ones change nothing. Returns the time from the
    ticket's creation to it when this call set it (for the metrics), else None."""
    at = _utc(at)
    table = cast(Table, TicketSla.__table__)
    # One statement, insert or update: the sweep may be inserting the ticket's first state
    # row at this moment (PostgreSQL then waits for it and updates; a plain INSERT would
    # fail on it, and the agent's reply with it).
    stmt = _insert(session, table).values(
        ticket_id=ticket_id, first_response_at=at, paused=False, computed_at=None
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=["ticket_id"],
        set_={"first_response_at": at, "computed_at": None},
        where=or_(table.c.first_response_at.is_(None), table.c.first_response_at > at),
    ).returning(table.c.ticket_id)
    session.flush()
    if session.execute(stmt).first() is None:
        return None  # an earlier one is stored
    loaded = session.identity_map.get(identity_key(TicketSla, ticket_id))
    if loaded is not None:
        session.expire(loaded)
    created = session.scalar(select(Ticket.created_at).where(Ticket.id == ticket_id))
    if created is None:
        return None
    elapsed = _aware(at) - _aware(created)
    metrics.observe_first_response(max(elapsed.total_seconds(), 0.0))
    return elapsed


# --- in a unit of work (the pipeline, event runs) -------------------------------------------

_TOUCHED = "sla.touched"


def note_status(work: Batch, ticket_id: int, status: str, at: datetime, *, source: str) -> None:
    """A status change made in a unit of work: its history row goes with the batch's rows
    (no query: the caller knows the status changed), and the ticket is recomputed on the
    next sweep (`mark_touched_stale`, which the batch's owner calls once it is written)."""
    at = _utc(at)
    work.add(new_row(
        TicketStatusChange, ticket_id=ticket_id, status=status, changed_at=at, source=source,
    ))
    touch(work, [ticket_id])


def touch(work: Batch, ticket_ids: Iterable[int]) -> None:
    """Tickets whose SLA inputs (status, priority, customer) the unit of work changed.
    Kept without undo: marking a ticket stale that did not change costs one recomputation."""
    work.memo.setdefault(_TOUCHED, set()).update(ticket_ids)


def mark_touched_stale(work: Batch) -> None:
    """After the unit of work is written: one UPDATE for every ticket it touched."""
    touched: set[int] = work.memo.pop(_TOUCHED, set())
    if touched:
        mark_stale(work.session, sorted(touched))


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


def save_state(
    session: Session,
    ticket_id: int,
    state: SlaState | None,
    now: datetime,
    *,
    row: TicketSla | None = None,
) -> TicketSla:
    """Store the state (`row`: the ticket's TicketSla when the caller loaded it already)."""
    if row is None:
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


@dataclass(frozen=True)
class Claim:
    ticket_id: int
    kind: str
    target: str
    at: datetime
    fired: bool = True
    occurrence: str = ""
    policy: str = ""

    @property
    def key(self) -> tuple[int, str, str, str]:
        return self.ticket_id, self.kind, self.target, self.occurrence


def claim_events(session: Session, claims: list[Claim]) -> set[tuple[int, str, str, str]]:
    """Insert the events that do not exist yet; returns the keys this call inserted. Safe
    against a concurrent claimer: the unique key decides, not a read before the write."""
    if not claims:
        return set()
    keys = ["ticket_id", "kind", "target", "occurrence"]
    table = cast(Table, SlaEvent.__table__)
    stmt = _insert(session, table).on_conflict_do_nothing(index_elements=keys)
    stmt = stmt.returning(table.c.ticket_id, table.c.kind, table.c.target, table.c.occurrence)
    # One cached statement, sent as multi-row batches by SQLAlchemy's insertmanyvalues.
    rows = session.execute(stmt, [
        {"ticket_id": c.ticket_id, "kind": c.kind, "target": c.target,
         "occurrence": c.occurrence, "at": _utc(c.at), "fired": c.fired}
        for c in claims
    ])
    inserted = {(tid, kind, target, occurrence) for tid, kind, target, occurrence in rows}
    return inserted


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
    """One claim; True when this call inserted it."""
    claim = Claim(ticket_id, kind, target, at, fired, occurrence)
    return claim.key in claim_events(session, [claim])


def plan_events(ticket_id: int, state: SlaState) -> list[Claim]:
    """Pure: the events `state` calls for, to be claimed.

    A breach seen before its warning records the warning unfired: a "will breach soon"
    after the fact only misleads. A breach of a target already completed (late) is
    recorded for the figures but not fired: there is nothing left to escalate.
    """
    out: list[Claim] = []
    for target in state.targets():
        name = target.target
        if target.state == "breached" and target.breached_at is not None:
            if target.warned_at is not None:
                out.append(Claim(ticket_id, SLA_WARNING, name, target.warned_at, False,
                                 policy=state.policy))
            out.append(Claim(ticket_id, SLA_BREACHED, name, target.breached_at,
                             target.completed_at is None, policy=state.policy))
        elif target.state == "warning" and target.warned_at is not None:
            out.append(Claim(ticket_id, SLA_WARNING, name, target.warned_at, policy=state.policy))
    return out


def raise_events(session: Session, claims: list[Claim]) -> tuple[list[FiredEvent], list[FiredEvent]]:
    """Claim the planned events: (newly fired for workflows, new breaches incl. unfired)."""
    new = claim_events(session, claims)
    fired: list[FiredEvent] = []
    breaches: list[FiredEvent] = []
    for claim in claims:
        if claim.key not in new:
            continue
        event = FiredEvent(claim.ticket_id, claim.kind, claim.target, claim.at, claim.policy)
        if claim.kind == SLA_BREACHED:
            breaches.append(event)
        if claim.fired:
            fired.append(event)
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
    raise their events. Returns what fired, for the workflow engine. A handful of
    statements per batch, whatever its size: the database round trip is the cost."""
    now = _utc(now)
    report = SweepReport()
    ids, rows = _due_tickets(session, now, limit)
    facts = _facts(session, ids)
    claims: list[Claim] = []
    new: list[TicketSla] = []
    for fact in facts:
        state = evaluate(config, fact, now)
        row = rows.get(fact.ticket_id)
        if row is None:  # a ticket never looked at: inserted below, all in one statement
            row = TicketSla(ticket_id=fact.ticket_id, paused=False)
            new.append(row)
        save_state(session, fact.ticket_id, state, now, row=row)
        report.evaluated += 1
        if state is not None:
            claims += plan_events(fact.ticket_id, state)
    session.flush()
    if new:
        # A row someone else inserted meanwhile (the first response) is kept: its writer
        # marked it stale, so the next sweep computes it with that answer.
        table = cast(Table, TicketSla.__table__)
        # RETURNING makes it SQLAlchemy's multi-row INSERT (insertmanyvalues) on both
        # databases, a few statements for a backlog of thousands, not a round trip each.
        stmt = _insert(session, table).on_conflict_do_nothing().returning(table.c.ticket_id)
        session.execute(stmt, [
            {column.key: getattr(row, column.key) for column in table.columns} for row in new
        ]).all()
    report.events, report.breaches = raise_events(session, claims)
    return report


def refresh_ticket(session: Session, config: SlaConfig, ticket_id: int, now: datetime) -> SlaState | None:
    """Recompute one ticket now (after a change the API shows at once); no events."""
    now = _utc(now)
    facts = _facts(session, [ticket_id])
    if not facts:
        return None
    state = evaluate(config, facts[0], now)
    save_state(session, ticket_id, state, now)
    session.flush()
    return state


# --- reading, for the API, the CLI and the thread view --------------------------------------


def states_of(session: Session, ticket_ids: Iterable[int]) -> dict[int, TicketSla]:
    """Stored SLA state by ticket id (tickets without a computed state are missing): the
    badge (`state`: on_track | warning | breached), due times, paused, the policy."""
    ids = sorted(set(ticket_ids))
    if not ids:
        return {}
    rows = session.scalars(select(TicketSla).where(TicketSla.ticket_id.in_(ids)))
    return {row.ticket_id: row for row in rows if row.policy is not None}


def state_clause(state: str) -> Any:
    """Tickets whose SLA badge is `state` (for `select(Ticket).where(...)`)."""
    return Ticket.id.in_(select(TicketSla.ticket_id).where(TicketSla.state == state))


def _due_tickets(
    session: Session, now: datetime, limit: int
) -> tuple[list[int], dict[int, TicketSla]]:
    """The tickets to recompute, and the stored states of those that have one, locked.

    The states are locked (PostgreSQL; SQLite's write gate already runs one writer at a
    time) before the facts are read: a change committed after that waits with its "mark
    stale" until this sweep has written, so the mark is never overwritten by a state
    computed from facts read before the change (a customer's reply to a pending ticket
    would leave it paused with nothing to check, for good). A state another transaction
    is writing now is left to the next sweep: that writer marks it stale."""
    due = session.execute(
        select(Ticket.id, TicketSla.ticket_id)
        .outerjoin(TicketSla, TicketSla.ticket_id == Ticket.id)
        .where(or_(
            TicketSla.ticket_id.is_(None),
            TicketSla.computed_at.is_(None),
            and_(TicketSla.next_check_at.is_not(None), TicketSla.next_check_at <= now),
        ))
        .order_by(Ticket.id)
        .limit(limit)
    ).all()
    stored = [tid for tid, state_of in due if state_of is not None]
    rows = {
        row.ticket_id: row
        for row in session.scalars(
            select(TicketSla)
            .where(TicketSla.ticket_id.in_(stored))
            .with_for_update(skip_locked=True)
            .execution_options(populate_existing=True)
        )
    } if stored else {}
    return [tid for tid, state_of in due if state_of is None or tid in rows], rows


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


def _insert(session: Session, table: Table) -> Any:
    """The dialect's INSERT, which has ON CONFLICT (the two supported databases)."""
    if session.get_bind().dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


def _aware(moment: datetime) -> datetime:
    """SQLite hands back naive datetimes for what was stored as UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)



def _utc(moment: datetime) -> datetime:
    """Stored as UTC: SQLite keeps a datetime's wall time and drops its offset."""
    if moment.tzinfo is None:
        raise ValueError("SLA times must be timezone-aware")
    return moment.astimezone(UTC)
