"""`mailticket run --once` on the embedded default (a Maildir), through the real pipeline."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from sqlalchemy import func, select

from mailticket.live.logs import JsonFormatter, configure_logging
from mailticket.reading.parsing import parse_email
from mailticket.store.db import make_engine, make_session_factory
from mailticket.store.models import EmailLog, Ticket
from tests.live.helpers import message


def run_cli(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("IMAP_", "MAILDIR", "LMTP"))}
    return subprocess.run(
        [sys.executable, "-m", "mailticket.cli", "run", *args],
        env={**clean, **env}, cwd=cwd, capture_output=True, text=True, timeout=120,
    )


def test_run_once_drains_the_maildir_into_tickets(db_url: str, tmp_path: Path) -> None:
    box = tmp_path / "Maildir"
    (box / "new").mkdir(parents=True)
    for i in range(3):
        (box / "new" / f"m{i}").write_bytes(message(f"printer {i} broken", sender=f"p{i}@example.com"))
    done = run_cli(
        {"DATABASE_URL": db_url, "MAILDIR_PATH": str(box), "EMAIL_UNMATCHED_ACTION": "create_ticket",
         "LOG_FORMAT": "json", "SMTP_HOST": "127.0.0.1"},
        tmp_path, "--once",
    )
    assert done.returncode == 0, done.stderr
    assert sorted(os.listdir(box / "cur")) == ["m0:2,S", "m1:2,S", "m2:2,S"]
    assert os.listdir(box / "new") == []
    lines = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    assert any("drained" in entry["msg"] for entry in lines)
    engine = make_engine(db_url)
    try:
        with make_session_factory(engine)() as s:
            assert s.scalar(select(func.count()).select_from(Ticket)) == 3
            inbound = select(func.count()).where(EmailLog.direction == "in")
            assert s.scalar(inbound) == 3
    finally:
        engine.dispose()


def test_run_without_any_source_says_what_to_set(tmp_path: Path) -> None:
    done = run_cli({"DATABASE_URL": f"sqlite:///{tmp_path}/x.db"}, tmp_path, "--once")
    assert done.returncode == 2
    assert "MAILDIR_PATH" in done.stderr and "IMAP_HOST" in done.stderr


def test_run_serves_the_api_on_api_listen_and_stops_on_sigterm(
    db_url: str, tmp_path: Path
) -> None:
    box = tmp_path / "Maildir"
    (box / "new").mkdir(parents=True)
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("IMAP_", "MAILDIR", "LMTP"))}
    env = {**clean, "DATABASE_URL": db_url, "MAILDIR_PATH": str(box),
           "API_LISTEN": f"127.0.0.1:{port}"}
    worker = subprocess.Popen(
        [sys.executable, "-m", "mailticket.cli", "run"], env=env, cwd=tmp_path,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        status = None
        deadline = time.monotonic() + 60
        while status is None and time.monotonic() < deadline and worker.poll() is None:
            try:
                status = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code
            except httpx.TransportError:
                time.sleep(0.2)
        assert status == 200
    finally:
        worker.send_signal(signal.SIGTERM)
        _, stderr = worker.communicate(timeout=60)
    assert worker.returncode == 0, stderr
    assert "Traceback" not in stderr


def test_api_listen_on_a_port_in_use_is_a_clear_error(db_url: str, tmp_path: Path) -> None:
    """Not uvicorn's sys.exit(3) and a traceback from inside the event loop."""
    box = tmp_path / "Maildir"
    (box / "new").mkdir(parents=True)
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        done = run_cli(
            {"DATABASE_URL": db_url, "MAILDIR_PATH": str(box), "API_LISTEN": f"127.0.0.1:{port}"},
            tmp_path,
        )
    assert done.returncode == 2, done.stderr
    assert f"API_LISTEN=127.0.0.1:{port}: cannot listen there" in done.stderr
    assert "Traceback" not in done.stderr


def test_bad_mailboxes_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "boxes.yaml").write_text("- host: imap.example.com\n  user: u\n  after: sideways\n  password: p\n")
    done = run_cli(
        {"DATABASE_URL": f"sqlite:///{tmp_path}/x.db", "MAILBOXES_FILE": str(tmp_path / "boxes.yaml")},
        tmp_path, "--once",
    )
    assert done.returncode == 2
    assert "mailbox #1" in done.stderr and "after must be" in done.stderr


def test_json_log_lines() -> None:
    record = logging.LogRecord("mailticket.live", logging.INFO, __file__, 1,
                               "stored mailbox=%s uid=%s", ("m", 3), None)
    entry = json.loads(JsonFormatter().format(record))
    assert entry["msg"] == "stored mailbox=m uid=3" and entry["level"] == "info"


def test_worker_logging_keeps_mail_parser_part_warnings_quiet() -> None:
    """The worker's log set-up must not undo parsing's quieting of mail-parser: it logs a
    WARNING for every part it does not turn into text ("Email content 'alternative' not
    handled"), which filled the log of a real mailbox's run with noise."""
    damaged = (
        b"From: jo@example.com\r\nTo: support@example.com\r\nSubject: broken\r\n"
        b"Message-ID: <damaged-1@example.com>\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="b1"\r\n\r\n'
        b'--b1\r\nContent-Type: multipart/alternative; boundary="b2"\r\n\r\n'
        b"--b2\r\nContent-Type: text/plain\r\n\r\nhello\r\n"
        b"--b2\r\nContent-Type: text/html\r\n\r\n<p>hello</p>\r\n--b2--\r\n"
        b"--b1\r\nContent-Type: image/gif\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        b"R0lGODlhAQABAAAAACw=\r\n"  # the closing boundary is missing: a defect
    )
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    noisy = [logging.getLogger(name) for name in ("mailparser", "mailparser.core")]
    saved_levels = [logger.level for logger in noisy]
    seen: list[logging.LogRecord] = []
    capture = logging.Handler()
    capture.emit = seen.append  # type: ignore[method-assign]
    try:
        configure_logging("text")
        root.addHandler(capture)
        parsed = parse_email(damaged)
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
        for logger, level in zip(noisy, saved_levels, strict=True):
            logger.setLevel(level)
    assert parsed.defects, "the message must be damaged, or mail-parser never runs"
    assert [r.getMessage() for r in seen if r.name.startswith("mailparser")] == []
