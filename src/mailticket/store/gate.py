"""Writers on SQLite take turns: one gate per database in this process, BEGIN IMMEDIATE across
processes.

SQLite allows one writer. A transaction that begins DEFERRED reads first and asks for the write
lock at its first write; when another connection committed in between, its snapshot is stale
and the write fails at once with "database is locked", busy timeout or not. Two rules rule
that out:

- every write transaction that runs under `write_gate` begins IMMEDIATE, taking the write lock
  up front, so a writer of another process waits (busy_timeout) instead of failing;
- inside this process the writers queue on a lock first, so they hand over without SQLite's
  sleep-and-poll busy handler.

PostgreSQL needs neither: the gate is a no-op there.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from mailticket.store.db import immediate_transactions

T = TypeVar("T")

_gates: dict[str, threading.Lock] = {}
_guard = threading.Lock()


@contextlib.contextmanager
def write_gate(engine: Engine) -> Iterator[None]:
    """Hold the database's write turn; transactions begun inside are BEGIN IMMEDIATE."""
    if engine.dialect.name != "sqlite":
        yield
        return
    key = engine.url.render_as_string(hide_password=False)
    with _guard:
        gate = _gates.setdefault(key, threading.Lock())
    with gate, immediate_transactions():
        yield


def engine_of(session_factory: sessionmaker[Session]) -> Engine:
    bind = session_factory.kw.get("bind")
    if not isinstance(bind, Engine):
        raise TypeError("the session factory must be bound to an engine")
    return bind


def write(session_factory: sessionmaker[Session], work: Callable[[Session], T]) -> T:
    """Run `work` in one committed write transaction, in its turn (blocking)."""
    with write_gate(engine_of(session_factory)), session_factory() as session, session.begin():
        return work(session)


async def write_async(session_factory: sessionmaker[Session], work: Callable[[Session], T]) -> T:
    """`write` in a worker thread: waiting for the gate never blocks the event loop."""
    return await asyncio.to_thread(write, session_factory, work)
