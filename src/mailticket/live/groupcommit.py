"""Group commit for pushed mail: messages of concurrent LMTP/SMTP sessions share a transaction.

A receiver must answer 250 only once the message is committed. One transaction per message
makes the commit (an fsync on PostgreSQL, a write turn on SQLite) the cost of every message,
and concurrent sessions queue for it. Here each session hands its message to one committer
and waits: the committer takes every message that arrived while the previous group was being
written (after a short wait of `window` seconds when the committer was idle, so that
sessions arriving together are grouped), stores them as one batch, commits, and only then
wakes their sessions. Under load the groups grow by themselves; an idle receiver adds at most
`window` to a message's latency.

A batch has a fixed cost (a round trip per statement, the commit) that its messages share, so
a group is worth filling: the sessions a group just answered usually send their next message
at once (an MTA delivering its queue over a kept connection), a few milliseconds apart. While
fewer messages wait than were waiting at the last commit plus those it answered, and that
commit was less than a group's turn ago (a stream, not an idle receiver), the committer waits
for them a while longer, at most `patience` times the last group's turn: the wait stays a
small part of what it saves.

Each message is prepared (parsed and classified, no database) in the receiver's preparing
thread the moment it arrives, so that work overlaps the group being written and committed meanwhile
instead of adding to the next group's turn: the store thread spends part of its turn waiting
on the database, and the committer is the only writer of this receiver.

When a group's transaction fails as a whole because the database is away (`database_unavailable`:
stopped, restarting, failing over), no part of it could be stored either: the whole group is
answered 451 at once and left to the MTA's retry. The outage is logged once, as it begins, and
summed up when a commit succeeds again (how long, how many messages were refused); the
receiver does not log each refusal. Any other failure of the whole transaction (the batch
machinery isolates a bad message by itself, so this is the database refusing the batch) is
redone in halves, down to single messages: only the message that still fails is answered 451,
the others are stored and answered 250.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from mailticket import metrics
from mailticket.store.db import database_unavailable
from mailticket.types import Outcome

log = logging.getLogger(__name__)

# What one message needs before it is stored, computed without the database (parsing,
# classification): raw, source -> a value handed to the store with the message.
PrepareOne = Callable[[bytes, str], object]
# Stores the messages (raw, source) in one transaction and commits before returning; raises
# when that transaction failed (nothing of it is stored). The second argument: each message's
# prepared value, or None when the receiver prepares nothing.
StoreGroup = Callable[[Sequence[tuple[bytes, str]], Sequence[object] | None], list[Outcome]]

WINDOW = 0.002  # seconds: how long an idle committer waits for a group to form
PATIENCE = 0.25  # of the last group's turn: how long a group waits for the sessions it answered
MAX_GROUP = 200  # messages per transaction (a failed group is redone in halves)
MAX_GROUP_BYTES = 16 * 1024 * 1024  # beyond the first message


@dataclass(slots=True)
class _Pending:
    raw: bytes
    source: str
    done: asyncio.Future[Outcome]
    ready: asyncio.Future[object] | None  # the prepared message, when there is a `prepare`


class GroupCommit:
    """Lives on the receiver's event loop; the store runs in a worker thread."""

    def __init__(
        self,
        store: StoreGroup,
        *,
        prepare: PrepareOne | None = None,
        window: float = WINDOW,
        patience: float = PATIENCE,
        max_group: int = MAX_GROUP,
        max_bytes: int = MAX_GROUP_BYTES,
    ) -> None:
        self.store = store
        self.prepare = prepare
        # One thread: preparing is CPU under the GIL, more threads would only take turns.
        self._preparer = (
            ThreadPoolExecutor(1, thread_name_prefix="lmtp-prepare") if prepare else None
        )
        self.window = window
        self.patience = patience
        self.max_group = max_group
        self.max_bytes = max_bytes
        self._queue: list[_Pending] = []
        self._committer: asyncio.Task[None] | None = None
        self.groups = 0  # committed transactions, for the bench and the tests
        self._arrived = asyncio.Event()
        # After the last group: how many messages to expect, how long its turn took, when
        # its sessions were answered.
        self._last_expect = 0
        self._last_turn = 0.0
        self._last_done = float("-inf")
        # The outage under way: when its first refusal came, how many messages it refused.
        self._outage_since: float | None = None
        self._outage_refused = 0

    async def submit(self, raw: bytes, source: str) -> Outcome:
        """Resolves once the message is committed; raises when it could not be stored."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Outcome] = loop.create_future()
        ready = None
        if self.prepare is not None:
            ready = loop.run_in_executor(self._preparer, self.prepare, raw, source)
        self._queue.append(_Pending(raw, source, done, ready))
        self._arrived.set()
        if self._committer is None or self._committer.done():
            self._committer = asyncio.create_task(self._run(), name="lmtp-group-commit")
        return await done

    def close(self) -> None:
        """The receiver stopped: no message is prepared any more."""
        if self._preparer is not None:
            self._preparer.shutdown(wait=False, cancel_futures=True)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while self._queue:
            group: list[_Pending] = []
            try:
                await self._gather(loop)
                group = self._take()
                started = loop.time()
                await self._commit(group)
                self._last_done = loop.time()
                self._last_turn = self._last_done - started
                # The sessions answered have not run yet: those waiting came during the
                # turn, the answered ones are about to send again.
                self._last_expect = len(self._queue) + len(group)
            except asyncio.CancelledError:  # the receiver stops: no session may wait forever
                for item in (*group, *self._queue):
                    if not item.done.done():
                        item.done.set_exception(ConnectionAbortedError("receiver stopping"))
                raise

    async def _gather(self, loop: asyncio.AbstractEventLoop) -> None:
        start = loop.time()
        streaming = start - self._last_done < self._last_turn
        expect = min(self._last_expect, self.max_group) if streaming else 0
        if not expect:
            # Idle: sessions arriving together are grouped by a short wait. In a stream the
            # group waits for the sessions it expects instead, and starts the moment the
            # last of them is in, not a window after the first (a fixed wait added to
            # every group's turn, about 2 of 30 ms on plain mail).
            await asyncio.sleep(self.window)
        deadline = start + self.window + self.patience * self._last_turn
        while len(self._queue) < expect and (left := deadline - loop.time()) > 0:
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), left)
            except TimeoutError:
                break

    def _take(self) -> list[_Pending]:
        size = held = 0
        for item in self._queue:
            if size and (size >= self.max_group or held + len(item.raw) > self.max_bytes):
                break
            size += 1
            held += len(item.raw)
        group, self._queue = self._queue[:size], self._queue[size:]
        return group

    async def _commit(self, group: list[_Pending]) -> None:
        live = [item for item in group if not item.done.cancelled()]  # session went away
        if not live:
            return
        prepared: list[object] | None = None
        if self.prepare is not None:
            # Mostly done already (prepared on arrival). What preparing raised is the
            # message's own failure, handed on like a parse error (the pipeline quarantines).
            prepared = await asyncio.gather(
                *(item.ready for item in live if item.ready is not None), return_exceptions=True
            )
        try:
            outcomes = await asyncio.to_thread(
                self.store, [(item.raw, item.source) for item in live], prepared
            )
        except Exception as exc:  # noqa: BLE001 - isolate the message(s) the database refuses
            if database_unavailable(exc):
                self._refuse_for_outage(live, exc)
                return
            if len(live) == 1:
                if not live[0].done.done():
                    live[0].done.set_exception(exc)
                return
            log.info("group of %d not committed, redone in halves: %r", len(live), exc)
            half = len(live) // 2
            await self._commit(live[:half])
            await self._commit(live[half:])
            return
        self.groups += 1
        if self._outage_since is not None:
            # The end of what the warning began: news, not a condition to look at.
            log.info(
                "database back: pushed mail stored again after %.1f s; %d message(s) were "
                "answered 451 meanwhile (the sender retries them)",
                time.monotonic() - self._outage_since, self._outage_refused,
            )
            self._outage_since = None
            self._outage_refused = 0
        metrics.observe_receiver_group(len(live))
        for item, outcome in zip(live, outcomes, strict=True):
            if not item.done.done():
                item.done.set_result(outcome)

    def _refuse_for_outage(self, live: list[_Pending], exc: BaseException) -> None:
        """The database is away: every message of the group fails alike, so splitting it
        would only meet the outage again, once per half."""
        if self._outage_since is None:
            self._outage_since = time.monotonic()
            log.warning(
                "database unavailable: pushed mail is answered 451 until it is back: %s",
                getattr(exc, "orig", None) or exc,
            )
        for item in live:
            if not item.done.done():
                self._outage_refused += 1
                item.done.set_exception(exc)
