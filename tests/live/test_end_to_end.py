"""The whole loop with real parts: Dovecot in, the pipeline, the outbox, aiosmtpd out.

A "relay" stands in for the internet between the SMTP sink and the mailboxes: whatever
mailticket sends is handed to whoever it was addressed to (a customer, a naive
auto-responder, or a second mailticket), whose answers are APPENDed back over IMAP.
"""

from __future__ import annotations

import email
import uuid
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from email.utils import make_msgid, parseaddr

import pytest
from sqlalchemy import select

from mailticket.live.worker import Worker
from mailticket.runtime import Runtime, build_runtime
from mailticket.settings import load_settings
from mailticket.store.models import EmailLog, Ticket
from tests.dbutil import TemplateDatabases, drop_pg
from tests.live.dovecot import Dovecot
from tests.mailfactory import make_email
from tests.smtp_sink import SmtpSink

SUPPORT_A = "support@a.example"
SUPPORT_B = "support@b.example"


@pytest.fixture
def smtp_sink() -> Iterator[SmtpSink]:
    with SmtpSink() as sink:
        yield sink


def _worker(rt: Runtime) -> Worker:
    return Worker(
        rt.settings, rt.engine, rt.session_factory, rt.pipeline
    )


def _mail_settings(dovecot: Dovecot, sink: SmtpSink, folder: str, mail_from: str) -> dict[str, object]:
    return {
        "imap_host": "127.0.0.1", "imap_port": dovecot.port, "imap_tls": "plain",
        "imap_user": dovecot.user, "imap_password": dovecot.password, "imap_folder": folder,
        "imap_poll_interval": 3600, "smtp_host": "127.0.0.1", "smtp_port": sink.port,
        "smtp_tls": "plain", "mail_from": mail_from, "mail_domain": mail_from.split("@")[1],
    }


def _tickets(rt: Runtime) -> list[Ticket]:
    with rt.session_factory() as s:
        return list(s.scalars(select(Ticket).order_by(Ticket.id)))


async def test_new_mail_gets_a_stamped_auto_reply_and_the_answer_threads(
    dovecot: Dovecot, smtp_sink: SmtpSink, make_runtime: Callable[..., Runtime]
) -> None:
    rt = make_runtime(clock=None, **_mail_settings(dovecot, smtp_sink, "INBOX", SUPPORT_A))
    worker = _worker(rt)
    dovecot.append(make_email(
        subject="VPN refuses my password", sender="Dana <dana@customer.example>",
        to=SUPPORT_A, message_id="<vpn-1@customer.example>",
    ))
    await worker.run_once()

    [ticket] = _tickets(rt)
    [sent] = smtp_sink.messages
    reply = sent.message()
    assert sent.rcpt_tos == ["dana@customer.example"]
    assert reply["Subject"] == f"[{ticket.ticket_number}] VPN refuses my password"
    assert reply["Message-ID"].startswith(f"<{ticket.ticket_number}-")
    assert reply["In-Reply-To"] == "<vpn-1@customer.example>"
    assert reply["Auto-Submitted"] == "auto-replied"
    assert ticket.ticket_number in reply.get_body(("plain",)).get_content()  # type: ignore[union-attr]

    # The customer answers from a client that keeps only In-Reply-To and drops the subject.
    dovecot.append(make_email(
        subject="more details", sender="dana@customer.example", to=SUPPORT_A,
        in_reply_to=reply["Message-ID"], body="It says 'auth failed' since Monday.",
    ))
    await worker.run_once()
    assert [t.id for t in _tickets(rt)] == [ticket.id]
    with rt.session_factory() as s:
        log = s.scalars(
            select(EmailLog).where(EmailLog.direction == "in").order_by(EmailLog.id.desc())
        ).first()
        assert log is not None
        assert (log.ticket_id, log.is_reply, log.matched_by) == (ticket.id, True, "in_reply_to")
    assert len(smtp_sink.messages) == 1, "a follow-up is not answered again"
    assert dovecot.count() == 2 and all("\\Seen" in f for f in dovecot.flags().values())


def _naive_answer(received: bytes, *, keep_thread: bool) -> bytes:
    """What a vacation responder that ignores RFC 3834 sends back: no Auto-Submitted, no
    Precedence. `keep_thread=False` is the worst kind: a fresh subject and no references."""
    original = email.message_from_bytes(received)
    msg = EmailMessage()
    msg["From"] = "bot@vendor.example"
    msg["To"] = parseaddr(str(original["From"]))[1]
    msg["Message-ID"] = make_msgid(domain="vendor.example")
    if keep_thread:
        msg["Subject"] = f"Re: {original['Subject']}"
        msg["In-Reply-To"] = str(original["Message-ID"])
    else:
        msg["Subject"] = f"I am away ({uuid.uuid4().hex[:8]})"
    msg.set_content("I am out of the office until further notice.")
    return msg.as_bytes()


