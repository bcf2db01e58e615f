"""The long-running worker behind `mailticket run`: every source, the outgoing mail drain and
(optionally) the HTTP API in one asyncio loop, scheduled by APScheduler.

IMAP mailboxes each run their own task (IDLE where offered); polling mailboxes, the Maildir
and outgoing mail are interval jobs. SIGTERM/SIGINT finish the batch in hand, close the
connections and exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib.util
import logging
import signal
import socket
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import uvicorn
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from sqlalchemy import Engine, event
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session, sessionmaker

from mailticket.live import ledger
from mailticket.live.config import load_mailboxes
from mailticket.live.imap import ImapSource, MessageHandler
from mailticket.live.lmtp import start_receiver
from mailticket.live.maildir import MaildirSource
from mailticket.live.push import build_app as build_push_app
from mailticket.live.push import wake_sources
from mailticket.outbound.smtp import DEFAULT_POLICY, deliver_outgoing_mail
from mailticket.settings import ConfigError, Settings
from mailticket.store import outbox
from mailticket.store.db import database_unavailable, make_session_factory
from mailticket.store.gate import write, write_gate
from mailticket.ticketing import quarantine
from mailticket.types import WROTE_TICKETS, Outcome

log = logging.getLogger(__name__)

MAILDIR_POLL = 2.0  # seconds; a directory listing is cheap
OUTBOX_POLL = 15.0
LEDGER_RETENTION = timedelta(days=90)
LEDGER_PRUNE_EVERY = timedelta(hours=6)
OUTBOX_PRUNE_EVERY = timedelta(hours=1)


@dataclass
class Worker:
    settings: Settings
    engine: Engine
    session_factory: sessionmaker[Session]
    handler: MessageHandler
    app_factory: Callable[[], Any] | None = None  # the HTTP API, when API_LISTEN is set
    # The SLA / escalation sweep (blocking; its own transactions), every SLA_SWEEP_INTERVAL
    # seconds; None: no SLA file and no event-triggered workflows.
    sweep: Callable[[], object] | None = None
    imap: list[ImapSource] = field(default_factory=list)
    maildir: MaildirSource | None = None
    failures: int = 0

    def __post_init__(self) -> None:
        s = self.settings
        self._kick: _Kick = _Kick(self.handler, self.session_factory)
        self.imap = [
            ImapSource(
                box, self._kick, self.session_factory, self.engine,
                max_message_size=s.max_message_size, timeout=s.imap_timeout,
                poll_interval=s.imap_poll_interval,
            )
            for box in load_mailboxes(s)
        ]
        if s.maildir_path is not None:
            self.maildir = MaildirSource(
                s.maildir_path, self._kick, self.session_factory,
                max_message_size=s.max_message_size,
            )
        self._maildir_lock = asyncio.Lock()
        # One drain at a time (the kick and the interval job would otherwise race for the
        # same due items); the breaker remembers a dead relay from one drain to the next.
        self._delivering = asyncio.Lock()
        self._relay_breaker = outbox.CircuitBreaker(DEFAULT_POLICY)
        self._stopping = False
        # Writers that do not take the gate themselves (backend delivery and polling) begin
        # IMMEDIATE on SQLite, so a source's write in between cannot make them fail.
        self._immediate = make_session_factory(
            self.engine.execution_options(sqlite_immediate=True)
        )

    def describe(self) -> list[str]:
        names = [src.name for src in self.imap]
        if self.maildir is not None:
            names.append(self.maildir.name)
        if self.settings.lmtp_listen:
            names.append(f"receiver:{self.settings.lmtp_listen}")
        return names

    # --- --once ----------------------------------------------------------------------------

    async def run_once(self) -> int:
        """Drain every pull source once and send due outgoing mail; messages stored.
        Sources that failed are logged and counted in `failures`."""
        total = 0
        jobs: list[tuple[str, Awaitable[int]]] = [(src.name, src.run_once()) for src in self.imap]
        if self.maildir is not None:
            jobs.append((self.maildir.name, asyncio.to_thread(self.maildir.drain)))
        results = await asyncio.gather(*(job for _, job in jobs), return_exceptions=True)
        for (name, _), result in zip(jobs, results, strict=True):
            if isinstance(result, BaseException):
                # One unreachable mailbox must not hide what the others stored.
                self.failures += 1
                log.error("source failed source=%s error=%r", name, result)
            else:
                total += result
        await self._guarded(self._sweep)()
        await self._deliver()
        await self._deliver_backends()
        log.info(
            "drained sources=%d stored=%d failed=%d", len(self.describe()), total, self.failures
        )
        return total

    # --- forever -----------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        # The listening sockets first: an address in use is a ConfigError before anything
        # has started (no source, thread or scheduler left running behind the error).
        api_sock = self._bind_api()
        try:
            push_sock = self._bind_push()
        except ConfigError:
            if api_sock is not None:
                api_sock.close()
            raise
        scheduler = AsyncIOScheduler()
        if self.maildir is not None:
            scheduler.add_job(
                self._guarded(self._drain_maildir), "interval", seconds=MAILDIR_POLL,
                max_instances=1, coalesce=True, next_run_time=_now(),
            )
        scheduler.add_job(
            self._guarded(self._deliver), "interval", seconds=OUTBOX_POLL,
            max_instances=1, coalesce=True,
        )
        scheduler.add_job(
            self._wake_polling, "interval", seconds=self.settings.imap_poll_interval,
            max_instances=1, coalesce=True,
        )
        if self.settings.backends_file is not None:
            scheduler.add_job(
                self._guarded(self._deliver_backends), "interval",
                seconds=self.settings.backend_delivery_interval, max_instances=1, coalesce=True,
            )
            scheduler.add_job(
                self._guarded(self._poll_backends), "interval",
                seconds=self.settings.backend_poll_interval,
                max_instances=1, coalesce=True,
            )
        if self.sweep is not None:
            scheduler.add_job(
                self._guarded(self._sweep), "interval",
                seconds=self.settings.sla_sweep_interval,
                max_instances=1, coalesce=True, next_run_time=_now(),
            )
        if self.settings.outbox_retention:
            scheduler.add_job(
                self._guarded(self._prune_outbox), "interval",
                seconds=OUTBOX_PRUNE_EVERY.total_seconds(),
                max_instances=1, coalesce=True, next_run_time=_now(),
            )
        if self.imap:
            scheduler.add_job(
                self._guarded(self._prune_ledger), "interval",
                seconds=LEDGER_PRUNE_EVERY.total_seconds(),
                max_instances=1, coalesce=True, next_run_time=_now(),
            )
        scheduler.start()
        receiver = None
        if self.settings.lmtp_listen:
            receiver = start_receiver(
                self.settings.lmtp_listen, self._store_pushed, prepare=self._prepare_pushed,
                max_message_size=self.settings.max_message_size,
                inflight_bytes=self.settings.lmtp_inflight_bytes,
                inflight_wait=self.settings.lmtp_inflight_wait,
                hold=self._hold_pushed,
            )
        tasks = [asyncio.create_task(src.run(), name=src.name) for src in self.imap]
        kicker = asyncio.create_task(self._deliver_when_kicked(stop), name="outbox-kick")
        api = self._serve_api(api_sock)
        push = self._serve_push(push_sock)
        log.info("worker started sources=%s", ",".join(self.describe()) or "none")
        try:
            await stop.wait()
        finally:
            log.info("worker stopping")
            self._stopping = True  # the jobs cancelled from here on end quietly (_guarded)
            for src in self.imap:
                src.stop.set()
            if self.maildir is not None:
                self.maildir.stop.set()
            scheduler.shutdown(wait=False)
            kicker.cancel()
            await asyncio.gather(*tasks, kicker, return_exceptions=True)
            async with self._maildir_lock:  # a drain in progress finishes its batch
                pass
            if receiver is not None:
                receiver.stop()
            for server in (api, push):
                if server is not None:
                    server[0].should_exit = True
                    await server[1]
            log.info("worker stopped")

    def _guarded(self, job: Callable[[], Awaitable[None]]) -> Callable[[], Awaitable[None]]:
        """`job` made to outlive the database going away (a restart, a failover): the run
        that meets the outage is logged in one line and the next run simply tries again;
        what it had claimed or read stays where it was (Maildir files in new/, outbox items
        handed back or leased until they expire). Any other error still reaches the caller
        (APScheduler logs it with its traceback: that one is a bug to see).

        Once the worker is stopping, the scheduler's shutdown cancels the jobs still running
        (a drain waiting for the database, say); each undoes what it started when cancelled
        (a drain hands its untried items back). That cancellation ends here, as the job's
        normal end: APScheduler would log it as the job's failure, with a traceback, on
        every stop. Before the stop (`--once`, Ctrl-C) a cancellation goes on as always."""

        @functools.wraps(job)
        async def guarded() -> None:
            try:
                await job()
            except asyncio.CancelledError:
                if not self._stopping:
                    raise
                log.info("job %s stopped by the shutdown", job.__name__)
            except (DBAPIError, PoolTimeout) as exc:
                if not database_unavailable(exc):
                    raise
                log.warning(
                    "job %s: database unavailable, the next run retries: %s",
                    job.__name__, getattr(exc, "orig", None) or exc,
                )

        return guarded

    def _prepare_pushed(self, raw: bytes, source: str) -> object:
        """A pushed message parsed and classified as it arrives (no database)."""
        (ready,) = self._kick.prepare([(raw, source)])
        return ready

    def _store_pushed(
        self, items: Sequence[tuple[bytes, str]], prepared: Sequence[object] | None
    ) -> list[Outcome]:
        """A group of pushed messages (one or many sessions), one committed transaction."""
        with write_gate(self.engine), self.session_factory() as session:
            outcomes = self._kick.process_batch(session, items, prepared=prepared)
            session.commit()
            return outcomes

    def _hold_pushed(
        self, headers: bytes, source: str, reason: str, message_id: str | None
    ) -> None:
        """The headers of a pushed message refused as too large, committed."""
        with write_gate(self.engine), self.session_factory() as session:
            quarantine.quarantine_refused(session, headers, source, reason, message_id)
            session.commit()

    async def _drain_maildir(self) -> None:
        assert self.maildir is not None
        if self._maildir_lock.locked():
            return
        async with self._maildir_lock:
            await asyncio.to_thread(self.maildir.drain)

    async def _prune_ledger(self) -> None:
        def prune() -> int:
            with write_gate(self.engine), self.session_factory() as session:
                count = ledger.prune(session, datetime.now(UTC) - LEDGER_RETENTION)
                session.commit()
                return count

        removed = await asyncio.to_thread(prune)
        if removed:
            log.info("pruned imap ledger rows=%d", removed)

    async def _sweep(self) -> None:
        """SLA events, idle tickets and their workflows (one runner per cluster: the sweep
        takes PostgreSQL's advisory lock; on SQLite it writes in turns of the write gate)."""
        if self.sweep is None:
            return
        try:
            await asyncio.to_thread(self.sweep)
        except Exception as exc:  # the next interval tries again; the worker must outlive it
            if database_unavailable(exc):
                raise  # not the sweep's fault: logged in one line by _outliving_outages
            log.exception("sla sweep failed")
            return
        # Notices it queued go out now rather than at the next outbox poll.
        self._kick.event.set()

    async def _prune_outbox(self) -> None:
        before = datetime.now(UTC) - self.settings.outbox_retention
        removed = 0
        while True:  # in pages, so each transaction (and the writers waiting on it) stays short
            page = await asyncio.to_thread(
                write, self.session_factory, lambda s: outbox.prune(s, before=before, limit=1000)
            )
            removed += page
            if page < 1000:
                break
        if removed:
            log.info("pruned delivered outbox items rows=%d older_than=%s", removed, before)

    async def _wake_polling(self) -> None:
        for src in self.imap:
            src.wake.set()

    async def _deliver(self) -> None:
        async with self._delivering:
            report = await deliver_outgoing_mail(
                self.session_factory, self.settings, breaker=self._relay_breaker
            )
        if report.done or report.retried or report.dead:
            log.info(
                "outgoing mail sent=%d retried=%d dead=%d", report.done, report.retried, report.dead
            )

    async def _deliver_when_kicked(self, stop: asyncio.Event) -> None:
        """Send the auto-reply for new mail as soon as its batch has committed, instead of at
        the next poll. Kicks that come while a drain runs are served by one more drain; the
        interval job still picks up whatever a failed drain left."""
        self._kick.attach(asyncio.get_running_loop())
        while not stop.is_set():
            await self._kick.event.wait()
            self._kick.event.clear()
            try:
                await self._guarded(self._deliver)()
            except Exception:  # the interval job retries; this loop must outlive one failure
                log.exception("outgoing mail delivery after new mail failed")

    async def _deliver_backends(self) -> None:
        if self.settings.backends_file is None:
            return
        from mailticket.backends.delivery import deliver_backend_ops
        from mailticket.backends.registry import BackendConfigError, registry_for

        try:
            registry = registry_for(self.settings.backends_file)
        except BackendConfigError as exc:
            log.error("backend operations not delivered: %s", exc)
            return
        report = await deliver_backend_ops(self._immediate, registry, self.settings)
        if report.total:
            log.info(
                "backend operations done=%d retried=%d dead=%d",
                report.done, report.retried, report.dead,
            )

    async def _poll_backends(self) -> None:
        from mailticket.backends.registry import BackendConfigError, registry_for
        from mailticket.backends.sync import poll_all

        try:
            registry = registry_for(self.settings.backends_file)
        except BackendConfigError as exc:
            log.error("backends not polled: %s", exc)
            return
        for name, result in (await poll_all(self._immediate, self.settings, registry)).items():
            if isinstance(result, Exception):
                continue  # poll_all logged it
            if result.updated or result.comments or result.broken or result.unknown_status:
                log.info("polled backend=%s %s", name, result.as_dict())

    def _bind_api(self) -> socket.socket | None:
        if not self.settings.api_listen or self.app_factory is None:
            return None
        return _listening_socket("API_LISTEN", str(self.settings.api_listen))

    def _serve_api(self, sock: socket.socket | None) -> tuple[Any, asyncio.Task[None]] | None:
        if sock is None or self.app_factory is None:
            return None
        server = _EmbeddedServer(uvicorn.Config(self.app_factory(), log_config=None))
        return server, asyncio.create_task(server.serve(sockets=[sock]), name="api")

    def _bind_push(self) -> socket.socket | None:
        listen, secret = self.settings.imap_push_listen, self.settings.imap_push_secret
        if not listen or secret is None:
            return None
        return _listening_socket("IMAP_PUSH_LISTEN", listen)

    def _serve_push(self, sock: socket.socket | None) -> tuple[Any, asyncio.Task[None]] | None:
        """The push listener (live/push.py), on the socket `_bind_push` bound."""
        secret = self.settings.imap_push_secret
        if sock is None or secret is None:
            return None
        config = uvicorn.Config(
            build_push_app(secret.get_secret_value(), self.wake_pushed),
            log_config=None, access_log=False,
        )
        server = _EmbeddedServer(config)
        log.info("push listener started listen=%s", self.settings.imap_push_listen)
        return server, asyncio.create_task(server.serve(sockets=[sock]), name="imap-push")

    def wake_pushed(self, user: str, folder: str) -> int:
        """A push for (user, folder): wake every source watching it; how many."""
        return wake_sources(self.imap, user, folder)


def _listening_socket(setting: str, listen: str) -> socket.socket:
    """The socket an embedded HTTP server serves on, bound here and not by uvicorn: a port
    in use (or a bad address) is then a ConfigError at start, where uvicorn would
    sys.exit() from inside the worker's event loop (exit code 3 and a traceback)."""
    host, _, port = listen.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        return socket.create_server((host, int(port)), family=family)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{setting}={listen}: cannot listen there: {exc}") from None


class _EmbeddedServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # The worker owns SIGTERM/SIGINT and stops uvicorn itself (should_exit).
        yield


class _Kick:
    """Wraps the message handler: a message that opened or joined a ticket may have queued
    outgoing mail, so the delivery loop is woken once that batch's transaction commits
    (thread-safe: sources run in threads). Delivery can only find committed rows, so a wake
    from inside the batch would race the commit, and a slow commit would leave the
    auto-reply for the interval job."""

    def __init__(self, handler: MessageHandler, sessions: sessionmaker[Session]) -> None:
        self.handler = handler
        self.event = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        # One listener per worker on its own session factory, registered before any source
        # runs (SQLAlchemy's listen is not safe beside running sessions); the session's
        # `info` carries the "wake after commit" mark under this worker's own key.
        self._key = f"mailticket.kick.{id(self)}"
        event.listen(sessions, "after_commit", self._committed)
        event.listen(sessions, "after_rollback", self._rolled_back)

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def _committed(self, session: Session) -> None:
        if session.info.pop(self._key, False) and self._loop is not None:
            self._loop.call_soon_threadsafe(self.event.set)

    def _rolled_back(self, session: Session) -> None:
        # What the batch queued is gone; a retry of its messages marks the session again.
        session.info.pop(self._key, None)

    def process_in_session(self, session: Session, raw: bytes, source: str) -> Outcome:
        return self._kick(session, [self.handler.process_in_session(session, raw, source)])[0]

    def prepare(self, items: Sequence[tuple[bytes, str]]) -> Sequence[object]:
        return self.handler.prepare(items)

    def process_batch(
        self,
        session: Session,
        items: Sequence[tuple[bytes, str]],
        *,
        prepared: Sequence[Any] | None = None,
    ) -> list[Outcome]:
        return self._kick(session, self.handler.process_batch(session, items, prepared=prepared))

    def _kick(self, session: Session, outcomes: list[Outcome]) -> list[Outcome]:
        if any(o.action in WROTE_TICKETS for o in outcomes):
            session.info[self._key] = True
        return outcomes


def _now() -> datetime:
    return datetime.now(UTC)


def api_available() -> bool:
    return importlib.util.find_spec("mailticket.api") is not None


def install_signal_handlers(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
