"""Mail with attachments for backend tests."""

from __future__ import annotations

import itertools
from email.message import EmailMessage

_seq = itertools.count(1)


def mail(
    *, subject: str = "Printer on fire", body: str = "It is on fire.",
    sender: str = "Carol Customer <carol@example.com>", reply_to: str | None = None,
    attachment: tuple[str, str, bytes] | None = None,
) -> tuple[bytes, str]:
    """(raw bytes, Message-ID)"""
    n = next(_seq)
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = "support@example.com"
    msg["Subject"] = subject
    msg["Date"] = "Mon, 15 Dec 2025 09:00:00 +0000"
    mid = f"<bk{n}.{id(msg)}@client.example>"
    msg["Message-ID"] = mid
    if reply_to:
        msg["In-Reply-To"] = reply_to
        msg["References"] = reply_to
    msg.set_content(body)
    if attachment is not None:
        name, ctype, data = attachment
        main, sub = ctype.split("/")
        msg.add_attachment(data, maintype=main, subtype=sub, filename=name)
    return msg.as_bytes(), mid
