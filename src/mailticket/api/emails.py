"""/api/v1/emails: the original message bytes and its attachments."""

from __future__ import annotations

import re
import unicodedata
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Path
from fastapi.responses import Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from mailticket.api.auth import ScopedReader, SessionDep
from mailticket.api.customer_access import customer_copy
from mailticket.api.errors import Problem
from mailticket.api.schemas import AttachmentList, AttachmentOut
from mailticket.customers.scope import email_visible, visible_ticket_ids
from mailticket.reading.parsing import ParseError, extract_attachment
from mailticket.store.models import Attachment, EmailLog, RawMessage

router = APIRouter(prefix="/api/v1/emails", tags=["emails"])

EmailId = Annotated[int, Path(ge=1, le=2_147_483_647)]
AttachmentId = Annotated[int, Path(ge=1, le=2_147_483_647)]
# Stored mail is served as a download and never sniffed or rendered: an HTML part or an
# attached HTML file must not run in our origin. Every byte-serving route uses these.
DOWNLOAD_HEADERS = {"X-Content-Type-Options": "nosniff", "Content-Security-Policy": "sandbox"}
# Unicode categories no saved file name keeps: controls, format characters, line and
# paragraph separators.
_NOT_IN_NAMES = frozenset({"Cc", "Cf", "Zl", "Zp"})


def _visible(session: Session, email_id: int, scope: int | None) -> EmailLog:
    """The log row, or 404; another customer's mail is the same 404 as none at all."""
    entry = session.get(EmailLog, email_id)
    if entry is None or (scope is not None and not email_visible(session, email_id, scope)):
        raise Problem(404, f"no email {email_id}")
    return entry


def _raw_bytes(session: Session, email_id: int, scope: int | None) -> bytes:
    entry = _visible(session, email_id, scope)
    if entry.raw_message_id is None:
        raise Problem(404, f"email {email_id} has no stored message (generated or pruned)")
    raw = session.scalar(select(RawMessage.raw).where(RawMessage.id == entry.raw_message_id))
    if raw is None:
        raise Problem(404, f"the stored message of email {email_id} is gone")
    return bytes(raw)


def save_name(filename: str) -> str:
    """The name a download is saved under: the mail's name as one bare file name. Of a
    path ("../../x", "C:\\dir\\x") only the last part is kept; a control or format
    character (U+202E turning "txt.exe" into "exe.txt" in a file manager, zero-width
    spaces) or a line separator becomes "_"; leading dots and spaces go (no hidden file, no
    ".."). The thread view and the attachment list show the name as the mail gave it."""
    last = re.split(r"[/\\]", filename)[-1]
    bare = "".join("_" if unicodedata.category(c) in _NOT_IN_NAMES else c for c in last)
    return bare.lstrip(". ").rstrip(" ") or "attachment"


def _disposition(filename: str) -> str:
    # RFC 6266: an ASCII fallback plus the name, percent-encoded.
    name = save_name(filename)
    fallback = "".join(c if 32 <= ord(c) < 127 and c not in '"\\' else "_" for c in name)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"


def _header_safe(value: str) -> str:
    return "".join(c if 32 <= ord(c) < 127 else "?" for c in value)


def attachment_url(email_id: int, attachment_id: int) -> str:
    return f"/api/v1/emails/{email_id}/attachments/{attachment_id}"


@router.get(
    "/{email_id}/raw",
    response_class=Response,
    responses={200: {"content": {"message/rfc822": {}}, "description": "The .eml bytes."}},
)
def raw_email(email_id: EmailId, session: SessionDep, principal: ScopedReader) -> Response:
    """The message exactly as it was received (or sent). A customer-scoped token gets it
    without the trace header fields our side adds (Received, Return-Path, Delivered-To,
    X-Original-To, Envelope-To, Authentication-Results, Received-SPF, ARC-*, X-*); the rest
    is byte for byte the same."""
    raw = _raw_bytes(session, email_id, principal.customer_id)
    # The one place a customer's copy is made: the /ui download calls this route too.
    return Response(
        raw if principal.customer_id is None else customer_copy(raw),
        media_type="message/rfc822",
        headers={
            "Content-Disposition": f'attachment; filename="email-{email_id}.eml"',
            **DOWNLOAD_HEADERS,
        },
    )


@router.get("/{email_id}/attachments", response_model=AttachmentList)
def list_attachments(
    email_id: EmailId, session: SessionDep, principal: ScopedReader
) -> AttachmentList:
    scope = principal.customer_id
    _visible(session, email_id, scope)
    rows = list(session.scalars(
        select(Attachment).where(Attachment.email_log_id == email_id).order_by(Attachment.part_index)
    ))
    # A message split between customers records its first ticket, maybe another customer's.
    named = visible_ticket_ids(session, [a.ticket_id for a in rows], scope)
    return AttachmentList(
        email_id=email_id,
        attachments=[
            AttachmentOut(
                id=a.id, email_log_id=a.email_log_id,
                ticket_id=a.ticket_id if a.ticket_id in named else None,
                part_index=a.part_index, filename=a.filename, content_type=a.content_type,
                size=a.size, sha256=a.sha256, download_url=attachment_url(email_id, a.id),
            )
            for a in rows
        ],
    )


@router.get(
    "/{email_id}/attachments/{attachment_id}",
    response_class=Response,
    responses={200: {"content": {"application/octet-stream": {}}, "description": "The bytes."}},
)
def download_attachment(
    email_id: EmailId,
    attachment_id: AttachmentId,
    session: SessionDep,
    principal: ScopedReader,
) -> Response:
    """The attachment's bytes, cut out of the stored raw message."""
    scope = principal.customer_id
    row = session.get(Attachment, attachment_id)
    # Another customer's pair of ids answers as a pair that does not match: the answer must
    # not tell which attachment belongs to which email.
    if (
        row is None
        or row.email_log_id != email_id
        or (scope is not None and not email_visible(session, email_id, scope))
    ):
        raise Problem(404, f"email {email_id} has no attachment {attachment_id}")
    try:
        part = extract_attachment(_raw_bytes(session, email_id, scope), row.part_index)
    except (LookupError, ParseError):
        raise Problem(404, f"attachment {attachment_id} cannot be found in the message") from None
    return Response(
        part.payload,
        media_type="application/octet-stream",
        headers={
            "Content-Disposition": _disposition(row.filename),
            # From the mail: a header value must be visible ASCII or it breaks the response.
            "X-Original-Content-Type": _header_safe(row.content_type),
            **DOWNLOAD_HEADERS,
        },
    )
