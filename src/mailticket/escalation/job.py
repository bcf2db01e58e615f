"""The sweep: SLA events and idle tickets, and the workflows they trigger, in one
transaction behind the cluster-wide lock (one runner per cluster: PostgreSQL's advisory
lock; on SQLite each round writes in its turn of the write gate, BEGIN IMMEDIATE).

`sweep_once` works in the caller's session; `run_sweep` is the boundary the worker's
interval job and `mailticket sla sweep` call: its own transactions, commits, a clock the
caller gives (tests move it; nothing here sleeps).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy.orm import Session, sessionmaker

from mailticket import metrics
from mailticket.escalation.idle import idle_claims
from mailticket.escalation.runner import run_events
from mailticket.settings import Settings
from mailticket.sla import service as sla_service
from mailticket.sla.config import SlaConfig
from mailticket.store.gate import engine_of, write_gate
from mailticket.types import TICKET_IDLE, TicketEvent
from mailticket.workflows.schema import WorkflowSet

log = logging.getLogger(__name__)

# Tickets recomputed per transaction; a backlog (a new SLA file marks every ticket stale)
# is worked off in rounds of this size, each committed on its own.
SWEEP_BATCH = 1000
MAX_ROUNDS = 50

Clock = Callable[[], datetime]


@dataclass
class SweepResult:
    locked: bool = True  # False: another node holds the sweep lock; nothing was done
    evaluated: int = 0
    events: list[TicketEvent] = field(default_factory=list)
    breaches: int = 0
    runs: list[tuple[str, str, str]] = field(default_factory=list)  # (workflow, trigger, status)

    def add(self, other: SweepResult) -> None:
        self.locked = self.locked and other.locked
        self.evaluated += other.evaluated
        self.events += other.events
        self.breaches += other.breaches
        self.runs += other.runs


def sweep_once(
    session: Session,
    settings: Settings,
    sla: SlaConfig | None,
    workflows: WorkflowSet,
    now: datetime,
    *,
    limit: int = SWEEP_BATCH,
    idle: bool = True,
) -> SweepResult:
    """One round in the caller's transaction (never commits)."""
    if not sla_service.try_sweep_lock(session):
        return SweepResult(locked=False)
    result = SweepResult()
    events: list[TicketEvent] = []
    if sla is not None:
        report = sla_service.sweep(session, sla, now, limit=limit)
        result.evaluated = report.evaluated
        for breach in report.breaches:
            metrics.count_sla_breach(breach.target, breach.policy)
        result.breaches = len(report.breaches)
        events += [
            TicketEvent(e.kind, e.ticket_id, e.target, e.at, policy=e.policy)
            for e in report.events
        ]
    triggers = workflows.idle_triggers() if idle else []
    if triggers:
        claims = idle_claims(session, triggers, now)
        new = sla_service.claim_events(session, claims)
        for claim in claims:
            if claim.key in new:
                events.append(TicketEvent(
                    TICKET_IDLE, claim.ticket_id, claim.target, claim.at,
                    idle_days=float(claim.target.removesuffix("d")),
                ))
    result.events = events
    executions = run_events(session, settings, workflows, events, now)
    result.runs = [(e.workflow_name, e.trigger or "", e.status) for e in executions]
    return result


def run_sweep(
    session_factory: sessionmaker[Session],
    settings: Settings,
    sla: SlaConfig | None,
    workflows: WorkflowSet,
    *,
    clock: Clock = lambda: datetime.now(UTC),
    limit: int = SWEEP_BATCH,
) -> SweepResult:
    """Sweep until the backlog is worked off (each round its own transaction, in its turn
    of the write gate, so mail keeps flowing between rounds)."""
    total = SweepResult()
    engine = engine_of(session_factory)
    for round_no in range(MAX_ROUNDS):
        with write_gate(engine), session_factory() as session:
            result = sweep_once(
                session, settings, sla, workflows, clock(), limit=limit, idle=round_no == 0
            )
            session.commit()
        total.add(result)
        if not result.locked or result.evaluated < limit:
            break
    if total.events or total.breaches:
        log.info(
            "sla sweep evaluated=%d events=%d breaches=%d runs=%d",
            total.evaluated, len(total.events), total.breaches, len(total.runs),
        )
    return total
