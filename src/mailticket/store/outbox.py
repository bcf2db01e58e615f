"""A durable outbox: side effects recorded in the database, performed later with retries.

A caller enqueues an item in the same transaction as the change that causes it (a ticket,
an auto-reply), so the side effect exists exactly when the change was committed. A worker
drains due items: it claims a batch in one short transaction (a lease, so a crashed worker's
items come back), performs each item outside any transaction, then records each outcome in
its own short transaction. Transient failures back off exponentially; permanent ones, or
too many attempts, park the item as "dead" until an operator requeues it.

The functions taking a Session never commit; `drain` is a boundary and commits.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from mailticket.store.outbox_models import OutboxItem, utcnow

log = logging.getLogger(__name__)

# unable: the target cannot perform the item at all (not retried, never "done").
STATUSES = ("pending", "in_flight", "done", "dead", "unable")
_MAX_ERROR_CHARS = 4000
# A drain stops after this many full batches so one call cannot run unbounded.
_MAX_BATCHES_PER_DRAIN = 100

__all__ = [
    "STATUSES",
    "Deferred",
    "DeliveryError",
    "DrainReport",
    "Handler",
    "OutboxError",
    "OutboxItem",
    "PermanentError",
    "RetryPolicy",
    "TransientError",
    "Unperformable",
    "claim",
    "drain",
    "enqueue",
    "list_items",
    "mark_done",
    "mark_failed",
    "requeue",
]


class OutboxError(Exception):
    """An outbox operation was asked for something impossible (unknown id, wrong state)."""


class DeliveryError(Exception):
    """Raised by a handler: the item could not be performed."""


class TransientError(DeliveryError):
    """Worth retrying later (server down, timeout, 4xx). retry_after: seconds, if known."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentError(DeliveryError):
    """Retrying cannot help (5xx, rejected recipient, invalid payload)."""


class Deferred(TransientError):
    """Not attempted: the item waits for something else (an earlier item on the same
    target object). It uses up no attempt, so waiting never dead-letters it."""


class Unperformable(PermanentError):
    """The target cannot perform this item at all (a status it cannot represent): parked
    as "unable", so it is neither retried nor reported as done."""


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 10
    base_delay: timedelta = timedelta(seconds=30)
    max_delay: timedelta = timedelta(hours=1)
    factor: float = 2.0
    # Fraction of the delay randomly added, so many failed items do not retry in lockstep.
    jitter: float = 0.0

    def delay(self, attempt: int) -> timedelta:
        """Wait after the `attempt`-th failed attempt (1-based)."""
        exponent = max(attempt, 1) - 1
        seconds = self.base_delay.total_seconds() * self.factor**exponent
        seconds = min(seconds, self.max_delay.total_seconds())
        if self.jitter > 0:
            seconds += seconds * random.uniform(0, self.jitter)  # not security-relevant
            seconds = min(seconds, self.max_delay.total_seconds())
        return timedelta(seconds=seconds)


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


Handler = Callable[[OutboxItem], Awaitable[dict[str, Any] | None]]


def _dialect(session: Session) -> str:
    return session.get_bind().dialect.name


