"""A receiver-wide budget of message bytes in flight (LMTP_INFLIGHT_BYTES).

Each LMTP/SMTP session holds its message from the first byte of DATA until the message is
committed (or refused), and the parse costs about as much again: N clients sending a 50 MB
message at once cost N times ~118 MB. Here a session takes room for the bytes it reads, chunk
by chunk, before it keeps them; past the budget it stops reading (the client's writes block:
TCP holds the rest) until a message in flight is done and gives its room back.

Three rules keep mail flowing:

- The eldest message in flight (the first to start its DATA) never waits, so one is always
  going forward however small the budget (a message larger than the budget still gets in,
  alone): memory stays within about the budget plus one message.
- The first `free_bytes` of every message never wait either: small mail is not queued
  behind big mail (an attachment waiting for room does not hold up a one-line reply).
- A session that waits longer than `wait` seconds gives up: its message is read to the end
  and dropped, and answered 451 4.3.1 so the MTA keeps it and tries again later; never 5xx.
"""

from __future__ import annotations

import asyncio
import itertools

FREE_BYTES = 256 * 1024


class InFlight:
    """Lives on the receiver's event loop (all its sessions share it)."""

    def __init__(self, budget: int, *, wait: float, free_bytes: int = FREE_BYTES) -> None:
        self.budget = budget
        self.wait = wait
        self.free_bytes = free_bytes
        self.used = 0
        self.peak = 0  # the most bytes in flight at once, for the bench and the tests
        self.refused = 0  # messages answered 451 after waiting `wait` seconds
        self._order = itertools.count()
        self._open: dict[int, int] = {}  # ticket -> bytes it holds, in order of arrival
        self._room: asyncio.Condition | None = None  # made on the loop, at first use

    def open(self) -> Ticket:
        """A message's share, for one DATA; give it back with `Ticket.close`."""
        number = next(self._order)
        self._open[number] = 0
        return Ticket(self, number)

    def _eldest(self, number: int) -> bool:
        return next(iter(self._open)) == number

    def _fits(self, number: int, size: int) -> bool:
        return (
            self.used + size <= self.budget
            or self._eldest(number)
            or self._open[number] + size <= self.free_bytes
        )

    def _add(self, number: int, size: int) -> None:
        self._open[number] += size
        self.used += size
        self.peak = max(self.peak, self.used)

    async def _take(self, number: int, size: int) -> bool:
        if self._fits(number, size):
            self._add(number, size)
            return True
        if self._room is None:
            self._room = asyncio.Condition()
        try:
            async with self._room, asyncio.timeout(self.wait):
                await self._room.wait_for(lambda: self._fits(number, size))
        except TimeoutError:
            self.refused += 1
            return False
        self._add(number, size)
        return True

    def _close(self, number: int) -> None:
        held = self._open.pop(number, None)
        if held is None:
            return
        self.used -= held
        if self._room is not None:
            # Whoever waits re-checks: room was given back, or a new eldest may go on.
            asyncio.get_running_loop().create_task(self._wake())

    async def _wake(self) -> None:
        assert self._room is not None
        async with self._room:
            self._room.notify_all()


class Ticket:
    """One message's share of the budget."""

    def __init__(self, owner: InFlight, number: int) -> None:
        self.owner = owner
        self.number = number

    async def take(self, size: int) -> bool:
        """Room for `size` more bytes of this message; False when none came in time."""
        return await self.owner._take(self.number, size)

    def close(self) -> None:
        """The message is done (stored, refused or dropped): its room goes back. Twice is
        harmless."""
        self.owner._close(self.number)
