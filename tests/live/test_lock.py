"""One worker per mailbox: PostgreSQL advisory lock, SQLite lease row."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import psycopg2
from sqlalchemy import Engine, text, update

from mailticket.live.lock import SourceLock, lock_key
from mailticket.live.models import SourceLease
from mailticket.store.db import make_engine


def test_only_one_holder_until_released(engine: Engine) -> None:
    a = SourceLock(engine, "imap:box/INBOX", owner="a")
    b = SourceLock(engine, "imap:box/INBOX", owner="b")
    other = SourceLock(engine, "imap:box/Other", owner="b")
    assert a.acquire()
    assert a.acquire()  # renewing is fine
    assert not b.acquire()
    assert other.acquire()
    a.release()
    assert b.acquire()
    b.release()
    other.release()


def test_sqlite_lease_of_a_dead_worker_expires(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from mailticket.store import migrate

    url = f"sqlite:///{tmp_path}/lease.db"
    migrate.upgrade(url)
    engine = make_engine(url)
    try:
        dead = SourceLock(engine, "imap:x/INBOX", owner="dead")
        assert dead.acquire()
        alive = SourceLock(engine, "imap:x/INBOX", owner="alive")
        assert not alive.acquire()
        with engine.begin() as conn:
            conn.execute(
                update(SourceLease).values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
            )
        assert alive.acquire()
        assert not dead.acquire()
    finally:
        engine.dispose()


def test_postgres_lock_dies_with_its_session_and_is_taken_again(pg_url: str) -> None:
    engine = make_engine(pg_url)
    try:
        lock = SourceLock(engine, "imap:y/INBOX", owner="w1")
        assert lock.acquire()
        assert lock._conn is not None
        pid = lock._conn.execute(text("SELECT pg_backend_pid()")).scalar()
        lock._conn.commit()
        admin = psycopg2.connect(pg_url.replace("postgresql+psycopg2", "postgresql"))
        admin.autocommit = True
        with admin.cursor() as cur:
            cur.execute("SELECT pg_terminate_backend(%s)", (pid,))
            # The lock vanished with the killed session: anyone may take it now.
            # (terminate returns before the backend has exited: allow it a moment)
            deadline = time.monotonic() + 5
            got = False
            while not got and time.monotonic() < deadline:
                cur.execute("SELECT pg_try_advisory_lock(%s)", (lock_key("imap:y/INBOX"),))
                got = cur.fetchone() == (True,)
                time.sleep(0.02)
            assert got
            cur.execute("SELECT pg_advisory_unlock(%s)", (lock_key("imap:y/INBOX"),))
        admin.close()
        assert lock.acquire()  # notices the dead connection and locks again
        assert lock._conn is not None
        lock.release()
    finally:
        engine.dispose()


def test_mailbox_lock_name_ignores_how_the_server_is_reached() -> None:
    from mailticket.live.lock import mailbox_lock_name

    assert mailbox_lock_name("Support@Example.test", "inbox", 7) == mailbox_lock_name(
        "support@example.test", "INBOX", 7
    )
    assert mailbox_lock_name("s@x", "Archive", 7) != mailbox_lock_name("s@x", "archive", 7)
    assert mailbox_lock_name("s@x", "INBOX", 7) != mailbox_lock_name("s@x", "INBOX", 8)
    assert mailbox_lock_name("s@x", "INBOX", 7) != mailbox_lock_name("t@x", "INBOX", 7)