def enqueue(
    session: Session,
    *,
    kind: str,
    target: str,
    operation: str,
    payload: dict[str, Any],
    idempotency_key: str,
    ticket_id: int | None = None,
    not_before: datetime | None = None,
) -> OutboxItem:
    """Record an item; an item with the same key is returned unchanged (no second row)."""
    if not idempotency_key:
        raise OutboxError("an outbox item needs a non-empty idempotency key")
    values: dict[str, Any] = {
        "kind": kind,
        "target": target,
        "operation": operation,
        "payload": payload,
        "idempotency_key": idempotency_key,
        "ticket_id": ticket_id,
        "status": "pending",
        "attempts": 0,
        "next_attempt_at": not_before or utcnow(),
    }
    # ON CONFLICT DO NOTHING instead of check-then-insert: two transactions enqueuing the
    # same key concurrently both end up with the one row, and neither aborts.
    stmt: Any
    if _dialect(session) == "postgresql":
        stmt = (
            postgresql.insert(OutboxItem)
            .values(values)
            .on_conflict_do_nothing(index_elements=["idempotency_key"])
        )
    else:
        stmt = (
            sqlite.insert(OutboxItem)
            .values(values)
            .on_conflict_do_nothing(index_elements=["idempotency_key"])
        )
    # RETURNING yields the row only when it was inserted; a conflict needs the lookup.
    inserted: OutboxItem | None = session.scalars(
        stmt.returning(OutboxItem), execution_options={"populate_existing": True}
    ).one_or_none()
    if inserted is not None:
        return inserted
    return session.scalars(
        select(OutboxItem).where(OutboxItem.idempotency_key == idempotency_key)
    ).one()


def claim(
    session: Session,
    *,
    kind: str,
    target: str | None = None,
    limit: int = 50,
    now: datetime | None = None,
    lease: timedelta = timedelta(minutes=5),
) -> list[OutboxItem]:
    """Take due items for this worker: pending ones whose time came, and expired leases."""
    now = now or utcnow()
    due = (
        select(OutboxItem.id)
        .where(
            OutboxItem.kind == kind,
            OutboxItem.status.in_(("pending", "in_flight")),
            OutboxItem.next_attempt_at <= now,
        )
        .order_by(OutboxItem.next_attempt_at, OutboxItem.id)
        .limit(limit)
    )
    if target is not None:
        due = due.where(OutboxItem.target == target)
    if _dialect(session) == "postgresql":
        due = due.with_for_update(skip_locked=True)
    ids = list(session.scalars(due))
    claimed: list[int] = []
    for item_id in ids:
        # Guarded per row: on SQLite there is no row locking, so a row another worker took
        # between our select and this update (its lease now in the future) is skipped.
        result = session.execute(
            update(OutboxItem)
            .where(
                OutboxItem.id == item_id,
                OutboxItem.status.in_(("pending", "in_flight")),
                OutboxItem.next_attempt_at <= now,
            )
            .values(
                status="in_flight",
                next_attempt_at=now + lease,
                attempts=OutboxItem.attempts + 1,
                updated_at=now,
            )
            .execution_options(synchronize_session=False)
        )
        if getattr(result, "rowcount", 0) == 1:
            claimed.append(item_id)
    if not claimed:
        return []
    items = session.scalars(
        select(OutboxItem)
        .where(OutboxItem.id.in_(claimed))
        .order_by(OutboxItem.next_attempt_at, OutboxItem.id)
        .execution_options(populate_existing=True)
    ).all()
    return list(items)


def mark_done(session: Session, item: OutboxItem, result: dict[str, Any] | None = None) -> None:
    now = utcnow()
    item.status = "done"
    item.result = result
    item.last_error = None
    item.done_at = now
    item.updated_at = now
    session.flush()


def mark_failed(
    session: Session,
    item: OutboxItem,
    exc: BaseException,
    policy: RetryPolicy,
    *,
    now: datetime | None = None,
) -> str:
    """Record a failed attempt; returns the new status ("pending" to retry, "dead", "unable")."""
    now = now or utcnow()
    message = f"{type(exc).__name__}: {exc}"[:_MAX_ERROR_CHARS]
    item.last_error = message
    item.updated_at = now
    if isinstance(exc, Deferred):
        item.attempts = max(item.attempts - 1, 0)  # claimed, but not tried
    if isinstance(exc, Unperformable):
        item.status = "unable"
    elif isinstance(exc, PermanentError) or item.attempts >= policy.max_attempts:
        item.status = "dead"
        if not isinstance(exc, PermanentError):
            item.last_error = f"gave up after {item.attempts} attempts; last: {message}"[
                :_MAX_ERROR_CHARS
            ]
    else:
        retry_after = exc.retry_after if isinstance(exc, TransientError) else None
        delay = (
            timedelta(seconds=retry_after)
            if retry_after is not None and retry_after >= 0
            else policy.delay(item.attempts)
        )
        item.status = "pending"
        item.next_attempt_at = now + delay
    session.flush()
    return item.status


