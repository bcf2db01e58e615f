"""Issue 10's "done when": a customer writes (APPENDed into a real Dovecot), gets the
auto-reply, an agent answers through the API, the answer arrives at a real SMTP server
(aiosmtpd), the customer answers that mail, and the answer lands on the same ticket with
only the new text as its comment. SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from email.message import EmailMessage
from email.utils import format_datetime

import pytest
from sqlalchemy import select

from mailticket.conversation import REPLY_MARKER
from mailticket.live.worker import Worker
from mailticket.runtime import Runtime
from mailticket.store.models import Comment, EmailLog, Ticket
from tests.api.conftest import build_api
from tests.live.dovecot import Dovecot
from tests.smtp_sink import SmtpSink

SUPPORT = "support@example.com"
CUSTOMER = "dana@customer.example"


@pytest.fixture
def smtp_sink() -> Iterator[SmtpSink]:
    with SmtpSink() as sink:
        yield sink


def _first_mail() -> bytes:
    msg = EmailMessage()
    msg["From"] = f"Dana Customer <{CUSTOMER}>"
    msg["To"] = SUPPORT
    msg["Subject"] = "Printer prints only blank pages"
    msg["Message-ID"] = "<start-1@customer.example>"
    msg["Date"] = "Mon, 15 Dec 2025 09:00:00 +0000"
    msg.set_content("Since this morning every page comes out blank.\n\nDana")
    return msg.as_bytes()


def _customer_answer(received: EmailMessage, new_text: str) -> bytes:
    """What a mail client makes of "Reply": Re: subject, the thread headers, our text on
    top, the whole mail it answers quoted below an attribution line, a signature."""
    body = received.get_body(("plain",))
    assert body is not None
    quoted = "\n".join(
        f"> {line}" if line else ">"
        for line in body.get_content().replace("\r\n", "\n").rstrip("\n").split("\n")
    )
    msg = EmailMessage()
    msg["From"] = f"Dana Customer <{CUSTOMER}>"
    msg["To"] = str(received["Reply-To"])
    msg["Subject"] = f"Re: {received['Subject']}"
    msg["Message-ID"] = "<answer-2@customer.example>"
    msg["In-Reply-To"] = str(received["Message-ID"])
    msg["References"] = f"{received['References']} {received['Message-ID']}"
    msg["Date"] = format_datetime(received["Date"].datetime)
    msg.set_content(
        f"{new_text}\n\n-- \nDana Customer\nCustomer Ltd.\n\n"
        f"On {received['Date']}, {received['From']} wrote:\n{quoted}\n"
    )
    return msg.as_bytes()


async def test_customer_agent_customer_round_trip_through_real_mail(
    dovecot: Dovecot, smtp_sink: SmtpSink, make_runtime: Callable[..., Runtime]
) -> None:
    rt = make_runtime(
        clock=None, imap_host="127.0.0.1", imap_port=dovecot.port, imap_tls="plain",
        imap_user=dovecot.user, imap_password=dovecot.password, imap_folder="INBOX",
        imap_poll_interval=3600, smtp_host="127.0.0.1", smtp_port=smtp_sink.port,
        smtp_tls="plain", mail_from=f"Example Support <{SUPPORT}>", mail_domain="example.com",
    )
    worker = Worker(rt.settings, rt.engine, rt.session_factory, rt.pipeline)
    api = build_api(rt)
    try:
        # 1. The customer writes; the auto-reply goes out.
        dovecot.append(_first_mail())
        await worker.run_once()
        with rt.session_factory() as s:
            [ticket] = s.scalars(select(Ticket)).all()
            number = ticket.ticket_number
        [auto] = smtp_sink.messages
        assert auto.message()["Auto-Submitted"] == "auto-replied"
        assert auto.rcpt_tos == [CUSTOMER]

        # 2. An agent answers through the API; the worker's outbox drain sends it.
        r = api.client.post(
            f"/api/v1/tickets/{number}/comments", headers=api.auth("write"),
            json={"body": "Please replace the toner cartridge and try again.",
                  "author_name": "Anna Agent", "author_email": "anna@example.com"},
        )
        assert r.status_code == 201, r.text
        await worker.run_once()
        [_, sent] = smtp_sink.messages
        answer = sent.message()
        assert sent.rcpt_tos == [CUSTOMER]
        assert answer["Subject"] == f"[{number}] Printer prints only blank pages"
        assert answer["Message-ID"].startswith(f"<{number}-")
        assert answer["In-Reply-To"] == "<start-1@customer.example>"
        assert answer["Auto-Submitted"] is None
        assert answer["From"] == f"Anna Agent <{SUPPORT}>" and answer["Reply-To"] == SUPPORT
        text = answer.get_body(("plain",)).get_content()  # type: ignore[union-attr]
        assert "replace the toner" in text and REPLY_MARKER in text
        assert "> Since this morning every page comes out blank." in text

        # 3. The customer answers that mail from their client (quote and signature included).
        dovecot.append(_customer_answer(answer, "Thanks, with a new cartridge it prints again."))
        await worker.run_once()
        with rt.session_factory() as s:
            assert [t.id for t in s.scalars(select(Ticket))] == [ticket.id]
            log = s.scalars(select(EmailLog).where(
                EmailLog.email_message_id == "<answer-2@customer.example>")).one()
            assert (log.ticket_id, log.matched_by, log.direction) == (
                ticket.id, "in_reply_to", "in")
            assert log.body_text is not None and "replace the toner" in log.body_text
            comments = s.scalars(select(Comment).where(Comment.ticket_id == ticket.id)
                                 .order_by(Comment.id)).all()
            assert [(c.source, c.is_internal, c.body) for c in comments] == [
                ("api", False, "Please replace the toner cartridge and try again."),
                ("email", False, "Thanks, with a new cartridge it prints again."),
            ]
        # A follow-up is not answered automatically; nothing else went out.
        assert len(smtp_sink.messages) == 2
    finally:
        api.client.close()
