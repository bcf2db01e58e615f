"""Building one outgoing RFC 5322 message: subject, Message-ID, threading and RFC 3834 headers.

Every value copied from a customer's mail goes through `clean_header` first, and the message is
built with `policy=SMTP`, which itself refuses CR/LF inside a header value: a crafted subject
can never add a header (e.g. a Bcc) to what we send.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from email import policy
from email.message import EmailMessage
from email.utils import format_datetime, formataddr

from mailticket.numbering import canonical_ticket_number

# Leading reply/forward markers ("Re:", "AW:", "SV:", "Fwd:", "Re[2]:") the customer's mailer
# added; they are noise in front of our ticket tag.
_REPLY_PREFIX = re.compile(
    r"^\s*(?:re|aw|sv|vs|antw|antwort|ref|rif|res|odp|tr|wg|fw|fwd|vb|rv|enc|ynt)"
    r"\s*(?:\[\d+\]|\(\d+\))?\s*[:：]\s*",
    re.IGNORECASE,
)
_TICKET_TAG = re.compile(r"\[\s*(TKT-\d{8}-\d{3,})\s*\]", re.IGNORECASE)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
_MSGID = re.compile(r"^<[^<>\s@]+@[^<>\s@]+>$")
# References beyond this are trimmed (keeping the first, the thread root) as RFC 5322 §3.6.4
# allows; some servers reject very long headers.
MAX_REFERENCES = 20
MAX_SUBJECT_CHARS = 900


def clean_header(value: str) -> str:
    """One line of printable text: CR, LF and other control characters become spaces."""
    return " ".join(_CONTROL.sub(" ", value).split())


def strip_subject_noise(subject: str) -> str:
    """Drop leading reply markers and every "[TKT-…]" tag, so we can put exactly one back."""
    text = clean_header(subject)
    while True:
        stripped = _REPLY_PREFIX.sub("", text, count=1)
        stripped = _TICKET_TAG.sub("", stripped).strip()
        if stripped == text:
            return text
        text = stripped


def reply_subject(ticket_number: str, original: str) -> str:
    number = canonical_ticket_number(ticket_number) or ticket_number
    rest = strip_subject_noise(original)[:MAX_SUBJECT_CHARS]
    return f"[{number}] {rest}" if rest else f"[{number}]"


def new_message_id(ticket_number: str, domain: str) -> str:
    """`<TKT-YYYYMMDD-NNN-<random>@domain>`: a reply to it names the ticket in its headers."""
    return f"<{ticket_number}-{secrets.token_hex(8)}@{clean_header(domain)}>"


def valid_message_ids(ids: Iterable[str]) -> list[str]:
    """Well-formed ids only, each once, in order: nothing odd is copied into our headers."""
    seen: set[str] = set()
    out: list[str] = []
    for raw in ids:
        mid = clean_header(raw)
        if _MSGID.match(mid) and mid not in seen:
            seen.add(mid)
            out.append(mid)
    return out


def thread_headers(
    inbound_id: str | None, inbound_references: Iterable[str]
) -> tuple[str | None, list[str]]:
    """In-Reply-To and References for answering a message (RFC 5322 §3.6.4)."""
    parent = valid_message_ids([inbound_id] if inbound_id else [])
    refs = valid_message_ids([*inbound_references, *parent])
    if len(refs) > MAX_REFERENCES:
        refs = [refs[0], *refs[-(MAX_REFERENCES - 1) :]]
    return (parent[0] if parent else None), refs


@dataclass(frozen=True)
class Composed:
    message_id: str
    subject: str
    in_reply_to: str | None
    references: list[str]
    raw: bytes


def compose(
    *,
    from_address: str,
    from_name: str,
    to_address: str,
    to_name: str,
    subject: str,
    message_id: str,
    in_reply_to: str | None,
    references: list[str],
    text_body: str,
    html_body: str | None,
    date: datetime,
) -> Composed:
    msg = EmailMessage(policy=policy.SMTP)
    msg["From"] = formataddr((clean_header(from_name), clean_header(from_address)))
    msg["To"] = formataddr((clean_header(to_name), clean_header(to_address)))
    msg["Subject"] = clean_header(subject)
    msg["Date"] = format_datetime(date)
    msg["Message-ID"] = message_id
    if in_reply_to:
        msg["In-Reply-To"] = in_reply_to
    if references:
        msg["References"] = " ".join(references)
    # RFC 3834: marks this as an automatic response so other responders stay quiet;
    # the Microsoft header does the same for Exchange/Outlook out-of-office rules.
    msg["Auto-Submitted"] = "auto-replied"
    msg["X-Auto-Response-Suppress"] = "All"
    msg["Precedence"] = "auto_reply"
    msg.set_content(text_body)
    if html_body is not None:
        msg.add_alternative(html_body, subtype="html")
    return Composed(message_id, str(msg["Subject"]), in_reply_to, references, msg.as_bytes())
