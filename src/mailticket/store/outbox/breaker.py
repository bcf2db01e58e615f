"""A circuit breaker per outbox target (an SMTP relay, a backend instance).

When a target fails as a whole, trying it again for the next item only waits out the same
timeout once more. The breaker opens for a backoff that grows with each failure in a row;
while it is open the drain leaves that target's items alone. Once the time is up the next
drain tries again (half-open): a success closes the breaker, a failure opens it for longer.
It lives as long as the worker, so it spans drains; a fresh process starts closed, and the
items the last failure deferred are not due before their own backoff anyway.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from mailticket.store.outbox.queue import RetryPolicy

log = logging.getLogger(__name__)


@dataclass
class _Trip:
    failures: int
    until: float
    error: str


@dataclass
class CircuitBreaker:
    policy: RetryPolicy
    clock: Callable[[], float] = time.monotonic
    _trips: dict[str, _Trip] = field(default_factory=dict)

    def is_open(self, target: str) -> bool:
        trip = self._trips.get(target)
        return trip is not None and self.clock() < trip.until

    def open_targets(self) -> set[str]:
        now = self.clock()
        return {target for target, trip in self._trips.items() if now < trip.until}

    def error(self, target: str) -> str | None:
        trip = self._trips.get(target)
        return trip.error if trip is not None else None

    def failed(self, target: str, error: str) -> float:
        """The target failed: open (again) for a longer time; returns the seconds."""
        trip = self._trips.get(target)
        failures = (trip.failures if trip is not None else 0) + 1
        wait = self.policy.delay(failures).total_seconds()
        if trip is None or self.clock() >= trip.until:  # not already opened by a parallel lane
            self._trips[target] = _Trip(failures, self.clock() + wait, error)
            log.warning("target down target=%s retry_in=%.0fs error=%s", target, wait, error)
        return wait

    def succeeded(self, target: str) -> None:
        if self._trips.pop(target, None) is not None:
            log.info("target back target=%s", target)
