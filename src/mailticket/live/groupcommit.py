"""Group commit for pushed mail: messages of concurrent LMTP/SMTP sessions share a transaction.

A receiver must answer 250 only once the message is committed. One transaction per message
makes the commit (an fsync on PostgreSQL, a write turn on SQLite) the cost of every message,
and concurrent sessions queue for it. Here each session hands its message to one committer
and waits: the committer takes every message that arrived while the previous group was being
written (after a short wait of `window` seconds, so that sessions arriving together are
grouped even when the committer was idle), stores them as one batch, commits, and only then
wakes their sessions. Under load the groups grow by themselves; an idle receiver adds at most
`window` to a message's latency.

When a group's transaction fails as a whole (the batch machinery isolates a bad message by
itself, so this is the database refusing the batch or going away), the group is redone in
halves, down to single messages: only the message that still fails is answered 451 and left
to the MTA's retry, the others are stored and answered 250.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from mailticket import metrics
from mailticket.types import Outcome

log = logging.getLogger(__name__)

# Stores the messages (raw, source) in one transaction and commits before returning; raises
# when that transaction failed (nothing of it is stored).
StoreGroup = Callable[[Sequence[tuple[bytes, str]]], list[Outcome]]

WINDOW = 0.002  # seconds: how long an idle committer waits for a group to form
MAX_GROUP = 200  # messages per transaction (a failed group is redone in halves)
MAX_GROUP_BYTES = 16 * 1024 * 1024  # beyond the first message


@dataclass(slots=True)
class _Pending:
    raw: bytes
    source: str
    done: asyncio.Future[Outcome]


class GroupCommit:
    """Lives on the receiver's event loop; the store runs in a worker thread."""

    def __init__(
        self,
        store: StoreGroup,
        *,
        window: float = WINDOW,
        max_group: int = MAX_GROUP,
        max_bytes: int = MAX_GROUP_BYTES,
    ) -> None:
        self.store = store
        self.window = window
        self.max_group = max_group
        self.max_bytes = max_bytes
        self._queue: list[_Pending] = []
        self._committer: asyncio.Task[None] | None = None
        self.groups = 0  # committed transactions, for the bench and the tests

    async def submit(self, raw: bytes, source: str) -> Outcome:
        """Resolves once the message is committed; raises when it could not be stored."""
        done: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(raw, source, done))
        if self._committer is None or self._committer.done():
            self._committer = asyncio.create_task(self._run(), name="lmtp-group-commit")
        return await done

    async def _run(self) -> None:
        while self._queue:
            await asyncio.sleep(self.window)
            group = self._take()
            try:
                await self._commit(group)
            except asyncio.CancelledError:  # the receiver stops: no session may wait forever
                for item in (*group, *self._queue):
                    if not item.done.done():
                        item.done.set_exception(ConnectionAbortedError("receiver stopping"))
                raise

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
        try:
            outcomes = await asyncio.to_thread(
                self.store, [(item.raw, item.source) for item in live]
            )
        except Exception as exc:  # noqa: BLE001 - isolate the message(s) the database refuses
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
        metrics.observe_receiver_group(len(live))
        for item, outcome in zip(live, outcomes, strict=True):
            if not item.done.done():
                item.done.set_result(outcome)
