"""IMAP source: drain a mailbox folder into the pipeline, crash-safely, then IDLE or poll.

Order per batch: fetch with BODY.PEEK[] (\\Seen untouched) → pipeline + ledger rows in one
transaction → commit → server action (flag/move/delete) → ledger rows marked server_done.
A crash before the commit leaves the server untouched (the messages come again); a crash
after it leaves ledger rows whose server action is redone on the next start, never their
processing. After a UIDVALIDITY change the pipeline's Message-ID check reports duplicates.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import aioimaplib
from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from mailticket import metrics
from mailticket.live import ledger
from mailticket.live.config import MailboxConfig
from mailticket.live.dbgate import write_gate
from mailticket.live.imap_client import ImapError, ImapSession
from mailticket.live.lock import SourceLock, mailbox_lock_name
from mailticket.reading.msgids import header_message_id
from mailticket.ticketing import quarantine
from mailticket.types import Outcome

log = logging.getLogger(__name__)

# Messages per transaction and per FETCH. A batch also ends before the message that would
# take it over BATCH_BYTES (a bigger message is a batch of its own), and the next batch is
# fetched ahead only while the one being stored is within BATCH_BYTES: every message of a
# batch is held, with its parse, from its FETCH to its commit. Bounded by count alone,
# three queued 50 MB attachments were one batch, and 460 MB of RSS.
BATCH = 100
BATCH_BYTES = 16 * 1024 * 1024
# Messages per FETCH command (BATCH_BYTES still bounds it). Once limited to 25 because
# aioimaplib's framing was quadratic in it; LinearProtocol is linear, so one FETCH a batch.
FETCH_GROUP = BATCH
# IDLE is renewed at least this often (RFC 2177 asks for < 29 min; NATs drop sooner).
IDLE_RENEW = 300.0
MAX_BACKOFF = 300.0

# What a lost or refused connection looks like; the loop reconnects after these.
CONNECTION_ERRORS = (ImapError, aioimaplib.AioImapException, OSError, asyncio.TimeoutError)


class MessageHandler(Protocol):
    """`mailticket.pipeline.Pipeline` satisfies this: process in the caller's transaction."""

    def process_in_session(self, session: Session, raw: bytes, source: str) -> Outcome: ...

    def prepare(self, items: Sequence[tuple[bytes, str]]) -> Sequence[object]:
        """What the messages need before they are stored, computed without the database."""
        ...

    def process_batch(
        self,
        session: Session,
        items: Sequence[tuple[bytes, str]],
        *,
        prepared: Sequence[Any] | None = None,
    ) -> list[Outcome]: ...


@dataclass(frozen=True, slots=True)
class _Item:
    uid: int
    raw: bytes
    size: int
    headers_only: bool


@dataclass(frozen=True, slots=True)
class _Fetched:
    items: list[_Item]
    whole: list[tuple[bytes, str]]  # (raw, source) of the items not headers_only
    prepared: Sequence[object]  # the handler's `prepare` of `whole`
    taken: int  # how many of the UIDs asked for this batch covers (the rest: the next one)
    held: int  # bytes of the whole messages


@dataclass(slots=True)
class _Stored:
    uid: int
    ledger_id: int
    action: str


# The ledger outcome (and logged action) of a message over the size limit: a mailbox that
# deletes stored mail keeps this one, also when the action is redone after a restart.
TOO_LARGE = ledger.TOO_LARGE


