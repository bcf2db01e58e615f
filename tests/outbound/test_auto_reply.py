"""Rendering, headers, header injection and the database rows of a queued auto-reply."""

from __future__ import annotations

import base64
import email
import re
from email import policy
from email.message import EmailMessage
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from mailticket.outbound.auto_reply import idempotency_key, queue_auto_reply
from mailticket.outbound.compose import (
    clean_header,
    reply_subject,
    strip_subject_noise,
    thread_headers,
)
from mailticket.outbound.templates import MailTemplates, TemplateRenderError
from mailticket.settings import Settings
from mailticket.store.models import EmailLog, ThreadRef
from mailticket.store.outbox_models import OutboxItem
from tests.outbound.helpers import NOW, mail_settings, make_ticket, parsed, work


def _sent(item: OutboxItem) -> EmailMessage:
    raw = base64.b64decode(item.payload["message_b64"])
    msg = email.message_from_bytes(raw, policy=policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


@pytest.mark.parametrize(
    ("original", "expected"),
    [
        ("Printer broken", "[TKT-20251215-001] Printer broken"),
        ("Re: Printer broken", "[TKT-20251215-001] Printer broken"),
        ("AW: SV: RE: Printer broken", "[TKT-20251215-001] Printer broken"),
        ("Re: [TKT-20251215-001] Printer broken", "[TKT-20251215-001] Printer broken"),
        ("Printer broken [TKT-20251215-001]", "[TKT-20251215-001] Printer broken"),
        ("Re[2]: Fwd: [tkt-20251215-001] Printer", "[TKT-20251215-001] Printer"),
        ("[URGENT] Printer", "[TKT-20251215-001] [URGENT] Printer"),
        ("", "[TKT-20251215-001]"),
        ("Hello\r\nBcc: victim@x", "[TKT-20251215-001] Hello Bcc: victim@x"),
    ],
)
def test_reply_subject(original: str, expected: str) -> None:
    assert reply_subject("TKT-20251215-001", original) == expected
    # applying it again never stacks a second tag
    assert reply_subject("TKT-20251215-001", expected) == expected


def test_subject_helpers_keep_meaningful_text() -> None:
    assert strip_subject_noise("Re: Reorder of parts") == "Reorder of parts"
    assert clean_header("a\r\n\tb\x00c") == "a b c"


def test_thread_headers_append_parent_and_drop_garbage() -> None:
    parent, refs = thread_headers("<m@c>", ["<r1@c>", "not an id", "<r2@c>\r\nBcc: x@y", "<r1@c>"])
    assert parent == "<m@c>"
    assert refs == ["<r1@c>", "<m@c>"]
    many = [f"<r{i}@c>" for i in range(40)]
    _, trimmed = thread_headers("<m@c>", many)
    assert len(trimmed) == 20 and trimmed[0] == "<r0@c>" and trimmed[-1] == "<m@c>"
    assert thread_headers(None, []) == (None, [])


def test_queued_reply_headers_and_rows(
    settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    cfg = mail_settings(settings)
    inbound = parsed(
        subject="Re: AW: Printer broken",
        message_id="<m1@customer.example>",
        references=["<r1@customer.example>", "<r2@customer.example>"],
    )
    with session_factory.begin() as s:
        ticket = make_ticket(s, inbound, "TKT-20251215-001")
        queued = queue_auto_reply(work(s), cfg, ticket, inbound, template="ticket_created", now=NOW)
        ticket_id = ticket.id
    assert re.fullmatch(r"<TKT-20251215-001-[0-9a-f]{16}@mailticket\.test>", queued.message_id)

    with session_factory() as s:
        item = s.scalars(select(OutboxItem)).one()
        assert item.ticket_id == ticket_id and item.kind == "smtp" and item.status == "pending"
        assert item.idempotency_key == idempotency_key("<m1@customer.example>", "ticket_created")
        assert item.payload["rcpt_to"] == ["carla@customer.example"]
        assert item.payload["mail_from"] == "support@example.com"
        msg = _sent(item)
        out = s.scalars(select(EmailLog).where(EmailLog.direction == "out")).one()
        refs = s.scalars(select(ThreadRef).where(ThreadRef.ticket_id == ticket_id)).all()

    assert msg["Subject"] == "[TKT-20251215-001] Printer broken"
    assert msg["Message-ID"] == queued.message_id
    assert msg["In-Reply-To"] == "<m1@customer.example>"
    assert msg["References"].split() == [
        "<r1@customer.example>",
        "<r2@customer.example>",
        "<m1@customer.example>",
    ]
    assert msg["Auto-Submitted"] == "auto-replied"
    assert msg["X-Auto-Response-Suppress"] == "All"
    assert msg["Precedence"] == "auto_reply"
    assert msg["From"] == "Example Support <support@example.com>"
    assert msg["To"] == "Carla Customer <carla@customer.example>"
    assert msg["Date"] is not None
    assert msg.get_content_type() == "multipart/alternative"
    text = msg.get_body(("plain",))
    html = msg.get_body(("html",))
    assert text is not None and html is not None
    assert "TKT-20251215-001" in text.get_content()
    assert "Hello Carla Customer" in text.get_content()
    assert "<strong>TKT-20251215-001</strong>" in html.get_content()

    assert out.ticket_id == ticket_id
    assert out.email_message_id == queued.message_id
    assert out.email_from == "support@example.com"
    assert out.email_to == "carla@customer.example"
    assert out.action == "auto_reply" and out.is_reply
    assert out.thread_data is not None
    assert out.thread_data["message_id"] == queued.message_id
    assert out.thread_data["in_reply_to"] == "<m1@customer.example>"
    assert out.thread_data["references"].endswith("<m1@customer.example>")
    kinds = {r.message_id: r.kind for r in refs}
    assert kinds[queued.message_id] == "self"
    assert kinds["<r1@customer.example>"] == "ref"


def test_queue_is_once_per_message_and_template(
    settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    cfg = mail_settings(settings)
    inbound = parsed()
    with session_factory.begin() as s:
        ticket = make_ticket(s, inbound)
        first = queue_auto_reply(work(s), cfg, ticket, inbound, template="ticket_created", now=NOW)
    with session_factory.begin() as s:
        ticket = s.merge(ticket)
        again = queue_auto_reply(work(s), cfg, ticket, inbound, template="ticket_created", now=NOW)
        other = queue_auto_reply(work(s), cfg, ticket, inbound, template="reply_received", now=NOW)
    assert again.already_queued and again.message_id == first.message_id
    assert again.outbox_id == first.outbox_id
    assert not other.already_queued and other.outbox_id != first.outbox_id
    with session_factory() as s:
        assert len(s.scalars(select(OutboxItem)).all()) == 2
        assert len(s.scalars(select(EmailLog).where(EmailLog.direction == "out")).all()) == 2


def test_rollback_leaves_nothing_behind(
    settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    cfg = mail_settings(settings)
    inbound = parsed()
    with session_factory() as s:
        s.begin()
        ticket = make_ticket(s, inbound)
        queue_auto_reply(work(s), cfg, ticket, inbound, template="ticket_created", now=NOW)
        s.rollback()
    with session_factory() as s:
        assert s.scalars(select(OutboxItem)).all() == []
        assert s.scalars(select(EmailLog)).all() == []


def test_header_injection_is_impossible(
    settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    cfg = mail_settings(settings)
    inbound = parsed(
        subject="Hello\r\nBcc: victim@x",
        from_name="Eve\r\nBcc: victim@x",
        references=["<r@c.example>\r\nBcc: victim@x"],
        message_id="<m@c.example>",
    )
    with session_factory.begin() as s:
        ticket = make_ticket(s, inbound)
        # the ticket subject (shown in the body) carries the same payload
        queue_auto_reply(work(s), cfg, ticket, inbound, template="ticket_created", now=NOW)
    with session_factory() as s:
        item = s.scalars(select(OutboxItem)).one()
    raw = base64.b64decode(item.payload["message_b64"])
    header_block = raw.split(b"\r\n\r\n", 1)[0]
    assert not re.search(rb"(?im)^bcc:", header_block)
    msg = _sent(item)
    assert msg["Bcc"] is None
    assert "\n" not in msg["Subject"] and "\r" not in msg["Subject"]
    assert msg["Subject"] == f"[{ticket.ticket_number}] Hello Bcc: victim@x"
    assert item.payload["rcpt_to"] == ["carla@customer.example"]
    assert msg["References"] == "<m@c.example>"
    assert len(msg.get_all("To") or []) == 1


def test_templates_path_overrides_and_errors_are_clear(
    settings: Settings, tmp_path: Path, session_factory: sessionmaker[Session]
) -> None:
    (tmp_path / "ticket_created.txt").write_text(
        "Custom {{ ticket_number }} for {{ extra.team }}\n"
    )
    cfg = mail_settings(settings, templates_path=tmp_path)
    inbound = parsed()
    with session_factory.begin() as s:
        ticket = make_ticket(s, inbound)
        queue_auto_reply(
            work(s), cfg, ticket, inbound, template="ticket_created", now=NOW, extra={"team": "Ops"}
        )
        item = s.scalars(select(OutboxItem)).one()
    msg = _sent(item)
    assert msg.get_content_type() == "text/plain"
    assert msg.get_content().rstrip() == f"Custom {ticket.ticket_number} for Ops"

    templates = MailTemplates(tmp_path)
    with pytest.raises(TemplateRenderError, match="'dict object' has no attribute 'team'"):
        templates.render("ticket_created", {"ticket_number": "x", "extra": {}})
    with pytest.raises(TemplateRenderError, match="reply_received.txt not found"):
        templates.render("reply_received", {})
    with pytest.raises(TemplateRenderError, match="invalid template name"):
        templates.render("../etc/passwd", {})


def test_html_template_escapes_customer_text(tmp_path: Path) -> None:
    (tmp_path / "t.txt").write_text("{{ ticket_subject }}")
    (tmp_path / "t.html").write_text("<p>{{ ticket_subject }}</p>")
    out = MailTemplates(tmp_path).render("t", {"ticket_subject": "<script>x</script>"})
    assert out.text == "<script>x</script>"
    assert out.html == "<p>&lt;script&gt;x&lt;/script&gt;</p>"
