"""Oversized header values from the outside never cost a message on PostgreSQL.

SQLite ignores VARCHAR lengths, PostgreSQL enforces them: a 900-character From address
must be stored (cut to the column) on both, never quarantined on one only."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import select

from mailticket.runtime import Runtime
from mailticket.store.models import Attachment, EmailLog, Ticket

LONG = "a" * 450


def test_overlong_values_are_clipped_not_quarantined(make_runtime: Callable[..., Runtime]) -> None:
    rt = make_runtime(email_unmatched_action="create_ticket")
    messages = [
        f"From: {LONG}@{LONG}.example\nSubject: long sender\nMessage-ID: <l1@x>\n\nbody\n",
        (
            "From: a@b.example\nSubject: long type\nMessage-ID: <l2@x>\nMIME-Version: 1.0\n"
            "Content-Type: multipart/mixed; boundary=B\n\n--B\nContent-Type: text/plain\n\nhi\n"
            f"--B\nContent-Type: application/{LONG}\nContent-Disposition: attachment;"
            f' filename="{LONG}.pdf"\n\nxx\n--B--\n'
        ),
        f"From: a@b.example\nSubject: {LONG * 200}\nMessage-ID: <{LONG * 20}@x>\n\nbody\n",
    ]
    outcomes = [rt.pipeline.process(m.encode(), "test") for m in messages]
    assert [o.action for o in outcomes] == ["created"] * 3, [o.error for o in outcomes]
    with rt.session_factory() as s:
        first = s.scalars(select(EmailLog).where(EmailLog.email_message_id == "<l1@x>")).one()
        assert len(first.email_from) == 320 and first.email_from.startswith("aaa")
        ticket = s.get_one(Ticket, outcomes[0].ticket_id)
        assert ticket.requester_email is not None and len(ticket.requester_email) == 320
        [att] = s.scalars(select(Attachment)).all()
        assert len(att.content_type) == 255 and att.filename.endswith(".pdf")
