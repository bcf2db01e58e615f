"""The long-running worker: IDLE picks up mail at once; polling; graceful stop; TLS modes."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs

import pytest
from pydantic import SecretStr
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from mailticket import metrics
from mailticket.live.config import MailboxConfig
from mailticket.live.imap import ImapSource
from mailticket.live.imap_client import ImapError, ImapSession, TlsUnavailable
from mailticket.live.worker import Worker
from mailticket.settings import Settings, load_settings
from tests.live.dovecot import Dovecot
from tests.live.helpers import FakeHandler, counts, message


def worker_settings(settings: Settings, dovecot: Dovecot, **kw: object) -> Settings:
    return load_settings(
        database_url=settings.database_url, _env_file=None, imap_host="127.0.0.1",
        imap_port=dovecot.port, imap_tls="plain", imap_user=dovecot.user,
        imap_password=dovecot.password, smtp_host="127.0.0.1", **kw,
    )


async def wait_for(predicate, timeout: float = 10.0) -> float:  # type: ignore[no-untyped-def]
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if await asyncio.to_thread(predicate):
            return time.monotonic() - started
        await asyncio.sleep(0.05)
    raise AssertionError("condition not reached in time")


async def test_idle_picks_up_new_mail_without_polling(
    dovecot: Dovecot, settings: Settings, engine: Engine, session_factory: sessionmaker[Session],
    tmp_path: Path,
) -> None:
    s = worker_settings(settings, dovecot, imap_poll_interval=3600, maildir_path=tmp_path / "md")
    worker = Worker(s, engine, session_factory, FakeHandler())
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        dovecot.append(message("first"))
        await wait_for(lambda: counts(session_factory)["email_log"] == 1)
        await asyncio.sleep(0.3)  # now idling
        dovecot.append(message("second"))
        latency = await wait_for(lambda: counts(session_factory)["email_log"] == 2, timeout=5)
        assert latency < 5
        (tmp_path / "md" / "new" / "m1").write_bytes(message("via maildir"))
        await wait_for(lambda: counts(session_factory)["email_log"] == 3)
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)
    assert all("\\Seen" in f for f in dovecot.flags().values())
    assert counts(session_factory)["pending"] == 0


async def test_polling_mailbox_without_idle_is_woken_by_the_scheduler(
    dovecot: Dovecot, mailbox: MailboxConfig, engine: Engine,
    session_factory: sessionmaker[Session],
) -> None:
    box = mailbox.model_copy(update={"idle": False})
    dovecot.append(message("found at start"))
    src = ImapSource(box, FakeHandler(), session_factory, engine,
                     max_message_size=10**6, timeout=10, poll_interval=3600)
    task = asyncio.create_task(src.run())
    try:
        await wait_for(lambda: counts(session_factory)["email_log"] == 1)
        dovecot.append(message("needs a poll"))
        await asyncio.sleep(1.0)
        assert counts(session_factory)["email_log"] == 1
        src.wake.set()
        await wait_for(lambda: counts(session_factory)["email_log"] == 2)
    finally:
        src.stop.set()
        await asyncio.wait_for(task, 15)


async def test_second_worker_waits_while_first_holds_the_mailbox(
    dovecot: Dovecot, mailbox: MailboxConfig, engine: Engine,
    session_factory: sessionmaker[Session],
) -> None:
    first = ImapSource(mailbox, FakeHandler(), session_factory, engine, max_message_size=10**6)
    second = ImapSource(mailbox, FakeHandler(), session_factory, engine, max_message_size=10**6)
    second.lock.owner = "another-host:1:x"
    await first.imap.open()
    assert await asyncio.to_thread(first._lock_mailbox)
    try:
        dovecot.append(message("only once"))
        assert await second.run_once() == 0
    finally:
        await first.imap.close()
        await asyncio.to_thread(first.lock.release)
    assert await second.run_once() == 1


async def test_ssl_and_starttls_connect_and_verify_the_certificate(
    dovecot: Dovecot, mailbox: MailboxConfig
) -> None:
    assert dovecot.cert is not None
    for tls, port in (("ssl", dovecot.ssl_port), ("starttls", dovecot.port)):
        box = mailbox.model_copy(update={"tls": tls, "port": port, "ca_file": dovecot.cert})
        session = ImapSession(box, 10)
        await session.open()
        assert session.uidvalidity > 0
        await session.close()
    # Without the CA the self-signed certificate is refused, never silently accepted.
    untrusted = mailbox.model_copy(update={"tls": "ssl", "port": dovecot.ssl_port})
    with pytest.raises(OSError, match="CERTIFICATE_VERIFY_FAILED"):
        await ImapSession(untrusted, 10).open()


async def test_starttls_missing_is_an_error_not_a_downgrade(tmp_path: Path) -> None:
    plain_only = Dovecot(tmp_path, ssl=False).start()
    try:
        box = MailboxConfig(host="127.0.0.1", port=plain_only.port, tls="starttls",
                            user=plain_only.user, password=plain_only.password)
        with pytest.raises(TlsUnavailable, match="does not offer STARTTLS"):
            await ImapSession(box, 10).open()
    finally:
        plain_only.stop()


def test_plain_to_a_remote_host_needs_explicit_permission() -> None:
    with pytest.raises(ValueError, match="clear text"):
        MailboxConfig(host="imap.example.com", tls="plain", user="u", password="p")
    assert MailboxConfig(host="imap.example.com", tls="plain", user="u", password="p",
                         allow_plain=True).tls == "plain"


class _Introspection(BaseHTTPRequestHandler):
    """RFC 7662 token introspection, as an OAuth2 provider offers it to Dovecot."""

    valid_token = "ya29.good-token"
    user = ""
    seen: list[str] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
        token = parse_qs(body).get("token", [""])[0]
        type(self).seen.append(token)
        active = token == self.valid_token
        reply = json.dumps({"active": active, "username": self.user if active else ""}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args: object) -> None:
        return


async def test_xoauth2_login(tmp_path: Path) -> None:
    http = ThreadingHTTPServer(("127.0.0.1", 0), _Introspection)
    threading.Thread(target=http.serve_forever, daemon=True).start()
    server = Dovecot(
        tmp_path, ssl=False,
        oauth2_introspection_url=f"http://127.0.0.1:{http.server_address[1]}/introspect",
    ).start()
    _Introspection.user = server.user
    try:
        box = MailboxConfig(host="127.0.0.1", port=server.port, tls="plain", user=server.user,
                            oauth2_token=_Introspection.valid_token)
        session = ImapSession(box, 10)
        await session.open()
        assert session.uidvalidity > 0
        await session.close()
        wrong = box.model_copy(update={"oauth2_token": SecretStr("expired")})
        with pytest.raises(ImapError, match="login failed"):
            await ImapSession(wrong, 10).open()
        # A token command is run at every login (fresh tokens for long-running workers).
        script = tmp_path / "token.sh"
        script.write_text(f"#!/bin/sh\necho {_Introspection.valid_token}\n")
        script.chmod(0o755)
        by_command = MailboxConfig(host="127.0.0.1", port=server.port, tls="plain",
                                   user=server.user, oauth2_token_command=str(script))
        session = ImapSession(by_command, 10)
        await session.open()
        await session.close()
        broken = by_command.model_copy(update={"oauth2_token_command": "false"})
        with pytest.raises(ImapError, match="oauth2_token_command failed"):
            await ImapSession(broken, 10).open()
        assert _Introspection.seen == [_Introspection.valid_token, "expired",
                                       _Introspection.valid_token]
    finally:
        server.stop()
        http.shutdown()


def connected(label: str) -> float | None:
    return metrics.sample_value(metrics.IMAP_CONNECTED, mailbox=label)


async def test_reconnects_after_the_server_goes_away(
    tmp_path: Path, engine: Engine, session_factory: sessionmaker[Session]
) -> None:
    server = Dovecot(tmp_path, ssl=False).start()
    box = MailboxConfig(host="127.0.0.1", port=server.port, tls="plain", user=server.user,
                        password=server.password)
    src = ImapSource(box, FakeHandler(), session_factory, engine, max_message_size=10**6,
                     timeout=5, poll_interval=3600)
    task = asyncio.create_task(src.run())
    try:
        server.append(message("before the outage"))
        await wait_for(lambda: counts(session_factory)["email_log"] == 1)
        assert connected(box.label) == 1.0
        # In threads: halting and starting the server must not stall the worker's loop.
        await asyncio.to_thread(server.halt)
        await wait_for(lambda: connected(box.label) == 0.0)  # noticed; backing off
        await asyncio.to_thread(server.start)
        await asyncio.to_thread(server.append, message("after the outage"))
        # Whatever the backoff has grown to meanwhile, the poll job's wake retries at once,
        # so the test does not hang on the server's or the backoff's timing.
        src.wake.set()
        await wait_for(lambda: counts(session_factory)["email_log"] == 2, timeout=30)
        assert connected(box.label) == 1.0
    finally:
        src.stop.set()
        await asyncio.wait_for(task, 15)
        server.stop()
    assert counts(session_factory)["pending"] == 0


async def test_run_once_reports_an_unreachable_mailbox(
    settings: Settings, engine: Engine, session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    from tests.live.dovecot import free_port

    s = load_settings(database_url=settings.database_url, _env_file=None, imap_host="127.0.0.1",
                      imap_port=free_port(), imap_tls="plain", imap_user="u", imap_password="p",
                      imap_timeout=3, maildir_path=tmp_path / "md", smtp_host="127.0.0.1")
    (tmp_path / "md" / "new").mkdir(parents=True)
    (tmp_path / "md" / "new" / "a").write_bytes(message("still stored"))
    worker = Worker(s, engine, session_factory, FakeHandler())
    assert await worker.run_once() == 1
    assert worker.failures == 1


async def test_worker_runs_the_lmtp_receiver(
    settings: Settings, engine: Engine, session_factory: sessionmaker[Session]
) -> None:
    import smtplib

    from tests.live.dovecot import free_port

    handler = FakeHandler()
    port = free_port()
    s = load_settings(database_url=settings.database_url, _env_file=None,
                      lmtp_listen=f"127.0.0.1:{port}", smtp_host="127.0.0.1",
                      max_message_size=50_000)
    worker = Worker(s, engine, session_factory, handler)
    assert worker.describe() == [f"receiver:127.0.0.1:{port}"]
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        await asyncio.sleep(0.3)

        def send() -> dict[str, object]:
            with smtplib.LMTP("127.0.0.1", port) as client:
                return dict(client.sendmail("a@example.com", ["support@example.test"], message("pushed")))

        assert await asyncio.to_thread(send) == {}
        assert counts(session_factory)["email_log"] == 1

        def send_big() -> tuple[int, bytes]:
            with smtplib.LMTP("127.0.0.1", port) as client:
                # Without SIZE= on MAIL FROM (refused there, before any header is seen), as
                # an MTA sends a message it does not know the size of in advance.
                client.ehlo_or_helo_if_needed()
                client.esmtp_features.pop("size", None)
                try:
                    client.sendmail("a@example.com", ["support@example.test"],
                                    message("big", body=("x" * 70 + "\n") * 900)
                                    .replace(b"\n", b"\r\n"))
                except smtplib.SMTPDataError as exc:
                    return exc.smtp_code, exc.smtp_error
                return 250, b""

        # Refused, and its headers quarantined through the worker's own session (the
        # receiver's `hold`).
        code, text = await asyncio.to_thread(send_big)
        assert (code, text[:6]) == (552, b"5.3.4 ")
        c = counts(session_factory)
        assert c["email_log"] == 1 and c["quarantine"] == 1
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)
