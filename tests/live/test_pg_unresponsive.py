"""A PostgreSQL address that stops answering (a failover to a host that is gone, a server
hung after accepting TCP): `mailticket run` answers LMTP 451 and the API 503 within about
DB_CONNECT_TIMEOUT, instead of hanging for the OS's minutes until the client gives up.

The worker starts on the private cluster (tests/pgcluster.py) through a TCP relay on its
own port; then the relay drops its connections and the port is taken over by real sockets
with no PostgreSQL behind them: a listener that accepts and never speaks, or one whose
accept queue is full (it never accepts: the kernel drops the SYNs, as for an address that
swallows packets)."""

from __future__ import annotations

import os
import smtplib
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from mailticket.api.tokens import create_token
from mailticket.settings import load_settings
from mailticket.store.db import Liveness, make_engine, make_session_factory
from tests.live.helpers import message, stop_process
from tests.live.relay import Relay, close_listener
from tests.live.test_pg_restart import (  # noqa: F401 - cluster: the private cluster, a fixture
    cluster,
    wait_until,
)
from tests.pgcluster import PgCluster, free_port

CONNECT_TIMEOUT = 2  # seconds, the worker's DB_CONNECT_TIMEOUT here
ANSWER_WITHIN = 30.0  # seconds: generous; without a connect timeout nothing answers at all


class SilentServer:
    """Accepts every connection and never sends a byte (nor closes it)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_server(("127.0.0.1", port))
        self.port = port
        self.held: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return  # closed
            self.held.append(conn)

    def close(self) -> None:
        close_listener(self.sock)
        for conn in self.held:
            conn.close()


class FullBacklog:
    """Listens and never accepts; its accept queue is filled first, so a new connect's SYN
    is dropped and the connect waits (Linux retransmits it for minutes)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(0)
        self.port = port
        self.fillers: list[socket.socket] = []
        for _ in range(8):
            if not self._connects(keep=True):
                break
        else:
            self.close()
            pytest.skip("the accept queue never filled: a connect always completes here")

    def _connects(self, keep: bool) -> bool:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(0.5)
        try:
            s.connect(("127.0.0.1", self.port))
        except OSError:
            s.close()
            return False
        if keep:
            self.fillers.append(s)
        else:
            s.close()
        return True

    def close(self) -> None:
        for s in self.fillers:
            s.close()
        self.sock.close()


@pytest.mark.parametrize("dead", [SilentServer, FullBacklog])
def test_lmtp_answers_451_and_the_api_503_when_the_database_stops_answering(
    cluster: PgCluster,  # noqa: F811 - the fixture imported above
    dead: Callable[[int], SilentServer | FullBacklog], tmp_path: Path
) -> None:
    port = free_port()
    relay = Relay(cluster.port, port)
    name = f"unresponsive_{uuid.uuid4().hex[:10]}"
    url = cluster.migrated_database(name).replace(f":{cluster.port}/", f":{port}/")
    with make_session_factory(engine := make_engine(url))() as s, s.begin():
        _, token = create_token(s, name="unresponsive-test", scope="read")
    engine.dispose()
    lmtp_port, api_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("IMAP_", "MAILDIR", "LMTP", "API_", "SMTP_", "BACKEND", "DB_"))}
    env.update(
        DATABASE_URL=url, DB_CONNECT_TIMEOUT=str(CONNECT_TIMEOUT), LOG_FORMAT="text",
        LMTP_LISTEN=f"lmtp://127.0.0.1:{lmtp_port}", API_LISTEN=f"127.0.0.1:{api_port}",
    )
    log_path = tmp_path / "worker.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "mailticket.cli", "run"], env=env, cwd=tmp_path,
        stdout=subprocess.DEVNULL, stderr=open(log_path, "wb"),
    )

    def log() -> str:
        return log_path.read_text(errors="replace")

    def deliver(subject: str) -> int:
        try:
            with smtplib.LMTP("127.0.0.1", lmtp_port, timeout=ANSWER_WITHIN) as client:
                client.sendmail("customer@example.com", ["support@example.test"],
                                message(subject))
        except smtplib.SMTPDataError as exc:
            return exc.smtp_code
        return 250

    def api(path: str) -> httpx.Response:
        return httpx.get(f"http://127.0.0.1:{api_port}{path}", timeout=ANSWER_WITHIN,
                         headers={"Authorization": f"Bearer {token}"})

    gone: SilentServer | FullBacklog | None = None
    try:
        wait_until(lambda: proc.poll() is not None or "worker started" in log(), 60,
                  "the worker to start")
        assert proc.poll() is None, log()[-3000:]
        assert deliver("before") == 250
        assert api("/api/v1/tickets").status_code == 200
        relay.cut()
        gone = dead(port)
        started = time.monotonic()
        assert deliver("while the database is away") == 451
        for path in ("/api/v1/tickets", "/readyz"):
            response = api(path)
            assert response.status_code == 503, (path, response.text)
            assert int(response.headers["retry-after"]) > 0
        assert time.monotonic() - started < 3 * ANSWER_WITHIN
        assert proc.poll() is None
        assert "Traceback" not in log(), log()[-4000:]
    finally:
        if gone is not None:
            gone.close()
        relay.cut()
        stop_process(proc)


def test_a_parameter_in_database_url_wins_over_the_setting() -> None:
    """On a real connection (the shared server): what libpq was handed."""
    settings = load_settings(
        database_url="postgresql://postgres@127.0.0.1:5432/test?connect_timeout=7&keepalives=0",
        db_connect_timeout=2, db_tcp_user_timeout=0, db_keepalives_idle=11, _env_file=None,
    )
    engine = make_engine(settings.database_url, liveness=Liveness.of(settings))
    try:
        with engine.connect() as conn:
            dsn = conn.connection.dbapi_connection.dsn  # type: ignore[union-attr]
    finally:
        engine.dispose()
    params = dict(part.split("=", 1) for part in dsn.split())
    assert params["connect_timeout"] == "7" and params["keepalives"] == "0"  # the URL's
    assert params["keepalives_idle"] == "11" and params["keepalives_count"] == "3"
    assert "tcp_user_timeout" not in params  # 0: the OS default


def test_db_upgrade_gives_up_on_a_server_that_never_answers(tmp_path: Path) -> None:
    """`mailticket db upgrade` (Alembic's own engine, not the worker's) against an address
    that accepts and never speaks: a clear error after the default connect timeout, where
    it used to wait for ever (no timeout, no keepalive on that connection)."""
    mute = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                accepted.append(mute.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    url = f"postgresql+psycopg2://postgres@127.0.0.1:{mute.getsockname()[1]}/nowhere"
    env = {**os.environ, "DATABASE_URL": url}
    try:
        done = subprocess.run(
            [str(Path(sys.executable).with_name("mailticket")), "db", "upgrade"], env=env, cwd=tmp_path,
            capture_output=True, text=True, timeout=ANSWER_WITHIN + 30,
        )
    finally:
        close_listener(mute)
        for s in accepted:
            s.close()
    assert accepted, "the command never connected"
    assert done.returncode != 0
    assert "Traceback" not in done.stderr, done.stderr
