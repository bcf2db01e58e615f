"""SLA bookkeeping on SQLite and PostgreSQL: status history, stored state, the sweep and its
once-only events, with a clock the test sets."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select, text
from sqlalchemy.orm import Session, sessionmaker

from mailticket.backends.base import Normalized, RemoteRef, RemoteTicket
from mailticket.backends.models import RemoteLink
from mailticket.backends.sync import SyncReport, apply_remote
from mailticket.customers.models import Customer
from mailticket.sla import service
from mailticket.sla.config import SlaConfig
from mailticket.sla.models import SlaEvent, TicketSla, TicketStatusChange
from mailticket.sla.service import (
    claim_event,
    mark_stale,
    record_first_response,
    record_status,
    refresh_ticket,
    sweep,
    try_sweep_lock,
)
from mailticket.store.db import make_engine
from mailticket.store.models import Ticket
from tests.sla.helpers import H, M, load

MON_9 = datetime(2025, 12, 15, 9, 0, tzinfo=UTC)  # a Monday; the calendar below is UTC
SLA = """
calendars:
  office: {timezone: UTC, hours: {mon-fri: "09:00-17:00"}}
policies:
  - {name: Default, first_response: 4h, resolution: 16h, warning_at: 0.75}
  - {name: Critical, priority: critical, first_response: 1h}
  - {name: ACME, customer: acme, first_response: 2h}
