"""PostgreSQL restarts (an upgrade, a failover, an OOM kill) under a running `mailticket run`.

A private cluster (tests/pgcluster.py) is stopped, fast or immediate, while the worker takes
mail over LMTP, IMAP and a Maildir, serves the HTTP API and runs its scheduled jobs, then
started again. The worker is never restarted. Nothing may be lost or stored twice: LMTP
answers 250 only for a committed message and 4xx (the MTA retries) otherwise; IMAP and
Maildir mail stays untouched on the server until its commit; the API answers 503, never 500.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import smtplib
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, event, func, select, text
from sqlalchemy.exc import DBAPIError, OperationalError

from mailticket.api.tokens import create_token
from mailticket.backends.delivery import KIND as BACKEND_KIND
from mailticket.live.models import ImapLedgerEntry
from mailticket.runtime import build_runtime
from mailticket.settings import load_settings
from mailticket.store import outbox
from mailticket.store.db import database_unavailable, make_engine, make_session_factory
from mailticket.store.models import EmailLog, QuarantineEntry
from mailticket.store.outbox_models import OutboxItem
from tests.api.conftest import build_api
from tests.backends.helpers import write_backends
from tests.live.dovecot import Dovecot
from tests.live.helpers import message, stop_process
from tests.pgcluster import PgCluster, free_port, server_bindir
from tests.smtp_sink import SmtpSink

OUTAGE = 4.0  # seconds the database is down
# Each new ticket is confirmed to its sender (the outbox's mail) and mirrored into a backend
# (the outbox's backend operations): both scheduled drains get work.
WORKFLOWS = """\
workflows:
  - name: ticket, confirmation, backend
    classification_trigger: any
    workflow_steps:
      - action: create_ticket
      - action: send_auto_reply
        params: {template: ticket_created, only_if_created: true}
      - action: push_to_backend
        params: {backend: jira}
"""
# The SLA sweep runs every second: it meets the outage too.
SLA = """\
warning_at: 0.75
calendars:
  office:
    timezone: Europe/Berlin
    hours: {mon-fri: "09:00-17:00"}
policies:
  - {name: Standard, first_response: 4h, resolution: 16h}
