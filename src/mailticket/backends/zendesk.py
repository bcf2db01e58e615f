"""Zendesk Support tickets (API v2).

Zendesk is the one vendor with a real idempotency key: creates carry `Idempotency-Key: <op key>`
so a replayed create answers with the ticket made the first time; the op key is also stored
as `external_id` so `find_by_op_key` works after the key has expired. Comments and
attachments are ticket updates carrying a `comment` (attachments are uploaded first and then
referenced by token); every update we make carries the op key in the audit's custom
metadata, which is how a comment whose answer was lost is found again and how our own
comments are told apart when read back (through the audits). The ticket number is a tag
and the description's footer; the requester is the Zendesk user with the address (an
unknown one is created by Zendesk from `requester`, or replaced by `default_requester_id`).
Webhooks are signed with base64 HMAC-SHA256(secret, timestamp + body). Polling uses the
search API (`type:ticket updated>...`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import httpx
from pydantic import SecretStr

from mailticket.backends import http
from mailticket.backends.base import (
    AttachmentDraft,
    BackendConfig,
    Cap,
    CommentDraft,
    Normalized,
    Page,
    ReferenceData,
    RemoteComment,
    RemoteRef,
    RemoteTicket,
    TicketBackend,
    TicketDraft,
    TicketPatch,
    WebhookEvent,
    html_with_footer,
    text_with_footer,
)
from mailticket.backends.errors import (
    AuthError,
    Conflict,
    Unsupported,
    ValidationError,
    WebhookSignatureError,
)

STATUSES: dict[str, Normalized] = {
    "new": Normalized.open,
    "open": Normalized.open,
    "pending": Normalized.pending,
    "hold": Normalized.pending,
    "solved": Normalized.resolved,
    "closed": Normalized.closed,
}
LOCAL_TO_STATUS = {"open": "open", "pending": "pending", "resolved": "solved", "closed": "closed"}
PRIORITY = {"low": "low", "normal": "normal", "high": "high", "critical": "urgent"}
OP_METADATA = "mailticket_op"  # key in an update's metadata.custom: the op key we sent


def _meta(op_key: str) -> dict[str, Any]:
    return {"custom": {OP_METADATA: op_key}}


class ZendeskConfig(BackendConfig):
    base_url: str  # https://<subdomain>.zendesk.com
    email: str | None = None
    api_token: SecretStr | None = None
    oauth_token: SecretStr | None = None
    webhook_secret: SecretStr | None = None
    webhook_tolerance_s: int = 300
    # An unknown requester: created by Zendesk as an end user, else this user id
    # (neither: the ticket's requester is our API user).
    create_requester: bool = True
    default_requester_id: int | None = None


def _error_message(body: Any) -> str | None:
    if isinstance(body, dict):
        parts = [str(body[k]) for k in ("error", "description") if isinstance(body.get(k), str)]
        details = body.get("details")
        if isinstance(details, dict):
            for field, items in details.items():
                for item in items if isinstance(items, list) else [items]:
                    text = item.get("description") if isinstance(item, dict) else item
                    parts.append(f"{field}: {text}")
        if parts:
            return "; ".join(parts)
    return http.default_message(body)


def _when(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


class ZendeskBackend(TicketBackend[ZendeskConfig]):
    kind = "zendesk"
    Config = ZendeskConfig
    capabilities = frozenset({
        Cap.INTERNAL_NOTES, Cap.ATTACHMENTS, Cap.CLOSE, Cap.NATIVE_IDEMPOTENCY,
        Cap.EXTERNAL_ID_LOOKUP, Cap.WEBHOOKS, Cap.POLLING, Cap.HTML_BODY,
    })

    _my_id: str | None = None  # our API user's id, read once

    @property
    def _base(self) -> str:
        return self.config.base_url.rstrip("/") + "/api/v2"

    def _headers(self) -> dict[str, str]:
        cfg = self.config
        if cfg.oauth_token is not None:
            return {"Authorization": f"Bearer {cfg.oauth_token.get_secret_value()}"}
        if cfg.email is None or cfg.api_token is None:
            raise AuthError("configure email+api_token or oauth_token", backend=self.name)
        pair = f"{cfg.email}/token:{cfg.api_token.get_secret_value()}".encode()
        return {"Authorization": "Basic " + base64.b64encode(pair).decode()}

    async def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = self._headers() | kwargs.pop("headers", {})
        try:
            return await http.request(
                self.client, method, self._base + path, backend=self.name,
                extract_message=_error_message, headers=headers, **kwargs,
            )
        except ValidationError as exc:
            if "closed prevents ticket update" in str(exc):
                raise Conflict(str(exc.args[0]), backend=self.name, status=exc.status,
                               raw=exc.raw) from exc
            raise

    async def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        body = http.body_of(await self._send(method, path, **kwargs))
        if not isinstance(body, dict):
            http.fail(f"{method} {path} answered without a JSON object", self.name)
        return body

    def _ref(self, ticket: Mapping[str, Any]) -> RemoteRef:
        if "id" not in ticket:
            http.fail(f"ticket without id: {dict(ticket)!r:.200}", self.name)
        tid = str(ticket["id"])
        url = f"{self.config.base_url.rstrip('/')}/agent/tickets/{tid}"
        return RemoteRef(self.name, tid, tid, url)

    def _ticket(self, ticket: Mapping[str, Any]) -> RemoteTicket:
        status = str(ticket.get("status") or "")
        return RemoteTicket(self._ref(ticket), status, self.normalize_status(status, STATUSES),
                            _when(ticket.get("updated_at")), ticket)

    def _fields(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """Numeric names are custom field ids; others are ticket fields (group_id, type...)."""
        out: dict[str, Any] = {}
        custom = []
        for name, value in values.items():
            remote = self.config.custom_field_mappings.get(name, name)
            if remote.isdigit():
                custom.append({"id": int(remote), "value": value})
            else:
                out[remote] = value
        if custom:
            out["custom_fields"] = custom
        return out

    async def test_connection(self) -> str:
        try:
            me = await self._call("GET", "/users/me.json")
        except AuthError as exc:
            raise AuthError(
                f"Zendesk at {self.config.base_url} rejected {self.config.email or 'the token'}: "
                f"{exc.args[0]}", backend=self.name, status=exc.status, raw=exc.raw,
            ) from exc
        user = me.get("user") or {}
        if not user.get("id"):  # Zendesk answers anonymous callers 200 with id null
            raise AuthError(f"Zendesk at {self.config.base_url} treats us as anonymous: "
                            "check email and API token", backend=self.name, status=200)
        return f"Zendesk {self.config.base_url}: signed in as {user.get('email')}"

    async def refresh_reference_data(self) -> ReferenceData:
        groups = await self._call("GET", "/groups")
        fields = await self._call("GET", "/ticket_fields")
        return {
            "groups": {str(g["id"]): str(g.get("name", "")) for g in groups.get("groups") or []},
            "ticket_fields": {str(f["id"]): str(f.get("title", ""))
                              for f in fields.get("ticket_fields") or []},
        }

    async def _requester(self, draft: TicketDraft) -> dict[str, Any]:
        email = (draft.requester_email or "").strip().lower()
        if email and self.config.create_requester:
            # Zendesk itself takes the user with this address, or creates one. Searching
            # first would change the payload between a lost try and its retry (the first
            # try created the user), and Zendesk refuses a reused Idempotency-Key then.
            return {"requester": {"email": email, "name": draft.requester_name or email}}
        if email:
            found = await self._call("GET", "/users/search", params={"query": f"email:{email}"})
            for user in found.get("users") or []:
                if str(user.get("email", "")).lower() == email and user.get("id"):
                    return {"requester_id": int(user["id"])}
        if self.config.default_requester_id is not None:
            return {"requester_id": self.config.default_requester_id}
        return {}

    async def create_ticket(self, draft: TicketDraft, *, op_key: str) -> RemoteRef:
        comment: dict[str, Any] = {"public": True}
        if draft.html:
            comment["html_body"] = html_with_footer(draft.html, op_key, draft.local_number)
        else:
            comment["body"] = text_with_footer(draft.text, op_key, draft.local_number)
        tags = list(draft.tags) + ([draft.local_number.lower()] if draft.local_number else [])
        ticket: dict[str, Any] = {
            "subject": draft.subject,
            "comment": comment,
            "external_id": op_key,
            "priority": PRIORITY.get(draft.priority, "normal"),
            "tags": tags,
            "metadata": _meta(op_key),
            **await self._requester(draft),
        }
        ticket.update(self._fields(draft.custom_fields))
        out = await self._call("POST", "/tickets.json", json={"ticket": ticket},
                               headers={"Idempotency-Key": op_key[:255]})
        return self._ref(out.get("ticket") or {})

    async def find_by_op_key(self, op_key: str) -> RemoteRef | None:
        out = await self._call("GET", "/tickets.json", params={"external_id": op_key})
        tickets = out.get("tickets") or []
        return self._ref(tickets[0]) if tickets else None

    async def get_ticket(self, ref: RemoteRef) -> RemoteTicket:
        out = await self._call("GET", f"/tickets/{ref.id}.json")
        return self._ticket(out.get("ticket") or {})

    async def missing_tickets(self, refs: Sequence[RemoteRef]) -> set[str]:
        ids = [r.id for r in refs if r.id.isdigit()][:100]
        if not ids:
            return set()
        out = await self._call("GET", "/tickets/show_many", params={"ids": ",".join(ids)})
        return set(ids) - {str(t.get("id")) for t in out.get("tickets") or []}

    async def _update(self, ref: RemoteRef, ticket: dict[str, Any]) -> dict[str, Any]:
        return await self._call("PUT", f"/tickets/{ref.id}.json", json={"ticket": ticket})

    async def patch_ticket(self, ref: RemoteRef, patch: TicketPatch) -> RemoteTicket:
        ticket: dict[str, Any] = {}
        if patch.status is not None:
            if patch.status not in LOCAL_TO_STATUS:
                raise Unsupported(f"no Zendesk status for {patch.status!r}", backend=self.name)
            ticket["status"] = LOCAL_TO_STATUS[patch.status]
        if patch.priority is not None:
            ticket["priority"] = PRIORITY.get(patch.priority, "normal")
        if patch.assignee is not None:
            ticket["assignee_email"] = patch.assignee
        ticket.update(self._fields(patch.fields))
        try:
            return self._ticket((await self._update(ref, ticket)).get("ticket") or {})
        except Conflict as exc:
            if patch.status is None:
                raise
            # A closed Zendesk ticket can never change again (a follow-up is a new ticket).
            raise Unsupported(f"Zendesk cannot set {patch.status!r}: {exc.args[0]}",
                              backend=self.name, status=exc.status, raw=exc.raw) from exc

    async def close_ticket(self, ref: RemoteRef, resolution: str | None = None) -> RemoteTicket:
        ticket: dict[str, Any] = {"status": "solved",
                                  "metadata": _meta(f"close:{ref.id}")}
        if resolution:
            ticket["comment"] = {"body": resolution, "public": False}
        return self._ticket((await self._update(ref, ticket)).get("ticket") or {})

    @staticmethod
    def _comment_id(out: Mapping[str, Any]) -> str:
        events = (out.get("audit") or {}).get("events") or []
        ids = [str(e["id"]) for e in events if e.get("type") == "Comment" and "id" in e]
        return ids[-1] if ids else str((out.get("audit") or {}).get("id", ""))

    async def create_comment(self, ref: RemoteRef, comment: CommentDraft, *, op_key: str) -> str:
        body: dict[str, Any] = {"public": comment.public}
        if comment.html:
            body["html_body"] = comment.html
        else:
            body["body"] = comment.text
        return self._comment_id(await self._update(ref, {"comment": body,
                                                         "metadata": _meta(op_key)}))

    async def _audits(self, ref: RemoteRef) -> list[dict[str, Any]]:
        out = await self._call("GET", f"/tickets/{ref.id}/audits")
        return [a for a in out.get("audits") or [] if isinstance(a, dict)]

    @staticmethod
    def _op_of(audit: Mapping[str, Any]) -> str | None:
        custom = (audit.get("metadata") or {}).get("custom") or {}
        value = custom.get(OP_METADATA) if isinstance(custom, dict) else None
        return str(value) if value else None

    async def find_comment_by_op_key(self, ref: RemoteRef, op_key: str) -> str | None:
        for audit in await self._audits(ref):
            if self._op_of(audit) == op_key:
                return self._comment_id({"audit": audit})
        return None

    async def create_attachment(
        self, ref: RemoteRef, attachment: AttachmentDraft, *, public: bool, op_key: str
    ) -> str:
        up = await self._call(
            "POST", "/uploads.json", params={"filename": attachment.filename},
            headers={"Content-Type": attachment.content_type or "application/binary"},
            content=attachment.data,
        )
        token = (up.get("upload") or {}).get("token")
        if not token:
            http.fail("upload answered without a token", self.name)
        out = await self._update(ref, {"comment": {
            "body": f"Attachment: {attachment.filename}", "public": public, "uploads": [token],
        }, "metadata": _meta(op_key)})
        return self._comment_id(out)

    async def find_attachment_by_op_key(
        self, ref: RemoteRef, op_key: str, attachment: AttachmentDraft
    ) -> str | None:
        return await self.find_comment_by_op_key(ref, op_key)

    async def list_comments(self, ref: RemoteRef) -> list[RemoteComment]:
        """Comments, read through the audits: the ones we wrote carry our op key in the
        audit's metadata (the description included), so they are never mirrored back."""
        result = []
        for audit in await self._audits(ref):
            ours = self._op_of(audit)
            for e in audit.get("events") or []:
                if not isinstance(e, dict) or e.get("type") != "Comment":
                    continue
                author = str(e.get("author_id") or audit.get("author_id") or "") or None
                result.append(RemoteComment(
                    ref, str(e.get("id")), str(e.get("body") or e.get("html_body") or ""),
                    bool(e.get("public", True)), author, _when(audit.get("created_at")),
                    op_key=ours,
                ))
        return result

    async def query_tickets(
        self, *, updated_since: datetime | None, cursor: str | None = None, limit: int = 100
    ) -> Page:
        query = "type:ticket"
        if updated_since is not None:
            since = updated_since.astimezone(UTC) if updated_since.tzinfo else updated_since
            query += f" updated>{since.strftime('%Y-%m-%dT%H:%M:%SZ')}"
        page = int(cursor or 1)
        out = await self._call("GET", "/search.json", params={
            "query": query, "sort_by": "updated_at", "sort_order": "asc",
            "per_page": str(min(limit, 100)), "page": str(page),
        })
        items = [self._ticket(t) for t in out.get("results") or []]
        return Page(items, str(page + 1) if out.get("next_page") else None)

    def parse_webhook(self, headers: Mapping[str, str], body: bytes) -> WebhookEvent:
        h = {k.lower(): v for k, v in headers.items()}
        secret = self.config.webhook_secret
        if secret is None:
            raise WebhookSignatureError("no webhook_secret configured", backend=self.name)
        signature = h.get("x-zendesk-webhook-signature", "")
        stamp = h.get("x-zendesk-webhook-signature-timestamp", "")
        expected = base64.b64encode(hmac.new(
            secret.get_secret_value().encode(), stamp.encode() + body, hashlib.sha256,
        ).digest()).decode()
        if not signature or not hmac.compare_digest(signature, expected):
            raise WebhookSignatureError("bad X-Zendesk-Webhook-Signature", backend=self.name)
        sent = _when(stamp)
        age = abs((datetime.now(UTC) - sent).total_seconds()) if sent else None
        if age is None or age > self.config.webhook_tolerance_s:
            raise WebhookSignatureError(f"stale or missing timestamp {stamp!r}",
                                        backend=self.name)
        try:
            payload = json.loads(body)
        except ValueError as exc:
            raise WebhookSignatureError("signed body is not JSON", backend=self.name) from exc
        return self._event(h, payload if isinstance(payload, dict) else {})

    def _event(self, h: Mapping[str, str], payload: dict[str, Any]) -> WebhookEvent:
        # Event-subscribed webhooks: {"type": "zen:event-type:ticket.status_changed",
        # "detail": {"id", "status"}, "event": {"current", "previous"}}; trigger webhooks carry
        # whatever JSON the admin wrote, conventionally {"ticket_id", "status"}.
        detail: dict[str, Any] = payload.get("detail") or {}
        event: dict[str, Any] = payload.get("event") or {}
        if not isinstance(detail, dict) or not isinstance(event, dict):
            raise WebhookSignatureError("unexpected payload shape", backend=self.name)
        ticket_id = detail.get("id", payload.get("ticket_id"))
        status = event.get("current") if "status_changed" in str(payload.get("type")) else None
        status = status or detail.get("status") or payload.get("status")
        delivery = h.get("x-zendesk-webhook-invocation-id") or str(payload.get("id") or "")
        if not delivery:
            raise WebhookSignatureError("delivery without invocation id", backend=self.name)
        comment = None
        if isinstance(event.get("comment"), dict) and ticket_id is not None:
            c = event["comment"]
            comment = RemoteComment(
                RemoteRef(self.name, str(ticket_id), str(ticket_id)), str(c.get("id", "")),
                str(c.get("body", "")), bool(c.get("is_public", True)),
                str((c.get("author") or {}).get("id") or "") or None,
            )
        return WebhookEvent(
            delivery_id=delivery,
            event=str(payload.get("type") or "ticket.updated"),
            ticket_id=None if ticket_id is None else str(ticket_id),
            status_raw=str(status).lower() if status else None,
            comment=comment,
            raw=payload,
        )


__all__ = ["ZendeskBackend", "ZendeskConfig"]