"""
_numbers = itertools.count(1)


@pytest.fixture
def config(tmp_path: Path) -> SlaConfig:
    return load(tmp_path, SLA)


@pytest.fixture
def db(session_factory: sessionmaker[Session]) -> Iterator[Session]:
    with session_factory() as session:
        yield session


def new_ticket(
    session: Session, created: datetime = MON_9, priority: str = "normal", customer_id: int | None = None
) -> int:
    ticket = Ticket(
        ticket_number=f"TKT-20251215-{next(_numbers):03d}", subject="Printer on fire",
        status="open", priority=priority, customer_id=customer_id, created_at=created,
    )
    session.add(ticket)
    session.flush()
    return ticket.id


def utc(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def events(session: Session, ticket_id: int) -> list[tuple[str, str, datetime | None, bool]]:
    rows = session.scalars(
        select(SlaEvent).where(SlaEvent.ticket_id == ticket_id).order_by(SlaEvent.id)
    )
    return [(r.kind, r.target, utc(r.at), r.fired) for r in rows]


def test_warning_then_breach_each_once(db: Session, config: SlaConfig) -> None:
    tid = new_ticket(db)
    first = sweep(db, config, MON_9 + 10 * M)
    assert (first.evaluated, first.events) == (1, [])
    row = db.get(TicketSla, tid)
    assert row is not None
    assert (row.policy, row.state, row.calendar) == ("Default", "on_track", "office")
    assert utc(row.first_response_due_at) == MON_9 + 4 * H
    assert utc(row.resolution_due_at) == MON_9 + timedelta(days=1, hours=8)
    assert utc(row.next_check_at) == MON_9 + 3 * H  # the first response warning

    warned = sweep(db, config, MON_9 + 3 * H + 5 * M)
    assert [(e.kind, e.target, e.at, e.policy) for e in warned.events] == [
        ("sla_warning", "first_response", MON_9 + 3 * H, "Default")
    ]
    assert sweep(db, config, MON_9 + 3 * H + 30 * M).events == []

    breached = sweep(db, config, MON_9 + 4 * H)
    assert [(e.kind, e.target) for e in breached.events] == [("sla_breached", "first_response")]
    assert db.get(TicketSla, tid).state == "breached"  # type: ignore[union-attr]
    assert sweep(db, config, MON_9 + 5 * H).events == []
    # The resolution target (16h) warns at 12h of business time: Tuesday 13:00.
    tuesday = sweep(db, config, MON_9 + 30 * H)
    assert [(e.kind, e.target, e.at) for e in tuesday.events] == [
        ("sla_warning", "resolution", MON_9 + 28 * H)
    ]
    assert sweep(db, config, MON_9 + 31 * H).events == []
    assert events(db, tid) == [
        ("sla_warning", "first_response", MON_9 + 3 * H, True),
        ("sla_breached", "first_response", MON_9 + 4 * H, True),
        ("sla_warning", "resolution", MON_9 + 28 * H, True),
    ]


def test_a_breach_seen_first_suppresses_its_warning(db: Session, config: SlaConfig) -> None:
    tid = new_ticket(db)
    report = sweep(db, config, MON_9 + 6 * H)  # the scheduler was down all morning
    assert [(e.kind, e.target) for e in report.events] == [("sla_breached", "first_response")]
    assert events(db, tid) == [
        ("sla_warning", "first_response", MON_9 + 3 * H, False),
        ("sla_breached", "first_response", MON_9 + 4 * H, True),
    ]


def test_the_sweep_only_looks_at_tickets_due_for_a_look(db: Session, config: SlaConfig) -> None:
    for _ in range(3):
        new_ticket(db)
    assert sweep(db, config, MON_9).evaluated == 3
    assert sweep(db, config, MON_9 + M).evaluated == 0
    assert sweep(db, config, MON_9 + 3 * H).evaluated == 3


def test_pending_pauses_until_the_customer_replies(db: Session, config: SlaConfig) -> None:
    tid = new_ticket(db)
    sweep(db, config, MON_9 + 30 * M)
    record_first_response(db, tid, MON_9 + 45 * M)
    assert record_status(db, tid, "pending", MON_9 + H, source="api")
    assert not record_status(db, tid, "pending", MON_9 + 2 * H)  # unchanged: no row
    report = sweep(db, config, MON_9 + H + M)
    assert report.evaluated == 1
    row = db.get(TicketSla, tid)
    assert row is not None
    assert (row.paused, row.resolution_due_at, row.next_check_at) == (True, None, None)
    assert row.first_response_state == "on_track" and row.first_response_due_at is None
    # A week of waiting: nothing to look at, nothing raised.
    assert sweep(db, config, MON_9 + timedelta(days=7)).evaluated == 0
    # The customer replies on Tuesday 10:00: the clock resumes with 1h used.
    record_status(db, tid, "open", MON_9 + timedelta(days=1, hours=1), source="email")
    sweep(db, config, MON_9 + timedelta(days=1, hours=1))
    row = db.get(TicketSla, tid)
    assert row is not None and not row.paused
    assert utc(row.resolution_due_at) == MON_9 + timedelta(days=2, hours=8)  # 15h left
    assert events(db, tid) == []
    history = db.scalars(select(TicketStatusChange.status).where(TicketStatusChange.ticket_id == tid))
    assert list(history) == ["pending", "open"]


def test_first_response_keeps_the_earliest(db: Session, config: SlaConfig) -> None:
    tid = new_ticket(db)
    record_first_response(db, tid, MON_9 + 2 * H)
    record_first_response(db, tid, MON_9 + H)
    record_first_response(db, tid, MON_9 + 3 * H)
    assert utc(db.get(TicketSla, tid).first_response_at) == MON_9 + H  # type: ignore[union-attr]
    sweep(db, config, MON_9 + 5 * H)
    assert [(k, t) for k, t, _, _ in events(db, tid)] == []


def test_customer_and_priority_choose_the_policy(db: Session, config: SlaConfig) -> None:
    acme = Customer(key="acme", name="ACME", active=True, source="yaml")
    db.add(acme)
    db.flush()
    critical = new_ticket(db, priority="critical")
    theirs = new_ticket(db, customer_id=acme.id)
    sweep(db, config, MON_9)
    assert db.get(TicketSla, critical).policy == "Critical"  # type: ignore[union-attr]
    row = db.get(TicketSla, theirs)
    assert row is not None and row.policy == "ACME"
    assert utc(row.first_response_due_at) == MON_9 + 2 * H and row.resolution_due_at is None


def test_a_ticket_no_policy_covers_is_looked_at_once(db: Session, tmp_path: Path) -> None:
    config = load(tmp_path, "policies:\n  - {name: C, priority: critical, first_response: 1h}\n")
    tid = new_ticket(db)
    assert sweep(db, config, MON_9).evaluated == 1
    row = db.get(TicketSla, tid)
    assert row is not None and (row.policy, row.state, row.next_check_at) == (None, None, None)
    assert sweep(db, config, MON_9 + timedelta(days=30)).evaluated == 0


def test_late_completion_records_the_breach_without_firing(db: Session, config: SlaConfig) -> None:
    tid = new_ticket(db, priority="critical")
    record_status(db, tid, "resolved", MON_9 + 3 * H)
    report = sweep(db, config, MON_9 + 4 * H)
    assert report.events == []
    assert [(e.kind, e.target, e.at) for e in report.breaches] == [
        ("sla_breached", "first_response", MON_9 + H)
    ]
    assert events(db, tid) == [
        ("sla_warning", "first_response", MON_9 + 48 * M, False),  # the default 80 %
        ("sla_breached", "first_response", MON_9 + H, False),
    ]


def test_mark_stale_recomputes_after_a_change(db: Session, config: SlaConfig) -> None:
    tid = new_ticket(db)
    sweep(db, config, MON_9)
    db.get(Ticket, tid).priority = "critical"  # type: ignore[union-attr]
    mark_stale(db, [tid])
    sweep(db, config, MON_9 + M)
    assert db.get(TicketSla, tid).policy == "Critical"  # type: ignore[union-attr]
    mark_stale(db)
    assert sweep(db, config, MON_9 + 2 * M).evaluated == 1


def test_refresh_one_ticket_raises_nothing(db: Session, config: SlaConfig) -> None:
    tid = new_ticket(db)
    state = refresh_ticket(db, config, tid, MON_9 + 5 * H)
    assert state is not None and state.state == "breached"
    assert db.get(TicketSla, tid).state == "breached"  # type: ignore[union-attr]
    assert events(db, tid) == []
    assert refresh_ticket(db, config, 999_999, MON_9) is None


def test_claim_is_once_across_transactions(session_factory: sessionmaker[Session]) -> None:
    with session_factory() as session, session.begin():
        tid = new_ticket(session)
    for expected in (True, False):
        with session_factory() as session, session.begin():
            assert claim_event(session, tid, "sla_breached", "resolution", MON_9) is expected
    with session_factory() as session, session.begin():
        # Another target, and a ticket_idle per quiet period, are separate events.
        assert claim_event(session, tid, "sla_breached", "first_response", MON_9)
        assert claim_event(session, tid, "ticket_idle", "", MON_9, occurrence="2025-12-15T09:00")
        assert claim_event(session, tid, "ticket_idle", "", MON_9, occurrence="2025-12-22T09:00")
        assert not claim_event(session, tid, "ticket_idle", "", MON_9, occurrence="2025-12-22T09:00")


def test_one_sweeper_per_cluster(pg_url: str) -> None:
    engine: Engine = make_engine(pg_url)
    try:
        with Session(engine) as first, Session(engine) as second:
            with first.begin():
                assert try_sweep_lock(first)
                with second.begin():
                    assert not try_sweep_lock(second)
            # The lock ends with the first transaction.
            with second.begin():
                assert try_sweep_lock(second)
    finally:
        engine.dispose()


def test_sqlite_needs_no_lock(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'x.db'}")
    with Session(engine) as session:
        assert try_sweep_lock(session)
    engine.dispose()


@pytest.mark.parametrize(("remote", "paused"), [("resolved", False), ("pending", True)])
def test_a_status_the_backend_sets_moves_the_clock(
    db: Session, config: SlaConfig, remote: str, paused: bool
) -> None:
    """An agent who resolves the ticket in Jira (or sets it waiting for the customer) stops
    (pauses) its SLA clock here, as the same change made through the API does: no breach
    is raised at the time the ticket would have been due."""
    tid = new_ticket(db)
    db.add(RemoteLink(ticket_id=tid, backend="jira", remote_id="SUP-1", state="linked"))
    db.flush()
    link = db.scalars(select(RemoteLink).where(RemoteLink.ticket_id == tid)).one()
    ticket = RemoteTicket(RemoteRef("jira", "SUP-1"), remote, Normalized(remote))
    apply_remote(db, link, ticket, SyncReport(), now=MON_9 + H)
    assert db.get_one(Ticket, tid).status == remote
    history = db.scalars(
        select(TicketStatusChange.status).where(TicketStatusChange.ticket_id == tid)
    )
    assert list(history) == [remote]

    report = sweep(db, config, MON_9 + timedelta(days=3))
    assert report.events == [] and report.breaches == []
    row = db.get_one(TicketSla, tid)
    assert row.paused is paused
    assert (row.first_response_due_at, row.resolution_due_at, row.next_check_at) == (
        None, None, None
    )


class _SecondWriter:
    """Another transaction, in a thread: `write` in a session of its own. What it raised is
    kept for the main thread to report."""

    def __init__(self, factory: sessionmaker[Session], write: Callable[[Session], object]) -> None:
        self.done = threading.Event()
        self.outcome: list[Exception | None] = []
        self._thread = threading.Thread(target=self._run, args=(factory, write))
        self._restore: Callable[[], None] = lambda: None

    def _run(self, factory: sessionmaker[Session], write: Callable[[Session], object]) -> None:
        try:
            with factory() as s, s.begin():
                write(s)
            self.outcome.append(None)
        except Exception as exc:  # noqa: BLE001 - the main thread reports it
            self.outcome.append(exc)
        self.done.set()

    def start_and_wait(self, engine: Engine) -> None:
        """Start it, then wait until it committed or waits for a lock this thread holds."""
        self._thread.start()
        for _ in range(3000):
            if self.done.wait(0.01) or _waiting_for_a_lock(engine):
                break

    def during_evaluate(self, monkeypatch: pytest.MonkeyPatch, engine: Engine) -> None:
        """Run it while the next sweep computes (its first `service.evaluate`); `finished`
        puts the real `evaluate` back."""
        real_evaluate = service.evaluate
        self._restore = lambda: monkeypatch.setattr(service, "evaluate", real_evaluate)

        def evaluate_meanwhile(*args: Any, **kwargs: Any) -> Any:
            if not self._thread.is_alive() and not self.done.is_set():
                self.start_and_wait(engine)
            return real_evaluate(*args, **kwargs)

        monkeypatch.setattr(service, "evaluate", evaluate_meanwhile)

    def finished(self) -> None:
        self._thread.join()
        self._restore()
        assert self.outcome == [None]


def test_a_change_made_while_the_sweep_computes_is_not_lost(
    pg_url: str, config: SlaConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The customer replies to a pending ticket while a sweep is computing it (from the
    facts it read before the reply was committed). The sweep must not store its paused
    state over the reply's "recompute me": the clock runs again and the next sweep sees
    it. Before, the reply committed, the sweep wrote paused / nothing to check, and the
    ticket's SLA never ticked again."""
    engine: Engine = make_engine(pg_url)
    factory = sessionmaker(engine)
    try:
        with factory() as s, s.begin():
            tid = new_ticket(s)
            record_status(s, tid, "pending", MON_9 + H, source="api")
            sweep(s, config, MON_9 + H)
            mark_stale(s, [tid])  # e.g. its priority changed: due for a look
        reply = _SecondWriter(
            factory, lambda s: record_status(s, tid, "open", MON_9 + 2 * H, source="email")
        )
        reply.during_evaluate(monkeypatch, engine)
        with factory() as s, s.begin():
            assert sweep(s, config, MON_9 + 2 * H).evaluated == 1
        reply.finished()

        with factory() as s, s.begin():
            assert sweep(s, config, MON_9 + 2 * H + M).evaluated == 1
            row = s.get_one(TicketSla, tid)
            assert not row.paused
            assert utc(row.first_response_due_at) == MON_9 + 5 * H  # 1h used, 3h left
    finally:
        engine.dispose()


