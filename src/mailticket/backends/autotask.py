"""Autotask PSA tickets over the REST API.

The API host depends on the tenant's zone, found by an anonymous `zoneInformation?user=`
lookup that is cached per API user (process-wide: every call counts against the tenant's
shared 10,000 requests/hour). Autotask has no idempotency key; the op key goes into
`externalID` (50 chars at most) and is queried before a retried create. Notes have no such
field: each note's description ends with a footer `[mailticket ref m2t-…]`, queried with
`contains` after a lost answer and telling our notes from the technicians'. The ticket's
description footer carries our ticket number. The contact is the company's Contact with
the requester's address (or a new one, or `default_contact_id`). Autotask reports
validation failures and bad credentials as HTTP 500 with `{"errors": [...]}`, so the message
decides the class. Closing follows the Backupchecks rule: a ticket with time entries is
never completed by us; it gets an internal note for the technician instead.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar

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
    marker_in,
    op_marker,
    text_with_footer,
)
from mailticket.backends.errors import (
    AuthError,
    BackendError,
    NotFound,
    Transient,
    Unsupported,
    ValidationError,
    WebhookSignatureError,
)

# Default status picklist of a fresh tenant; tenants add their own (map them in status_map).
STATUSES: dict[str, Normalized] = {
    "1": Normalized.open, "5": Normalized.resolved, "7": Normalized.pending,
    "8": Normalized.open, "9": Normalized.pending, "10": Normalized.open,
    "12": Normalized.pending, "13": Normalized.pending,
}
_AUTH_WORDS = re.compile(
    r"auth|credential|secret|integration ?code|password|user ?name|unable to find user|login",
    re.I,
)
# A 500 whose words say the server itself failed stays a (retryable) server error.
_SERVER_WORDS = re.compile(r"unexpected|internal server|timed? ?out|try again|unavailable", re.I)
MAX_ATTACHMENT = 6_000_000  # the API rejects files beyond about 6-7 MB
COMPLETE = 5


class AutotaskConfig(BackendConfig):
    username: str  # the API user's e-mail
    secret: SecretStr
    integration_code: SecretStr
    impersonation_resource_id: int | None = None
    zone_lookup_url: str = "https://webservices.autotask.net/atservicesrest/v1.0/"
    company_id: int
    queue_id: int | None = None
    source: int | None = None  # ticket source picklist value (e.g. e-mail)
    status_new: int = 1
    status_complete: int = COMPLETE
    local_statuses: dict[str, int] = {"open": 1, "pending": 7, "resolved": COMPLETE}
    priorities: dict[str, int] = {"critical": 4, "high": 1, "normal": 2, "low": 3}
    note_type: int = 1
    publish_public: int = 1  # "All Autotask Users"
    publish_internal: int = 2  # "Internal Only" on a default tenant (verify per tenant)
    poll_field: str = "lastActivityDate"
    webhook_secret: SecretStr | None = None
    # The ticket's contact when the company has none with the requester's address: a new
    # Contact (create_requester), else this one (neither: no contact).
    create_requester: bool = False
    default_contact_id: int | None = None
    # The tenant-wide budget is shared with every other integration: stay well inside it.
    max_requests_per_hour: float | None = 10_000
    max_burst: int = 3


def _error_message(body: Any) -> str | None:
    if isinstance(body, dict) and isinstance(body.get("errors"), list) and body["errors"]:
        return "; ".join(str(e) for e in body["errors"])
    return http.default_message(body)


class AutotaskBackend(TicketBackend[AutotaskConfig]):
    kind = "autotask"
    Config = AutotaskConfig
    capabilities = frozenset({
        Cap.INTERNAL_NOTES, Cap.ATTACHMENTS, Cap.CLOSE, Cap.EXTERNAL_ID_LOOKUP, Cap.POLLING,
        Cap.WEBHOOKS, Cap.REFERENCE_DATA,
    })
    requests_per_hour: ClassVar[int] = 10_000  # the throttle hint (tenant-wide budget)
    # (zone lookup URL, API user) -> (REST base "…/V1.0/", web UI base)
    zone_cache: ClassVar[dict[tuple[str, str], tuple[str, str]]] = {}

    def __init__(self, instance: str, config: AutotaskConfig, *,
                 client: httpx.AsyncClient | None = None) -> None:
        super().__init__(instance, config, client=client)
        self.reference: dict[str, dict[int, str]] = {}

    async def _zone(self) -> tuple[str, str]:
        key = (self.config.zone_lookup_url, self.config.username.lower())
        if key not in self.zone_cache:
            url = self.config.zone_lookup_url.rstrip("/") + "/zoneInformation"
            try:
                # The vendor's Swagger marks the credential headers required on this call too.
                resp = await http.request(self.client, "GET", url, backend=self.name,
                                          extract_message=_error_message,
                                          params={"user": self.config.username},
                                          headers=self._headers())
            except Transient:
                raise
            except BackendError as exc:
                raise AuthError(f"Autotask zone lookup failed for API user "
                                f"{self.config.username}: {exc.args[0]}", backend=self.name,
                                status=exc.status, raw=exc.raw) from exc
            info = http.body_of(resp)
            if not isinstance(info, dict) or not info.get("url"):
                http.fail(f"zone lookup for {self.config.username} gave no url", self.name, resp)
            self.zone_cache[key] = (str(info["url"]).rstrip("/") + "/V1.0/",
                                    str(info.get("webUrl") or ""))
        return self.zone_cache[key]

    def _headers(self) -> dict[str, str]:
        cfg = self.config
        headers = {"ApiIntegrationCode": cfg.integration_code.get_secret_value(),
                   "UserName": cfg.username, "Secret": cfg.secret.get_secret_value(),
                   "Content-Type": "application/json"}
        if cfg.impersonation_resource_id is not None:
            headers["ImpersonationResourceId"] = str(cfg.impersonation_resource_id)
        return headers

    async def _send(self, method: str, path: str, **kwargs: Any) -> Any:
        base, _ = await self._zone()
        headers = self._headers()
        url = path if path.startswith(base) else base + path
        try:
            resp = await self.client.request(method, url, headers=headers, **kwargs)
        except httpx.HTTPError as exc:
            raise http.transport_error(exc, self.name, method) from exc
        body = http.body_of(resp)
        message = _error_message(body)
        if (resp.status_code == 500 and isinstance(body, dict) and body.get("errors")
                and not _SERVER_WORDS.search(message or "")):
            # Autotask's 500 is also its "bad credentials" and "invalid payload" answer.
            cls = AuthError if _AUTH_WORDS.search(message or "") else ValidationError
            raise cls(message or "error", backend=self.name, status=500, raw=body)
        http.raise_for_vendor(resp, self.name, _error_message)
        return body

    def _ref(self, item: Mapping[str, Any], web: str) -> RemoteRef:
        tid = str(item["id"])
        url = f"{web.rstrip('/')}/Mvc/ServiceDesk/TicketDetail.mvc?ticketId={tid}" if web else None
        return RemoteRef(self.name, tid, item.get("ticketNumber") or None, url)

    def _ticket(self, item: Mapping[str, Any], web: str) -> RemoteTicket:
        status = str(item.get("status", ""))
        stamp = item.get("lastActivityDate") or item.get("lastTrackedModificationDateTime")
        when = None
        if isinstance(stamp, str):
            when = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
        resolution = str(item.get("resolution") or "").strip() or None
        return RemoteTicket(self._ref(item, web), status, self.normalize_status(status, STATUSES),
                            when, item, resolution=resolution)

    def _item_id(self, body: Any) -> str:
        if not isinstance(body, dict) or body.get("itemId") is None:
            http.fail(f"answer without itemId: {body!r:.200}", self.name)
        return str(body["itemId"])

    async def test_connection(self) -> str:
        try:
            await self._send("GET", "Tickets/entityInformation")
        except AuthError as exc:
            raise AuthError(f"Autotask rejected API user {self.config.username} (check "
                            f"UserName, Secret and ApiIntegrationCode): {exc.args[0]}",
                            backend=self.name, status=exc.status, raw=exc.raw) from exc
        base, _ = await self._zone()
        return f"Autotask zone {base} as {self.config.username}"

    async def refresh_reference_data(self) -> ReferenceData:
        body = await self._send("GET", "Tickets/entityInformation/fields")
        wanted = {"queueID": "queues", "source": "sources", "status": "statuses",
                  "priority": "priorities"}
        self.reference = {}
        for f in body.get("fields") or []:
            kind = wanted.get(f.get("name"))
            if kind:
                self.reference[kind] = {int(p["value"]): str(p.get("label", ""))
                                        for p in f.get("picklistValues") or []
                                        if p.get("isActive", True)}
        cfg = self.config
        for kind, value in (("queues", cfg.queue_id), ("sources", cfg.source),
                            ("statuses", cfg.status_new)):
            if value is not None and value not in self.reference.get(kind, {}):
                raise ValidationError(f"configured {kind[:-1]} {value} is not an active "
                                      f"Autotask {kind[:-1]}", backend=self.name)
        return {kind: {str(k): v for k, v in values.items()}
                for kind, values in self.reference.items()}

    async def _contact(self, draft: TicketDraft) -> int | None:
        cfg = self.config
        email = (draft.requester_email or "").strip()
        if email:
            body = await self._send("POST", "Contacts/query", json={
                "filter": [{"op": "eq", "field": "emailAddress", "value": email},
                           {"op": "eq", "field": "companyID", "value": cfg.company_id}],
                "includeFields": ["id"], "maxRecords": 1,
            })
            items = body.get("items") or []
            if items:
                return int(items[0]["id"])
            if cfg.create_requester:
                name = (draft.requester_name or email.split("@")[0]).strip()
                first, _, last = name.rpartition(" ")
                made = await self._send("POST", f"Companies/{cfg.company_id}/Contacts", json={
                    "companyID": cfg.company_id, "firstName": (first or name)[:50],
                    "lastName": (last or name)[:50], "emailAddress": email[:254],
                    "isActive": 1,
                })
                return int(self._item_id(made))
        return cfg.default_contact_id

    async def create_ticket(self, draft: TicketDraft, *, op_key: str) -> RemoteRef:
        cfg = self.config
        # The description holds 8000 characters: the footer is kept, the text shortened.
        text = text_with_footer(draft.text[:7800], op_key, draft.local_number)
        body: dict[str, Any] = {
            "companyID": cfg.company_id, "title": draft.subject[:255],
            "description": text[:8000], "status": cfg.status_new,
            "priority": cfg.priorities.get(draft.priority, cfg.priorities["normal"]),
            "externalID": op_key[:50],
        }
        contact = await self._contact(draft)
        if contact is not None:
            body["contactID"] = contact
        if cfg.queue_id is not None:
            body["queueID"] = cfg.queue_id
        if cfg.source is not None:
            body["source"] = cfg.source
        # push_to_backend hands over remote field names already; local names still map.
        for name, value in draft.custom_fields.items():
            body[cfg.custom_field_mappings.get(name, name)] = value
        item_id = self._item_id(await self._send("POST", "Tickets", json=body))
        # The create answers with the id only; the ticket number needs a read.
        return (await self.get_ticket(RemoteRef(self.name, item_id))).ref

    async def find_by_op_key(self, op_key: str) -> RemoteRef | None:
        body = await self._send("POST", "Tickets/query", json={
            "filter": [{"op": "eq", "field": "externalID", "value": op_key[:50]}],
            "includeFields": ["id", "ticketNumber"], "maxRecords": 1,
        })
        items = body.get("items") or []
        return self._ref(items[0], (await self._zone())[1]) if items else None

    async def get_ticket(self, ref: RemoteRef) -> RemoteTicket:
        body = await self._send("GET", f"Tickets/{ref.id}")
        item = body.get("item") if isinstance(body, dict) else None
        if not item:  # Autotask answers 200 {"item": null} for an id that does not exist
            raise NotFound(f"ticket {ref.id} does not exist", backend=self.name, status=200)
        return self._ticket(item, (await self._zone())[1])

    async def missing_tickets(self, refs: Sequence[RemoteRef]) -> set[str]:
        ids = [int(r.id) for r in refs if r.id.isdigit()]
        if not ids:
            return set()
        body = await self._send("POST", "Tickets/query", json={
            "filter": [{"op": "in", "field": "id", "value": ids}],
            "includeFields": ["id"], "maxRecords": 500,
        })
        return {str(i) for i in ids} - {str(t.get("id")) for t in body.get("items") or []}

    async def patch_ticket(self, ref: RemoteRef, patch: TicketPatch) -> RemoteTicket:
        if patch.status in ("resolved", "closed"):
            return await self.close_ticket(ref)
        body: dict[str, Any] = {"id": int(ref.id)}
        if patch.status is not None:
            if patch.status not in self.config.local_statuses:
                raise Unsupported(f"no Autotask status for {patch.status!r} (local_statuses)",
                                  backend=self.name)
            body["status"] = self.config.local_statuses[patch.status]
        if patch.priority is not None:
            body["priority"] = self.config.priorities.get(patch.priority, 2)
        for local, value in patch.fields.items():
            body[self.config.custom_field_mappings.get(local, local)] = value
        await self._send("PATCH", "Tickets", json=body)
        return await self.get_ticket(ref)

    async def has_time_entries(self, ref: RemoteRef) -> bool:
        body = await self._send("POST", "TimeEntries/query", json={
            "filter": [{"op": "eq", "field": "ticketID", "value": int(ref.id)}],
            "includeFields": ["id"], "maxRecords": 1,
        })
        return bool(body.get("items"))

    async def close_ticket(self, ref: RemoteRef, resolution: str | None = None) -> RemoteTicket:
        text = resolution or "Resolved via mailticket."
        if await self.has_time_entries(ref):
            # Someone billed time: completing it is the technician's call, not ours.
            await self._note(ref, "mailticket: resolved by the requester",
                             text_with_footer(f"{text}\n\nNot completed automatically: the "
                                              "ticket has time entries.", f"close{ref.id}"),
                             public=False)
        else:
            await self._send("PATCH", "Tickets", json={
                "id": int(ref.id), "status": self.config.status_complete, "resolution": text})
        return await self.get_ticket(ref)

    async def _note(self, ref: RemoteRef, title: str, text: str, *, public: bool) -> str:
        cfg = self.config
        return self._item_id(await self._send("POST", f"Tickets/{ref.id}/Notes", json={
            "title": title[:250], "description": text[:32000], "noteType": cfg.note_type,
            "publish": cfg.publish_public if public else cfg.publish_internal,
        }))

    async def create_comment(self, ref: RemoteRef, comment: CommentDraft, *, op_key: str) -> str:
        title = comment.text.strip().splitlines()[0][:80] if comment.text.strip() else "Note"
        return await self._note(ref, title, text_with_footer(comment.text[:31000], op_key),
                                public=comment.public)

    async def _notes(self, ref: RemoteRef, *more: dict[str, Any]) -> list[dict[str, Any]]:
        body = await self._send("POST", "TicketNotes/query", json={
            "filter": [{"op": "eq", "field": "ticketID", "value": int(ref.id)}, *more],
            "maxRecords": 500,
        })
        return [n for n in body.get("items") or [] if isinstance(n, dict)]

    async def find_comment_by_op_key(self, ref: RemoteRef, op_key: str) -> str | None:
        marker = op_marker(op_key)
        for note in await self._notes(ref, {"op": "contains", "field": "description",
                                            "value": marker}):
            if marker_in(str(note.get("description") or "")) == marker:
                return str(note["id"])
        return None

    async def list_comments(self, ref: RemoteRef) -> list[RemoteComment]:
        out = []
        for note in await self._notes(ref):
            text = str(note.get("description") or "")
            stamp = note.get("createDateTime")
            when = (datetime.fromisoformat(stamp.replace("Z", "+00:00"))
                    if isinstance(stamp, str) else None)
            out.append(RemoteComment(
                ref, str(note["id"]), text, note.get("publish") == self.config.publish_public,
                str(note.get("creatorResourceID") or "") or None, when, op_key=marker_in(text),
            ))
        return out

    async def create_attachment(
        self, ref: RemoteRef, attachment: AttachmentDraft, *, public: bool, op_key: str
    ) -> str:
        if len(attachment.data) > MAX_ATTACHMENT:
            raise ValidationError(f"{attachment.filename} is larger than Autotask accepts "
                                  f"({len(attachment.data)} bytes)", backend=self.name)
        cfg = self.config
        return self._item_id(await self._send("POST", f"Tickets/{ref.id}/Attachments", json={
            "id": 0, "attachmentType": "FILE_ATTACHMENT", "fullPath": attachment.filename,
            "title": attachment.filename, "contentType": attachment.content_type,
            "publish": cfg.publish_public if public else cfg.publish_internal,
            "data": base64.b64encode(attachment.data).decode(),
        }))

    async def query_tickets(
        self, *, updated_since: datetime | None, cursor: str | None = None, limit: int = 100
    ) -> Page:
        base, web = await self._zone()
        if cursor:
            if not cursor.startswith(base):  # never send our credentials elsewhere
                raise ValidationError(f"foreign page URL {cursor!r}", backend=self.name)
            body = await self._send("GET", cursor)
        else:
            since = (updated_since or datetime(2000, 1, 1, tzinfo=UTC)).astimezone(UTC)
            body = await self._send("POST", "Tickets/query", json={
                "filter": [{"op": "gt", "field": self.config.poll_field,
                            "value": since.strftime("%Y-%m-%dT%H:%M:%S.%fZ")}],
                "maxRecords": min(limit, 500),
            })
        items = [self._ticket(i, web) for i in body.get("items") or []]
        nxt = (body.get("pageDetails") or {}).get("nextPageUrl")
        return Page(items, str(nxt) if nxt else None)

    def parse_webhook(self, headers: Mapping[str, str], body: bytes) -> WebhookEvent:
        secret = self.config.webhook_secret
        if secret is None:
            raise WebhookSignatureError("no webhook_secret configured", backend=self.name)
        given = {k.lower(): v for k, v in headers.items()}.get("x-hook-signature", "")
        mac = hmac.new(secret.get_secret_value().encode(), body, hashlib.sha1).digest()
        expected = "sha1=" + base64.b64encode(mac).decode()
        if not hmac.compare_digest(given, expected):
            raise WebhookSignatureError("bad X-Hook-Signature", backend=self.name)
        try:
            payload = json.loads(body)
        except ValueError as exc:
            raise WebhookSignatureError("signed body is not JSON", backend=self.name) from exc
        if not isinstance(payload, dict) or not payload.get("Guid"):
            raise WebhookSignatureError("delivery without Guid", backend=self.name)
        fields = payload.get("Fields") or {}
        status = fields.get("Status", fields.get("status"))
        return WebhookEvent(
            delivery_id=str(payload.get("Guid") or ""),
            event=f"{payload.get('EntityType', 'Ticket')}.{payload.get('Action', 'Update')}",
            ticket_id=str(payload["Id"]) if payload.get("Id") is not None else None,
            status_raw=None if status is None else str(status),
            raw=payload,
        )


__all__ = ["AutotaskBackend", "AutotaskConfig"]
