"""SMTP over TLS against a real server: implicit TLS, required STARTTLS, certificate checks."""

from __future__ import annotations

import ssl
from datetime import timedelta
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from mailticket.outbound.auto_reply import queue_auto_reply
from mailticket.outbound.smtp import deliver_outgoing_mail
from mailticket.settings import Settings
from mailticket.store.outbox import RetryPolicy
from mailticket.store.outbox_models import OutboxItem
from tests.outbound.helpers import NOW, mail_settings, make_ticket, parsed, work
from tests.smtp_sink import SmtpSink

POLICY = RetryPolicy(base_delay=timedelta(seconds=30))


def _server_ctx(cert: tuple[Path, Path]) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(str(cert[0]), str(cert[1]))
    return ctx


def _queue(session_factory: sessionmaker[Session], cfg: Settings) -> int:
    with session_factory.begin() as s:
        inbound = parsed()
        ticket = make_ticket(s, inbound)
        return queue_auto_reply(
            work(s), cfg, ticket, inbound, template="ticket_created", now=NOW
        ).outbox_id


async def test_starttls_upgrade(
    settings: Settings, session_factory: sessionmaker[Session], tls_cert: tuple[Path, Path]
) -> None:
    with SmtpSink(starttls_context=_server_ctx(tls_cert)) as sink:
        cfg = mail_settings(settings, smtp_port=sink.port, smtp_tls="starttls")
        _queue(session_factory, cfg)
        trusted = ssl.create_default_context(cafile=str(tls_cert[0]))
        report = await deliver_outgoing_mail(
            session_factory, cfg, policy=POLICY, tls_context=trusted
        )
        assert report.done == 1 and len(sink.messages) == 1


async def test_implicit_tls(
    settings: Settings, session_factory: sessionmaker[Session], tls_cert: tuple[Path, Path]
) -> None:
    with SmtpSink(ssl_context=_server_ctx(tls_cert)) as sink:
        cfg = mail_settings(settings, smtp_port=sink.port, smtp_tls="ssl")
        _queue(session_factory, cfg)
        trusted = ssl.create_default_context(cafile=str(tls_cert[0]))
        report = await deliver_outgoing_mail(
            session_factory, cfg, policy=POLICY, tls_context=trusted
        )
        assert report.done == 1 and len(sink.messages) == 1


async def test_untrusted_certificate_is_not_accepted(
    settings: Settings, session_factory: sessionmaker[Session], tls_cert: tuple[Path, Path]
) -> None:
    with SmtpSink(starttls_context=_server_ctx(tls_cert)) as sink:
        cfg = mail_settings(settings, smtp_port=sink.port, smtp_tls="starttls")
        item_id = _queue(session_factory, cfg)
        report = await deliver_outgoing_mail(session_factory, cfg, policy=POLICY)
        assert report.retried == 1 and sink.messages == []
    with session_factory() as s:
        assert "CERTIFICATE_VERIFY_FAILED" in (s.get_one(OutboxItem, item_id).last_error or "")
