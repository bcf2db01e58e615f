"""Freshdesk tickets (API v2).

API key as Basic user with "X" as password. Internal comments are private notes; public ones
are public notes (a customer's follow-up is "incoming"), or replies, which Freshdesk mails
to the requester, when `public_as: reply`. Freshdesk has no idempotency and its webhooks are
unsigned, so: the op key goes into a custom field (configure one, e.g. `cf_mailticket_ref`)
found again with the search API, and status comes back by polling `updated_since`.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Literal

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
    RemoteComment,
    RemoteRef,
    RemoteTicket,
    TicketBackend,
    TicketDraft,
    TicketPatch,
)
from mailticket.backends.errors import AuthError, ValidationError

STATUSES: dict[str, Normalized] = {
    "2": Normalized.open, "3": Normalized.pending, "4": Normalized.resolved,
    "5": Normalized.closed,
}
LOCAL_TO_STATUS = {"open": 2, "pending": 3, "resolved": 4, "closed": 5}
PRIORITY = {"low": 1, "normal": 2, "high": 3, "critical": 4}
SOURCE_EMAIL = 1


class FreshdeskConfig(BackendConfig):
    base_url: str  # https://<domain>.freshdesk.com
    api_key: SecretStr
    op_key_field: str | None = None  # a custom text field such as cf_mailticket_ref
    default_requester_email: str | None = None
    public_as: Literal["note", "reply"] = "note"
    close_status: int = 4  # 4 Resolved; 5 Closed


def _error_message(body: Any) -> str | None:
    if isinstance(body, dict):
        parts = [str(body[k]) for k in ("description", "message") if body.get(k)]
        for e in body.get("errors") or []:
            if isinstance(e, dict):
                parts.append(f"{e.get('field', '?')}: {e.get('message', '')} ({e.get('code', '')})")
        if parts:
            return "; ".join(parts)
    return http.default_message(body)


def _when(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


class FreshdeskBackend(TicketBackend[FreshdeskConfig]):
    kind = "freshdesk"
    Config = FreshdeskConfig
    capabilities = frozenset({
        Cap.INTERNAL_NOTES, Cap.ATTACHMENTS, Cap.CLOSE, Cap.EXTERNAL_ID_LOOKUP, Cap.POLLING,
        Cap.HTML_BODY,
    })

    _my_id: str | None = None  # the API key's agent, read once

    async def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        pair = f"{self.config.api_key.get_secret_value()}:X".encode()
        headers = {"Authorization": "Basic " + base64.b64encode(pair).decode()}
        return await http.request(
            self.client, method, self.config.base_url.rstrip("/") + "/api/v2" + path,
            backend=self.name, extract_message=_error_message, headers=headers, **kwargs,
        )

    async def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        return http.body_of(await self._send(method, path, **kwargs))

    def _ref(self, t: dict[str, Any]) -> RemoteRef:
        if t.get("id") is None:
            http.fail(f"ticket without id: {t!r:.200}", self.name)
        tid = str(t["id"])
        return RemoteRef(self.name, tid, tid,
                         f"{self.config.base_url.rstrip('/')}/a/tickets/{tid}")

    def _ticket(self, t: dict[str, Any]) -> RemoteTicket:
        status = str(t.get("status", ""))
        return RemoteTicket(self._ref(t), status, self.normalize_status(status, STATUSES),
                            _when(t.get("updated_at")), t)

    def _fields(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """`cf_` names are custom fields; others are ticket fields (group_id, type...)."""
        out: dict[str, Any] = {}
        custom: dict[str, Any] = {}
        for name, value in values.items():
            remote = self.config.custom_field_mappings.get(name, name)
            (custom if remote.startswith("cf_") else out)[remote] = value
        if custom:
            out["custom_fields"] = custom
        return out

    async def test_connection(self) -> str:
        try:
            me = await self._call("GET", "/agents/me")
        except AuthError as exc:
            raise AuthError(f"Freshdesk at {self.config.base_url} rejected the API key: "
                            f"{exc.args[0]}", backend=self.name, status=exc.status,
                            raw=exc.raw) from exc
        contact = me.get("contact") or {} if isinstance(me, dict) else {}
        return f"Freshdesk {self.config.base_url}: API key of {contact.get('email', 'an agent')}"

    async def create_ticket(self, draft: TicketDraft, *, op_key: str) -> RemoteRef:
        cfg = self.config
        email = draft.requester_email or cfg.default_requester_email
        if not email:
            raise ValidationError("Freshdesk needs a requester e-mail (set "
                                  "default_requester_email)", backend=self.name)
        fields = self._fields(draft.custom_fields)
        custom = fields.pop("custom_fields", {})
        if cfg.op_key_field:
            custom[cfg.op_key_field] = op_key
        body: dict[str, Any] = {
            "email": email, "subject": draft.subject,
            "description": draft.html or _html(draft.text), "status": 2,
            "priority": PRIORITY.get(draft.priority, 2), "source": SOURCE_EMAIL,
            "tags": list(draft.tags),
        }
        if draft.requester_name:
            body["name"] = draft.requester_name
        body.update(fields)
        if custom:
            body["custom_fields"] = custom
        return self._ref(await self._call("POST", "/tickets", json=body))

    async def find_by_op_key(self, op_key: str) -> RemoteRef | None:
        field = self.config.op_key_field
        if not field or not op_key.isalnum():
            return None
        # Search fields are named without the cf_ prefix; the query is wrapped in quotes.
        name = field.removeprefix("cf_")
        out = await self._call("GET", "/search/tickets",
                               params={"query": f"\"{name}:'{op_key}'\""})
        results = out.get("results") or [] if isinstance(out, dict) else []
        return self._ref(results[0]) if results else None

    async def get_ticket(self, ref: RemoteRef) -> RemoteTicket:
        return self._ticket(await self._call("GET", f"/tickets/{ref.id}"))

    async def _update(self, ref: RemoteRef, body: dict[str, Any]) -> RemoteTicket:
        return self._ticket(await self._call("PUT", f"/tickets/{ref.id}", json=body))

    async def patch_ticket(self, ref: RemoteRef, patch: TicketPatch) -> RemoteTicket:
        body: dict[str, Any] = {}
        if patch.status is not None:
            if patch.status not in LOCAL_TO_STATUS:
                raise ValidationError(f"no Freshdesk status for {patch.status!r}",
                                      backend=self.name)
            body["status"] = LOCAL_TO_STATUS[patch.status]
        if patch.priority is not None:
            body["priority"] = PRIORITY.get(patch.priority, 2)
        body.update(self._fields(patch.fields))
        return await self._update(ref, body)

    async def close_ticket(self, ref: RemoteRef, resolution: str | None = None) -> RemoteTicket:
        if resolution:
            await self._call("POST", f"/tickets/{ref.id}/notes",
                             json={"body": _html(resolution), "private": True})
        return await self._update(ref, {"status": self.config.close_status})

    async def create_comment(self, ref: RemoteRef, comment: CommentDraft, *, op_key: str) -> str:
        body = comment.html or _html(comment.text)
        if comment.public and self.config.public_as == "reply":
            out = await self._call("POST", f"/tickets/{ref.id}/reply", json={"body": body})
        else:
            out = await self._call("POST", f"/tickets/{ref.id}/notes",
                                   json={"body": body, "private": not comment.public})
        if not isinstance(out, dict) or out.get("id") is None:
            http.fail("note/reply answered without an id", self.name)
        return str(out["id"])

    async def create_attachment(
        self, ref: RemoteRef, attachment: AttachmentDraft, *, public: bool, op_key: str
    ) -> str:
        # Attachments ride on a note (multipart attachments[]); the note carries the name.
        out = await self._call(
            "POST", f"/tickets/{ref.id}/notes",
            data={"body": _html(f"Attachment: {attachment.filename}"),
                  "private": "false" if public else "true"},
            files=[("attachments[]", (attachment.filename, attachment.data,
                                      attachment.content_type or "application/octet-stream"))],
        )
        atts = out.get("attachments") or [] if isinstance(out, dict) else []
        if atts and atts[0].get("id") is not None:
            return str(atts[0]["id"])
        if not isinstance(out, dict) or out.get("id") is None:
            http.fail("attachment note answered without an id", self.name)
        return str(out["id"])

    async def list_comments(self, ref: RemoteRef) -> list[RemoteComment]:
        """Notes and replies; those written by our API key's agent (attachment notes,
        resolutions included) are marked ours so they are never mirrored back."""
        if self._my_id is None:
            me = await self._call("GET", "/agents/me")
            self._my_id = str(me.get("id") or "") if isinstance(me, dict) else ""
        out = await self._call("GET", f"/tickets/{ref.id}/conversations")
        result = []
        for c in out or []:
            author = str(c.get("user_id") or "") or None
            result.append(RemoteComment(
                ref, str(c.get("id")), str(c.get("body_text") or c.get("body")),
                not c.get("private", False), author, _when(c.get("created_at")),
                op_key="ours" if self._my_id and author == self._my_id else None,
            ))
        return result

    async def query_tickets(
        self, *, updated_since: datetime | None, cursor: str | None = None, limit: int = 100
    ) -> Page:
        page = int(cursor or 1)
        params = {"order_by": "updated_at", "order_type": "asc",
                  "per_page": str(min(limit, 100)), "page": str(page)}
        if updated_since is not None:
            since = updated_since.astimezone(UTC) if updated_since.tzinfo else updated_since
            params["updated_since"] = since.strftime("%Y-%m-%dT%H:%M:%SZ")
        resp = await self._send("GET", "/tickets", params=params)
        items = [self._ticket(t) for t in http.body_of(resp) or []]
        has_next = 'rel="next"' in resp.headers.get("link", "")
        return Page(items, str(page + 1) if has_next else None)


def _html(text: str) -> str:
    return "<div>" + html.escape(text).replace("\n", "<br>") + "</div>"


__all__ = ["FreshdeskBackend", "FreshdeskConfig"]
