"""New mail wakes outgoing delivery once its transaction has committed, however long the commit
takes, so the auto-reply goes out at once rather than at the next outbox poll.

The delivery loop can only send what is committed. It used to be woken from inside the batch,
before the commit, and to wait a fixed 0.25 s for the commit to land: a commit slower than that
(a large batch, a busy disk, a PostgreSQL under load) left the auto-reply for the interval job,
OUTBOX_POLL (15 s) later. Real LMTP (aiosmtpd), the real pipeline and outbox, a real SMTP sink,
on SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import smtplib
from collections.abc import Callable, Iterator

import pytest

from mailticket.live import worker as worker_module
from mailticket.live.worker import Worker
from mailticket.runtime import Runtime
from mailticket.settings import load_settings
from tests.live.dovecot import free_port
from tests.live.helpers import commits_held
from tests.mailfactory import make_email
from tests.smtp_sink import SmtpSink

COMMIT_DELAY = 1.0  # seconds each commit is held back: well past the old fixed pause


@pytest.fixture
def smtp_sink() -> Iterator[SmtpSink]:
    with SmtpSink() as sink:
        yield sink


async def test_auto_reply_leaves_after_a_slow_commit_without_waiting_for_the_poll(
    make_runtime: Callable[..., Runtime], smtp_sink: SmtpSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Only the kick can send: the interval job would come an hour later.
    monkeypatch.setattr(worker_module, "OUTBOX_POLL", 3600.0)
    rt = make_runtime(clock=None)
    port = free_port()
    settings = load_settings(
        database_url=rt.settings.database_url, _env_file=None,
        lmtp_listen=f"127.0.0.1:{port}", smtp_host="127.0.0.1", smtp_port=smtp_sink.port,
        smtp_tls="plain", mail_from="support@example.test", mail_domain="example.test",
    )

    with commits_held(rt.engine, COMMIT_DELAY):
        worker = Worker(settings, rt.engine, rt.session_factory, rt.pipeline)
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(stop))
        try:
            await asyncio.sleep(0.3)
            raw = make_email(subject="Printer jammed", sender="Erin <erin@customer.example>",
                             to="support@example.test")

            def deliver() -> None:
                with smtplib.LMTP("127.0.0.1", port) as client:
                    client.sendmail("erin@customer.example", ["support@example.test"], raw)

            await asyncio.to_thread(deliver)
            # Generous: the kick sends within a few commits; the old code sent nothing here.
            for _ in range(300):
                if smtp_sink.messages:
                    break
                await asyncio.sleep(0.1)
            assert len(smtp_sink.messages) == 1, "the auto-reply waited for the outbox poll"
            [sent] = smtp_sink.messages
            assert sent.rcpt_tos == ["erin@customer.example"]
            assert "Printer jammed" in str(sent.message()["Subject"])
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)
