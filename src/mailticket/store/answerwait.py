"""A bound on how long a PostgreSQL connection waits for the server to answer.

The TCP settings in store.db.Liveness end a wait only when the peer's kernel stops
acknowledging: a host that vanished, a partition. A server process that hangs (SIGSTOP, a
frozen VM whose hypervisor still acknowledges, a proxy or pooler that stopped forwarding)
keeps acknowledging, and libpq then waits for its answer for ever: the worker's store call
never returns, its LMTP sessions get no reply and the IMAP drain stops, with nothing
logged. psycopg2 has no timeout of its own for a statement, and its "green" mode, which
would let Python bound each wait, refuses COPY (store.pgcopy relies on it).

So a watchdog thread does it from outside: each round trip (statement, COPY, commit,
rollback, the pool's ping) registers its connection for the time it runs, and one that is
still registered past its deadline has its socket shut down. libpq's wait then ends at once
with a lost connection, the call raises OperationalError naming the bound, and SQLAlchemy
invalidates the connection like any other dropped one: the same path as a stopped server.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from functools import lru_cache
from typing import Any

import psycopg2
import psycopg2.extensions


class _Wait:
    __slots__ = ("deadline", "fd", "fired")

    def __init__(self, fd: int, deadline: float) -> None:
        self.fd = fd
        self.deadline = deadline
        self.fired = False


class _Watchdog:
    """One thread for the process, asleep while no round trip is running.

    A round trip's registration takes no lock (a dict store and pop under the GIL): it runs
    around every statement. The lock is taken only by the thread acting on an expired wait,
    and by a call that ends past its deadline, which may be the one being acted on: it must
    not close its connection (freeing the descriptor for reuse) while the socket is shut."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._waits: dict[int, _Wait] = {}
        self._idle = True  # the thread waits for a notify, not a tick
        self._thread: threading.Thread | None = None
        self._tick = 1.0

    def enter(self, key: int, fd: int, seconds: float) -> _Wait:
        wait = _Wait(fd, time.monotonic() + seconds)
        self._waits[key] = wait
        # Ticks at a quarter of the shortest bound in use: a wait ends at most that much
        # past its deadline. Waking the thread per statement would cost a context switch
        # each; it is woken only when it went idle (read after the store above: see _run).
        if seconds / 4 < self._tick:
            self._tick = max(seconds / 4, 0.05)
        if self._idle:
            with self._cond:
                self._idle = False
                if self._thread is None:
                    self._thread = threading.Thread(
                        target=self._run, name="db-answer-watchdog", daemon=True
                    )
                    self._thread.start()
                else:
                    self._cond.notify()
        return wait

    def leave(self, key: int, wait: _Wait) -> None:
        self._waits.pop(key, None)
        if time.monotonic() >= wait.deadline:
            with self._cond:
                pass  # the watchdog may be shutting this socket: let it finish first

    def _run(self) -> None:
        with self._cond:
            empty_ticks = 0
            while True:
                if self._idle:
                    self._cond.wait()
                    continue
                now = time.monotonic()
                for key, wait in list(self._waits.items()):
                    if wait.deadline <= now and self._waits.get(key) is wait:
                        # Still registered, so its thread is inside the call and the
                        # descriptor is still that connection's (see leave()).
                        _shut(wait.fd)
                        wait.fired = True
                        self._waits.pop(key, None)
                empty_ticks = 0 if self._waits else empty_ticks + 1
                if empty_ticks > 4:
                    self._idle = True
                    # A call that registered before it saw the flag set is seen here.
                    if self._waits:
                        self._idle = False
                        empty_ticks = 0
                    continue
                self._cond.wait(self._tick)


def _shut(fd: int) -> None:
    try:
        # A duplicate descriptor: shutdown acts on the socket itself, and closing the
        # duplicate leaves libpq's own descriptor alone.
        with socket.socket(fileno=os.dup(fd)) as sock:
            sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already gone: the call ends by itself


_WATCHDOG = _Watchdog()


def _after_fork() -> None:
    # A forked child has none of the parent's threads: a new watchdog starts on first use.
    global _WATCHDOG
    _WATCHDOG = _Watchdog()


os.register_at_fork(after_in_child=_after_fork)


class NoAnswer(psycopg2.OperationalError):  # type: ignore[misc]  # psycopg2 has no stubs
    """PostgreSQL did not answer within DB_ANSWER_TIMEOUT; the connection was dropped."""


def _guarded(conn: Any, seconds: float, call: Any, *args: Any, **kwargs: Any) -> Any:
    fd = conn.__dict__.get("_answer_fd", -1)
    if fd < 0:
        return call(*args, **kwargs)
    key = threading.get_ident()
    dog = _WATCHDOG
    wait = dog.enter(key, fd, seconds)
    try:
        return call(*args, **kwargs)
    except psycopg2.Error as exc:
        if wait.fired:
            conn.close()  # closed: SQLAlchemy sees a disconnect and discards it
            raise NoAnswer(
                f"PostgreSQL did not answer within {seconds:g} s (DB_ANSWER_TIMEOUT);"
                " the connection was dropped"
            ) from exc
        raise
    finally:
        dog.leave(key, wait)


class _Cursor(psycopg2.extensions.cursor):  # type: ignore[misc]
    def execute(self, *args: Any, **kwargs: Any) -> Any:
        conn = self.connection
        return _guarded(conn, conn.answer_timeout, super().execute, *args, **kwargs)

    def executemany(self, *args: Any, **kwargs: Any) -> Any:
        conn = self.connection
        return _guarded(conn, conn.answer_timeout, super().executemany, *args, **kwargs)

    def callproc(self, *args: Any, **kwargs: Any) -> Any:
        conn = self.connection
        return _guarded(conn, conn.answer_timeout, super().callproc, *args, **kwargs)

    def copy_expert(self, *args: Any, **kwargs: Any) -> Any:
        conn = self.connection
        return _guarded(conn, conn.answer_timeout, super().copy_expert, *args, **kwargs)


class _Connection(psycopg2.extensions.connection):  # type: ignore[misc]
    answer_timeout: float = 0.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # The connect itself is bounded by libpq's connect_timeout.
        super().__init__(*args, **kwargs)
        self.cursor_factory = _Cursor
        self._answer_fd = self.fileno()

    def commit(self) -> None:
        _guarded(self, self.answer_timeout, super().commit)

    def rollback(self) -> None:
        _guarded(self, self.answer_timeout, super().rollback)


@lru_cache(maxsize=16)
def connection_factory(seconds: float) -> type[psycopg2.extensions.connection]:
    """psycopg2's connection_factory for connections that wait at most `seconds` for an
    answer to any one call."""
    return type("AnswerBoundConnection", (_Connection,), {"answer_timeout": float(seconds)})
