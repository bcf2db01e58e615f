"""Zammad (REST /api/v1), contract §2.

Tickets are created with their first article; comments and attachments are further
articles (`type: note`, so Zammad never e-mails anyone on our behalf, `internal` for
private notes). Zammad has no idempotency key: the ticket carries a tag `m2t-<op key>`
(searchable with `tags:`) and each article our op key as its `message_id`, which is also
how our own articles are recognised when read back. Our ticket number is a second tag and
the first article's footer. The customer is the Zammad user with the requester's address;
an unknown one is created by Zammad's `guess:` (create_requester) or replaced by
`default_customer`. Trigger webhooks are signed
`X-Hub-Signature: sha1=<hex HMAC-SHA1(body)>` and carry `X-Zammad-Delivery`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar

from pydantic import SecretStr, model_validator

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
from mailticket.backends.errors import Unsupported, ValidationError, WebhookSignatureError

STATUSES: dict[str, Normalized] = {
    "new": Normalized.open,
    "open": Normalized.open,
    "pending reminder": Normalized.pending,
    "pending close": Normalized.pending,
    "closed": Normalized.closed,
}
LOCAL_TO_STATE = {"open": "open", "pending": "pending close", "resolved": "closed",
                  "closed": "closed"}
PRIORITY = {"low": "1 low", "normal": "2 normal", "high": "3 high", "critical": "3 high"}
_MSGID_SUFFIX = "@mailticket.op"


class ZammadConfig(BackendConfig):
    base_url: str  # https://zammad.example.com
    token: SecretStr | None = None
    oauth2_token: SecretStr | None = None
    username: str | None = None
    password: SecretStr | None = None
    group: str = "Users"
    # Act as the requester (header `From`); needs the token owner's admin.user permission.
    on_behalf_of_requester: bool = False
    webhook_secret: SecretStr | None = None
    # An unknown requester: let Zammad create the customer (`guess:`), else this user
    # (id, login or e-mail).
    create_requester: bool = True
    default_customer: str | None = None

    @model_validator(mode="after")
    def _some_auth(self) -> ZammadConfig:
        if not (self.token or self.oauth2_token or (self.username and self.password)):
            raise ValueError("needs credentials: token, oauth2_token, or username + password")
        return self


def _when(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)
    except ValueError:
        return None


class ZammadBackend(TicketBackend[ZammadConfig]):
    kind: ClassVar[str] = "zammad"
    Config: ClassVar[type[BackendConfig]] = ZammadConfig
    capabilities: ClassVar[frozenset[Cap]] = frozenset({
        Cap.INTERNAL_NOTES, Cap.ATTACHMENTS, Cap.CLOSE, Cap.EXTERNAL_ID_LOOKUP,
        Cap.WEBHOOKS, Cap.POLLING, Cap.HTML_BODY,
    })

    def _auth(self) -> str:
        c = self.config
        if c.token is not None:
            return f"Token token={c.token.get_secret_value()}"
        if c.oauth2_token is not None:
            return f"Bearer {c.oauth2_token.get_secret_value()}"
        assert c.username and c.password is not None
        pair = f"{c.username}:{c.password.get_secret_value()}".encode()
        return f"Basic {base64.b64encode(pair).decode()}"

    async def _call(self, method: str, path: str, **kw: Any) -> Any:
        headers = {"Authorization": self._auth(), **kw.pop("headers", {})}
        resp = await http.request(self.client, method, f"{self.config.base_url.rstrip('/')}/api/v1{path}",
                                  backend=self.name, headers=headers, **kw)
        return http.body_of(resp) if resp.content else None

    def _ref(self, ticket: Mapping[str, Any]) -> RemoteRef:
        tid = str(ticket["id"])
        url = f"{self.config.base_url.rstrip('/')}/#ticket/zoom/{tid}"
        number = ticket.get("number")
        return RemoteRef(self.name, tid, str(number) if number is not None else None, url)

    def _remote(self, ticket: Mapping[str, Any]) -> RemoteTicket:
        state = str(ticket.get("state") or "")
        return RemoteTicket(ref=self._ref(ticket), status_raw=state,
                            status=self.normalize_status(state, STATUSES),
                            updated_at=_when(ticket.get("updated_at")), raw=dict(ticket))

    @staticmethod
    def op_tag(op_key: str) -> str:
        return f"m2t-{op_key[:40]}"

    def default_statuses(self) -> Mapping[str, Normalized]:
        return STATUSES

    async def test_connection(self) -> str:
        me = await self._call("GET", "/users/me") or {}
        return f"authenticated as {me.get('login') or me.get('email') or '?'}"

    async def refresh_reference_data(self) -> ReferenceData:
        data: ReferenceData = {}
        for kind, path in (("groups", "/groups"), ("states", "/ticket_states"),
                           ("priorities", "/ticket_priorities")):
            found = await self._call("GET", path, params={"per_page": 500})
            data[kind] = {str(x["id"]): str(x.get("name", "")) for x in found or []
                          if isinstance(x, dict) and x.get("active", True)}
        if self.config.group not in data["groups"].values():
            raise ValidationError(f"group {self.config.group!r} is not an active Zammad group "
                                  f"(known: {', '.join(sorted(data['groups'].values()))})",
                                  backend=self.name)
        return data

    async def _customer(self, draft: TicketDraft) -> str | int:
        email = (draft.requester_email or "").strip().lower()
        if email:
            found = await self._call("GET", "/users/search",
                                     params={"query": f'email:"{email}"', "limit": 5})
            for user in found or []:
                if isinstance(user, dict) and str(user.get("email", "")).lower() == email:
                    return int(user["id"])
            if self.config.create_requester:
                return f"guess:{email}"
        if self.config.default_customer:
            return self.config.default_customer
        raise ValidationError(
            f"no Zammad customer for {email or 'a mail without sender'}: set default_customer "
            "or create_requester", backend=self.name)

    async def create_ticket(self, draft: TicketDraft, *, op_key: str) -> RemoteRef:
        body_text = (html_with_footer(draft.html, op_key, draft.local_number) if draft.html
                     else text_with_footer(draft.text, op_key, draft.local_number))
        article: dict[str, Any] = {
            "subject": draft.subject, "body": body_text,
            "content_type": "text/html" if draft.html else "text/plain",
            "type": "note", "internal": False,
            # Marks the first article as ours too, should a trigger ever send it back.
            "message_id": f"<{op_key}{_MSGID_SUFFIX}>",
        }
        tags = [*draft.tags, self.op_tag(op_key), *([draft.local_number]
                                                       if draft.local_number else [])]
        body: dict[str, Any] = {
            "title": draft.subject[:250] or "(no subject)", "group": self.config.group,
            "customer_id": await self._customer(draft),
            "article": article, "priority": PRIORITY.get(draft.priority, "2 normal"),
            "tags": ",".join(tags), **dict(draft.custom_fields),
        }
        headers = {}
        if self.config.on_behalf_of_requester and draft.requester_email:
            headers["From"] = draft.requester_email
        made = await self._call("POST", "/tickets", json=body, headers=headers)
        if not isinstance(made, dict) or "id" not in made:
            http.fail("create answered without a ticket id", self.name)
        return self._ref(made)

    async def _search(self, query: str, limit: int, page: int = 1) -> list[dict[str, Any]]:
        found = await self._call("GET", "/tickets/search", params={
            "query": query, "limit": limit, "per_page": limit, "page": page, "expand": "true",
            "sort_by": "updated_at", "order_by": "asc",
        })
        if isinstance(found, dict):  # without expand Zammad answers {tickets: [ids], assets}
            found = list((found.get("assets") or {}).get("Ticket", {}).values())
        return [t for t in found or [] if isinstance(t, dict)]

    async def find_by_op_key(self, op_key: str) -> RemoteRef | None:
        found = await self._search(f"tags:{self.op_tag(op_key)}", 1)
        return self._ref(found[0]) if found else None

    async def get_ticket(self, ref: RemoteRef) -> RemoteTicket:
        return self._remote(await self._call("GET", f"/tickets/{ref.id}", params={"expand": "true"}))

    async def patch_ticket(self, ref: RemoteRef, patch: TicketPatch) -> RemoteTicket:
        body: dict[str, Any] = dict(patch.fields)
        if patch.status:
            if patch.status not in LOCAL_TO_STATE:
                raise Unsupported(f"no Zammad state for the local status {patch.status!r}",
                                  backend=self.name)
            body["state"] = LOCAL_TO_STATE[patch.status]
        if patch.priority:
            body["priority"] = PRIORITY.get(patch.priority, "2 normal")
        if patch.assignee:
            body["owner_id"] = patch.assignee
        await self._call("PUT", f"/tickets/{ref.id}", json=body)
        return await self.get_ticket(ref)

    async def close_ticket(self, ref: RemoteRef, resolution: str | None = None) -> RemoteTicket:
        if resolution:
            await self.create_comment(ref, CommentDraft(text=resolution, public=False),
                                      op_key=hashlib.sha256(f"close|{ref.id}".encode()).hexdigest())
        await self._call("PUT", f"/tickets/{ref.id}", json={"state": "closed"})
        return await self.get_ticket(ref)

    async def _article(self, ref: RemoteRef, op_key: str, body: str, internal: bool,
                       content_type: str = "text/plain", **extra: Any) -> dict[str, Any]:
        made = await self._call("POST", "/ticket_articles", json={
            "ticket_id": int(ref.id) if ref.id.isdigit() else ref.id, "body": body,
            "content_type": content_type, "type": "note", "internal": internal,
            "sender": "Agent", "message_id": f"<{op_key}{_MSGID_SUFFIX}>", **extra,
        })
        if not isinstance(made, dict) or "id" not in made:
            http.fail("article answered without an id", self.name)
        return made

    async def create_comment(self, ref: RemoteRef, comment: CommentDraft, *, op_key: str) -> str:
        if comment.html is not None:
            made = await self._article(ref, op_key, comment.html, not comment.public, "text/html")
        else:
            made = await self._article(ref, op_key, comment.text, not comment.public)
        return str(made["id"])

    async def create_attachment(
        self, ref: RemoteRef, attachment: AttachmentDraft, *, public: bool, op_key: str
    ) -> str:
        # No standalone upload in Zammad: an attachment is an article carrying it.
        made = await self._article(
            ref, op_key, f"Attachment: {attachment.filename}", not public,
            attachments=[{"filename": attachment.filename, "mime-type": attachment.content_type,
                          "data": base64.b64encode(attachment.data).decode()}],
        )
        files = made.get("attachments") or []
        return str(files[0]["id"]) if files else str(made["id"])

    def _comment(self, ref: RemoteRef, a: Mapping[str, Any]) -> RemoteComment:
        msgid = str(a.get("message_id") or "")
        ours = msgid[1:-len(_MSGID_SUFFIX) - 1] if msgid.endswith(_MSGID_SUFFIX + ">") else None
        return RemoteComment(
            ref=ref, id=str(a["id"]), text=str(a.get("body") or ""),
            public=not bool(a.get("internal")), author=a.get("from") or a.get("created_by"),
            created_at=_when(a.get("created_at")), op_key=ours or None,
        )

    async def list_comments(self, ref: RemoteRef) -> list[RemoteComment]:
        found = await self._call("GET", f"/ticket_articles/by_ticket/{ref.id}")
        # The first article is the ticket's own body, not a comment.
        return [self._comment(ref, a) for a in (found or [])[1:] if isinstance(a, dict)]

    async def find_comment_by_op_key(self, ref: RemoteRef, op_key: str) -> str | None:
        return next((c.id for c in await self.list_comments(ref) if c.op_key == op_key), None)

    async def find_attachment_by_op_key(
        self, ref: RemoteRef, op_key: str, attachment: AttachmentDraft
    ) -> str | None:
        found = await self._call("GET", f"/ticket_articles/by_ticket/{ref.id}")
        for a in found or []:
            if isinstance(a, dict) and a.get("message_id") == f"<{op_key}{_MSGID_SUFFIX}>":
                files = a.get("attachments") or []
                return str(files[0]["id"]) if files else str(a["id"])
        return None

    async def query_tickets(
        self, *, updated_since: datetime | None, cursor: str | None = None, limit: int = 100
    ) -> Page:
        since = updated_since.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if updated_since else "*"
        page = int(cursor or 1)
        found = await self._search(f"updated_at:>={since}", limit, page)
        return Page([self._remote(t) for t in found], str(page + 1) if len(found) >= limit else None)

    def parse_webhook(self, headers: Mapping[str, str], body: bytes) -> WebhookEvent:
        secret = self.config.webhook_secret
        if secret is None:
            raise WebhookSignatureError("no webhook_secret configured", backend=self.name)
        expected = "sha1=" + hmac.new(secret.get_secret_value().encode(), body, hashlib.sha1).hexdigest()
        if not hmac.compare_digest(headers.get("x-hub-signature", "").encode(), expected.encode()):
            raise WebhookSignatureError("X-Hub-Signature does not match", backend=self.name)
        try:
            data = json.loads(body)
        except ValueError as exc:
            raise WebhookSignatureError("body is not JSON", backend=self.name) from exc
        ticket = data.get("ticket") or {}
        ref = self._ref(ticket) if ticket.get("id") is not None else None
        article = data.get("article")
        comment = (self._comment(ref, article) if ref is not None and isinstance(article, dict)
                   and article.get("id") is not None else None)
        return WebhookEvent(
            delivery_id=headers.get("x-zammad-delivery", ""),
            event=headers.get("x-zammad-trigger", "trigger"),
            ticket_id=ref.id if ref else None,
            status_raw=str(ticket["state"]) if ticket.get("state") else None,
            comment=comment, raw=data,
        )