@pytest.mark.parametrize("keep_thread", [True, False], ids=["threaded-bot", "amnesiac-bot"])
async def test_a_naive_auto_responder_cannot_keep_us_talking(
    dovecot: Dovecot, smtp_sink: SmtpSink, make_runtime: Callable[..., Runtime],
    keep_thread: bool,
) -> None:
    rt = make_runtime(
        clock=None, auto_reply_rate_limit=5,
        **_mail_settings(dovecot, smtp_sink, "INBOX", SUPPORT_A),
    )
    worker = _worker(rt)
    dovecot.append(make_email(subject="Order 1234", sender="bot@vendor.example", to=SUPPORT_A))
    relayed = 0
    for _ in range(20):
        await worker.run_once()
        fresh = smtp_sink.messages[relayed:]
        relayed = len(smtp_sink.messages)
        if not fresh:
            break
        for sent in fresh:
            dovecot.append(_naive_answer(sent.data, keep_thread=keep_thread))
    else:
        pytest.fail(f"still exchanging mail after 20 rounds ({relayed} sent)")
    if keep_thread:
        assert relayed == 1 and len(_tickets(rt)) == 1
    else:
        # Every bot mail looks like a new request; the per-sender limit ends the exchange.
        assert relayed == 5


async def test_two_mailtickets_writing_to_each_other_stop(
    dovecot: Dovecot, smtp_sink: SmtpSink, make_runtime: Callable[..., Runtime],
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    dovecot.create("B")
    rt_a = make_runtime(clock=None, **_mail_settings(dovecot, smtp_sink, "INBOX", SUPPORT_A))
    other = TemplateDatabases(tmp_path_factory.mktemp("other"))
    url_b, pg_name = other.fresh("sqlite")
    rt_b = build_runtime(load_settings(
        database_url=url_b, _env_file=None, **_mail_settings(dovecot, smtp_sink, "B", SUPPORT_B),
    ))
    try:
        a, b = _worker(rt_a), _worker(rt_b)
        # A misconfigured forward: B's support address writes to A.
        dovecot.append(make_email(subject="Invoice question", sender=SUPPORT_B, to=SUPPORT_A))
        relayed = 0
        for _ in range(10):
            await a.run_once()
            await b.run_once()
            fresh = smtp_sink.messages[relayed:]
            relayed = len(smtp_sink.messages)
            if not fresh:
                break
            for sent in fresh:
                folder = "B" if sent.rcpt_tos == [SUPPORT_B] else "INBOX"
                dovecot.append(sent.data, folder=folder)
        else:
            pytest.fail("the two instances are still mailing each other")
        assert relayed == 1, "A answers once; B sees an auto-reply and stays silent"
        assert len(_tickets(rt_b)) == 0
        with rt_b.session_factory() as s:
            [seen] = s.scalars(select(EmailLog).where(EmailLog.direction == "in")).all()
            assert seen.classification == "auto_reply"
    finally:
        rt_b.close()
        other.close()
        if pg_name:
            drop_pg(pg_name)


async def test_running_worker_answers_within_seconds_not_at_the_next_poll(
    dovecot: Dovecot, smtp_sink: SmtpSink, make_runtime: Callable[..., Runtime]
) -> None:
    import asyncio
    import time

    from mailticket.live import worker as worker_module

    rt = make_runtime(clock=None, **_mail_settings(dovecot, smtp_sink, "INBOX", SUPPORT_A))
    assert worker_module.OUTBOX_POLL >= 15  # so only the new-mail kick can explain speed
    stop = asyncio.Event()
    task = asyncio.create_task(_worker(rt).run(stop))
    try:
        await asyncio.sleep(0.5)  # connected and idling
        dovecot.append(make_email(subject="Laptop dead", sender="eve@customer.example",
                                  to=SUPPORT_A))
        started = time.monotonic()
        while not smtp_sink.messages:
            assert time.monotonic() - started < 5, "no auto-reply within 5 s"
            await asyncio.sleep(0.05)
        [ticket] = _tickets(rt)
        assert smtp_sink.messages[0].message()["Subject"].startswith(f"[{ticket.ticket_number}]")
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)
