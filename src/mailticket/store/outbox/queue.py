"""The outbox's rows and their states: enqueue, claim (a lease), record an outcome, hand
back, requeue, list and prune. Every function takes the caller's session and never commits.

pending --claim--> in_flight --mark_done--> done (pruned after the retention)
                             --mark_failed--> pending (backoff) | dead (until requeued)
                                              | unable (the target cannot do it at all)
                             --release--> pending (never attempted: the attempt is given back)
"""

from __future__ import annotations

import logging
import random
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import JSON, bindparam, delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Session

from mailticket.store.outbox_models import OutboxItem, utcnow

log = logging.getLogger(__name__)

# unable: the target cannot perform the item at all (not retried, never "done").
STATUSES = ("pending", "in_flight", "done", "dead", "unable")
_MAX_ERROR_CHARS = 4000
LEASE = timedelta(minutes=5)


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


class TargetDown(TransientError):
    """The target itself failed, not the item (a relay refused the connection, stayed silent,
    answered 4xx to the greeting): every item for it waits, and the drain moves on."""


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
    message: bytes | None = None,
) -> OutboxItem:
    """Record an item; an item with the same key is returned unchanged (no second row)."""
    if not idempotency_key:
        raise OutboxError("an outbox item needs a non-empty idempotency key")
    values: dict[str, Any] = {
        "kind": kind,
        "target": target,
        "operation": operation,
        "payload": payload,
        "message": message,
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
    lease: timedelta = LEASE,
    exclude_targets: Collection[str] = (),
) -> list[OutboxItem]:
    """Take due items for this worker: pending ones whose time came, and expired leases.
    `exclude_targets`: targets known to be down right now (their items stay where they are)."""
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
    if exclude_targets:
        due = due.where(OutboxItem.target.not_in(list(exclude_targets)))
    if _dialect(session) == "postgresql":
        due = due.with_for_update(skip_locked=True)
    ids = list(session.scalars(due))
    if not ids:
        return []
    # Guarded: on SQLite there is no row locking, so a row another worker took between our
    # select and this update (its lease now in the future) is skipped.
    claimed = list(
        session.scalars(
            update(OutboxItem)
            .where(
                OutboxItem.id.in_(ids),
                OutboxItem.status.in_(("pending", "in_flight")),
                OutboxItem.next_attempt_at <= now,
            )
            .values(
                status="in_flight",
                next_attempt_at=now + lease,
                attempts=OutboxItem.attempts + 1,
                updated_at=now,
            )
            .returning(OutboxItem.id)
            .execution_options(synchronize_session=False)
        )
    )
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
    """Record one performed item: `mark_done_many` for it, so one statement writes "done"
    whoever records it. The row is expired, so reading it again shows what was written."""
    session.flush()  # the item's pending changes first: expiring it would drop them
    mark_done_many(session, [(item.id, result)])
    session.expire(item)


# A None result is SQL NULL, as the ORM writes it for the column (the column's own type would
# write a JSON null in an executemany).
_RESULT = JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")
_OUTBOX = OutboxItem.__table__.c
# Built once: the drain writes one per recording.
_MARK_DONE = (
    update(OutboxItem.__table__)  # type: ignore[arg-type]
    .where(_OUTBOX.id == bindparam("item_id"))
    .values(
        status="done", result=bindparam("result", type_=_RESULT), last_error=None,
        done_at=bindparam("now", type_=_OUTBOX.done_at.type),
        updated_at=bindparam("now", type_=_OUTBOX.updated_at.type),
    )
)


def mark_done_many(
    session: Session, performed: Sequence[tuple[int, dict[str, Any] | None]]
) -> None:
    """`mark_done` for many items at once, by id (result per item): one UPDATE sent as an
    executemany, at once, without loading the rows (the caller has them locked)."""
    if not performed:
        return
    now = utcnow()
    session.execute(
        _MARK_DONE,
        [{"item_id": item_id, "result": result, "now": now} for item_id, result in performed],
    )


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
    return item.status


def still_ours(row: OutboxItem, claimed: OutboxItem) -> bool:
    """The row is in the state our claim left it in: no other worker took it after our lease
    ran out (a reclaim raises `attempts`)."""
    return row.status == "in_flight" and row.attempts == claimed.attempts


def release(session: Session, items: Collection[OutboxItem], *, now: datetime | None = None) -> int:
    """Hand back claimed items that were never attempted: due again at once, and the claim's
    attempt does not count. Items another worker has reclaimed meanwhile are left alone."""
    now = now or utcnow()
    released = 0
    for item in items:
        result = session.execute(
            update(OutboxItem)
            .where(
                OutboxItem.id == item.id,
                OutboxItem.status == "in_flight",
                OutboxItem.attempts == item.attempts,
            )
            .values(
                status="pending", attempts=OutboxItem.attempts - 1, next_attempt_at=now,
                updated_at=now,
            )
            .execution_options(synchronize_session=False)
        )
        released += getattr(result, "rowcount", 0)
    return released


def prune(session: Session, *, before: datetime, limit: int = 10_000) -> int:
    """Delete up to `limit` items delivered before `before`; returns how many. Dead items stay
    for an operator to look at; pending ones are still to do."""
    ids = select(OutboxItem.id).where(
        OutboxItem.status == "done", OutboxItem.done_at < before
    ).limit(limit)
    result = session.execute(
        delete(OutboxItem)
        .where(OutboxItem.id.in_(ids.scalar_subquery()))
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)


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
