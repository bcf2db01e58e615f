"""The seed's POST /api/v1/test/email-to-ticket: a synthetic mail through the real pipeline.

Off unless API_TEST_ENDPOINT_ENABLED=true (then it answers 404 like any unknown path). The
mail is built as RFC 5322 bytes and processed like mail from any source, so what it creates
is exactly what a real message would create.
"""

from __future__ import annotations

from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import SMTPUTF8
from email.utils import format_datetime, make_msgid

from fastapi import APIRouter, Depends

from mailticket.api.auth import RuntimeDep, require
from mailticket.api.schemas import TestEmailData, TestEmailIn, TestEmailOut
from mailticket.runtime import Runtime

router = APIRouter(prefix="/api/v1/test", tags=["testing"])


def build_message(data: TestEmailData, domain: str) -> bytes:
    """RFC 5322 bytes for `data`. The header fields are written as given (each is one line,
    schemas.ONE_LINE; UTF-8 as RFC 6532 allows): whatever a client sends reaches the pipeline's
    parser, which copes with hostile mail, instead of the stdlib's header builder, which
    raises on some addresses. The body part is built by the email package (charset,
    transfer encoding)."""
    received = data.received_at or datetime.now(UTC)
    fields = [
        ("From", data.from_address),
        ("To", f"support@{domain}"),
        ("Subject", data.subject),
        ("Date", format_datetime(received)),
        ("Message-ID", data.message_id or make_msgid(domain=domain)),
        ("In-Reply-To", data.in_reply_to),
        ("References", data.references),
    ]
    head = "".join(f"{name}: {value}\r\n" for name, value in fields if value)
    body = EmailMessage(policy=SMTPUTF8)
    body.set_content(data.body or "")
    return head.encode("utf-8") + body.as_bytes()


def register(runtime: Runtime) -> APIRouter | None:
    if not runtime.settings.api_test_endpoint_enabled:
        return None
    return router


@router.post(
    "/email-to-ticket", response_model=TestEmailOut, dependencies=[Depends(require("write"))]
)
def email_to_ticket(body: TestEmailIn, runtime: RuntimeDep) -> TestEmailOut:
    """Process `email_data` as if it had arrived by mail (the seed's test endpoint)."""
    data = body.email_data
    raw = build_message(data, runtime.settings.mail_domain)
    outcome = runtime.pipeline.process(raw, "api:test", received_at=data.received_at)
    return TestEmailOut(
        ticket_id=outcome.ticket_id,
        ticket_number=outcome.ticket_number,
        created=outcome.action in ("created", "followup"),
        linked=outcome.action in ("linked", "reopened"),
        action=outcome.action,
        matched_by=outcome.matched_by,
        classification=outcome.classification,
        message_id=outcome.message_id,
        error=outcome.error,
    )
