"""Delivery through a real SMTP server on loopback: retries, backoff, dead items, CLI."""

from __future__ import annotations

import argparse
import base64
import dataclasses
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from mailticket.cli import outbox as outbox_cli
from mailticket.outbound.auto_reply import queue_auto_reply
from mailticket.outbound.smtp import DEFAULT_POLICY, deliver_outgoing_mail
from mailticket.settings import Settings
from mailticket.store.outbox import RetryPolicy
from mailticket.store.outbox_models import OutboxItem, as_utc
from tests.outbound.helpers import NOW, mail_settings, make_ticket, parsed, work
from tests.smtp_sink import SmtpSink, free_port

POLICY = RetryPolicy(base_delay=timedelta(seconds=30), max_delay=timedelta(hours=1))


def cli_main(argv: Sequence[str]) -> int:
    """`mailticket <argv>` with only the outbox commands (others' modules may be mid-edit)."""
    parser = argparse.ArgumentParser(prog="mailticket")
    outbox_cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code


def _queue(session_factory: sessionmaker[Session], cfg: Settings, n: int = 1) -> list[int]:
    ids = []
    with session_factory.begin() as s:
        for _ in range(n):
            inbound = parsed()
            ticket = make_ticket(s, inbound)
            queued = queue_auto_reply(work(s), cfg, ticket, inbound, template="ticket_created", now=NOW)
            ids.append(queued.outbox_id)
    return ids


def _item(session_factory: sessionmaker[Session], item_id: int) -> OutboxItem:
    with session_factory() as s:
        return s.get_one(OutboxItem, item_id)


def _make_due(session_factory: sessionmaker[Session]) -> None:
    """Stand-in for the clock moving past the backoff."""
    with session_factory.begin() as s:
        s.execute(
            update(OutboxItem)
            .where(OutboxItem.status == "pending")
            .values(next_attempt_at=datetime.now(UTC) - timedelta(seconds=1))
        )


async def test_delivers_the_stored_bytes_once(
    settings: Settings, session_factory: sessionmaker[Session], smtp_sink: SmtpSink
) -> None:
    cfg = mail_settings(settings, smtp_port=smtp_sink.port)
    [item_id] = _queue(session_factory, cfg)
    report = await deliver_outgoing_mail(session_factory, cfg, policy=POLICY)
    assert (report.done, report.retried, report.dead) == (1, 0, 0)
    assert len(smtp_sink.messages) == 1
    got = smtp_sink.messages[0]
    item = _item(session_factory, item_id)
    assert got.data.rstrip(b"\r\n") == base64.b64decode(item.payload["message_b64"]).rstrip(b"\r\n")
    assert got.mail_from == "support@example.com"
    assert got.rcpt_tos == ["carla@customer.example"]
    assert got.message()["Message-ID"] == item.payload["message_id"]
    assert item.status == "done" and item.attempts == 1
    assert item.result is not None and item.result["message_id"] == item.payload["message_id"]
    again = await deliver_outgoing_mail(session_factory, cfg, policy=POLICY)
    assert again.total == 0 and len(smtp_sink.messages) == 1


