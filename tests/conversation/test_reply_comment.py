"""The comment made from a customer's reply holds only what they wrote now (text and
HTML-only mail, a reply that is nothing but a quote); the log keeps the whole message."""

from __future__ import annotations

from collections.abc import Callable
from email.message import EmailMessage

from sqlalchemy import select

from mailticket.runtime import Runtime
from mailticket.store.models import Comment, EmailLog
from mailticket.ticketing.tickets import NO_NEW_TEXT
from tests.mailfactory import make_email


def _reply(parent: str, *, text: str | None = None, html: str | None = None) -> bytes:
    msg = EmailMessage()
    msg["From"] = "customer@example.com"
    msg["To"] = "support@example.com"
    msg["Subject"] = "Re: Help please"
    msg["Message-ID"] = f"<r-{abs(hash((text, html)))}@client.example>"
    msg["In-Reply-To"] = parent
    if text is not None:
        msg.set_content(text)
        if html is not None:
            msg.add_alternative(html, subtype="html")
    else:
        assert html is not None
        msg.set_content(html, subtype="html")
    return msg.as_bytes()


def test_reply_comments_hold_only_the_new_text(make_runtime: Callable[..., Runtime]) -> None:
    rt = make_runtime()
    first = rt.pipeline.process(make_email(message_id="<p1@client.example>"), "t")
    assert first.action == "created"
    gmail = (
        '<div dir="ltr">Yes, it works again. Thank you!</div><br>'
        '<div class="gmail_quote"><div class="gmail_attr">On Mon, Dec 15, 2025 at 10:00 AM '
        'Support &lt;support@example.com&gt; wrote:<br></div><blockquote class="gmail_quote">'
        "Please restart the router.</blockquote></div>"
    )
    rt.pipeline.process(_reply("<p1@client.example>", html=gmail), "t")
    rt.pipeline.process(_reply(
        "<p1@client.example>",
        text="Works now.\n\nOn Mon, 15 Dec 2025, Support wrote:\n> Please restart the router.\n",
    ), "t")
    rt.pipeline.process(_reply(
        "<p1@client.example>",
        text="On Mon, 15 Dec 2025, Support wrote:\n> Please restart the router.\n",
    ), "t")
    with rt.session_factory() as s:
        bodies = [c.body for c in s.scalars(
            select(Comment).where(Comment.source == "email").order_by(Comment.id))]
        assert bodies == ["Yes, it works again. Thank you!", "Works now.", NO_NEW_TEXT]
        logged = s.scalars(select(EmailLog).where(EmailLog.is_reply, EmailLog.direction == "in")
                             .order_by(EmailLog.id))
        texts = [e.body_text or "" for e in logged]
        assert len(texts) == 3 and all("Please restart the router." in t for t in texts)
