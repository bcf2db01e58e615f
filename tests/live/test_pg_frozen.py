"""A PostgreSQL that keeps its connections open and stops answering (a hung server, a frozen
VM, a stalled proxy or pooler): `mailticket run` treats it as an outage after
DB_ANSWER_TIMEOUT, not a wait for ever. LMTP answers 451, IMAP mail stays unseen for the
next pass, /readyz answers 503; when the database answers again the mail is stored once.

The worker reaches the private cluster (tests/pgcluster.py) through a relay that can be
frozen: it stops forwarding both ways and keeps every socket open, so the kernel still
acknowledges what is sent (TCP keepalives and tcp_user_timeout see a live peer) and only
the answer never comes."""

from __future__ import annotations

import os
import smtplib
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg2.extensions
import pytest
from sqlalchemy import Engine, func, select, text
from sqlalchemy.exc import OperationalError

from mailticket.api.tokens import create_token
from mailticket.live.models import ImapLedgerEntry
from mailticket.settings import load_settings
from mailticket.store.db import Liveness, database_unavailable, make_engine, make_session_factory
from tests.live.dovecot import Dovecot
from tests.live.helpers import message, stop_process
from tests.live.relay import Relay
from tests.live.test_pg_restart import (  # noqa: F401 - cluster: the private cluster, a fixture
    cluster,
    count,
    message_id_of,
    stored_ids,
    wait_until,
)
from tests.pgcluster import PgCluster, free_port

ANSWER_TIMEOUT = 2  # seconds, the worker's DB_ANSWER_TIMEOUT (and DB_CONNECT_TIMEOUT) here
# An answer within this is bounded (answer timeout, then a reconnect's connect timeout, and
# the machine's slack); the clients below wait longer, so a hang fails as a timeout.
BOUND = 15.0
CLIENT_WAIT = 40.0


@dataclass
class Worker:
    proc: subprocess.Popen[bytes]
    log_path: Path
    lmtp_port: int
    api_port: int
    token: str

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def deliver(self, raw: bytes) -> int:
        """One LMTP delivery: its reply code."""
        try:
            with smtplib.LMTP("127.0.0.1", self.lmtp_port, timeout=CLIENT_WAIT) as client:
                client.sendmail("customer@example.com", ["support@example.test"], raw)
        except smtplib.SMTPResponseException as exc:
            return exc.smtp_code
        return 250

    def api(self, path: str) -> httpx.Response:
        return httpx.get(f"http://127.0.0.1:{self.api_port}{path}", timeout=CLIENT_WAIT,
                         headers={"Authorization": f"Bearer {self.token}"})


@pytest.fixture
def relay(cluster: PgCluster) -> Iterator[Relay]:  # noqa: F811 - the fixture above
    r = Relay(cluster.port)
    yield r
    r.cut()


@pytest.fixture
def db(cluster: PgCluster) -> Iterator[tuple[str, Engine]]:  # noqa: F811
    url = cluster.migrated_database(f"frozen_{uuid.uuid4().hex[:10]}")
    engine = make_engine(url)  # the test's own view, straight to the cluster
    yield url, engine
    engine.dispose()


@pytest.fixture
def worker(
    db: tuple[str, Engine], relay: Relay, dovecot: Dovecot, tmp_path: Path,
    cluster: PgCluster,  # noqa: F811
) -> Iterator[Worker]:
    url, engine = db
    with make_session_factory(engine)() as s, s.begin():
        _, token = create_token(s, name="frozen-test", scope="read")
    lmtp_port, api_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("IMAP_", "MAILDIR", "LMTP", "API_", "SMTP_", "BACKEND", "DB_"))}
    env.update(
        DATABASE_URL=url.replace(f":{cluster.port}/", f":{relay.port}/"), LOG_FORMAT="text",
        DB_ANSWER_TIMEOUT=str(ANSWER_TIMEOUT), DB_CONNECT_TIMEOUT=str(ANSWER_TIMEOUT),
        LMTP_LISTEN=f"lmtp://127.0.0.1:{lmtp_port}", API_LISTEN=f"127.0.0.1:{api_port}",
        IMAP_HOST="127.0.0.1", IMAP_PORT=str(dovecot.port), IMAP_TLS="plain",
        IMAP_USER=dovecot.user, IMAP_PASSWORD=dovecot.password, IMAP_POLL_INTERVAL="1",
    )
    log_path = tmp_path / "worker.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "mailticket.cli", "run"], env=env, cwd=tmp_path,
        stdout=subprocess.DEVNULL, stderr=open(log_path, "wb"),
    )
    w = Worker(proc, log_path, lmtp_port, api_port, token)
    try:
        wait_until(lambda: proc.poll() is not None or "connected mailbox=" in w.log(), 90,
                   "the worker to start")
        assert proc.poll() is None, w.log()[-3000:]
        yield w
    finally:
        relay.thaw()  # a failed test must not leave the worker's stop waiting on it
        stop_process(proc)


