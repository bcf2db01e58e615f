"""Delivery through a real SMTP server on loopback: retries, backoff, dead items, CLI."""

from __future__ import annotations

import dataclasses
import email
import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from email.header import decode_header, make_header
from email.utils import parseaddr

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from mailticket.outbound.auto_reply import queue_auto_reply
from mailticket.outbound.smtp import DEFAULT_POLICY, deliver_outgoing_mail
from mailticket.settings import Settings
from mailticket.store.outbox import RetryPolicy
from mailticket.store.outbox_models import OutboxItem, as_utc
from tests.outbound.helpers import NOW, mail_settings, make_ticket, parsed, work
from tests.smtp_sink import SmtpSink, free_port

POLICY = RetryPolicy(base_delay=timedelta(seconds=30), max_delay=timedelta(hours=1))


def cli_main(argv: Sequence[str]) -> int:
    """`mailticket <argv>`, through the real entry point (its error handling included)."""
    from mailticket.cli import main

    return main(list(argv))


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
    assert got.data.rstrip(b"\r\n") == bytes(item.message or b"").rstrip(b"\r\n")
    assert "message_b64" not in item.payload  # the bytes are stored once, as bytes
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
            .values(payload={"mail_from": "x@y", "rcpt_to": ["a@b"]}, message=None)
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


def _age_done(session_factory: sessionmaker[Session], ids: list[int], days: int) -> None:
    with session_factory.begin() as s:
        s.execute(
            update(OutboxItem)
            .where(OutboxItem.id.in_(ids))
            .values(done_at=datetime.now(UTC) - timedelta(days=days))
        )


async def test_delivered_mail_is_pruned_after_the_retention(
    settings: Settings,
    session_factory: sessionmaker[Session],
    smtp_sink: SmtpSink,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: object,
) -> None:
    from mailticket.live.worker import Worker
    from tests.live.helpers import FakeHandler

    cfg = mail_settings(settings, smtp_port=smtp_sink.port, outbox_retention="30d")
    ids = _queue(session_factory, cfg, n=5)
    assert (await deliver_outgoing_mail(session_factory, cfg, policy=POLICY)).done == 5
    _age_done(session_factory, ids[:2], days=40)
    # The worker's scheduled prune: past OUTBOX_RETENTION only.
    worker = Worker(cfg, session_factory.kw["bind"], session_factory, FakeHandler())
    await worker._prune_outbox()
    with session_factory() as s:
        assert sorted(s.scalars(select(OutboxItem.id))) == ids[2:]
    # The command: OUTBOX_RETENTION from the environment, or --older-than.
    monkeypatch.setenv("DATABASE_URL", settings.database_url)
    monkeypatch.setenv("OUTBOX_RETENTION", "30d")
    _age_done(session_factory, ids[2:3], days=10)
    assert cli_main(["outbox", "prune"]) == 0
    assert "pruned 0 delivered outbox items" in capsys.readouterr().out
    assert cli_main(["outbox", "prune", "--older-than", "7d"]) == 0
    assert "pruned 1 delivered outbox items" in capsys.readouterr().out
    assert cli_main(["outbox", "prune", "--older-than", "soon"]) == 2
    assert "not a duration" in capsys.readouterr().err
    with session_factory() as s:
        assert sorted(s.scalars(select(OutboxItem.id))) == ids[3:]


async def test_customer_values_longer_than_a_line_never_make_the_relay_refuse_the_reply(
    settings: Settings, session_factory: sessionmaker[Session], smtp_sink: SmtpSink
) -> None:
    """A display name of 1,200 letters without a space and a Message-ID as long (both seen
    in real mail) gave header lines over RFC 5322's 998 characters: the relay answered
    "500 Line too long" and the customer's confirmation went dead in the outbox."""
    cfg = mail_settings(settings, smtp_port=smtp_sink.port)
    name = "X" * 1200
    long_id = f"<{'b' * 1200}@customer.example>"
    with session_factory.begin() as s:
        inbound = parsed(
            from_name=name, message_id=long_id, references=[f"<{'c' * 1100}@x.example>"]
        )
        ticket = make_ticket(s, inbound)
        queue_auto_reply(work(s), cfg, ticket, inbound, template="ticket_created", now=NOW)
    report = await deliver_outgoing_mail(session_factory, cfg, policy=POLICY)
    assert (report.done, report.retried, report.dead) == (1, 0, 0)
    got = smtp_sink.messages[0]
    assert max(len(line) for line in got.data.split(b"\r\n")) <= 998
    # decode_header joins adjacent encoded words as RFC 2047 §6.2 says (the stdlib's
    # policy.default parser keeps the whitespace between them in a display name)
    raw_to = email.message_from_bytes(got.data)["To"]  # compat32: the header as sent
    to_name, to_address = parseaddr(re.sub(r"\r\n\s", " ", raw_to))
    assert str(make_header(decode_header(to_name))) == name
    assert to_address == "carla@customer.example"
