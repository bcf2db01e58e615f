"""Stage 1: raw message bytes → `ParsedEmail`.

mail-parser builds the MIME tree (and its header diagnostics); when it raises — it does on
a few real messages — the stdlib parser builds the same tree instead. Everything read from
the tree (charsets, RFC 2047, ids, attachments) goes through our own helpers, so both
paths give identical values.
"""

from __future__ import annotations

import email
import logging
import re
from email.message import Message

import mailparser

from mailticket.reading.charsets import decode_header
from mailticket.reading.headerfields import (
    addresses,
    decoded_headers,
    first_message_id,
    header_index,
    id_list,
    parse_date,
    return_path,
)
from mailticket.reading.htmltext import html_to_text
from mailticket.reading.lifting import Lifted, lift
from mailticket.reading.mimeparts import repair_boundary, walk
from mailticket.reading.msgids import (
    canonical_bytes,
    normalize_message_id,
    parse_id_list,
    synthetic_message_id,
)
from mailticket.reading.sniff import not_mail
from mailticket.types import AttachmentPart, ParsedEmail

__all__ = [
    "ParseError",
    "extract_attachment",
    "normalize_message_id",
    "parse_email",
    "parse_id_list",
    "synthetic_message_id",
]

# mail-parser logs a WARNING for every part it does not turn into text (images, signatures,
# DSN fields): several lines per ordinary message, all noise since we read those parts
# ourselves. Raising only this third-party logger's threshold keeps real errors visible and
# touches no other logging configuration.
logging.getLogger("mailparser").setLevel(logging.ERROR)

# mail-parser's header diagnostics we keep as defects (its MIME defects we read ourselves).
_MAILPARSER_DEFECT_KEYS = ("address-headers", "date-headers", "mime-headers")
_MAX_DEFECT_LEN = 160


class ParseError(Exception):
    """The bytes are not an email message at all."""


def _build_tree(data: bytes) -> tuple[Message, list[str]]:
    """The MIME tree, plus mail-parser's diagnostics when the message has defects.

    mail-parser builds the very same stdlib (compat32) tree and then post-processes every
    part, which costs more than the rest of the pipeline together; a clean message needs
    none of it, so it only runs to explain a damaged one.
    """
    try:
        message = email.message_from_bytes(data)
    except RecursionError as exc:
        raise ParseError("MIME nesting too deep to parse") from exc
    if not any(part.defects for part in message.walk()):
        return message, []
    try:
        parsed = mailparser.parse_from_bytes(data)
    except RecursionError as exc:
        raise ParseError("MIME nesting too deep to parse") from exc
    except Exception as exc:  # noqa: BLE001 - a mail-parser bug only costs us its diagnostics
        return message, [f"mail-parser failed: {type(exc).__name__}"]
    notes: list[str] = []
    for entry in parsed.defects:
        for key in _MAILPARSER_DEFECT_KEYS:
            notes.extend(str(item)[:_MAX_DEFECT_LEN] for item in entry.get(key, ()))
    return (parsed.message if parsed.message is not None else message), notes


def _charset_hint(msg: Message) -> str | None:
    """The body's declared charset: the best guess for raw 8-bit bytes in headers."""
    for part in msg.walk():
        charset = part.get_content_charset()
        if charset and charset not in ("us-ascii", "ascii"):
            return charset
    return None


def _report_type(msg: Message) -> str | None:
    if msg.get_content_type() != "multipart/report":
        return None
    value = msg.get_param("report-type")
    if isinstance(value, tuple):  # RFC 2231 form
        value = value[2]
    return str(value).strip().lower() if value else None


_SPACE_BEFORE_COLON = re.compile(rb"^([!-9;-~]+)[ \t]+:", re.MULTILINE)

# A header line as the stdlib parser takes one (a field name and a colon); any other line
# that does not start with white space ends the header block there.
_FIELD_LINE = re.compile(rb"[!-9;-~]*:")
# The start of a line after the first that is neither a field nor a continuation.
_STRAY_LINE = re.compile(rb"\n(?![ \t\n])(?![!-9;-~]*:)")
# Fields every real header block has: seeing one after a stray line shows the line was a
# continuation that lost its indent, not the first line of a body that lost its blank line.
_WELL_KNOWN_FIELD = re.compile(
    rb"(?:from|to|cc|subject|date|message-id|in-reply-to|references|reply-to|sender"
    rb"|mime-version|content-[a-z-]+|received|return-path|dkim-signature|arc-[a-z-]+"
    rb"|authentication-results|list-[a-z-]+|x-[!-9;-~]+)[ \t]*:",
    re.IGNORECASE,
)


