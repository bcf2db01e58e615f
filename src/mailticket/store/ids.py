"""Primary keys handed out before the INSERT, so a batch's rows can point at each other
without a flush and be written later with one COPY per table.

PostgreSQL: ids are reserved from the table's own sequence, a block at a time, and the
blocks are shared by every unit of work of the process (a batch of one message then costs
no round trip for its ids); an id reserved but never used is a harmless gap. SQLite has
no sequences: each unit of work counts on from max(id) inside its own transaction. SQLite
admits one writer at a time, and a row another process committed first makes our INSERT
fail, which sends the batch through its retries instead of doing anything wrong.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

from sqlalchemy import Connection, Engine, text
from sqlalchemy.orm import Session

# Smallest block fetched from a sequence at a time.
MIN_BLOCK = 64

_lock = threading.Lock()


class _Pool:
    """One engine's reserved ids: keyed by the engine, not the URL, because tests drop and
    recreate databases under the same name (a new sequence would hand out our ids again)."""

    def __init__(self) -> None:
        # table -> reserved ids, highest first (pop() gives the lowest)
        self.free: dict[str, list[int]] = {}
        self.sequences: dict[str, str] = {}


_pools: weakref.WeakKeyDictionary[Engine, _Pool] = weakref.WeakKeyDictionary()


def _pool(engine: Engine) -> _Pool:
    with _lock:
        pool = _pools.get(engine)
        if pool is None:
            pool = _pools[engine] = _Pool()
        return pool


def _sequence(connection: Connection, pool: _Pool, table: str) -> str:
    if table not in pool.sequences:
        name = connection.execute(
            text("SELECT pg_get_serial_sequence(:t, 'id')"), {"t": table}
        ).scalar_one()
        pool.sequences[table] = str(name)
    return pool.sequences[table]


class IdBlocks:
    def __init__(self, session: Session, block: int) -> None:
        self.session = session
        self.block = max(block, MIN_BLOCK)
        bind = session.get_bind()
        self.postgres = bind.dialect.name == "postgresql"
        # The engine's shared pool (a session bound to a connection: that one's engine).
        self._free = _pool(bind.engine).free if self.postgres else None
        self._next: dict[str, int] = {}

    def after_foreign_write(self) -> None:
        """Someone else inserted rows in our transaction (SQLite numbered them after ours,
        which were written first): count on from the table again."""
        self._next.clear()

    def take(self, table: str) -> int:
        if self._free is not None:
            with _lock:
                free = self._free.get(table)
                if free:
                    return free.pop()  # the common case: no connection lookup at all
        # On the connection, not the session: an ORM execute would autoflush.
        connection = self.session.connection()
        if not self.postgres:
            if table not in self._next:
                top = connection.execute(text(f'SELECT max(id) FROM "{table}"')).scalar()
                self._next[table] = int(top or 0) + 1
            value = self._next[table]
            self._next[table] = value + 1
            return value
        pool = _pool(connection.engine)
        with _lock:
            free = pool.free.get(table)
            if free:
                return free.pop()
        rows = connection.execute(
            text("SELECT nextval(CAST(:s AS regclass)) FROM generate_series(1, :n)"),
            {"s": _sequence(connection, pool, table), "n": self.block},
        ).scalars()
        fresh: list[Any] = sorted((int(v) for v in rows), reverse=True)
        value = fresh.pop()
        with _lock:
            free = pool.free.setdefault(table, [])
            free.extend(fresh)
            free.sort(reverse=True)
        return int(value)
