"""/api/v1/emails: the original message bytes and its attachments."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Depends, Path
from fastapi.responses import Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from mailticket.api.auth import SessionDep, require
from mailticket.api.errors import Problem
from mailticket.api.schemas import AttachmentList, AttachmentOut
from mailticket.reading.parsing import ParseError, extract_attachment
from mailticket.store.models import Attachment, EmailLog, RawMessage

router = APIRouter(
    prefix="/api/v1/emails", tags=["emails"], dependencies=[Depends(require("read"))]
)

EmailId = Annotated[int, Path(ge=1, le=2_147_483_647)]
AttachmentId = Annotated[int, Path(ge=1, le=2_147_483_647)]
# Stored mail is served as a download and never sniffed or rendered: an HTML part or an
# attached HTML file must not run in our origin. Every byte-serving route uses these.
DOWNLOAD_HEADERS = {"X-Content-Type-Options": "nosniff", "Content-Security-Policy": "sandbox"}


def _raw_bytes(session: Session, email_id: int) -> bytes:
    entry = session.get(EmailLog, email_id)
    if entry is None:
        raise Problem(404, f"no email {email_id}")
    if entry.raw_message_id is None:
        raise Problem(404, f"email {email_id} has no stored message (generated or pruned)")
    raw = session.scalar(select(RawMessage.raw).where(RawMessage.id == entry.raw_message_id))
    if raw is None:
        raise Problem(404, f"the stored message of email {email_id} is gone")
    return bytes(raw)


def _disposition(filename: str) -> str:
    # RFC 6266: an ASCII fallback plus the exact name, percent-encoded.
    fallback = "".join(c if 32 <= ord(c) < 127 and c not in '"\\' else "_" for c in filename)
    return f"attachment; filename=\"{fallback or 'attachment'}\"; filename*=UTF-8''{quote(filename)}"


def _header_safe(value: str) -> str:
    return "".join(c if 32 <= ord(c) < 127 else "?" for c in value)


def attachment_url(email_id: int, attachment_id: int) -> str:
    return f"/api/v1/emails/{email_id}/attachments/{attachment_id}"


@router.get(
    "/{email_id}/raw",
    response_class=Response,
    responses={200: {"content": {"message/rfc822": {}}, "description": "The .eml bytes."}},
)
def raw_email(email_id: EmailId, session: SessionDep) -> Response:
    """The message exactly as it was received."""
    return Response(
        _raw_bytes(session, email_id),
        media_type="message/rfc822",
        headers={
            "Content-Disposition": f'attachment; filename="email-{email_id}.eml"',
            **DOWNLOAD_HEADERS,
        },
    )


@router.get("/{email_id}/attachments", response_model=AttachmentList)
def list_attachments(email_id: EmailId, session: SessionDep) -> AttachmentList:
    if session.get(EmailLog, email_id) is None:
        raise Problem(404, f"no email {email_id}")
    rows = session.scalars(
        select(Attachment).where(Attachment.email_log_id == email_id).order_by(Attachment.part_index)
    )
    return AttachmentList(
        email_id=email_id,
        attachments=[
            AttachmentOut(
                id=a.id, email_log_id=a.email_log_id, ticket_id=a.ticket_id,
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
) -> Response:
    """The attachment's bytes, cut out of the stored raw message."""
    row = session.get(Attachment, attachment_id)
    if row is None or row.email_log_id != email_id:
        raise Problem(404, f"email {email_id} has no attachment {attachment_id}")
    try:
        part = extract_attachment(_raw_bytes(session, email_id), row.part_index)
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