def test_a_first_response_during_the_tickets_first_sweep(pg_url: str, config: SlaConfig) -> None:
    """An agent (or a bot through the API) answers a new ticket while the sweep is giving
    it its first SLA state: both write the ticket's one row. The answer must wait for the
    sweep and then be stored, not fail on the row the sweep inserted (the API's 500, the
    reply not sent)."""
    engine: Engine = make_engine(pg_url)
    factory = sessionmaker(engine)
    try:
        with factory() as s, s.begin():
            tid = new_ticket(s)
        answer = _SecondWriter(factory, lambda s: record_first_response(s, tid, MON_9 + 10 * M))
        with factory() as s, s.begin():
            assert sweep(s, config, MON_9 + 10 * M).evaluated == 1  # inserts its state row
            answer.start_and_wait(engine)
        answer.finished()
        with factory() as s, s.begin():
            assert sweep(s, config, MON_9 + 11 * M).evaluated == 1
            row = s.get_one(TicketSla, tid)
            assert utc(row.first_response_at) == MON_9 + 10 * M
            assert row.first_response_state == "on_track" and row.first_response_due_at is None
    finally:
        engine.dispose()


def _waiting_for_a_lock(engine: Engine) -> bool:
    with engine.connect() as conn:
        return bool(conn.scalar(text(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND wait_event_type = 'Lock'"
        )))


def test_a_first_response_stored_while_the_sweep_computes_a_new_ticket(
    pg_url: str, config: SlaConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The other order: the answer is stored while the sweep computes the ticket's first
    state. The sweep's round must not fail on the row the answer created (every event of
    the round put off), and the answer must count."""
    engine: Engine = make_engine(pg_url)
    factory = sessionmaker(engine)
    try:
        with factory() as s, s.begin():
            tid = new_ticket(s)
        answer = _SecondWriter(factory, lambda s: record_first_response(s, tid, MON_9 + 10 * M))
        answer.during_evaluate(monkeypatch, engine)
        with factory() as s, s.begin():
            assert sweep(s, config, MON_9 + 10 * M).evaluated == 1
        answer.finished()
        with factory() as s, s.begin():
            assert sweep(s, config, MON_9 + 11 * M).evaluated == 1
            row = s.get_one(TicketSla, tid)
            assert utc(row.first_response_at) == MON_9 + 10 * M
            assert row.first_response_state == "on_track" and row.first_response_due_at is None
    finally:
        engine.dispose()
