"""The embedded default under concurrency: the live worker on SQLite with mail waiting at
start, the IMAP store and the outbox drain writing at the same moment.

Every auto-reply must go out exactly once and soon: not after a 5-minute lease, and never a
second time because a bookkeeping write lost a race for the database.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime

import pytest
from sqlalchemy import func, select

from mailticket.live.worker import Worker
from mailticket.runtime import build_runtime
from mailticket.settings import load_settings
from mailticket.store.outbox_models import OutboxItem
from tests.dbutil import TemplateDatabases
from tests.live.dovecot import Dovecot
from tests.smtp_sink import SmtpSink

WAITING = 600  # more than two IMAP batches: the drain starts while the next batch is stored


@pytest.fixture
def sqlite_url(template_dbs: TemplateDatabases) -> Iterator[str]:
    url, _ = template_dbs.fresh("sqlite")
    yield url


def _request(n: int) -> bytes:
    msg = EmailMessage()
    msg["From"] = f"Customer {n} <customer{n}-{uuid.uuid4().hex[:6]}@example.org>"
    msg["To"] = "support@a.example"
    msg["Subject"] = f"Request {n}: the printer is broken"
    msg["Date"] = format_datetime(datetime.now(UTC))
    msg["Message-ID"] = f"<{uuid.uuid4().hex}@client.example>"
    msg.set_content(f"Request number {n}. Please help.")
    return msg.as_bytes()


def _outbox_states(session_factory) -> dict[str, int]:  # type: ignore[no-untyped-def]
    with session_factory() as s:
        rows = s.execute(select(OutboxItem.status, func.count()).group_by(OutboxItem.status))
        return {status: int(n) for status, n in rows}


@pytest.mark.parametrize("round_", range(5))
async def test_every_auto_reply_is_sent_once_and_soon_on_sqlite(
    dovecot: Dovecot, sqlite_url: str, round_: int
) -> None:
    dovecot.deliver_many(_request(n) for n in range(WAITING))
    with SmtpSink() as sink:
        settings = load_settings(
            database_url=sqlite_url, _env_file=None,
            imap_host="127.0.0.1", imap_port=dovecot.port, imap_tls="plain",
            imap_user=dovecot.user, imap_password=dovecot.password, imap_poll_interval=3600,
            smtp_host="127.0.0.1", smtp_port=sink.port, smtp_tls="plain",
            mail_from="support@a.example", mail_domain="a.example",
        )
        rt = build_runtime(settings)
        worker = Worker(settings, rt.engine, rt.session_factory, rt.pipeline)
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(stop))
        try:
            # Far below the 5-minute lease and the 15 s poll: only a drain that kept going
            # (or handed back what it had claimed) gets everything out in this time.
            started = time.monotonic()
            while len(sink.messages) < WAITING and time.monotonic() - started < 60:
                assert not task.done(), task
                await asyncio.sleep(0.1)
            await asyncio.sleep(1.0)  # a second send, if any, would come now
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)
            states = _outbox_states(rt.session_factory)
            rt.close()
    sent = Counter(str(m.message()["Message-ID"]) for m in sink.messages)
    twice = [mid for mid, n in sent.items() if n > 1]
    assert twice == [], f"sent more than once: {twice[:5]}"
    assert len(sent) == WAITING, f"{len(sent)} of {WAITING} sent; outbox {states}"
    assert states == {"done": WAITING}