def test_lmtp_gets_451_and_readyz_503_in_bounded_time_then_mail_is_stored_once(
    db: tuple[str, Engine], relay: Relay, worker: Worker
) -> None:
    _, engine = db
    before, during, after = (message(f"frozen {s}", sender=f"{s}@example.com")
                             for s in ("before", "during", "after"))
    assert worker.deliver(before) == 250
    assert worker.api("/readyz").status_code == 200

    relay.freeze()
    started = time.monotonic()
    assert worker.deliver(during) == 451
    assert time.monotonic() - started < BOUND
    started = time.monotonic()
    response = worker.api("/readyz")
    assert response.status_code == 503, response.text
    assert time.monotonic() - started < BOUND
    assert worker.proc.poll() is None

    relay.thaw()
    # The MTA sends the refused message again; the database answers again at once.
    deadline = time.monotonic() + BOUND
    while (code := worker.deliver(during)) != 250 and time.monotonic() < deadline:
        assert code == 451
        time.sleep(0.5)
    assert code == 250
    assert worker.deliver(after) == 250
    assert worker.api("/readyz").status_code == 200

    stored = stored_ids(engine)
    assert sorted(stored) == sorted(message_id_of(raw) for raw in (before, during, after))
    log = worker.log()
    assert "Traceback" not in log, log[-4000:]
    assert log.count("pushed mail is answered 451 until it is back") == 1, log[-4000:]
    # Which bound ends the wait depends on where the freeze caught the connection: a
    # statement on it (the answer bound), or the pool's ping, after which SQLAlchemy
    # reconnects and the new connection meets the connect bound. Either is this outage.
    assert ("did not answer within 2 s (DB_ANSWER_TIMEOUT)" in log
            or "timeout expired" in log), log[-4000:]
    assert "database back: pushed mail stored again" in log


def test_imap_mail_stays_unseen_while_the_database_is_frozen_and_is_stored_once_after(
    db: tuple[str, Engine], relay: Relay, worker: Worker, dovecot: Dovecot
) -> None:
    _, engine = db
    ledger = select(func.count()).select_from(ImapLedgerEntry)
    before = message("imap before", sender="ib@example.com")
    dovecot.append(before)
    wait_until(lambda: count(engine, ledger) == 1, 60, "the first IMAP mail")

    relay.freeze()
    new = [message(f"imap frozen {i}", sender=f"if{i}@example.com") for i in range(3)]
    dovecot.append_many(new)
    # Passes meet the frozen database (IDLE wakes the drain, then a poll every second)
    # and give up after the bound; the worker's log says so while still frozen.
    wait_until(lambda: "logger=mailticket.live.imap mailbox error" in worker.log(), BOUND,
               "the drain to give up on the frozen database")
    time.sleep(2 * ANSWER_TIMEOUT)  # and another pass or two
    flags = dovecot.flags()
    assert sum("\\Seen" in f for f in flags.values()) == 1, flags  # only the one before
    assert worker.proc.poll() is None

    relay.thaw()
    wait_until(lambda: all("\\Seen" in f for f in dovecot.flags().values())
               and count(engine, ledger) == 4, 60, "the frozen pass's mail to be stored")
    stored = stored_ids(engine)
    assert sorted(stored) == sorted(message_id_of(raw) for raw in [before, *new])
    assert "Traceback" not in worker.log(), worker.log()[-4000:]


SHARED = "postgresql+psycopg2://postgres@127.0.0.1:5432/test"


def test_a_call_past_the_bound_is_an_outage_and_the_pool_recovers() -> None:
    """On the shared server: a statement that outlasts DB_ANSWER_TIMEOUT (the server busy
    here, not gone) ends at the bound as a dropped connection, counted as the database
    unavailable; the next checkout gets a fresh connection."""
    settings = load_settings(database_url=SHARED, db_answer_timeout=1, _env_file=None)
    engine = make_engine(settings.database_url, liveness=Liveness.of(settings))
    try:
        started = time.monotonic()
        with pytest.raises(OperationalError) as caught, engine.connect() as conn:
            conn.execute(text("SELECT pg_sleep(5)"))
        assert time.monotonic() - started < 4
        assert database_unavailable(caught.value)
        assert caught.value.connection_invalidated
        assert "did not answer within 1 s (DB_ANSWER_TIMEOUT)" in str(caught.value)
        with engine.connect() as conn:
            assert conn.scalar(text("SELECT pg_sleep(0.2)::text || 'ok'")) == "ok"
    finally:
        engine.dispose()


def test_db_answer_timeout_0_leaves_psycopg2_s_own_connection() -> None:
    settings = load_settings(database_url=SHARED, db_answer_timeout=0, _env_file=None)
    engine = make_engine(settings.database_url, liveness=Liveness.of(settings))
    try:
        with engine.connect() as conn:
            raw = conn.connection.dbapi_connection
            assert type(raw) is psycopg2.extensions.connection
            assert conn.scalar(text("SELECT pg_sleep(1.2)::text || 'ok'")) == "ok"
    finally:
        engine.dispose()


def test_serve_readyz_answers_503_within_the_bound_and_200_after(
    db: tuple[str, Engine], relay: Relay, cluster: PgCluster, tmp_path: Path,  # noqa: F811
) -> None:
    """`mailticket serve` on its own: its readiness probe under a frozen database."""
    url, _ = db
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("API_", "DB_"))}
    env.update(
        DATABASE_URL=url.replace(f":{cluster.port}/", f":{relay.port}/"),
        DB_ANSWER_TIMEOUT=str(ANSWER_TIMEOUT), DB_CONNECT_TIMEOUT=str(ANSWER_TIMEOUT),
    )
    log_path = tmp_path / "serve.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "mailticket.cli", "serve", "--port", str(port)], env=env,
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=open(log_path, "wb"),
    )

    def readyz() -> int:
        return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=CLIENT_WAIT).status_code

    def up() -> bool:
        try:
            return readyz() == 200
        except httpx.TransportError:
            return False

    try:
        wait_until(lambda: proc.poll() is not None or up(), 60, "the API to serve")
        assert proc.poll() is None, log_path.read_text()[-3000:]
        relay.freeze()
        started = time.monotonic()
        assert readyz() == 503
        assert time.monotonic() - started < BOUND
        relay.thaw()
        wait_until(up, BOUND, "/readyz 200 again")
        assert "Traceback" not in log_path.read_text()
    finally:
        relay.thaw()
        stop_process(proc)
