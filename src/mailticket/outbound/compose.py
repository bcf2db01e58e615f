"""Building one outgoing RFC 5322 message: subject, Message-ID, threading and RFC 3834 headers.

Every value copied from a customer's mail goes through `clean_header` first (CR, LF and other
controls become spaces), so a crafted subject can never add a header (e.g. a Bcc) to what we
send.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from email.utils import encode_rfc2231, format_datetime, formataddr

from mailticket.reading.replyprefixes import REPLY_PREFIX
from mailticket.reading.ticketnumbers import canonical_ticket_number

# Leading reply/forward markers ("Re:", "AW:", "SV:", "回复:", "Re[2]:") the customer's mailer
# added; they are noise in front of our ticket tag.
_REPLY_PREFIX = re.compile(rf"^\s*{REPLY_PREFIX}\s*", re.IGNORECASE)
_TICKET_TAG = re.compile(r"\[\s*(TKT-\d{8}-\d{3,})\s*\]", re.IGNORECASE)
_LEADING_TICKET_TAG = re.compile(r"^\s*\[\s*TKT-\d{8}-\d{3,}\s*\]\s*", re.IGNORECASE)
# A tag a mail gateway put in front of a reply marker or of our ticket tag ("[EXTERNAL] RE: …",
# "RE: [EXT] [TKT-…] …"): the gateway's, not the customer's words. A tag the customer wrote
# before their own subject ("[Urgent] Printer") stays.
_GATEWAY_TAG = re.compile(
    rf"^\s*\[[^\[\]]{{1,40}}\]\s*(?=(?:{REPLY_PREFIX})|\[\s*TKT-\d{{8}}-\d{{3,}}\s*\])",
    re.IGNORECASE,
)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
_MSGID = re.compile(r"^<[^<>\s@]+@[^<>\s@]+>$")
# References beyond this are trimmed (keeping the first, the thread root) as RFC 5322 §3.6.4
# allows; some servers reject very long headers.
MAX_REFERENCES = 20
MAX_SUBJECT_CHARS = 900
# A header line may not pass 998 characters (RFC 5322 §2.1.1) and an id cannot be folded:
# a longer one (real mail has them) would make the relay refuse our whole answer ("500 Line
# too long"), so it is left out of In-Reply-To/References; our own Message-ID still threads.
MAX_MESSAGE_ID_CHARS = 900
# A display-name word longer than this cannot be folded within the line limit either; such a
# name goes out as encoded words, which split anywhere (RFC 2047 allows them for ASCII too).
_MAX_NAME_WORD = 200



def clean_header(value: str) -> str:
    """One line of printable text: CR, LF and other control characters become spaces."""
    return " ".join(_CONTROL.sub(" ", value).split())


def strip_subject_noise(subject: str) -> str:
    """Drop leading reply markers, a gateway's tag in front of them and every "[TKT-…]" tag,
    so we can put exactly one back."""
    text = clean_header(subject)
    while True:
        stripped = _GATEWAY_TAG.sub("", text, count=1)
        stripped = _REPLY_PREFIX.sub("", stripped, count=1)
        stripped = _LEADING_TICKET_TAG.sub("", stripped, count=1)
        if stripped == text:
            return " ".join(_TICKET_TAG.sub(" ", text).split())
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
        if len(mid) <= MAX_MESSAGE_ID_CHARS and _MSGID.match(mid) and mid not in seen:
            seen.add(mid)
            out.append(mid)
    return out


def thread_headers(
    inbound_id: str | None,
    inbound_references: Iterable[str],
    inbound_in_reply_to: Sequence[str] = (),
) -> tuple[str | None, list[str]]:
    """In-Reply-To and References for answering a message (RFC 5322 §3.6.4): its References,
    or, when it has none, its In-Reply-To naming one message (Outlook for Windows writes only
    In-Reply-To), then its own id."""
    parent = valid_message_ids([inbound_id] if inbound_id else [])
    earlier = list(inbound_references)
    if not earlier and len(inbound_in_reply_to) == 1:
        earlier = list(inbound_in_reply_to)
    refs = valid_message_ids([*earlier, *parent])
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
    thread_index: str | None = None


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
    cc: Sequence[tuple[str, str]] = (),
    reply_to: str | None = None,
    automatic: bool = True,
    attachments: Sequence[MailFile] = (),
    thread_index: str | None = None,
) -> Composed:
    """`automatic`: an auto-reply (RFC 3834 headers); False for a person's answer. `cc`:
    (name, address) pairs. `attachments` make the message multipart/mixed. `thread_index`:
    Outlook's conversation index (`threading.threadindex.answer_index`)."""
    # Written out directly: the stdlib's generator re-folds every header through
    # email.header and cost more than the rest of an auto-reply together. This is safe
    # because every value below is one clean line (clean_header), our own, or encoded here.
    clean_subject = clean_header(subject)
    headers = [
        ("From", _address(from_name, from_address)),
        ("To", _address(to_name, to_address)),
    ]
    if cc:
        headers.append(("Cc", ", ".join(_address(name, address) for name, address in cc)))
    if reply_to:
        headers.append(("Reply-To", _address("", reply_to)))
    headers += [
        ("Subject", _encoded(clean_subject)),
        ("Date", format_datetime(date)),
        ("Message-ID", message_id),
    ]
    if in_reply_to:
        headers.append(("In-Reply-To", in_reply_to))
    if references:
        headers.append(("References", " ".join(references)))
    if thread_index:
        headers.append(("Thread-Index", clean_header(thread_index)))
    if automatic:
        # RFC 3834: marks this as an automatic response so other responders stay quiet;
        # the Microsoft header does the same for Exchange/Outlook out-of-office rules.
        # A person's answer carries none of them: it is mail like any other.
        headers += [
            ("Auto-Submitted", "auto-replied"),
            ("X-Auto-Response-Suppress", "All"),
            ("Precedence", "auto_reply"),
        ]
    headers.append(("MIME-Version", "1.0"))
    lines = [_fold(name, value) for name, value in headers]
    part_lines, body = _text_part(text_body, html_body)
    if attachments:
        boundary = _boundary()
        body = (
            _delimiter(boundary) + _head(part_lines) + body
            + b"".join(_delimiter(boundary) + _file_part(f) for f in attachments)
            + b"--" + boundary.encode() + b"--\r\n"
        )
        part_lines = [f'Content-Type: multipart/mixed;\r\n boundary="{boundary}"']
    raw = ("\r\n".join([*lines, *part_lines]) + "\r\n\r\n").encode("ascii") + body
    return Composed(message_id, clean_subject, in_reply_to, references, raw, thread_index)


