"""Engine and session construction for PostgreSQL and the embedded SQLite default."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import JSON, Dialect, Engine, String, TypeDecorator, create_engine, event, inspect
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

if TYPE_CHECKING:
    from mailticket.settings import Settings

# JSONB on PostgreSQL (indexable, what ops query), plain JSON text on SQLite.
JSONType = JSON().with_variant(JSONB(), "postgresql")


class Base(DeclarativeBase):
    pass


_T = TypeVar("_T", bound=Base)


@lru_cache(maxsize=64)
def _column_keys(cls: type[Base]) -> frozenset[str]:
    return frozenset(attr.key for attr in inspect(cls).column_attrs)


def new_row(cls: type[_T], **values: Any) -> _T:
    """A new, not yet added row object, like cls(**values) at a tenth of the cost.

    The declarative constructor sends every value through attribute instrumentation, which
    on the hot path (several rows per message) cost more than the rest of building them. A
    new object has no history to record, and an INSERT reads the values straight from its
    __dict__, which is where these go. Columns only: a relationship must be set normally.
    """
    unknown = values.keys() - _column_keys(cls)
    if unknown:
        raise TypeError(f"{cls.__name__} has no column(s) {sorted(unknown)}")
    obj: _T = cls.__mapper__.class_manager.new_instance()
    obj.__dict__.update(values)
    return obj


class ClippedString(TypeDecorator[str]):
    """A VARCHAR(n) for values that come from outside (mail headers, vendor answers):
    an overlong value is cut to n and NUL dropped, instead of failing the whole message on
    PostgreSQL (SQLite accepts both, so without this the two databases disagree)."""

    impl = String
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        if value is None:
            return None
        value = value.replace("\x00", "")  # PostgreSQL text cannot hold NUL
        length: int | None = getattr(self.impl_instance, "length", None)
        return value[:length] if length is not None and len(value) > length else value


def _sqlite_own_transactions(dbapi_conn: Any, _record: Any) -> None:
    # pysqlite's own implicit BEGIN handling breaks SAVEPOINT (each message runs in one) and
    # runs DDL outside any transaction; switch it off and let SQLAlchemy emit BEGIN itself
    # (see _sqlite_begin).
    dbapi_conn.isolation_level = None


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    _sqlite_own_transactions(dbapi_conn, _record)
    cur = dbapi_conn.cursor()
    # WAL lets the API read while the worker writes; busy_timeout turns lock contention
    # between processes into waiting instead of "database is locked" errors.
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


# Set while a writer holds its turn (store.gate.write_gate): its transactions take the write
# lock when they begin, so a later write can never find its snapshot stale.
_IMMEDIATE: ContextVar[bool] = ContextVar("mailticket_sqlite_immediate", default=False)


@contextlib.contextmanager
def immediate_transactions() -> Iterator[None]:
    token = _IMMEDIATE.set(True)
    try:
        yield
    finally:
        _IMMEDIATE.reset(token)


def _sqlite_begin(conn: Any) -> None:
    immediate = _IMMEDIATE.get() or conn.get_execution_options().get("sqlite_immediate", False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def transactional_migrations(engine: Engine) -> None:
    """Make a SQLite engine run `mailticket db upgrade` as one transaction, as PostgreSQL does.

    pysqlite commits DDL as it goes: a migration stopped halfway (kill -9, a full disk, a
    failing data step) would keep the columns it had added while its version was never
    stamped, and every rerun would then fail on them ("duplicate column name"). SQLite's DDL
    is transactional once pysqlite stops managing transactions; BEGIN IMMEDIATE takes the
    write lock at the start, so a running worker cannot interleave. No pragmas here: foreign
    key enforcement would break the table rebuilds of Alembic's batch mode."""
    event.listen(engine, "connect", _sqlite_own_transactions)
    event.listen(engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN IMMEDIATE"))


def _pg_session(dbapi_conn: Any, _record: Any) -> None:
    # Raw messages are stored whole, attachments included: pglz, PostgreSQL's default TOAST
    # compression, spends several times longer on such values than lz4 and keeps them no
    # smaller (base64 and compressed files barely compress). Columns that name their own
    # method keep it; a server built without lz4 keeps its default.
    cur = dbapi_conn.cursor()
    try:
        cur.execute(
            "SELECT 1 FROM pg_settings WHERE name = 'default_toast_compression' "
            "AND 'lz4' = ANY(enumvals)"
        )
        if cur.fetchone() is not None:
            cur.execute("SET default_toast_compression = lz4")
        dbapi_conn.commit()
    finally:
        cur.close()


@dataclass(frozen=True, slots=True)
class Liveness:
    """How soon a PostgreSQL connection gives up on a server that does not answer.

    Without these the OS decides: a connect to an address that drops packets (a failover to
    a host that is gone) or to a server that accepts TCP and never speaks waits minutes, and
    so does a statement (the pool's ping included) on a connection whose server vanished
    without closing it; the LMTP client meanwhile times out instead of getting 451, and the
    API hangs instead of answering 503. libpq's own parameters, in seconds (tcp_user_timeout
    is given here in seconds too and handed to libpq in milliseconds); 0 means "the OS
    default" for each, as in libpq."""

    connect_timeout: int = 10  # the whole connect, TCP and startup; libpq's minimum is 2
    keepalives_idle: int = 30  # idle seconds before the first keepalive probe
    keepalives_interval: int = 10  # between unanswered probes
    keepalives_count: int = 3  # unanswered probes before the connection is dead
    # Sent data unacknowledged this long closes the connection: what ends a statement (or a
    # ping) sent to a server that vanished, where keepalives do not apply (data is pending).
    tcp_user_timeout: int = 30
    # The longest any one call (statement, COPY, commit, ping) waits for the answer, for a
    # server that still acknowledges TCP but never answers (hung, frozen, behind a stalled
    # proxy), which none of the above notice; store.answerwait enforces it. 0: no bound.
    answer_timeout: float = 60.0

    @classmethod
    def of(cls, settings: Settings) -> Liveness:
        return cls(
            connect_timeout=settings.db_connect_timeout,
            keepalives_idle=settings.db_keepalives_idle,
            keepalives_interval=settings.db_keepalives_interval,
            keepalives_count=settings.db_keepalives_count,
            tcp_user_timeout=settings.db_tcp_user_timeout,
            answer_timeout=settings.db_answer_timeout,
        )

    def connect_args(self) -> dict[str, Any]:
        args: dict[str, Any] = {
            "connect_timeout": self.connect_timeout,
            "keepalives": 1,
            "keepalives_idle": self.keepalives_idle,
            "keepalives_interval": self.keepalives_interval,
            "keepalives_count": self.keepalives_count,
            "tcp_user_timeout": self.tcp_user_timeout * 1000,
        }
        return {k: v for k, v in args.items() if v}


# The drivers built on libpq, which takes these parameters.
_LIBPQ_DRIVERS = ("psycopg2", "psycopg")


def _with_liveness(url: str, liveness: Liveness, connect_args: dict[str, Any]) -> dict[str, Any]:
    """Liveness's parameters under those the user gave: a parameter in DATABASE_URL's query
    string (or in connect_args) is theirs and stays."""
    parsed = make_url(url)
    if parsed.get_driver_name() not in _LIBPQ_DRIVERS:
        return connect_args
    given = set(parsed.query) | set(connect_args)
    args = {k: v for k, v in liveness.connect_args().items() if k not in given} | connect_args
    if liveness.answer_timeout > 0 and parsed.get_driver_name() == "psycopg2":
        # Here, not at the top: only a PostgreSQL engine needs psycopg2 loaded.
        from mailticket.store.answerwait import connection_factory

        args.setdefault("connection_factory", connection_factory(liveness.answer_timeout))
    return args


def make_engine(url: str, *, liveness: Liveness | None = None, **kwargs: Any) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    kwargs["connect_args"] = _with_liveness(
        url, liveness or Liveness(), kwargs.get("connect_args") or {}
    )
    if url.startswith(("postgresql+psycopg2", "postgresql:", "postgres:")):
        # psycopg2's own executemany is one round trip per row; this pages UPDATEs and
        # upserts (INSERTs already go out as multi-row VALUES).
        kwargs.setdefault("executemany_mode", "values_plus_batch")
    engine = create_engine(url, **kwargs)
    if engine.dialect.name == "postgresql":
        event.listen(engine, "connect", _pg_session)
    return engine


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False)


