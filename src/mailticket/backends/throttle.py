"""Per-backend request budgets: a token bucket shared by every client of one instance.

Vendors like Autotask meter a tenant-wide hourly budget; spending it in bursts gets the
whole tenant (other integrations too) throttled. Every request an instance's client sends
takes a token first (an httpx request hook), so lookups and retries are counted as well.
The bucket is per process: several workers against one tenant should share the budget out.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import httpx


class TokenBucket:
    def __init__(
        self,
        rate_per_second: float,
        burst: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if rate_per_second <= 0 or burst < 1:
            raise ValueError("a token bucket needs a positive rate and a burst of at least 1")
        self.rate = rate_per_second
        self.burst = burst
        self._clock = clock
        self._sleep = sleep
        self._tokens = float(burst)
        self._stamp = clock()
        self._lock = asyncio.Lock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    def take(self) -> float:
        """Take a token if one is there: 0.0; else the seconds until one will be (none taken)."""
        self._refill()
        if self._tokens >= 1:
            self._tokens -= 1
            return 0.0
        return (1 - self._tokens) / self.rate

    async def acquire(self) -> None:
        async with self._lock:
            while (wait := self.take()) > 0:
                await self._sleep(wait)


_buckets: dict[str, TokenBucket] = {}


def bucket_for(instance: str, per_hour: float, burst: int) -> TokenBucket:
    """The process-wide bucket of one instance (the delivery and polling jobs share it)."""
    found = _buckets.get(instance)
    if found is None or found.rate != per_hour / 3600 or found.burst != burst:
        found = _buckets[instance] = TokenBucket(per_hour / 3600, burst)
    return found


def throttled_client(instance: str, per_hour: float, burst: int, timeout: float) -> httpx.AsyncClient:
    bucket = bucket_for(instance, per_hour, burst)

    async def before(_request: httpx.Request) -> None:
        await bucket.acquire()

    return httpx.AsyncClient(timeout=timeout, event_hooks={"request": [before]})