@dataclass(frozen=True)
class MailFile:
    """An attachment to send: its name as the sender gave it, a MIME type, the bytes."""

    filename: str
    content_type: str
    data: bytes


_MIME_TYPE = re.compile(r"^[a-z0-9][a-z0-9!#$&^_.+-]{0,63}/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}$")


def safe_content_type(value: str) -> str:
    """A plain `type/subtype` (parameters dropped), else application/octet-stream."""
    bare = value.split(";", 1)[0].strip().lower()
    return bare if _MIME_TYPE.match(bare) and not bare.startswith("multipart/") \
        else "application/octet-stream"


def _boundary() -> str:
    # "=_" never occurs in quoted-printable nor base64 output, so no body line can match it.
    return f"=_mailticket_{secrets.token_hex(12)}"


def _delimiter(boundary: str) -> bytes:
    return b"--" + boundary.encode() + b"\r\n"


def _head(lines: list[str]) -> bytes:
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")


def _text_part(text_body: str, html_body: str | None) -> tuple[list[str], bytes]:
    """The readable part: text/plain, or multipart/alternative with the HTML version."""
    if html_body is None:
        return list(_TEXT_HEADERS["plain"]), _qp(text_body)
    boundary = _boundary()
    body = b"".join(
        _delimiter(boundary) + _head(_TEXT_HEADERS[subtype]) + _qp(content)
        for subtype, content in (("plain", text_body), ("html", html_body))
    ) + b"--" + boundary.encode() + b"--\r\n"
    return [f'Content-Type: multipart/alternative;\r\n boundary="{boundary}"'], body


def _file_part(item: MailFile) -> bytes:
    name = clean_header(item.filename)[:200].replace("\\", "_").replace('"', "_") or "attachment"
    if name.isascii():
        param = f'filename="{name}"'
    else:
        param = "filename*=" + encode_rfc2231(name, "utf-8")
    lines = [
        f"Content-Type: {safe_content_type(item.content_type)}",
        "Content-Transfer-Encoding: base64",
        _fold("Content-Disposition", f"attachment; {param}"),
    ]
    encoded = base64.encodebytes(item.data).replace(b"\n", b"\r\n")
    return _head(lines) + encoded


_TEXT_HEADERS = {
    subtype: [f'Content-Type: text/{subtype}; charset="utf-8"',
              "Content-Transfer-Encoding: quoted-printable"]
    for subtype in ("plain", "html")
}
_FOLD_AT = 78


def _fold(name: str, value: str) -> str:
    """One header, folded at spaces so lines stay within 78 characters where a space allows
    (RFC 5322 §2.1.1); a longer word stays whole (our values never reach the 998 limit)."""
    line = f"{name}:"
    folded: list[str] = []
    for word in value.split(" "):
        if len(line) + 1 + len(word) > _FOLD_AT and line != f"{name}:" and line != "":
            folded.append(line)
            line = ""
        line += " " + word
    folded.append(line)
    return "\r\n".join(folded)


def _qp(text: str) -> bytes:
    """UTF-8 quoted-printable with CRLF line ends: stays readable in raw form."""
    data = text.replace("\r\n", "\n").replace("\r", "\n").encode("utf-8")
    encoded = binascii.b2a_qp(data, istext=True)
    if not encoded.endswith(b"\n"):
        encoded += b"\n"
    return encoded.replace(b"\n", b"\r\n")


def _address(name: str, address: str) -> str:
    name, address = clean_header(name), clean_header(address)
    if not address.isascii():
        return formataddr((name, address), "utf-8")
    if not name:
        return address
    if name.isascii() and max(len(word) for word in name.split(" ")) <= _MAX_NAME_WORD:
        return formataddr((name, address))
    return " ".join([*_encoded_words(name), f"<{address}>"])


def _encoded(value: str) -> str:
    """RFC 2047 for the words that need it: ASCII words stay readable (a "[TKT-…]" tag
    included); each run of other words becomes encoded words of at most 75 characters. A word
    with "=?" in it is encoded too: sent as it is, a client would decode it as an encoded
    word of its own and show the customer other text than their subject."""
    if value.isascii() and "=?" not in value:
        return value
    out: list[str] = []
    run: list[str] = []
    for word in value.split(" "):
        if word.isascii() and "=?" not in word:
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