def _mend_lost_indents(head: bytes) -> bytes:
    """Indent the stray lines of a header block that go on with known fields after them.

    Some MTAs and gateways (Exchange Online's x-microsoft-* diagnostics, seen in real mail)
    wrap a long field without indenting the rest. The stdlib parser then ends the header block
    at the stray line: From, Subject, Message-ID and Content-Type after it become body text,
    the customer's text drowns in raw headers and MIME, and tags come from its markup. A
    stray line followed by nothing that is surely a field is left alone: that is a body
    whose separating blank line is missing, and it stays the body. So is everything from a
    line starting with "--": a MIME delimiter right under the header block is the body's
    start, and the part headers under it are not the message's.
    """
    lines = head.split(b"\n")
    end = next((i for i, line in enumerate(lines) if line.startswith(b"--")), len(lines))
    for i in range(1, end):
        line = lines[i]
        if not line or line[:1] in (b" ", b"\t") or line.startswith(b"From "):
            continue  # "From " mid-block: the stdlib's misplaced envelope line, kept as it is
        if _FIELD_LINE.match(line):
            continue
        if not any(_WELL_KNOWN_FIELD.match(later) for later in lines[i + 1 : end]):
            break
        lines[i] = b" " + line
    return b"\n".join(lines)


def _canonical(raw: bytes) -> bytes:
    data = canonical_bytes(raw)
    if not data.strip(b"\x00 \t\n"):
        raise ParseError("empty message")
    refused = not_mail(data)
    if refused is not None:
        raise ParseError(f"not an email message: {refused}")
    cut = data.find(b"\n\n")
    head = data if cut < 0 else data[:cut]  # the body is not copied
    fixed = head.replace(b"\x00", b"")  # NUL is never header text (and PostgreSQL refuses it)
    if _SPACE_BEFORE_COLON.search(fixed):
        # RFC 822's obsolete syntax allows "From  : x"; the stdlib would read a first line
        # like that as an mbox separator and other such lines as body text.
        fixed = _SPACE_BEFORE_COLON.sub(rb"\1:", fixed)
    if cut >= 0 and _STRAY_LINE.search(fixed):
        fixed = _mend_lost_indents(fixed)
    if fixed == head:
        return data
    return fixed if cut < 0 else fixed + data[cut:]


def _prepare(raw: bytes) -> tuple[bytes, Lifted | None]:
    """The bytes the parser reads (big base64 bodies lifted out, see `lifting`)."""
    if not isinstance(raw, bytes | bytearray | memoryview):
        raise ParseError(f"expected bytes, got {type(raw).__name__}")
    small, lifted = lift(bytes(raw))
    return _canonical(small), lifted


def parse_email(raw: bytes, *, domain: str = "mailticket.local") -> ParsedEmail:
    """Parse one message. Raises ParseError only when the bytes are not a message at all."""
    data, lifted = _prepare(raw)
    msg, defects = _build_tree(data)
    if repair_boundary(msg):
        defects.append("boundary recovered from the body's delimiter lines")
    index = header_index(msg)
    # Only raw 8-bit header bytes need the guess; finding it costs a walk over every part.
    eight_bit = any(not v.isascii() for values in index.values() for v in values)
    hint = _charset_hint(msg) if eight_bit else None
    body = walk(msg, hint, lifted)

    message_id = first_message_id(index.get("message-id"))
    synthetic = message_id is None
    if message_id is None:
        # Named after the whole message, as the parser would have seen it without lifting.
        message_id = synthetic_message_id(data if lifted is None else _canonical(raw), domain)
        defects.append("Message-ID: missing or unusable")
    when, date_note = parse_date(index.get("date"))
    if date_note:
        defects.append(date_note)
    for note in body.defects:
        if note not in defects:
            defects.append(note)

    plain = body.plain or body.inner_plain
    html_parts = body.html or body.inner_html
    html = "\n".join(html_parts) if any(h.strip() for h in html_parts) else None
    chunks = [p.strip("\n") for p in plain if p.strip()]
    text = "\n\n".join(chunks) if chunks else html_to_text(html) if html else ""
    senders = addresses(index.get("from"), hint)
    subject = index.get("subject")
    return ParsedEmail(
        message_id=message_id,
        message_id_synthetic=synthetic,
        in_reply_to=id_list(index.get("in-reply-to")),
        references=id_list(index.get("references"), bare=True),
        subject=decode_header(subject[0], hint) if subject else "",
        from_address=senders[0][1] if senders else "",
        from_name=senders[0][0] if senders else "",
        to=[a for _, a in addresses(index.get("to"), hint)],
        cc=[a for _, a in addresses(index.get("cc"), hint)],
        reply_to=[a for _, a in addresses(index.get("reply-to"), hint)],
        date=when,
        headers=decoded_headers(index, hint),
        text=text,
        html=html,
        attachments=body.attachments,
        content_type=msg.get_content_type(),
        report_type=_report_type(msg),
        part_types=body.part_types,
        return_path=return_path(index.get("return-path")),
        embedded=body.embedded,
        defects=defects,
        raw_size=len(raw),
    )


def extract_attachment(raw: bytes, index: int) -> AttachmentPart:
    """The `index`-th attachment as parse_email numbers it (same tree, same walk)."""
    data, lifted = _prepare(raw)
    try:
        msg = email.message_from_bytes(data)
    except RecursionError as exc:
        raise ParseError("MIME nesting too deep to parse") from exc
    repair_boundary(msg)
    found = walk(msg, _charset_hint(msg), lifted).attachments
    if not 0 <= index < len(found):
        raise LookupError(f"attachment {index} not found: the message has {len(found)}")
    return found[index]
