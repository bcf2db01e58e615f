"""Build small RFC 5322 messages for tests."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime

# Message-IDs: unique in the whole process (tests may share a database).
_ids = itertools.count(1)
# Dates: a minute apart in the order a test makes its messages, from 09:01 on, counted per
# test (`reset_dates`, before each test). Counted per process, a message's Date depended on
# how many messages the tests run before it had made, and after ~60 it sorted after a test
# clock of 10:00 instead of before: tests passed or failed by what ran before them.
_dates = itertools.count(1)
_base = datetime(2025, 12, 15, 9, 0, tzinfo=UTC)


def reset_dates() -> None:
    global _dates
    _dates = itertools.count(1)


def make_email(
    *,
    subject: str = "Help please",
    sender: str = "customer@example.com",
    to: str = "support@example.com",
    body: str = "Something is broken.",
    message_id: str | None = None,
    in_reply_to: str | None = None,
    references: str | None = None,
    headers: dict[str, str] | None = None,
    attachments: list[tuple[bytes, str, str]] | None = None,
) -> bytes:
    """attachments: (payload, "maintype/subtype", filename) each."""
    n = next(_ids)
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = format_datetime(_base + timedelta(minutes=next(_dates)))
    if message_id is not False:
        msg["Message-ID"] = message_id or f"<msg{n}.{id(msg)}@client.example>"
    if in_reply_to:
        msg["In-Reply-To"] = in_reply_to
    if references:
        msg["References"] = references
    for name, value in (headers or {}).items():
        msg[name] = value
    msg.set_content(body)
    for payload, content_type, filename in attachments or ():
        maintype, _, subtype = content_type.partition("/")
        msg.add_attachment(payload, maintype=maintype, subtype=subtype, filename=filename)
    return msg.as_bytes()