"""


@pytest.fixture(scope="module")
def cluster() -> Iterator[PgCluster]:
    bindir = server_bindir()
    if bindir is None:
        pytest.skip(
            "no PostgreSQL server binaries under /usr/lib/postgresql/*/bin (initdb, pg_ctl,"
            " postgres); ./scripts/test installs them (package postgresql)"
        )
    pg = PgCluster(bindir).init()
    pg.start()
    yield pg
    pg.destroy()


@pytest.fixture
def pg_db(cluster: PgCluster) -> Iterator[tuple[str, Engine]]:
    if not cluster.running:  # a test that failed mid-outage left it stopped
        cluster.start()
    url = cluster.migrated_database(f"restart_{uuid.uuid4().hex[:10]}")
    engine = make_engine(url)
    yield url, engine
    engine.dispose()


@dataclass
class Worker:
    proc: subprocess.Popen[bytes]
    log_path: Path
    lmtp_port: int
    api_port: int
    token: str
    maildir: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def api(self, path: str) -> httpx.Response:
        return httpx.get(
            f"http://127.0.0.1:{self.api_port}{path}",
            headers={"Authorization": f"Bearer {self.token}"}, timeout=30,
        )


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def worker(
    pg_db: tuple[str, Engine], dovecot: Dovecot, tmp_path: Path
) -> Iterator[Worker]:
    """`mailticket run` on every source at once: LMTP, IMAP (Dovecot, IDLE), a Maildir, the
    API, outgoing mail to a real SMTP sink, a backend (the shipped `fake` kind) and the SLA
    sweep."""
    url, engine = pg_db
    with make_session_factory(engine)() as s, s.begin():
        _, token = create_token(s, name="restart-test", scope="read")
    maildir = tmp_path / "Maildir"
    for sub in ("new", "cur", "tmp"):
        (maildir / sub).mkdir(parents=True)
    backends = write_backends(
        tmp_path / "backends.yaml", {"jira": {"kind": "fake", "store": "restart"}}
    )
    workflows = tmp_path / "workflows.yaml"
    workflows.write_text(WORKFLOWS)
    sla = tmp_path / "sla.yaml"
    sla.write_text(SLA)
    lmtp_port, api_port = free_port(), free_port()
    sink = SmtpSink().start()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("IMAP_", "MAILDIR", "LMTP", "API_", "SMTP_", "BACKEND"))}
    env.update(
        DATABASE_URL=url, LOG_FORMAT="text", EMAIL_UNMATCHED_ACTION="create_ticket",
        LMTP_LISTEN=f"lmtp://127.0.0.1:{lmtp_port}", API_LISTEN=f"127.0.0.1:{api_port}",
        MAILDIR_PATH=str(maildir),
        IMAP_HOST="127.0.0.1", IMAP_PORT=str(dovecot.port), IMAP_TLS="plain",
        IMAP_USER=dovecot.user, IMAP_PASSWORD=dovecot.password, IMAP_POLL_INTERVAL="2",
        SMTP_HOST="127.0.0.1", SMTP_PORT=str(sink.port), SMTP_TLS="plain", SMTP_TIMEOUT="5",
        BACKENDS_FILE=str(backends), WORKFLOWS_PATH=str(workflows), AUTO_REPLY_MAX_AGE="0",
        SLA_PATH=str(sla), SLA_SWEEP_INTERVAL="1",
        BACKEND_DELIVERY_INTERVAL="1", BACKEND_POLL_INTERVAL="1",
    )
    log_path = tmp_path / "worker.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "mailticket.cli", "run"], env=env, cwd=tmp_path,
        stdout=subprocess.DEVNULL, stderr=open(log_path, "wb"),
    )
    w = Worker(proc, log_path, lmtp_port, api_port, token, maildir)
    w.sink = sink  # type: ignore[attr-defined]
    try:
        wait_until(
            lambda: proc.poll() is not None or "connected mailbox=" in w.log(), 90,
            "the worker to start",
        )
        assert proc.poll() is None, w.log()[-3000:]
        yield w
    finally:
        stop_process(proc)
        sink.stop()


def count(engine: Engine, stmt) -> int:  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        return int(conn.scalar(stmt) or 0)


def stored_ids(engine: Engine) -> list[str]:
    """Message-IDs stored from the outside: logged or quarantined (never both)."""
    with engine.connect() as conn:
        logged = list(conn.scalars(
            select(EmailLog.email_message_id).where(EmailLog.direction == "in")
        ))
        held = [m for m in conn.scalars(select(QuarantineEntry.message_id)) if m]
    return logged + held


def message_id_of(raw: bytes) -> str:
    for line in raw.decode("ascii", "replace").splitlines():
        if line.lower().startswith("message-id:"):
            return line.split(":", 1)[1].strip()
    raise AssertionError("no Message-ID")


def outage(cluster: PgCluster, mode: str, during: Callable[[], None] | None = None) -> None:
    """Stop the database, run `during` (or wait OUTAGE seconds) while it is down, start it."""
    cluster.stop(mode)
    try:
        started = time.monotonic()
        if during is not None:
            during()
        time.sleep(max(OUTAGE - (time.monotonic() - started), 0))
    finally:
        cluster.start()


# --- LMTP ---------------------------------------------------------------------------------


@dataclass
class MtaClient:
    """One LMTP session that sends its messages like an MTA: a 4xx reply or a dropped
    connection keeps the message, which is sent again; 250 hands it over for good."""

    port: int
    messages: list[bytes]
    # After `messages`: new ones made by `more(n)` until `until` is set (a client that is
    # still sending whenever the outage comes, however fast the machine).
    more: Callable[[int], bytes] | None = None
    until: threading.Event | None = None
    replies: dict[str, list[int]] = field(default_factory=dict)  # Message-ID -> codes seen
    errors: list[str] = field(default_factory=list)

    def _outgoing(self) -> Iterator[bytes]:
        yield from self.messages
        n = 0
        while self.more is not None and self.until is not None and not self.until.is_set():
            yield self.more(n)
            n += 1
            time.sleep(0.02)  # an MTA's queue, not a benchmark: leave the CPU to the worker

    def run(self) -> None:
        client: smtplib.LMTP | None = None
        for raw in self._outgoing():
            mid = message_id_of(raw)
            codes = self.replies.setdefault(mid, [])
            give_up = time.monotonic() + 120
            while True:
                if time.monotonic() > give_up:
                    self.errors.append(f"{mid}: no 250 within 120 s, replies {codes}")
                    break
                try:
                    if client is None:
                        client = smtplib.LMTP("127.0.0.1", self.port, timeout=60)
                    client.sendmail("customer@example.com", ["support@example.test"], raw)
                except smtplib.SMTPResponseException as exc:
                    codes.append(exc.smtp_code)
                    if exc.smtp_code >= 500:
                        self.errors.append(f"{mid}: refused for good: {exc!r}")
                        break
                    time.sleep(0.2)
                    continue
                except (OSError, smtplib.SMTPException) as exc:
                    codes.append(0)  # no reply: the connection went away
                    self.errors.append(f"{mid}: connection lost: {exc!r}")
                    client = None
                    time.sleep(0.2)
                    continue
                codes.append(250)
                break
        if client is not None:
            client.quit()


def _recovered(clients: list[MtaClient], after: int) -> bool:
    """Every client sent `after` more messages since, its last five answered 250 at once.
    The message a client is sending has no reply yet (an empty list): it is not one of the
    five, or the check would pass only when it happened to look between two messages."""
    return all(
        len(c.replies) >= after
        and [codes for codes in c.replies.values() if codes][-5:] == [[250]] * 5
        for c in clients
    )


@pytest.mark.parametrize("mode", ["immediate", "fast"])
def test_lmtp_during_a_database_restart_loses_and_doubles_nothing(
    cluster: PgCluster, pg_db: tuple[str, Engine], worker: Worker, mode: str
) -> None:
    _, engine = pg_db
    done = threading.Event()
    clients = [
        MtaClient(
            worker.lmtp_port, [],
            more=lambda i, c=c: message(f"lmtp {c}-{i}", sender=f"l{c}x{i}@example.com"),
            until=done,
        )
        for c in range(4)
    ]
    threads = [threading.Thread(target=c.run, daemon=True) for c in clients]
    for t in threads:
        t.start()
    # The clients send before, during and after the outage.
    wait_until(lambda: count(engine, select(func.count()).select_from(EmailLog)) >= 20, 60,
               "the first messages")
    outage(cluster, mode)
    sent = [len(c.replies) for c in clients]
    wait_until(lambda: _recovered(clients, max(sent) + 10), 60, "250s after the restart")
    done.set()
    for t in threads:
        t.join(180)
    assert not any(t.is_alive() for t in threads), "LMTP clients still sending"
    replies = {mid: codes for c in clients for mid, codes in c.replies.items()}
    assert [e for c in clients for e in c.errors if "connection lost" not in e] == []
    # The MTA's view: each message ended with one 250, after only temporary refusals.
    assert all(codes[-1] == 250 and codes.count(250) == 1 for codes in replies.values())
    refused = sorted({code for codes in replies.values() for code in codes if code != 250})
    assert set(refused) <= {0, 421, 451}, refused
    assert any(code == 451 for codes in replies.values() for code in codes), (
        "the outage did not hit a delivery: nothing tested"
    )
    # The database's view: every message once.
    stored = stored_ids(engine)
    assert len(stored) == len(set(stored)), "a message was stored twice"
    assert set(stored) == set(replies), "a message answered 250 is missing"
    # The worker recovered by itself: mail after the outage goes straight through.
    after = MtaClient(worker.lmtp_port, [message("after the restart")])
    after.run()
    assert list(after.replies.values()) == [[250]]
    assert worker.proc.poll() is None
    log = worker.log()
    assert "Traceback" not in log
    # The receiver's log of the outage: one warning as it began, one summary when the
    # database was back, counting every 451 the clients got; no group split in halves (the
    # halves would only meet the outage again), no line per refused message.
    assert "redone in halves" not in log
    assert "cannot store" not in log
    assert log.count("pushed mail is answered 451 until it is back") == 1, log[-4000:]
    summaries = re.findall(r"database back: pushed mail stored again after [\d.]+ s; (\d+) ", log)
    refusals = sum(codes.count(451) for codes in replies.values())
    assert [int(n) for n in summaries] == [refusals]


# --- IMAP and Maildir ---------------------------------------------------------------------


def test_imap_and_maildir_mail_arriving_during_the_outage_is_stored_once_after_it(
    cluster: PgCluster, pg_db: tuple[str, Engine], worker: Worker, dovecot: Dovecot
) -> None:
    _, engine = pg_db
    before = [message(f"imap before {i}", sender=f"ib{i}@example.com") for i in range(5)]
    dovecot.append_many(before)
    wait_until(lambda: count(engine, select(func.count()).select_from(ImapLedgerEntry)) == 5,
               60, "the first IMAP mail")
    imap_new = [message(f"imap during {i}", sender=f"id{i}@example.com") for i in range(10)]
    maildir_new = [message(f"maildir during {i}", sender=f"md{i}@example.com")
                   for i in range(10)]
    seen_during: dict[str, object] = {}

    def arrive_and_look() -> None:
        dovecot.append_many(imap_new)
        for i, raw in enumerate(maildir_new):
            (worker.maildir / "tmp" / f"m{i}").write_bytes(raw)
            os.rename(worker.maildir / "tmp" / f"m{i}", worker.maildir / "new" / f"m{i}")
        time.sleep(OUTAGE)  # the sources try (IDLE wakes, the Maildir job runs) and fail
        seen_during["flags"] = dovecot.flags()
        seen_during["maildir_new"] = sorted(os.listdir(worker.maildir / "new"))
        seen_during["maildir_cur"] = sorted(os.listdir(worker.maildir / "cur"))

    outage(cluster, "immediate", arrive_and_look)
    # Nothing was marked done while it could not be committed.
    flags = seen_during["flags"]
    assert isinstance(flags, dict)
    assert sum("\\Seen" in f for f in flags.values()) == 5
    assert seen_during["maildir_new"] == [f"m{i}" for i in range(10)]
    assert seen_during["maildir_cur"] == []
    everything = before + imap_new + maildir_new
    wait_until(lambda: len(stored_ids(engine)) >= len(everything)
               and len(os.listdir(worker.maildir / "new")) == 0
               and all("\\Seen" in f for f in dovecot.flags().values()),
               90, "the mail of the outage to be stored")
    stored = stored_ids(engine)
    assert sorted(stored) == sorted(message_id_of(raw) for raw in everything)
    assert count(engine, select(func.count()).where(ImapLedgerEntry.server_done.is_(False))) == 0
    assert len(os.listdir(worker.maildir / "cur")) == 10
    assert worker.proc.poll() is None
    assert "Traceback" not in worker.log()


# --- HTTP API -----------------------------------------------------------------------------


def test_api_answers_503_while_the_database_is_down_and_200_after(
    cluster: PgCluster, worker: Worker
) -> None:
    assert worker.api("/api/v1/tickets").status_code == 200
    assert worker.api("/readyz").status_code == 200
    during: dict[str, httpx.Response] = {}

    def ask() -> None:
        during["tickets"] = worker.api("/api/v1/tickets")
        during["ticket"] = worker.api("/api/v1/tickets/1")
        during["readyz"] = worker.api("/readyz")
        during["healthz"] = worker.api("/healthz")

    outage(cluster, "immediate", ask)
    for name in ("tickets", "ticket"):
        response = during[name]
        assert response.status_code == 503, (name, response.status_code, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        body = response.json()
        assert body["status"] == 503 and "database" in body["detail"]
        assert int(response.headers["retry-after"]) > 0
    assert during["readyz"].status_code == 503
    assert "database" in during["readyz"].json()["detail"]
    assert int(during["readyz"].headers["retry-after"]) > 0
    assert during["healthz"].status_code == 200  # the process itself is fine
    # The first requests after the restart already meet the new server: no 500 while the
    # pool's old connections are found dead.
    for _ in range(5):
        assert worker.api("/api/v1/tickets").status_code == 200
    assert worker.api("/readyz").status_code == 200
    log = worker.log()
    assert "Traceback" not in log and "unhandled error" not in log


# --- scheduled jobs -----------------------------------------------------------------------


def test_outgoing_mail_and_backend_jobs_go_on_after_the_outage(
    cluster: PgCluster, pg_db: tuple[str, Engine], worker: Worker
) -> None:
    _, engine = pg_db
    sink: SmtpSink = worker.sink  # type: ignore[attr-defined]
    backend_done = (select(func.count()).where(OutboxItem.kind == BACKEND_KIND,
                                               OutboxItem.status == "done"))
    first = MtaClient(worker.lmtp_port, [message("before", sender="b1@example.com")])
    first.run()
    wait_until(lambda: len(sink.messages) == 1 and count(engine, backend_done) == 1, 60,
               "the auto-reply and the backend ticket of the first mail")
    # Down for longer than the backend jobs' interval (1 s) and the IMAP poll (2 s): every
    # job meets the outage at least once.
    outage(cluster, "immediate", lambda: time.sleep(OUTAGE))
    second = MtaClient(worker.lmtp_port, [message("after", sender="b2@example.com")])
    second.run()
    wait_until(lambda: len(sink.messages) == 2 and count(engine, backend_done) == 2, 60,
               "the auto-reply and the backend ticket of the mail after the outage")
    assert count(engine, select(func.count()).where(OutboxItem.status != "done")) == 0
    log = worker.log()
    assert worker.proc.poll() is None
    assert "Traceback" not in log, log[-4000:]


def test_a_connection_lost_after_the_pool_checked_it_is_503_not_500(
    cluster: PgCluster, pg_db: tuple[str, Engine]
) -> None:
    """The pool pings a connection when it hands it out; one that dies after that ping (the
    server restarting between two statements of a request) fails the statement itself. That
    request is answered 503 with Retry-After, and the next one gets a new connection."""
    url, _ = pg_db
    runtime = build_runtime(load_settings(database_url=url, _env_file=None))
    api = build_api(runtime)
    armed = threading.Event()

    def drop_mid_request(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if armed.is_set() and "FROM tticket_tickets" in statement:
            armed.clear()
            cluster.terminate(conn.connection.dbapi_connection.get_backend_pid())

    event.listen(runtime.engine, "before_cursor_execute", drop_mid_request)
    try:
        assert api.get("/api/v1/tickets").status_code == 200
        armed.set()
        response = api.get("/api/v1/tickets")
        assert not armed.is_set(), "the connection was not dropped: nothing tested"
        assert response.status_code == 503, response.text
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["detail"] == "the database is unavailable; try again shortly"
        assert int(response.headers["retry-after"]) > 0
        assert api.get("/api/v1/tickets").status_code == 200
    finally:
        api.client.close()
        runtime.close()


def test_a_connection_lost_after_the_answer_ends_the_request_quietly(
    cluster: PgCluster, pg_db: tuple[str, Engine], caplog: pytest.LogCaptureFixture
) -> None:
    """The server goes away after a request's last statement (its answer is made): the
    rollback that closes the request's session cannot reach it. The client keeps its 200;
    the worker logs a line, not an unhandled error with a traceback."""
    url, _ = pg_db
    runtime = build_runtime(load_settings(database_url=url, _env_file=None))
    api = build_api(runtime)
    armed = threading.Event()

    def drop_before_rollback(conn: Any) -> None:
        if not armed.is_set():
            return
        armed.clear()
        cluster.terminate(conn.connection.dbapi_connection.get_backend_pid())

    event.listen(runtime.engine, "rollback", drop_before_rollback)
    try:
        assert api.get("/api/v1/tickets").status_code == 200
        armed.set()
        with caplog.at_level(logging.INFO):
            response = api.get("/api/v1/tickets")
        assert not armed.is_set(), "the connection was not dropped: nothing tested"
        assert response.status_code == 200, response.text
        assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
        assert any("lost database connection" in r.getMessage() for r in caplog.records)
        assert api.get("/api/v1/tickets").status_code == 200
    finally:
        api.client.close()
        runtime.close()


async def test_an_outbox_item_that_meets_the_outage_waits_its_turn_without_a_traceback(
    cluster: PgCluster, pg_db: tuple[str, Engine], caplog: pytest.LogCaptureFixture
) -> None:
    """The database goes away while an item is performed (its handler reads the database):
    the item is retried later like any failed attempt, logged in one line, and its outcome
    is recorded once the database is back."""
    _, engine = pg_db
    factory = make_session_factory(engine)
    with factory() as s, s.begin():
        outbox.enqueue(s, kind="restart-test", target="t", operation="op", payload={},
                       idempotency_key="restart-1")
    restarted = threading.Thread(target=lambda: (time.sleep(2), cluster.start()))

    async def handler(item: OutboxItem) -> None:
        cluster.stop("immediate")
        restarted.start()
        with factory() as s:  # what a backend handler does: read the ticket it mirrors
            s.scalar(select(func.count()).select_from(EmailLog))

    try:
        with caplog.at_level(logging.INFO, logger="mailticket.store.outbox"):
            report = await outbox.drain(
                factory, kind="restart-test", handler=handler, policy=outbox.RetryPolicy()
            )
    finally:
        restarted.join(30)
    assert report.retried == 1 and report.done == 0
    with factory() as s:
        (row,) = s.scalars(select(OutboxItem).where(OutboxItem.kind == "restart-test"))
        assert (row.status, row.attempts) == ("pending", 1)
    assert [r for r in caplog.records if r.exc_info] == []
    assert any("database unavailable" in r.getMessage() for r in caplog.records)


def test_sigterm_while_the_database_is_down_stops_cleanly(
    cluster: PgCluster, worker: Worker
) -> None:
    """Stopping everything at once (a host reboot, a deploy) may stop the worker while its
    jobs are still waiting for the database: it exits 0 at once, without tracebacks."""
    cluster.stop("immediate")
    try:
        time.sleep(2.5)  # every job has met the outage; the outbox drains are waiting on it
        worker.proc.send_signal(signal.SIGTERM)
        assert worker.proc.wait(30) == 0
    finally:
        cluster.start()
    log = worker.log()
    assert "worker stopped" in log
    assert "Traceback" not in log, log[-4000:]


def test_what_counts_as_the_database_unavailable(
    cluster: PgCluster, pg_db: tuple[str, Engine]
) -> None:
    """503 and "the next run retries" are for the database away, not for a statement it
    refuses: those stay errors (a 500 and a traceback to see)."""
    _, engine = pg_db

    def raised(conn: Any, sql: str) -> BaseException:
        with pytest.raises(DBAPIError) as caught:
            conn.execute(text(sql))
        conn.rollback()
        return caught.value

    with engine.connect() as conn:
        assert not database_unavailable(raised(conn, "SELECT 1/0"))  # DataError
        conn.execute(text("CREATE TEMP TABLE t (k int PRIMARY KEY)"))
        conn.execute(text("INSERT INTO t VALUES (1)"))
        conn.commit()
        assert not database_unavailable(raised(conn, "INSERT INTO t VALUES (1)"))  # Integrity
        conn.execute(text("SET statement_timeout = '10ms'"))
        canceled = raised(conn, "SELECT pg_sleep(1)")  # an OperationalError, SQLSTATE 57014
        assert isinstance(canceled, OperationalError)
        assert not database_unavailable(canceled)
        # The server going away under an open connection (its backend terminated).
        cluster.terminate(conn.connection.dbapi_connection.get_backend_pid())  # type: ignore[union-attr]
        assert database_unavailable(raised(conn, "SELECT 1"))
    cluster.stop("fast")
    try:
        with pytest.raises(DBAPIError) as refused:
            engine.connect()
        assert database_unavailable(refused.value)  # refused at connect: no SQLSTATE at all
    finally:
        cluster.start()


def _raised(conn: Any, sql: str, *params: Any) -> BaseException:
    with pytest.raises(DBAPIError) as caught:
        conn.exec_driver_sql(sql, *params)
    conn.rollback()
    return caught.value


def test_what_counts_as_sqlite_unavailable(tmp_path: Path) -> None:
    """On SQLite too, only "not now" is an outage, told by the result code: the lock held
    by another connection (BUSY: "database is locked"), a file that cannot be opened. Other
    OperationalErrors are the statement's own (no such table, too many variables, syntax):
    a receiver's group meeting one is halved, not answered 451 whole."""
    path = tmp_path / "busy.db"
    lite = make_engine(f"sqlite:///{path}", connect_args={"timeout": 0})
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("PRAGMA journal_mode=WAL")  # as the engine sets it on connecting
        holder.execute("CREATE TABLE x (a)")
        with lite.connect() as conn:
            conn.exec_driver_sql("PRAGMA busy_timeout=0")  # the engine sets a long one
            holder.execute("BEGIN EXCLUSIVE")
            # The writer lock held elsewhere: busy, not the statement's fault.
            busy = _raised(conn, "INSERT INTO x VALUES (1)")
            holder.execute("ROLLBACK")
            statement = [
                _raised(conn, "SELECT * FROM no_such_table"),
                _raised(conn, "SELEC 1"),
                _raised(conn, "SELECT 1 WHERE 1 IN (" + ",".join("?" * 300_000) + ")",
                        tuple(range(300_000))),  # too many SQL variables
            ]
        assert isinstance(busy, OperationalError) and database_unavailable(busy), busy
        for exc in statement:
            assert isinstance(exc, OperationalError)  # the old rule took each for an outage
            assert not database_unavailable(exc), exc
    finally:
        holder.close()
        lite.dispose()
    nowhere = make_engine(f"sqlite:///{tmp_path}/no/such/dir/x.db")
    try:
        with pytest.raises(DBAPIError) as cannot_open:
            nowhere.connect()
        assert database_unavailable(cannot_open.value)  # "unable to open database file"
    finally:
        nowhere.dispose()
