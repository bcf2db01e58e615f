"""Freshdesk tickets (API v2).

API key as Basic user with "X" as password. Internal comments are private notes; public ones
are public notes (a customer's follow-up is "incoming"), or replies, which Freshdesk mails
to the requester, when `public_as: reply`. Freshdesk has no idempotency and its webhooks are
unsigned, so: the op marker `m2t-…` and our ticket number are tags (stock, searchable with
`tag:`; a site may name a custom field in `op_key_field` instead), the description and each
note end with a footer `[mailticket TKT-… ref m2t-…]` (how a note whose answer was lost is
found, and how ours are told apart), and status comes back by polling `updated_since`. The
requester is the contact with the address (Freshdesk creates one for an unknown address
when `create_requester`; else `default_requester_id` / `default_requester_email`).
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
    ReferenceData,
    RemoteComment,
    RemoteRef,
    RemoteTicket,
    TicketBackend,
    TicketDraft,
    TicketPatch,
    footer,
    html_with_footer,
    marker_in,
    op_marker,
)
from mailticket.backends.errors import AuthError, Unsupported, ValidationError

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
    # A custom text field the site added (e.g. cf_mailticket_ref); default: a tag.
    op_key_field: str | None = None
    # An unknown requester: a new contact (Freshdesk makes it from the address), else this
    # contact id or address.
    create_requester: bool = True
    default_requester_id: int | None = None
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

    async def refresh_reference_data(self) -> ReferenceData:
        groups = await self._call("GET", "/groups", params={"per_page": 100})
        fields = await self._call("GET", "/ticket_fields")
        data: ReferenceData = {
            "groups": {str(g["id"]): str(g.get("name", "")) for g in groups or []},
            "ticket_fields": {str(f["name"]): str(f.get("label", "")) for f in fields or []},
        }
        for f in fields or []:
            if f.get("type") == "default_status" and isinstance(f.get("choices"), dict):
                data["statuses"] = {str(k): str(v[0] if isinstance(v, list) else v)
                                    for k, v in f["choices"].items()}
        field = self.config.op_key_field
        if field and field.removeprefix("cf_") not in {
                n.removeprefix("cf_") for n in data["ticket_fields"]}:
            raise ValidationError(f"op_key_field {field} is not a ticket field",
                                  backend=self.name)
        return data

    async def _requester(self, draft: TicketDraft) -> dict[str, Any]:
        cfg = self.config
        email = (draft.requester_email or "").strip().lower()
        if email:
            found = await self._call("GET", "/contacts", params={"email": email})
            for contact in found or []:
                if str(contact.get("email", "")).lower() == email and contact.get("id"):
                    return {"requester_id": int(contact["id"])}
            if cfg.create_requester:
                named = {"name": draft.requester_name} if draft.requester_name else {}
                return {"email": email, **named}
        if cfg.default_requester_id is not None:
            return {"requester_id": cfg.default_requester_id}
        if cfg.default_requester_email:
            return {"email": cfg.default_requester_email}
        raise ValidationError(f"Freshdesk needs a requester: {email or 'no address'} is no "
                              "contact (set create_requester, default_requester_id or "
                              "default_requester_email)", backend=self.name)

    async def create_ticket(self, draft: TicketDraft, *, op_key: str) -> RemoteRef:
        cfg = self.config
        fields = self._fields(draft.custom_fields)
        custom = fields.pop("custom_fields", {})
        if cfg.op_key_field:
            custom[cfg.op_key_field] = op_key
        tags = [*draft.tags, op_marker(op_key), *([draft.local_number]
                                                   if draft.local_number else [])]
        body: dict[str, Any] = {
            "subject": draft.subject,
            "description": html_with_footer(draft.html or _html(draft.text), op_key,
                                            draft.local_number),
            "status": 2, "priority": PRIORITY.get(draft.priority, 2), "source": SOURCE_EMAIL,
            "tags": tags, **await self._requester(draft),
        }
        body.update(fields)
        if custom:
            body["custom_fields"] = custom
        return self._ref(await self._call("POST", "/tickets", json=body))

    async def find_by_op_key(self, op_key: str) -> RemoteRef | None:
        field = self.config.op_key_field
        if field:
            if not op_key.isalnum():
                return None
            # Search fields are named without the cf_ prefix; the query is wrapped in quotes.
            query = f"\"{field.removeprefix('cf_')}:'{op_key}'\""
        else:
            query = f"\"tag:'{op_marker(op_key)}'\""
        out = await self._call("GET", "/search/tickets", params={"query": query})
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
                raise Unsupported(f"no Freshdesk status for {patch.status!r}",
                                  backend=self.name)
            body["status"] = LOCAL_TO_STATUS[patch.status]
        if patch.priority is not None:
            body["priority"] = PRIORITY.get(patch.priority, 2)
        body.update(self._fields(patch.fields))
        return await self._update(ref, body)

    async def close_ticket(self, ref: RemoteRef, resolution: str | None = None) -> RemoteTicket:
        if resolution:
            await self._call("POST", f"/tickets/{ref.id}/notes", json={
                "body": html_with_footer(_html(resolution), f"close{ref.id}"), "private": True})
        return await self._update(ref, {"status": self.config.close_status})

    async def create_comment(self, ref: RemoteRef, comment: CommentDraft, *, op_key: str) -> str:
        body = html_with_footer(comment.html or _html(comment.text), op_key)
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
            data={"body": _html(f"Attachment: {attachment.filename}\n\n{footer(op_key)}"),
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
        """Notes and replies; ours (attachment notes and resolutions included) end with the
        marker we wrote, so they are never mirrored back."""
        out = await self._call("GET", f"/tickets/{ref.id}/conversations")
        result = []
        for c in out or []:
            text = str(c.get("body_text") or c.get("body") or "")
            result.append(RemoteComment(
                ref, str(c.get("id")), text, not c.get("private", False),
                str(c.get("user_id") or "") or None, _when(c.get("created_at")),
                op_key=marker_in(text) or marker_in(str(c.get("body") or "")),
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
