"""Draining the outbox: claim due items, perform them outside any transaction, record each
outcome, and hand back whatever was claimed but never attempted.

- Claims and records are short write transactions that take the database's write turn
  (store.gate: one gate per SQLite database, BEGIN IMMEDIATE) in a worker thread, so they
  neither fail against the mail sources writing at the same moment nor block the event loop.
- Outcomes of independent items (`ordered=False`, mail) are recorded in groups while the next
  items are performed (a group commit): one transaction per group, and an item's outcome is
  written as soon as the one before has landed. Items that depend on earlier ones' outcomes
  (the default) have each outcome written before the next item starts. A recording that fails ("database is locked", a dropped connection)
  is retried; it is never the reason an item is performed twice.
- `lanes` items are performed at once (an SMTP relay's connections); a handler that raises
  TargetDown opens the target's circuit breaker: the claimed items for it are deferred with
  their backoff without being tried, and no more are claimed for it.
- A drain that stops (cancelled at shutdown, or a database that stays away) hands back every
  item it claimed and did not start.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from mailticket.store.db import database_unavailable
from mailticket.store.gate import write_async
from mailticket.store.outbox.breaker import CircuitBreaker
from mailticket.store.outbox.queue import (
    LEASE,
    DeliveryError,
    OutboxError,
    RetryPolicy,
    TargetDown,
    claim,
    mark_done_many,
    mark_failed,
    release,
    still_ours,
)
from mailticket.store.outbox_models import OutboxItem

log = logging.getLogger(__name__)

T = TypeVar("T")
Handler = Callable[[OutboxItem], Awaitable[dict[str, Any] | None]]
Outcome = dict[str, Any] | None | BaseException

# A drain stops after this many full batches so one call cannot run unbounded.
MAX_BATCHES_PER_DRAIN = 100
# How long a claim or a recording keeps retrying a database that refuses it. Well inside the
# lease: an item whose outcome is written late is still ours, not sent again by another.
DB_PATIENCE = 60.0


@dataclass(frozen=True)
class DrainReport:
    done: int = 0
    retried: int = 0
    dead: int = 0
    unable: int = 0

    @property
    def total(self) -> int:
        return self.done + self.retried + self.dead + self.unable

    def __add__(self, other: DrainReport) -> DrainReport:
        return DrainReport(
            self.done + other.done, self.retried + other.retried, self.dead + other.dead,
            self.unable + other.unable,
        )


def _retryable(exc: DBAPIError) -> bool:
    # Lock contention and lost connections pass; a constraint violation would fail again.
    return isinstance(exc, OperationalError) or bool(exc.connection_invalidated)


async def _patiently(
    session_factory: sessionmaker[Session], what: str, work: Callable[[Session], T]
) -> T:
    deadline = time.monotonic() + DB_PATIENCE
    pause = 0.05
    while True:
        try:
            return await write_async(session_factory, work)
        except DBAPIError as exc:
            if not _retryable(exc) or time.monotonic() + pause > deadline:
                raise
            log.warning("outbox %s failed, retrying in %.2fs: %s", what, pause, exc.orig)
            await asyncio.sleep(pause)
            pause = min(pause * 2, 2.0)


def _record_group(
    session: Session, group: Sequence[tuple[OutboxItem, Outcome]], policy: RetryPolicy
) -> list[str]:
    # Most of a group is performed items: nothing to decide but the status, so their rows
    # are locked without being loaded (message and all) into the session and written with
    # one UPDATE (mark_done_many); that ORM load and flush was most of a recording's CPU.
    # A failed item's row is loaded: mark_failed decides on its state.
    ids = [item.id for item, _ in group]
    found = set(
        session.scalars(select(OutboxItem.id).where(OutboxItem.id.in_(ids)).with_for_update())
    )
    for item_id in ids:
        if item_id not in found:
            raise OutboxError(f"outbox item {item_id} vanished while being delivered")
    failed = [item.id for item, outcome in group if isinstance(outcome, BaseException)]
    rows = {}
    if failed:
        rows = {
            row.id: row
            for row in session.scalars(select(OutboxItem).where(OutboxItem.id.in_(failed)))
        }
    performed: list[tuple[int, dict[str, Any] | None]] = []
    statuses = []
    for item, outcome in group:
        if not isinstance(outcome, BaseException):
            performed.append((item.id, outcome))  # done, whoever holds the lease now
            statuses.append("done")
        elif not still_ours(rows[item.id], item):
            # Our lease expired and another worker took the item: its outcome counts.
            log.warning("outbox item %s was reclaimed by another worker", item.id)
            statuses.append("reclaimed")
        else:
            statuses.append(mark_failed(session, rows[item.id], outcome, policy))
    mark_done_many(session, performed)
    return statuses


class _Recorder:
    """Writes outcomes as they come, a group per transaction, one transaction at a time."""

    def __init__(self, session_factory: sessionmaker[Session], policy: RetryPolicy) -> None:
        self.session_factory = session_factory
        self.policy = policy
        self.report = DrainReport()
        self._waiting: list[tuple[OutboxItem, Outcome]] = []
        self._task: asyncio.Task[None] | None = None

    def add(self, item: OutboxItem, outcome: Outcome) -> None:
        self._waiting.append((item, outcome))
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        try:
            while self._waiting:
                group, self._waiting = self._waiting, []
                statuses = await _patiently(
                    self.session_factory, "recording",
                    functools.partial(_record_group, group=group, policy=self.policy),
                )
                for status in statuses:
                    self.report += DrainReport(
                        done=status == "done", retried=status == "pending",
                        dead=status == "dead", unable=status == "unable",
                    )
        finally:
            self._task = None

    async def flush(self) -> None:
        """Wait until everything added is written. Shielded: a drain cancelled meanwhile
        still records what it performed, or those items would be performed again."""
        while self._task is not None:
            await asyncio.shield(self._task)


async def drain(
    session_factory: sessionmaker[Session],
    *,
    kind: str,
    handler: Handler,
    policy: RetryPolicy,
    target: str | None = None,
    batch: int = 50,
    lanes: int = 1,
    ordered: bool = True,
    breaker: CircuitBreaker | None = None,
    lease: timedelta = LEASE,
) -> DrainReport:
    """Perform every due item of `kind`; returns how many were done, retried, given up.

    `lanes`: items performed at once. `ordered`: an item's outcome is written before the next
    item starts, for handlers that look at earlier items (backend operations on one ticket
    wait for the ones queued before them); independent items (mail) pass False and have
    their outcomes written in groups meanwhile. `breaker`: pass the worker's to remember a
    dead target across drains.
    """
    breaker = breaker or CircuitBreaker(policy)
    recorder = _Recorder(session_factory, policy)
    todo: deque[OutboxItem] = deque()

    async def lane() -> None:
        while todo:
            item = todo.popleft()
            if breaker.is_open(item.target):
                # Opened by another item during this drain: this one waits its backoff untried.
                error = breaker.error(item.target) or "target down"
                recorder.add(item, TargetDown(f"not tried, target down: {error}"))
                continue
            outcome = await _perform(handler, item)
            if isinstance(outcome, TargetDown):
                breaker.failed(item.target, str(outcome))
            elif not isinstance(outcome, Exception) or isinstance(outcome, DeliveryError):
                breaker.succeeded(item.target)  # it answered, even if only to refuse the item
            recorder.add(item, outcome)
            if ordered:
                await recorder.flush()

    try:
        for _ in range(MAX_BATCHES_PER_DRAIN):
            down = breaker.open_targets()
            items = await _patiently(
                session_factory, "claim",
                functools.partial(
                    _claim_detached, kind=kind, target=target, batch=batch, down=down, lease=lease
                ),
            )
            todo.extend(items)
            await asyncio.gather(*(lane() for _ in range(max(1, min(lanes, len(items))))))
            await recorder.flush()
            if len(items) < batch:
                break
    finally:
        untried = list(todo)
        todo.clear()
        try:
            await recorder.flush()
        finally:
            if untried:
                released = await _patiently(
                    session_factory, "hand-back", lambda s: release(s, untried)
                )
                log.info("outbox drain stopped; handed back %d untried items", released)
    return recorder.report


def _claim_detached(
    session: Session,
    kind: str,
    target: str | None,
    batch: int,
    down: set[str],
    lease: timedelta,
) -> list[OutboxItem]:
    items = claim(session, kind=kind, target=target, limit=batch, exclude_targets=down, lease=lease)
    # Detached with their loaded state, so the handler can read them after the commit
    # whatever the factory's expire_on_commit says.
    session.flush()
    session.expunge_all()
    return items


async def _perform(handler: Handler, item: OutboxItem) -> Outcome:
    try:
        return await handler(item)
    except DeliveryError as exc:
        log.info("outbox item %s (%s) failed: %s", item.id, item.operation, exc)
        return exc
    except Exception as exc:  # per-item boundary: an unexpected bug is retried, not lost
        if database_unavailable(exc):
            # Not the item's fault nor a bug: it waits its backoff like any failed attempt.
            log.warning(
                "outbox item %s (%s) not done, database unavailable: %s",
                item.id, item.operation, getattr(exc, "orig", None) or exc,
            )
            return exc
        log.exception("outbox item %s (%s) raised unexpectedly", item.id, item.operation)
        return exc
