"""The relay as a whole: connections carry many messages; a dead, silent or refusing relay
defers every item at once (one timeout, not one per message) and its circuit breaker keeps
the next drains away until its time is up; per-recipient refusals stay per item."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from mailticket.outbound.auto_reply import queue_auto_reply
from mailticket.outbound.smtp import CONNECTIONS, deliver_outgoing_mail
from mailticket.settings import Settings
from mailticket.store.outbox import CircuitBreaker, RetryPolicy
from mailticket.store.outbox_models import OutboxItem
from tests.outbound.helpers import NOW, mail_settings, make_ticket, parsed, work
from tests.outbound.relays import BrokenRelay
from tests.smtp_sink import SmtpSink, free_port

POLICY = RetryPolicy(base_delay=timedelta(seconds=30), max_delay=timedelta(hours=1))


def _queue(factory: sessionmaker[Session], cfg: Settings, n: int) -> None:
    with factory.begin() as s:
        for i in range(n):
            inbound = parsed(from_address=f"customer{i}@example.org")
            ticket = make_ticket(s, inbound)
            queue_auto_reply(work(s), cfg, ticket, inbound, template="ticket_created", now=NOW)


def _states(factory: sessionmaker[Session]) -> dict[str, int]:
    with factory() as s:
        rows = s.execute(select(OutboxItem.status, func.count()).group_by(OutboxItem.status))
        return {status: int(n) for status, n in rows}


def _make_due(factory: sessionmaker[Session]) -> None:
    with factory.begin() as s:
        s.execute(
            update(OutboxItem)
            .where(OutboxItem.status == "pending")
            .values(next_attempt_at=datetime.now(UTC) - timedelta(seconds=1))
        )


async def test_one_connection_carries_many_messages(
    settings: Settings, session_factory: sessionmaker[Session], smtp_sink: SmtpSink
) -> None:
    cfg = mail_settings(settings, smtp_port=smtp_sink.port)
    _queue(session_factory, cfg, 300)
    report = await deliver_outgoing_mail(session_factory, cfg, policy=POLICY)
    assert report.done == 300
    ids = Counter(str(m.message()["Message-ID"]) for m in smtp_sink.messages)
    assert len(ids) == 300 and set(ids.values()) == {1}
    # A few connections (limited per connection, a few in parallel), not one per message.
    assert smtp_sink.connections() <= 2 * CONNECTIONS
    assert _states(session_factory) == {"done": 300}


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("failure", ["refused", "silent", "greets-421"])
async def test_a_dead_relay_defers_everything_at_once_and_the_breaker_waits(
    settings: Settings, session_factory: sessionmaker[Session], failure: str
) -> None:
    queued = 40
    relay = BrokenRelay(
        greeting=b"421 4.3.2 Service shutting down\r\n" if failure == "greets-421" else None
    )
    port = free_port() if failure == "refused" else relay.port
    cfg = mail_settings(settings, smtp_port=port, smtp_timeout=2)
    _queue(session_factory, cfg, queued)
    clock = _Clock()
    breaker = CircuitBreaker(POLICY, clock=clock)
    with relay:
        if failure == "refused":
            relay.__exit__()  # nothing listens on `port` at all
        report = await deliver_outgoing_mail(session_factory, cfg, policy=POLICY, breaker=breaker)
        # Every item deferred with its backoff; the relay was asked once per connection
        # lane (before: once per message, each waiting SMTP_TIMEOUT when silent).
        assert (report.done, report.retried, report.dead) == (0, queued, 0)
        assert relay.accepted <= CONNECTIONS
        with session_factory() as s:
            items = list(s.scalars(select(OutboxItem)))
        assert {(i.status, i.attempts) for i in items} == {("pending", 1)}
        assert all(str(port) in (i.last_error or "") for i in items)
        # Due again, but the breaker is open: the next drain does not even connect.
        _make_due(session_factory)
        accepted = relay.accepted
        again = await deliver_outgoing_mail(session_factory, cfg, policy=POLICY, breaker=breaker)
        assert again.total == 0 and relay.accepted == accepted
        assert _states(session_factory) == {"pending": queued}

    with SmtpSink(port=port) as sink:  # the relay is back
        clock.now += POLICY.max_delay.total_seconds()
        report = await deliver_outgoing_mail(session_factory, cfg, policy=POLICY, breaker=breaker)
        assert report.done == queued and breaker.open_targets() == set()
        assert len({str(m.message()["Message-ID"]) for m in sink.messages}) == queued
        assert len(sink.messages) == queued
    assert _states(session_factory) == {"done": queued}


async def test_refused_recipients_stay_per_item_on_a_working_connection(
    settings: Settings, session_factory: sessionmaker[Session], smtp_sink: SmtpSink
) -> None:
    cfg = mail_settings(settings, smtp_port=smtp_sink.port)
    _queue(session_factory, cfg, 6)
    smtp_sink.rcpt_replies = {
        "customer1@example.org": "550 5.1.1 no such user",
        "customer3@example.org": "450 4.2.1 mailbox busy, try later",
    }
    breaker = CircuitBreaker(POLICY)
    report = await deliver_outgoing_mail(
        session_factory, cfg, policy=POLICY, breaker=breaker, connections=1
    )
    assert (report.done, report.retried, report.dead) == (4, 1, 1)
    assert breaker.open_targets() == set()
    assert smtp_sink.connections() == 1, "the refusals did not cost the connection"
    assert sorted(m.rcpt_tos[0] for m in smtp_sink.messages) == [
        f"customer{i}@example.org" for i in (0, 2, 4, 5)
    ]
    with session_factory() as s:
        by_rcpt = {i.payload["rcpt_to"][0]: i for i in s.scalars(select(OutboxItem))}
    assert by_rcpt["customer1@example.org"].status == "dead"
    assert "550 5.1.1" in (by_rcpt["customer1@example.org"].last_error or "")
    assert by_rcpt["customer3@example.org"].status == "pending"
    assert "450 4.2.1" in (by_rcpt["customer3@example.org"].last_error or "")


def test_run_once_with_a_silent_relay_exits_after_one_timeout(
    db_url: str, tmp_path: Path
) -> None:
    box = tmp_path / "Maildir"
    (box / "new").mkdir(parents=True)
    from tests.mailfactory import make_email

    waiting = 40
    for i in range(waiting):
        (box / "new" / f"m{i}").write_bytes(
            make_email(subject=f"Broken thing {i}", sender=f"c{i}@example.org")
        )
    timeout = 3
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("IMAP_", "MAILDIR", "LMTP"))}
    with BrokenRelay() as relay:
        env = {
            **clean, "DATABASE_URL": db_url, "MAILDIR_PATH": str(box),
            "EMAIL_UNMATCHED_ACTION": "create_ticket", "SMTP_HOST": "127.0.0.1",
            "SMTP_PORT": str(relay.port), "SMTP_TLS": "plain", "SMTP_TIMEOUT": str(timeout),
        }
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-m", "mailticket.cli", "run", "--once"],
            env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300,
        )
        took = time.monotonic() - started
        accepted = relay.accepted
    assert done.returncode == 0, done.stderr
    # One timeout per connection lane, all at once: before, one per queued reply (120 s).
    assert accepted <= CONNECTIONS
    assert took < waiting * timeout / 2, done.stderr[-2000:]
    from mailticket.store.db import make_engine, make_session_factory

    engine = make_engine(db_url)
    try:
        factory = make_session_factory(engine)
        with factory() as s:
            items = list(s.scalars(select(OutboxItem)))
    finally:
        engine.dispose()
    assert len(items) == waiting, "every auto-reply is still queued: nothing lost"
    assert {i.status for i in items} == {"pending"}