# SQLSTATE classes of a server that cannot take work now, whatever the statement: 08
# connection exception, 57P admin/crash shutdown and "the database system is starting up",
# 53300 too many connections.
_UNAVAILABLE_STATES = ("08", "57P", "53300")
# SQLite's primary result codes (the low byte of an extended one) for "not now", not "not
# this statement": the lock held elsewhere (BUSY, and LOCKED for a shared-cache table), the
# file that cannot be opened, read or written (CANTOPEN, IOERR, FULL, and PROTOCOL: the WAL
# lock kept changing). Everything else (SQLITE_ERROR: no such table, syntax, too many
# variables or columns; RANGE; ...) is the statement's own fault and fails again.
_SQLITE_UNAVAILABLE = frozenset({
    sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED, sqlite3.SQLITE_CANTOPEN,
    sqlite3.SQLITE_IOERR, sqlite3.SQLITE_FULL, sqlite3.SQLITE_PROTOCOL,
})


def database_unavailable(exc: BaseException) -> bool:
    """The database cannot be reached or refuses every statement for now (stopped,
    restarting, failing over, out of connections, SQLite's lock busy): the statement is not
    at fault and the same work succeeds later. A statement the database refuses for what it
    is (a constraint, a value too big for an index) is not this: retrying it fails again.

    A connection lost mid-statement SQLAlchemy flags as invalidated; one refused at connect
    time has no SQLSTATE (the client library raised it). SQLite says which by its result
    code (`sqlite_errorcode`, Python 3.11), not its message text."""
    if isinstance(exc, PoolTimeout):
        return True  # every pooled connection busy: the caller may try again shortly
    if not isinstance(exc, DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    if not isinstance(exc, OperationalError):
        return False
    if isinstance(exc.orig, sqlite3.Error):
        code = getattr(exc.orig, "sqlite_errorcode", None)
        # Without a code (an error the sqlite3 module made itself) it cannot tell: counted
        # as an outage, as every SQLite OperationalError was before it could.
        return code is None or code & 0xFF in _SQLITE_UNAVAILABLE
    state = getattr(exc.orig, "pgcode", None)
    return state is None or str(state).startswith(_UNAVAILABLE_STATES)
