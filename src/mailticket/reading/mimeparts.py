"""Walk a parsed MIME tree once: body text, HTML, attachments, embedded messages, part types.

Attachments are numbered in walk order (uuencoded blocks at the position of the text part
that carries them), so the same bytes always give the same index.
"""

from __future__ import annotations

import binascii
import email
import mimetypes
import re
from dataclasses import dataclass, field
from email.message import Message
from email.parser import HeaderParser

from mailticket.reading.charsets import decode_bytes_noted, decode_header
from mailticket.reading.headerfields import embedded_message, header_index
from mailticket.reading.lifting import Lifted
from mailticket.types import AttachmentPart, EmbeddedMessage

# message/* types whose body is a whole mail we report as embedded; the other message/*
# types (delivery-status, disposition-notification, feedback-report) are report fields.
_MESSAGE_CONTAINERS = frozenset({"message/rfc822", "message/global"})
_HEADER_BLOCKS = frozenset({"text/rfc822-headers", "message/rfc822-headers"})
_BODY_TYPES = frozenset({"text/plain", "text/html"})
_UU_BLOCK = re.compile(
    rb"^begin[ \t]+[0-7]{3,4}[ \t]+([^\n]+)\n(.*?)^end[ \t]*$\n?", re.MULTILINE | re.DOTALL
)
_CLOSE_DELIMITER = re.compile(r"^--([^\s\"]{1,200})--[ \t]*$", re.MULTILINE)
_RAW_NAME = re.compile(r"""(?:file)?name\s*=\s*(?:"([^"]*)"|([^;\s]+))""", re.I)
_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]+)""", re.I)


@dataclass
class Walk:
    hint: str | None
    plain: list[str] = field(default_factory=list)
    html: list[str] = field(default_factory=list)
    inner_plain: list[str] = field(default_factory=list)
    inner_html: list[str] = field(default_factory=list)
    attachments: list[AttachmentPart] = field(default_factory=list)
    embedded: list[EmbeddedMessage] = field(default_factory=list)
    part_types: list[str] = field(default_factory=list)
    defects: list[str] = field(default_factory=list)
    # Bodies kept out of the parser (their tokens stand in the tree).
    lifted: Lifted | None = None

    def defect(self, note: str) -> None:
        if note not in self.defects:
            self.defects.append(note)


def repair_boundary(msg: Message) -> bool:
    """A multipart whose boundary parameter is missing or mangled, but whose body shows
    the delimiter lines, is re-split on them (once, only for such broken messages)."""
    body = msg.get_payload()
    if not msg.get_content_maintype() == "multipart" or not isinstance(body, str):
        return False
    closings = _CLOSE_DELIMITER.findall(body)
    if not closings:
        return False
    boundary = closings[-1]
    if f"--{boundary}\n" not in body:
        return False
    head = f'Content-Type: {msg.get_content_type()}; boundary="{boundary}"\n\n'
    inner = email.message_from_bytes(
        # Surrogates are the raw 8-bit bytes the parser kept; anything else is text it
        # already decoded, written back as UTF-8.
        head.encode("utf-8", "surrogateescape") + body.encode("utf-8", "surrogateescape")
    )
    parts = inner.get_payload()
    if not isinstance(parts, list) or not parts:
        return False
    msg.set_payload(parts)
    msg.preamble = inner.preamble
    msg.epilogue = inner.epilogue
    return True


def walk(msg: Message, hint: str | None, lifted: Lifted | None = None) -> Walk:
    out = Walk(hint=hint, lifted=lifted)
    _visit(msg, out, inside_message=False)
    return out


def _visit(part: Message, out: Walk, *, inside_message: bool) -> None:
    # A part's own header block can carry NUL (the top-level one is cleaned before parsing).
    ctype = part.get_content_type().replace("\x00", "")
    out.part_types.append(ctype)
    for defect in part.defects:
        out.defect(type(defect).__name__)
    payload = part.get_payload()
    if isinstance(payload, list):
        if ctype in _MESSAGE_CONTAINERS or not ctype.startswith("message/"):
            for child in payload:
                if not isinstance(child, Message):
                    continue
                if ctype in _MESSAGE_CONTAINERS:
                    out.embedded.append(embedded_message(header_index(child), out.hint))
                _visit(child, out, inside_message=inside_message or ctype in _MESSAGE_CONTAINERS)
        return
    if ctype in _HEADER_BLOCKS:
        data = _payload_bytes(part, out)
        text, _ = decode_bytes_noted(data, part.get_content_charset(), hint=out.hint)
        headers = HeaderParser().parsestr(text.lstrip("\n"), headersonly=True)
        out.embedded.append(embedded_message(header_index(headers), out.hint))
        return
    if ctype.startswith("message/"):
        return  # a report's machine-readable fields, not text or a file
    disposition = part.get_content_disposition()
    filename = _filename(part)
    broken_multipart = ctype.startswith("multipart/")  # no boundary found: body is text
    if (ctype in _BODY_TYPES or broken_multipart) and disposition != "attachment" and not filename:
        _body_part(part, ctype, out, inside_message=inside_message)
        return
    data = _payload_bytes(part, out)
    content_id = part.get("content-id")
    out.attachments.append(
        AttachmentPart(
            filename=filename,
            content_type=ctype,
            size=len(data),
            payload=data,
            index=len(out.attachments),
            content_id=str(content_id).strip() if content_id is not None else None,
            inline=disposition == "inline" or (disposition is None and content_id is not None),
        )
    )


def _filename(part: Message) -> str:
    try:
        name = part.get_filename()
    except (LookupError, ValueError, TypeError):
        name = None
    if name and "\ufffd" in name:
        # compat32 turns raw 8-bit parameter bytes into U+FFFD; the raw header still has them.
        name = _raw_filename(part) or name
    return decode_header(str(name)).replace("/", "_").replace("\\", "_") if name else ""


def _raw_filename(part: Message) -> str | None:
    for header, value in part.raw_items():
        if header.lower() in ("content-disposition", "content-type"):
            found = _RAW_NAME.search(str(value))
            if found:
                return found.group(1) or found.group(2)
    return None


def _payload_bytes(part: Message, out: Walk) -> bytes:
    data = part.get_payload(decode=True)
    if not isinstance(data, bytes):
        return b""
    if out.lifted is not None:
        return out.lifted.payload(data) or data
    return data


def _body_part(part: Message, ctype: str, out: Walk, *, inside_message: bool) -> None:
    data = _payload_bytes(part, out)
    if b"begin " in data:
        data = _take_uuencoded(data, out)
    charset = part.get_content_charset()
    if charset is None and ctype == "text/html":
        sniffed = _META_CHARSET.search(data[:4096])
        charset = sniffed.group(1).decode("ascii") if sniffed else None
    text, note = decode_bytes_noted(data, charset, hint=out.hint)
    if note:
        out.defect(note)
    text = text.replace("\x00", "").replace("\r\n", "\n")
    if ctype == "text/html":
        (out.inner_html if inside_message else out.html).append(text)
    else:
        (out.inner_plain if inside_message else out.plain).append(text)


def _take_uuencoded(data: bytes, out: Walk) -> bytes:
    """Cut `begin 644 name` … `end` blocks out of a text body; each becomes an attachment."""
    kept: list[bytes] = []
    pos = 0
    for block in _UU_BLOCK.finditer(data):
        kept.append(data[pos : block.start()])
        pos = block.end()
        name = decode_header(block.group(1).strip().decode("utf-8", "surrogateescape"))
        payload = _uudecode(block.group(2))
        guessed = mimetypes.guess_type(name)[0] or "application/octet-stream"
        out.attachments.append(
            AttachmentPart(
                filename=name,
                content_type=guessed,
                size=len(payload),
                payload=payload,
                index=len(out.attachments),
            )
        )
    kept.append(data[pos:])
    return b"".join(kept)


def _uudecode(body: bytes) -> bytes:
    chunks: list[bytes] = []
    for line in body.split(b"\n"):
        if not line.strip():
            continue
        try:
            chunks.append(binascii.a2b_uu(line))
        except binascii.Error:
            # Some encoders pad lines with junk; the length byte says how much is data.
            size = (((line[0] - 32) & 63) * 4 + 5) // 3
            try:
                chunks.append(binascii.a2b_uu(line[:size]))
            except binascii.Error:
                continue
    return b"".join(chunks)