class ImapSource:
    def __init__(
        self,
        box: MailboxConfig,
        handler: MessageHandler,
        session_factory: sessionmaker[Session],
        engine: Engine,
        *,
        max_message_size: int,
        timeout: float = 30.0,
        poll_interval: float = 60.0,
    ) -> None:
        self.box = box
        self.handler = handler
        self.session_factory = session_factory
        self.engine = engine
        self.max_message_size = max_message_size
        self.timeout = timeout
        self.poll_interval = poll_interval
        # Named once connected: the name comes from the folder the server shows (see
        # mailbox_lock_name), so every spelling of the same mailbox shares the lock.
        self.lock = SourceLock(engine, "")
        self.imap = ImapSession(box, timeout)
        # Set by the scheduler's poll job and by a push from the server (live/push.py): ends
        # the wait (IDLE included) and drains now.
        self.wake = asyncio.Event()
        # Checked between batches: a shutdown finishes the batch in hand, then stops.
        self.stop = asyncio.Event()

    @property
    def name(self) -> str:
        return f"imap:{self.box.label}"

    def _source(self, uid: int) -> str:
        return f"imap://{self.box.key}/{self.box.folder};UIDVALIDITY={self.imap.uidvalidity}/;UID={uid}"

    # --- one pass --------------------------------------------------------------------------

    async def drain(self) -> int:
        """Store every new message of the selected folder; returns how many were stored."""
        await self._redo_pending()
        uidvalidity = self.imap.uidvalidity
        criterion = "ALL"
        if self.box.after == "seen":
            # Unread mail, and whatever arrived after the newest stored message even if
            # someone read it first (a person in the shared mailbox, during a restart):
            # UNSEEN alone never took such a message at all. Without a stored message
            # (a first start, a recreated folder) the read mail is the past: left alone.
            newest = await asyncio.to_thread(self._newest, uidvalidity)
            criterion = "UNSEEN" if newest is None else f"OR UNSEEN UID {newest + 1}:*"
        listed = await self.imap.search(criterion)
        if not listed:
            return 0
        known = await asyncio.to_thread(self._known, uidvalidity, listed)
        todo = [uid for uid in listed if uid not in known]
        stored = 0
        # Three stages overlap: batch k is stored (pipeline + ledger, in a thread) while the
        # connection first does batch k-1's server action and then fetches batch k+1, which
        # another thread then parses (the storing thread mostly waits on the database, so
        # parsing there would leave that time unused). The connection runs one command at a
        # time: the fetch starts once the action is done. Per batch the order stays commit →
        # server action → ledger marked done. A batch covers the first UIDs of `todo` (see
        # BATCH_BYTES for how many); the next one is known once it is fetched.
        ahead: asyncio.Future[_Fetched] | None = None
        storing: asyncio.Future[list[_Stored]] | None = None
        previous: list[_Stored] | None = None
        try:
            while todo:
                if self.stop.is_set():
                    break
                fetched = await (
                    ahead if ahead is not None else self._fetch_prepared(todo[:BATCH])
                )
                ahead = None
                todo = todo[fetched.taken :]
                small = fetched.held <= BATCH_BYTES
                if fetched.items:
                    storing = asyncio.ensure_future(
                        asyncio.to_thread(self._store, self.imap.uidvalidity, fetched)
                    )
                # Held by the store thread alone from here: freed when it is done, not kept
                # through the next batch's fetch.
                del fetched
                if previous is not None:
                    finishing, previous = previous, None
                    stored += await self._finish_batch(finishing)
                if todo and not self.stop.is_set() and small:
                    ahead = asyncio.ensure_future(self._fetch_prepared(todo[:BATCH]))
                if storing is not None:
                    previous = await storing
                    storing = None
            if ahead is not None:
                await asyncio.wait({ahead})
            if previous is not None:
                finishing, previous = previous, None
                stored += await self._finish_batch(finishing)
        finally:
            if ahead is not None and not ahead.done():
                ahead.cancel()
                await asyncio.gather(ahead, return_exceptions=True)
            if storing is not None:
                # A thread cannot be cancelled: let its transaction end (committed rows stay
                # pending in the ledger, their server action is redone at the next drain)
                # before the caller closes the connection and releases the lock.
                await asyncio.gather(storing, return_exceptions=True)
        return stored

    async def _fetch_prepared(self, uids: list[int]) -> _Fetched:
        """The messages, and what the pipeline needs of the whole ones before storing them
        (parsed and classified, no database), computed in a thread of its own."""
        items, taken = await self._collect(uids)
        whole = [(item.raw, self._source(item.uid)) for item in items if not item.headers_only]
        prepared = await asyncio.to_thread(self.handler.prepare, whole) if whole else []
        held = sum(len(raw) for raw, _ in whole)
        return _Fetched(items, whole, prepared, taken, held)

    async def _collect(self, uids: list[int]) -> tuple[list[_Item], int]:
        """Sizes, then the messages (headers only when too big), in UID order, up to the
        message that would take the batch over BATCH_BYTES; and how many UIDs that covers
        (at least one)."""
        sizes = await self.imap.sizes(uids)
        items: list[_Item] = []
        group: list[int] = []
        held = 0
        taken = len(uids)
        for index, uid in enumerate(uids):
            size = sizes.get(uid)
            if size is None:  # expunged by someone else meanwhile
                continue
            if size > self.max_message_size:
                for got in await self.imap.fetch([uid], "BODY.PEEK[HEADER]"):
                    items.append(_Item(got.uid, got.data, size, headers_only=True))
                continue
            if held and held + size > BATCH_BYTES:
                taken = index
                break
            if len(group) >= FETCH_GROUP:
                items.extend(await self._fetch_full(group, sizes))
                group = []
            group.append(uid)
            held += size
        if group:
            items.extend(await self._fetch_full(group, sizes))
        items.sort(key=lambda item: item.uid)
        return items, taken

    async def _finish_batch(self, stored: list[_Stored]) -> int:
        """Stored and committed: now flag, move or delete them on the server."""
        await self._server_action([(s.uid, s.action) for s in stored])
        await asyncio.to_thread(self._mark_done, [s.ledger_id for s in stored])
        for s in stored:
            log.info("stored mailbox=%s uid=%s action=%s", self.box.label, s.uid, s.action)
        return len(stored)

    async def _server_action(self, done: list[tuple[int, str]]) -> None:
        """The mailbox's after-action; but a message too large to be taken whole is never
        deleted (only its headers are in the database): it stays, flagged, for an admin."""
        keep = self.box.after == "delete"
        await self.imap.finish([uid for uid, action in done if not (keep and action == TOO_LARGE)])
        await self.imap.hold([uid for uid, action in done if keep and action == TOO_LARGE])

    async def _fetch_full(self, uids: list[int], sizes: dict[int, int]) -> list[_Item]:
        return [
            _Item(got.uid, got.data, sizes[got.uid], headers_only=False)
            for got in await self.imap.fetch(uids)
        ]

    async def _redo_pending(self) -> None:
        rows = await asyncio.to_thread(self._pending)
        if not rows:
            return
        current = [r for r in rows if r[1] == self.imap.uidvalidity]
        stale = [r[0] for r in rows if r[1] != self.imap.uidvalidity]
        if stale:
            # Their UIDs mean nothing under the new UIDVALIDITY; the messages will be listed
            # again and recognised by Message-ID.
            log.warning(
                "uidvalidity changed mailbox=%s dropped_server_actions=%d",
                self.box.label, len(stale),
            )
        if current:
            await self._server_action([(r[2], r[3]) for r in current])
            log.info("redid server action mailbox=%s count=%d", self.box.label, len(current))
        await asyncio.to_thread(self._mark_done, stale + [r[0] for r in current])

    # --- database side (run in a worker thread) --------------------------------------------

    def _known(self, uidvalidity: int, uids: list[int]) -> set[int]:
        with self.session_factory() as session:
            return ledger.known_uids(session, self.box.key, self.box.folder, uidvalidity, uids)

    def _newest(self, uidvalidity: int) -> int | None:
        with self.session_factory() as session:
            return ledger.newest_uid(session, self.box.key, self.box.folder, uidvalidity)

    def _pending(self) -> list[tuple[int, int, int, str]]:
        with self.session_factory() as session:
            return [
                (r.id, r.uidvalidity, r.uid, r.outcome)
                for r in ledger.pending(session, self.box.key, self.box.folder)
            ]

    def _store(self, uidvalidity: int, fetched: _Fetched) -> list[_Stored]:
        with write_gate(self.engine), self.session_factory() as session:
            outcomes = iter(
                self.handler.process_batch(session, fetched.whole, prepared=fetched.prepared)
            )
            entries: list[tuple[int, str | None, str]] = []
            for item in fetched.items:
                source = self._source(item.uid)
                if item.headers_only:
                    message_id = header_message_id(item.raw)
                    quarantine.quarantine_raw(
                        session, item.raw, source,
                        reason=quarantine.too_large_reason(item.size), message_id=message_id,
                    )
                    action = TOO_LARGE
                else:
                    outcome = next(outcomes)
                    message_id, action = outcome.message_id, outcome.action
                entries.append((item.uid, message_id, action))
            ids = ledger.record_many(
                session, mailbox=self.box.key, folder=self.box.folder, uidvalidity=uidvalidity,
                rows=entries,
            )
            session.commit()
            return [
                _Stored(uid, ledger_id, action)
                for (uid, _, action), ledger_id in zip(entries, ids, strict=True)
            ]

    def _mark_done(self, ids: list[int]) -> None:
        if not ids:
            return
        with write_gate(self.engine), self.session_factory() as session:
            ledger.mark_done(session, ids)
            session.commit()

    # --- lifecycles --------------------------------------------------------------------------

    def _lock_mailbox(self) -> bool:
        """Take (or renew) the lock of the selected folder; True when this worker holds it."""
        name = mailbox_lock_name(self.box.user, self.box.folder, self.imap.uidvalidity)
        if self.lock.name != name:
            self.lock.release()  # the folder was recreated: a new UIDVALIDITY, a new lock
            self.lock.name = name
        return self.lock.acquire()

    async def run_once(self) -> int:
        """Connect, drain, disconnect (`mailticket run --once`); 0 when another worker has it."""
        try:
            await self.imap.open()
            if not await asyncio.to_thread(self._lock_mailbox):
                log.info("skipped mailbox=%s reason=locked-by-another-worker", self.box.label)
                return 0
            return await self.drain()
        finally:
            await self.imap.close()
            await asyncio.to_thread(self.lock.release)

    async def run(self) -> None:
        """Until `self.stop`: hold the lock, drain, then IDLE (or wait for the poll job),
        reconnecting with exponential backoff when the connection or the database fails."""
        stop = self.stop
        backoff = 1.0
        standby = False  # another worker held the folder's lock at the last try
        try:
            while not stop.is_set():
                try:
                    if standby:
                        # Cleared before the try: a push from now on ends the wait below.
                        self.wake.clear()
                        # The lock is tried before connecting: a standby woken by every
                        # push for a busy folder would otherwise log in to IMAP each time.
                        if not await asyncio.to_thread(self.lock.acquire):
                            await _wait(stop, _sleep_or_wake(self.wake, self.poll_interval))
                            continue
                    await self.imap.open()
                    if not await asyncio.to_thread(self._lock_mailbox):
                        log.info("waiting mailbox=%s reason=locked-by-another-worker", self.box.label)
                        await self.imap.close()
                        # A push (or the poll job) wakes a standby at once: when the worker
                        # holding the folder has stopped or died, the next push's mail is
                        # taken over now, not one poll interval later.
                        standby = True
                        await _wait(stop, _sleep_or_wake(self.wake, self.poll_interval))
                        continue
                    standby = False
                    metrics.set_imap_state(self.box.label, connected=True)
                    log.info(
                        "connected mailbox=%s idle=%s uidvalidity=%s",
                        self.box.label, self.box.idle and self.imap.has("IDLE"),
                        self.imap.uidvalidity,
                    )
                    await self._session(stop)
                    backoff = 1.0
                except (*CONNECTION_ERRORS, OperationalError) as exc:
                    log.warning(
                        "mailbox error mailbox=%s error=%r retry_in=%.0fs",
                        self.box.label, exc, backoff,
                    )
                    metrics.set_imap_state(self.box.label, connected=False)
                    await self.imap.close()
                    # The poll job's wake ends a long backoff early: a server back after a
                    # five-minute outage is tried again at the next poll, not minutes later.
                    self.wake.clear()
                    await _wait(stop, _sleep_or_wake(self.wake, backoff))
                    backoff = min(backoff * 2, MAX_BACKOFF)
        finally:
            metrics.set_imap_state(self.box.label, connected=False)
            await self.imap.close()
            await asyncio.to_thread(self.lock.release)

    async def _session(self, stop: asyncio.Event) -> None:
        idle = self.box.idle and self.imap.has("IDLE")
        while not stop.is_set():
            # Renews the SQLite lease (and re-checks the PostgreSQL lock's connection) at
            # least every IDLE_RENEW seconds; a lock lost meanwhile (or a folder recreated
            # under us, which names another lock) ends the session. Checked before each
            # drain, after the SELECTs below: a drain under a new UIDVALIDITY never runs
            # without that UIDVALIDITY's lock (another worker may hold it).
            if not await asyncio.to_thread(self._lock_mailbox):
                log.warning("lost the mailbox lock mailbox=%s", self.box.label)
                await self.imap.close()
                return
            # Cleared before the drain, not after: a push arriving while this drain runs
            # (for a message it may miss) ends the next wait at once.
            self.wake.clear()
            await self.drain()
            if idle:
                news = self.imap.wait_for_news(min(self.poll_interval, IDLE_RENEW), self.wake)
                if not await _wait(stop, news):
                    return
                if time.monotonic() - self.imap.selected_at >= self.poll_interval:
                    # A folder deleted (or renamed away) and created again under this session
                    # is never reported by IDLE: the session stays on the old one and sees
                    # none of the new mail. A SELECT per poll interval notices its new
                    # UIDVALIDITY.
                    await self.imap.select()
            else:
                try:
                    if not await _wait(stop, asyncio.wait_for(self.wake.wait(), IDLE_RENEW)):
                        return
                except TimeoutError:
                    pass  # no poll due yet: renew the lock, drain anyway (cheap)
                await self.imap.select()  # refreshes the folder; notices a UIDVALIDITY change


async def _sleep_or_wake(event: asyncio.Event, seconds: float) -> None:
    """Sleep `seconds`, or less when `event` is set meanwhile."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), seconds)


async def _wait(stop: asyncio.Event, work: Awaitable[object]) -> bool:
    """Run `work` unless `stop` comes first; False when stopped (work is cancelled)."""
    task = asyncio.ensure_future(work)
    stopper = asyncio.ensure_future(stop.wait())
    done, _ = await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        stopper.cancel()
        task.result()
        return True
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    return False
