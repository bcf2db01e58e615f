"""Mail that no person wrote (an out-of-office reply, a bounce) on a ticket that lives in a
vendor's system reaches the vendor as an internal note, never as a public comment.

A public comment is the customer-facing conversation: Zendesk's default triggers mail the
requester about it, and Jira Service Management shows it on the customer portal. A customer's
vacation reply mirrored there would be sent back to that customer (whose auto-responder may
answer again), and a bounce would show the customer our delivery failure. Agents still want
both on the ticket, so they go in as internal notes that say what they are.
"""

from __future__ import annotations

from email.message import EmailMessage

from mailticket.runtime import Runtime
from tests.backends.fakes.jira import FakeJira
from tests.backends.fakes.zendesk import FakeZendesk
from tests.backends.helpers import drain
from tests.backends.mail import mail


def _out_of_office(parent: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = "Carol Customer <carol@example.com>"
    msg["To"] = "support@example.com"
    msg["Subject"] = "Automatic reply: Printer on fire"
    msg["Date"] = "Mon, 15 Dec 2025 09:05:00 +0000"
    msg["Message-ID"] = f"<ooo.{abs(hash(parent))}@client.example>"
    msg["In-Reply-To"] = parent
    msg["References"] = parent
    msg["Auto-Submitted"] = "auto-replied"
    msg.set_content("I am out of the office until Monday.")
    return msg.as_bytes()


def _bounce(parent: str) -> bytes:
    """A DSN as Postfix writes it (RFC 3464), returning our first mail's headers."""
    return (
        "From: Mail Delivery System <MAILER-DAEMON@mx.example.com>\r\n"
        "To: support@example.com\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\n"
        "Date: Mon, 15 Dec 2025 09:06:00 +0000\r\n"
        f"Message-ID: <dsn.{abs(hash(parent))}@mx.example.com>\r\n"
        "Auto-Submitted: auto-replied\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B1"\r\n'
        "\r\n"
        "--B1\r\n"
        "Content-Type: text/plain; charset=us-ascii\r\n\r\n"
        "This is the mail system at host mx.example.com.\r\n\r\n"
        "<carol@example.com>: mailbox full\r\n"
        "--B1\r\n"
        "Content-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.example.com\r\n\r\n"
        "Final-Recipient: rfc822; carol@example.com\r\n"
        "Action: failed\r\n"
        "Status: 5.2.2\r\n"
        "--B1\r\n"
        "Content-Type: text/rfc822-headers\r\n\r\n"
        "From: support@example.com\r\n"
        "To: carol@example.com\r\n"
        "Subject: Printer on fire\r\n"
        f"Message-ID: {parent}\r\n"
        "--B1--\r\n"
    ).encode()


def _linked(rt: Runtime, raw: bytes, ticket_id: int) -> None:
    outcome = rt.pipeline.process(raw, "test")
    assert outcome.ticket_id == ticket_id, outcome
    assert outcome.classification in ("auto_reply", "bounce"), outcome


async def test_jira_gets_auto_reply_and_bounce_as_internal_notes(
    jira_runtime: Runtime, fake_jira: FakeJira
) -> None:
    rt = jira_runtime
    first, first_id = mail()
    outcome = rt.pipeline.process(first, "test")
    assert outcome.ticket_id is not None
    assert (await drain(rt)).dead == 0
    (issue,) = fake_jira.issues.values()

    _linked(rt, _out_of_office(first_id), outcome.ticket_id)
    _linked(rt, _bounce(first_id), outcome.ticket_id)
    reply, _ = mail(subject="Re: Printer on fire", body="Still burning.", reply_to=first_id)
    assert rt.pipeline.process(reply, "test").ticket_id == outcome.ticket_id
    report = await drain(rt)
    assert (report.done, report.dead) == (3, 0)

    comments = fake_jira.comments[issue["id"]]
    internal = [
        {p["key"]: p["value"] for p in c["properties"]}["sd.public.comment"]["internal"]
        for c in comments
    ]
    bodies = [str(c["body"]) for c in comments]
    assert "out of the office" in bodies[0] and "mailbox full" in bodies[1]
    assert "Still burning." in bodies[2]
    # The two automatic mails are internal and say what they are; the customer's reply is not.
    assert internal == [True, True, False]
    assert bodies[0].startswith("Automatic reply from Carol Customer")
    assert bodies[1].startswith("Delivery failure (bounce) from Mail Delivery System")
    assert bodies[2].startswith("Carol Customer wrote")


async def test_zendesk_gets_auto_reply_as_private_comment(
    zd_rt: Runtime, zd: tuple[FakeZendesk, str]
) -> None:
    rt, (fake, _) = zd_rt, zd
    first, first_id = mail()
    outcome = rt.pipeline.process(first, "test")
    assert outcome.ticket_id is not None
    assert (await drain(rt)).dead == 0
    (remote,) = fake.tickets.values()
    before = len(fake.comments[remote["id"]])

    _linked(rt, _out_of_office(first_id), outcome.ticket_id)
    assert (await drain(rt)).dead == 0
    added = fake.comments[remote["id"]][before:]
    assert len(added) == 1
    assert "out of the office" in added[0]["body"]
    # A public comment would make Zendesk mail the requester her own vacation notice.
    assert added[0]["public"] is False