def requeue(session: Session, item_id: int) -> OutboxItem:
    """Make a dead (or waiting) item due now with a fresh attempt budget."""
    item = session.get(OutboxItem, item_id)
    if item is None:
        raise OutboxError(f"no outbox item with id {item_id}")
    if item.status not in ("dead", "pending", "unable"):
        raise OutboxError(
            f"outbox item {item_id} is {item.status}; only dead, unable or pending items can"
            " be retried"
        )
    now = utcnow()
    item.status = "pending"
    item.attempts = 0
    item.next_attempt_at = now
    item.updated_at = now
    session.flush()
    return item


def list_items(
    session: Session,
    status: str | None = None,
    kind: str | None = None,
    limit: int = 100,
) -> list[OutboxItem]:
    if status is not None and status not in STATUSES:
        raise OutboxError(f"unknown status {status!r} (one of {', '.join(STATUSES)})")
    stmt = select(OutboxItem).order_by(OutboxItem.id.desc()).limit(limit)
    if status is not None:
        stmt = stmt.where(OutboxItem.status == status)
    if kind is not None:
        stmt = stmt.where(OutboxItem.kind == kind)
    return list(session.scalars(stmt))


def _claim_batch(
    session_factory: sessionmaker[Session], kind: str, target: str | None, batch: int
) -> list[OutboxItem]:
    with session_factory() as session, session.begin():
        items = claim(session, kind=kind, target=target, limit=batch)
        # Detached with their loaded state, so the handler can read them after the commit
        # whatever the factory's expire_on_commit says.
        session.expunge_all()
        return items


def _record(
    session_factory: sessionmaker[Session],
    item: OutboxItem,
    outcome: dict[str, Any] | None | BaseException,
    policy: RetryPolicy,
) -> str:
    with session_factory() as session, session.begin():
        row = session.get(OutboxItem, item.id, with_for_update=True)
        if row is None:
            raise OutboxError(f"outbox item {item.id} vanished while being delivered")
        if isinstance(outcome, BaseException):
            if row.status != "in_flight" or row.attempts != item.attempts:
                # Our lease expired and another worker took the item: its outcome counts.
                log.warning("outbox item %s was reclaimed by another worker", item.id)
                return "reclaimed"
            return mark_failed(session, row, outcome, policy)
        mark_done(session, row, outcome)
        return "done"


async def drain(
    session_factory: sessionmaker[Session],
    *,
    kind: str,
    handler: Handler,
    policy: RetryPolicy,
    target: str | None = None,
    batch: int = 50,
) -> DrainReport:
    """Perform every due item of `kind`; returns how many were done, retried, given up."""
    report = DrainReport()
    for _ in range(_MAX_BATCHES_PER_DRAIN):
        items = _claim_batch(session_factory, kind, target, batch)
        for item in items:
            outcome: dict[str, Any] | None | BaseException
            try:
                outcome = await handler(item)
            except DeliveryError as exc:
                log.info("outbox item %s (%s) failed: %s", item.id, item.operation, exc)
                outcome = exc
            except Exception as exc:  # per-item boundary: an unexpected bug is retried, not lost
                log.exception("outbox item %s (%s) raised unexpectedly", item.id, item.operation)
                outcome = exc
            status = _record(session_factory, item, outcome, policy)
            if status == "done":
                report += DrainReport(done=1)
            elif status == "pending":
                report += DrainReport(retried=1)
            elif status == "dead":
                report += DrainReport(dead=1)
            elif status == "unable":
                report += DrainReport(unable=1)
        if len(items) < batch:
            break
    return report