async def test_smtp_down_is_retried_with_backoff_then_delivered_once(
    settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    port = free_port()  # nothing listens here yet
    cfg = mail_settings(settings, smtp_port=port)
    [item_id] = _queue(session_factory, cfg)

    waits = []
    for attempt in range(1, 5):
        before = datetime.now(UTC)
        report = await deliver_outgoing_mail(session_factory, cfg, policy=POLICY)
        assert (report.done, report.retried, report.dead) == (0, 1, 0)
        item = _item(session_factory, item_id)
        assert item.status == "pending" and item.attempts == attempt
        assert "Connect" in (item.last_error or "") or "refused" in (item.last_error or "")
        waits.append((as_utc(item.next_attempt_at) - before).total_seconds())
        # not due yet: another drain right away leaves it alone
        assert (await deliver_outgoing_mail(session_factory, cfg, policy=POLICY)).total == 0
        _make_due(session_factory)
    assert [round(w / 30) for w in waits] == [1, 2, 4, 8]

    with SmtpSink(port=port) as sink:
        report = await deliver_outgoing_mail(session_factory, cfg, policy=POLICY)
        assert report.done == 1
        _make_due(session_factory)
        assert (await deliver_outgoing_mail(session_factory, cfg, policy=POLICY)).total == 0
        assert len(sink.messages) == 1
    item = _item(session_factory, item_id)
    assert item.status == "done" and item.attempts == 5 and item.last_error is None


async def test_4xx_is_retried(
    settings: Settings, session_factory: sessionmaker[Session], smtp_sink: SmtpSink
) -> None:
    cfg = mail_settings(settings, smtp_port=smtp_sink.port)
    [item_id] = _queue(session_factory, cfg)
    smtp_sink.reply = "451 4.3.0 mailbox busy, try later"
    report = await deliver_outgoing_mail(session_factory, cfg, policy=POLICY)
    assert (report.retried, report.dead) == (1, 0)
    assert "451" in (_item(session_factory, item_id).last_error or "")


async def test_5xx_is_dead_until_retried_from_the_cli(
    settings: Settings,
    session_factory: sessionmaker[Session],
    smtp_sink: SmtpSink,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cfg = mail_settings(settings, smtp_port=smtp_sink.port)
    [item_id, other_id] = _queue(session_factory, cfg, n=2)
    smtp_sink.reply = "550 5.7.1 message rejected"
    report = await deliver_outgoing_mail(session_factory, cfg, policy=POLICY)
    assert (report.done, report.retried, report.dead) == (0, 0, 2)
    item = _item(session_factory, item_id)
    assert item.status == "dead" and "550 5.7.1 message rejected" in (item.last_error or "")

    monkeypatch.setenv("DATABASE_URL", settings.database_url)
    assert cli_main(["outbox", "list", "--status", "dead", "--kind", "smtp"]) == 0
    listed = capsys.readouterr().out
    assert f"{item_id:>6} dead" in listed and "550 5.7.1" in listed
    assert cli_main(["outbox", "retry", str(item_id)]) == 0
    assert f"outbox item {item_id} requeued" in capsys.readouterr().out
    assert cli_main(["outbox", "retry", "999999"]) == 1
    assert "no outbox item with id 999999" in capsys.readouterr().err

    smtp_sink.reply = None
    report = await deliver_outgoing_mail(session_factory, cfg, policy=POLICY)
    assert (report.done, report.dead) == (1, 0)
    assert [m.message()["Message-ID"] for m in smtp_sink.messages] == [
        _item(session_factory, item_id).payload["message_id"]
    ]
    assert _item(session_factory, other_id).status == "dead"


async def test_starttls_never_downgrades(
    settings: Settings, session_factory: sessionmaker[Session], smtp_sink: SmtpSink
) -> None:
    # the sink offers no STARTTLS: a starttls configuration must not send in clear text
    cfg = mail_settings(settings, smtp_port=smtp_sink.port, smtp_tls="starttls")
    [item_id] = _queue(session_factory, cfg)
    report = await deliver_outgoing_mail(session_factory, cfg, policy=POLICY)
    assert report.retried == 1 and smtp_sink.messages == []
    assert "STARTTLS" in (_item(session_factory, item_id).last_error or "")


async def test_malformed_payload_is_dead(
    settings: Settings, session_factory: sessionmaker[Session], smtp_sink: SmtpSink
) -> None:
    cfg = mail_settings(settings, smtp_port=smtp_sink.port)
    [item_id] = _queue(session_factory, cfg)
    with session_factory.begin() as s:
        s.execute(
            update(OutboxItem)
            .where(OutboxItem.id == item_id)
            .values(payload={"mail_from": "x@y", "rcpt_to": ["a@b"], "message_b64": "!!"})
        )
    report = await deliver_outgoing_mail(session_factory, cfg, policy=POLICY)
    assert report.dead == 1 and smtp_sink.messages == []
    assert "malformed send_mail payload" in (_item(session_factory, item_id).last_error or "")


def test_cli_deliver_runs_one_drain(
    settings: Settings,
    session_factory: sessionmaker[Session],
    smtp_sink: SmtpSink,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cfg = mail_settings(settings, smtp_port=smtp_sink.port)
    _queue(session_factory, cfg, n=3)
    for name, value in {
        "DATABASE_URL": settings.database_url,
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": str(smtp_sink.port),
        "SMTP_TLS": "plain",
    }.items():
        monkeypatch.setenv(name, value)
    assert cli_main(["outbox", "deliver"]) == 0
    assert "delivered 3, retry later 0, dead 0" in capsys.readouterr().out
    assert len(smtp_sink.messages) == 3
    with session_factory() as s:
        assert {i.status for i in s.scalars(select(OutboxItem))} == {"done"}


def test_default_policy_outlasts_a_long_outage() -> None:
    steady = dataclasses.replace(DEFAULT_POLICY, jitter=0.0)
    waited = sum((steady.delay(n) for n in range(1, steady.max_attempts)), start=timedelta())
    assert waited > timedelta(hours=6)
    assert steady.delay(1) == timedelta(seconds=30)
    assert steady.delay(20) == timedelta(hours=1)
