"""Building one outgoing RFC 5322 message: subject, Message-ID, threading and RFC 3834 headers.

Every value copied from a customer's mail goes through `clean_header` first (CR, LF and other
controls become spaces), so a crafted subject can never add a header (e.g. a Bcc) to what we
send.
"""

from __future__ import annotations

import base64
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from email import charset, policy
from email.message import Message
from email.mime.multipart import MIMEMultipart
from email.mime.nonmultipart import MIMENonMultipart
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

_UTF8_QP = charset.Charset("utf-8")
_UTF8_QP.body_encoding = charset.QP
_WIRE = policy.compat32.clone(linesep="\r\n")


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
    # compat32 classes rather than EmailMessage: the modern policy re-parses every header
    # it is given and cost more than the rest of an auto-reply together. Safety does not
    # depend on it: every value below is one clean line (clean_header) or our own.
    text_part = _text_part(text_body, "plain")
    msg: Message
    if html_body is None:
        msg = text_part
    else:
        html_part = _text_part(html_body, "html")
        msg = MIMEMultipart("alternative")
        for part in (text_part, html_part):
            del part["MIME-Version"]  # belongs on the message only
            msg.attach(part)
    clean_subject = clean_header(subject)
    headers = [
        ("From", formataddr((clean_header(from_name), clean_header(from_address)), "utf-8")),
        ("To", formataddr((clean_header(to_name), clean_header(to_address)), "utf-8")),
        ("Subject", _encoded(clean_subject)),
        ("Date", format_datetime(date)),
        ("Message-ID", message_id),
    ]
    if in_reply_to:
        headers.append(("In-Reply-To", in_reply_to))
    if references:
        headers.append(("References", " ".join(references)))
    # RFC 3834: marks this as an automatic response so other responders stay quiet;
    # the Microsoft header does the same for Exchange/Outlook out-of-office rules.
    headers += [
        ("Auto-Submitted", "auto-replied"),
        ("X-Auto-Response-Suppress", "All"),
        ("Precedence", "auto_reply"),
    ]
    # Our headers first, in this order, then the MIME ones the classes set.
    mime = list(msg.items())
    for name in {name for name, _ in mime}:
        del msg[name]
    for name, value in [*headers, *mime]:
        msg[name] = value
    raw = msg.as_bytes(policy=_WIRE)
    return Composed(message_id, clean_subject, in_reply_to, references, raw)


def _text_part(body: str, subtype: str) -> Message:
    part = MIMENonMultipart("text", subtype)
    part.set_payload(body, _UTF8_QP)  # quoted-printable: stays readable in raw form
    return part


def _encoded(value: str) -> str:
    """RFC 2047 for the words that need it: ASCII words stay readable (a "[TKT-…]" tag
    included); each run of non-ASCII words becomes encoded words of at most 75 characters."""
    if value.isascii():
        return value
    out: list[str] = []
    run: list[str] = []
    for word in value.split(" "):
        if word.isascii():
            if run:
                out.extend(_encoded_words(" ".join(run)))
                run = []
            out.append(word)
        else:
            run.append(word)
    if run:
        out.extend(_encoded_words(" ".join(run)))
    return " ".join(out)


def _encoded_words(text: str) -> list[str]:
    # 75 characters per word minus "=?utf-8?b?" and "?=": 63 base64 chars, 45 bytes. Cut on
    # character boundaries so every word decodes on its own.
    words: list[str] = []
    chunk = ""
    for ch in text:
        if len((chunk + ch).encode()) > 45:
            words.append(_b_word(chunk))
            chunk = ""
        chunk += ch
    if chunk:
        words.append(_b_word(chunk))
    return words


def _b_word(text: str) -> str:
    return "=?utf-8?b?" + base64.b64encode(text.encode()).decode("ascii") + "?="
