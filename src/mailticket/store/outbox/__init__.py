"""A durable outbox: side effects recorded in the database, performed later with retries.

A caller enqueues an item in the same transaction as the change that causes it (a ticket,
an auto-reply), so the side effect exists exactly when the change was committed. A worker
drains due items: it claims a batch in one short transaction (a lease, so a crashed worker's
items come back), performs them outside any transaction, then records the outcomes.
Transient failures back off exponentially; permanent ones, or too many attempts, park the
item as "dead" until an operator requeues it. Delivered items are pruned after a retention.

`queue` holds the row states (functions taking a session, never committing); `draining` is the
boundary that commits; `breaker` remembers targets that are down.
"""

from mailticket.store.outbox.breaker import CircuitBreaker
from mailticket.store.outbox.draining import DrainReport, Handler, drain
from mailticket.store.outbox.queue import (
    LEASE,
    STATUSES,
    Deferred,
    DeliveryError,
    OutboxError,
    PermanentError,
    RetryPolicy,
    TargetDown,
    TransientError,
    Unperformable,
    claim,
    enqueue,
    list_items,
    mark_done,
    mark_failed,
    prune,
    release,
    requeue,
)
from mailticket.store.outbox_models import OutboxItem

__all__ = [
    "LEASE",
    "STATUSES",
    "CircuitBreaker",
    "Deferred",
    "DeliveryError",
    "DrainReport",
    "Handler",
    "OutboxError",
    "OutboxItem",
    "PermanentError",
    "RetryPolicy",
    "TargetDown",
    "TransientError",
    "Unperformable",
    "claim",
    "drain",
    "enqueue",
    "list_items",
    "mark_done",
    "mark_failed",
    "prune",
    "release",
    "requeue",
]
