"""Generic outbound webhook backend, signed per the Standard Webhooks scheme (contract §9).

Every operation is one signed POST of an event (`ticket.created`, `comment.created`,
`attachment.created`, `ticket.updated`, `ticket.closed`) to the receiver's URL:

    webhook-id: evt_<op key>      (stable across retries: the receiver deduplicates on it)
    webhook-timestamp: <unix seconds>
    webhook-signature: v1,<base64 HMAC-SHA256(secret, "{id}.{timestamp}.{body}")>

Signing and verifying are the `standardwebhooks` reference library's (it passes the spec's
test vectors: tests/backends/test_standard_webhooks.py).

Because the receiver deduplicates on webhook-id, re-sending after an ambiguous failure is
safe (native idempotency). The receiver may call us back with the same signing scheme
(`ticket.updated` with the ticket's status) at POST /api/v1/webhooks/<instance>.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar

from pydantic import Field, SecretStr, field_validator
from standardwebhooks.webhooks import (
    EmptyWebhookSecretError,
    Webhook,
    WebhookVerificationError,
)

from mailticket.backends import http
from mailticket.backends.base import (
    AttachmentDraft,
    BackendConfig,
    Cap,
    CommentDraft,
    Normalized,
    RemoteComment,
    RemoteRef,
    RemoteTicket,
    TicketBackend,
    TicketDraft,
    TicketPatch,
    WebhookEvent,
)
from mailticket.backends.errors import Unsupported, WebhookSignatureError

STATUSES: dict[str, Normalized] = {s.value: s for s in Normalized if s is not Normalized.unknown}


class WebhookConfig(BackendConfig):
    url: str
    # "whsec_<base64>" (the Standard Webhooks form) or any other string, used as raw bytes.
    secret: SecretStr = Field(min_length=1)
    # Inbound deliveries older or newer than this are refused (replay protection). The
    # Standard Webhooks library refuses past 5 minutes; a smaller value tightens that.
    tolerance_s: int = Field(default=300, ge=1, le=300)

    @field_validator("secret")
    @classmethod
    def _usable(cls, secret: SecretStr) -> SecretStr:
        try:
            _webhook(secret)
        except (EmptyWebhookSecretError, ValueError) as exc:
            raise ValueError(f"not a usable signing secret: {exc}") from exc
        return secret


def _webhook(secret: SecretStr) -> Webhook:
    value = secret.get_secret_value()
    # The library base64-decodes any str secret; a plain (non-"whsec_") secret has always
    # meant its own bytes here, so it goes in as bytes.
    return Webhook(value if value.startswith("whsec_") else value.encode())


def sign(secret: SecretStr, msg_id: str, timestamp: int, body: bytes) -> str:
    return _webhook(secret).sign(msg_id, datetime.fromtimestamp(timestamp, UTC), body.decode())


def verify(secret: SecretStr, headers: Mapping[str, str], body: bytes, *, tolerance_s: int,
           backend: str = "") -> str:
    """Check a Standard Webhooks delivery (headers with lower-case names); returns its
    webhook-id. Several space-separated signatures are allowed (a secret being rotated)."""
    lower = {k.lower(): v for k, v in headers.items()}
    # The spec's timestamp is integer unix seconds: a few ASCII digits. The library reads it
    # with float(), which also takes "+1.7e9", "1_700_000_000" and "١٧٠٠٠٠٠٠٠٠".
    stamp = lower.get("webhook-timestamp", "")
    if stamp and not (stamp.isascii() and stamp.isdigit() and len(stamp) <= 12):
        raise WebhookSignatureError("webhook-timestamp is not unix seconds", backend=backend)
    try:
        _webhook(secret).verify(body, lower, json_parse=False)
    # A garbled signature list or a body that is not UTF-8 raise ValueError in the library.
    except (WebhookVerificationError, ValueError) as exc:
        raise WebhookSignatureError(f"webhook refused: {exc}", backend=backend) from exc
    if abs(time.time() - float(lower["webhook-timestamp"])) > tolerance_s:
        raise WebhookSignatureError("webhook-timestamp outside the tolerance", backend=backend)
    return lower["webhook-id"]


class WebhookBackend(TicketBackend[WebhookConfig]):
    kind: ClassVar[str] = "webhook"
    Config: ClassVar[type[BackendConfig]] = WebhookConfig
    capabilities: ClassVar[frozenset[Cap]] = frozenset(
        {Cap.NATIVE_IDEMPOTENCY, Cap.CLOSE, Cap.INTERNAL_NOTES, Cap.ATTACHMENTS, Cap.WEBHOOKS}
    )

    async def _send(self, event_type: str, op_key: str, data: dict[str, Any]) -> None:
        msg_id = f"evt_{op_key[:32]}"
        body = json.dumps({
            "id": msg_id, "type": event_type,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"), **data,
        }).encode()
        ts = int(time.time())
        headers = {
            "Content-Type": "application/json", "webhook-id": msg_id,
            "webhook-timestamp": str(ts), "webhook-signature": sign(self.config.secret, msg_id, ts, body),
        }
        await http.request(self.client, "POST", self.config.url, backend=self.name,
                           content=body, headers=headers)

    @staticmethod
    def _ticket(ref: RemoteRef, **extra: Any) -> dict[str, Any]:
        return {"id": ref.id, "number": ref.key, **extra}

    async def test_connection(self) -> str:
        # A signed ping: a receiver that checks signatures refuses a wrong secret here.
        await self._send("ping", "ping" + str(int(time.time())), {})
        return f"receiver at {self.config.url} accepted a signed ping"

    async def create_ticket(self, draft: TicketDraft, *, op_key: str) -> RemoteRef:
        ref = RemoteRef(self.name, draft.local_number or op_key[:32], draft.local_number)
        await self._send("ticket.created", op_key, {"ticket": self._ticket(
            ref, subject=draft.subject, status="open", priority=draft.priority,
            requester=draft.requester_email, tags=list(draft.tags), text=draft.text,
            fields=dict(draft.custom_fields),
        )})
        return ref

    async def find_by_op_key(self, op_key: str) -> RemoteRef | None:
        return None  # resending with the same webhook-id is safe: the receiver dedupes

    async def get_ticket(self, ref: RemoteRef) -> RemoteTicket:
        raise Unsupported("a webhook receiver cannot be read back", backend=self.name)

    async def patch_ticket(self, ref: RemoteRef, patch: TicketPatch) -> RemoteTicket:
        # A status is an absolute value: a resend after a lost answer is harmless, but a
        # second reopen must never look like a replay of the first (same webhook-id).
        key = uuid.uuid4().hex
        await self._send("ticket.updated", key, {"ticket": self._ticket(
            ref, status=patch.status, priority=patch.priority, assignee=patch.assignee,
            fields=dict(patch.fields),
        )})
        status = patch.status or "open"
        return RemoteTicket(ref=ref, status_raw=status, status=STATUSES.get(status, Normalized.unknown))

    async def close_ticket(self, ref: RemoteRef, resolution: str | None = None) -> RemoteTicket:
        await self._send("ticket.closed", uuid.uuid4().hex,
                         {"ticket": self._ticket(ref, status="closed", resolution=resolution)})
        return RemoteTicket(ref=ref, status_raw="closed", status=Normalized.closed)

    async def create_comment(self, ref: RemoteRef, comment: CommentDraft, *, op_key: str) -> str:
        cid = op_key[:32]
        await self._send("comment.created", op_key, {
            "ticket": self._ticket(ref),
            "comment": {"id": cid, "body": comment.text, "public": comment.public,
                        "author": comment.author_email},
        })
        return cid

    async def create_attachment(
        self, ref: RemoteRef, attachment: AttachmentDraft, *, public: bool, op_key: str
    ) -> str:
        # Metadata only, never the bytes (the contract); the receiver fetches them from us.
        await self._send("attachment.created", op_key, {
            "ticket": self._ticket(ref),
            "attachment": {"filename": attachment.filename, "content_type": attachment.content_type,
                           "size": len(attachment.data), "download_url": None, "public": public},
        })
        return op_key[:32]

    def parse_webhook(self, headers: Mapping[str, str], body: bytes) -> WebhookEvent:
        msg_id = verify(self.config.secret, headers, body, tolerance_s=self.config.tolerance_s,
                        backend=self.name)
        try:
            data = json.loads(body)
        except ValueError as exc:
            raise WebhookSignatureError("body is not JSON", backend=self.name) from exc
        ticket = data.get("ticket") or {}
        tid = str(ticket["id"]) if ticket.get("id") is not None else None
        comment = None
        raw_comment = data.get("comment")
        if tid is not None and isinstance(raw_comment, dict) and raw_comment.get("id"):
            comment = RemoteComment(
                ref=RemoteRef(self.name, tid, ticket.get("number")), id=str(raw_comment["id"]),
                text=str(raw_comment.get("body") or ""), public=bool(raw_comment.get("public", True)),
                author=raw_comment.get("author"),
            )
        status = ticket.get("status")
        return WebhookEvent(
            delivery_id=msg_id, event=str(data.get("type") or ""), ticket_id=tid,
            status_raw=str(status) if status is not None else None, comment=comment, raw=data,
        )

    def default_statuses(self) -> Mapping[str, Normalized]:
        return STATUSES
