"""`mailticket run` as real processes on PostgreSQL with the real pipeline: kill -9 in the
middle of a batch, two workers on one mailbox, SIGTERM, and new mail becoming tickets."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from mailticket.live.models import ImapLedgerEntry
from mailticket.store.db import make_engine, make_session_factory
from mailticket.store.models import EmailLog, QuarantineEntry, Ticket
from tests.live.dovecot import Dovecot
from tests.live.helpers import message


def worker_env(dovecot: Dovecot, db_url: str, tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IMAP_", "MAILDIR", "LMTP"))}
    env.update(
        DATABASE_URL=db_url, IMAP_HOST="127.0.0.1", IMAP_PORT=str(dovecot.port),
        IMAP_TLS="plain", IMAP_USER=dovecot.user, IMAP_PASSWORD=dovecot.password,
        IMAP_POLL_INTERVAL="3600", EMAIL_UNMATCHED_ACTION="create_ticket",
        SMTP_HOST="127.0.0.1", LOG_FORMAT="text",
    )
    return env


def spawn(env: dict[str, str], tmp_path: Path, name: str, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "mailticket.cli", "run", *args],
        env=env, cwd=tmp_path, stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / f"{name}.log", "wb"),
    )


def scalar(factory: sessionmaker[Session], stmt) -> int:  # type: ignore[no-untyped-def]
    with factory() as s:
        return int(s.scalar(stmt) or 0)


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def assert_each_once(factory: sessionmaker[Session], dovecot: Dovecot, n: int) -> None:
    inbound = EmailLog.direction == "in"
    assert scalar(factory, select(func.count()).where(inbound)) == n
    assert scalar(
        factory, select(func.count(func.distinct(EmailLog.email_message_id))).where(inbound)
    ) == n
    assert scalar(factory, select(func.count()).select_from(Ticket)) == n
    assert scalar(factory, select(func.count()).select_from(QuarantineEntry)) == 0
    assert scalar(factory, select(func.count()).select_from(ImapLedgerEntry)) == n
    assert scalar(
        factory, select(func.count()).where(ImapLedgerEntry.server_done.is_(False))
    ) == 0
    flags = dovecot.flags()
    assert len(flags) == n and all("\\Seen" in f for f in flags.values())


def test_kill_9_mid_batch_then_restart_stores_every_message_once(
    dovecot: Dovecot, pg_url: str, tmp_path: Path
) -> None:
    # Enough that three kills, each after at least one committed batch, land mid-drain.
    n = 1200
    dovecot.append_many([message(f"load {i}", sender=f"c{i}@example.com") for i in range(n)])
    engine = make_engine(pg_url)
    factory = make_session_factory(engine)
    env = worker_env(dovecot, pg_url, tmp_path)
    try:
        for round_ in range(3):
            proc = spawn(env, tmp_path, f"killed{round_}")
            done_before = scalar(factory, select(func.count()).select_from(ImapLedgerEntry))
            wait_until(
                lambda before=done_before, p=proc: p.poll() is not None
                or scalar(factory, select(func.count()).select_from(ImapLedgerEntry)) > before,
                60, "the worker to store some messages",
            )
            # Land the kill at different points of the next batch: right after a commit
            # (server not yet told), while fetching, while processing.
            time.sleep((0.0, 0.05, 0.15)[round_])
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        stored = scalar(factory, select(func.count()).select_from(ImapLedgerEntry))
        assert stored < n, "the kills came too late to interrupt anything"
        final = spawn(env, tmp_path, "final", "--once")
        assert final.wait(120) == 0, (tmp_path / "final.log").read_text()
        assert_each_once(factory, dovecot, n)
    finally:
        engine.dispose()


def test_two_workers_on_one_mailbox_never_both_process_it(
    dovecot: Dovecot, pg_url: str, tmp_path: Path
) -> None:
    n = 150
    dovecot.append_many([message(f"shared {i}", sender=f"s{i}@example.com") for i in range(n)])
    engine = make_engine(pg_url)
    factory = make_session_factory(engine)
    env = worker_env(dovecot, pg_url, tmp_path)
    procs = [spawn(env, tmp_path, f"w{i}") for i in range(2)]
    try:
        wait_until(
            lambda: scalar(factory, select(func.count()).select_from(ImapLedgerEntry)) == n,
            90, "all messages",
        )
        # Both must have reached the mailbox before they are stopped: under load the second
        # process may still be starting when the first has drained everything.
        def decided(i: int) -> bool:
            log = (tmp_path / f"w{i}.log").read_text()
            return "connected mailbox=" in log or "locked-by-another-worker" in log

        wait_until(lambda: all(decided(i) for i in range(2)), 90, "both workers at the mailbox")
        for p in procs:
            p.send_signal(signal.SIGTERM)
        assert [p.wait(30) for p in procs] == [0, 0]
        logs = [(tmp_path / f"w{i}.log").read_text() for i in range(2)]
        connected = [log for log in logs if "connected mailbox=" in log]
        waiting = [log for log in logs if "locked-by-another-worker" in log]
        lines = [
            [line for line in log.splitlines() if "mailbox=" in line or "error" in line.lower()]
            for log in logs
        ]
        assert len(connected) == 1 and len(waiting) == 1, lines
        assert all("worker stopped" in log for log in logs)
        assert_each_once(factory, dovecot, n)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        engine.dispose()


def test_sigterm_mid_drain_finishes_the_batch_in_hand_and_exits(
    dovecot: Dovecot, pg_url: str, tmp_path: Path
) -> None:
    n = 400
    dovecot.append_many([message(f"term {i}", sender=f"t{i}@example.com") for i in range(n)])
    engine = make_engine(pg_url)
    factory = make_session_factory(engine)
    env = worker_env(dovecot, pg_url, tmp_path)
    try:
        proc = spawn(env, tmp_path, "termed")
        wait_until(
            lambda: scalar(factory, select(func.count()).select_from(ImapLedgerEntry)) > 0,
            60, "the first batch",
        )
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        log = (tmp_path / "termed.log").read_text()
        assert "worker stopped" in log
        stored = scalar(factory, select(func.count()).select_from(ImapLedgerEntry))
        assert stored < n, "stopped only after draining everything"
        # Whatever it stored, it also told the server about before leaving.
        assert scalar(
            factory, select(func.count()).where(ImapLedgerEntry.server_done.is_(False))
        ) == 0
        seen = sum("\\Seen" in f for f in dovecot.flags().values())
        assert seen == stored
        final = spawn(env, tmp_path, "rest", "--once")
        assert final.wait(120) == 0
        assert_each_once(factory, dovecot, n)
    finally:
        engine.dispose()
