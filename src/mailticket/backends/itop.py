"""Combodo iTop user requests over the single REST endpoint (`rest.php?version=1.3`).

Every call is a form POST with `json_data` and the credentials; every answer is HTTP 200 and
the JSON `code` carries the outcome (1 unauthorized, 100 everything else including
validation and invalid stimuli). iTop has no idempotency and no signed webhooks: the op key
is written to a configurable field of the request (add one in the datamodel, e.g.
`external_ref`) and found again with OQL; status comes back by polling `last_update`.
Public and private case logs take customer-visible and internal comments.
"""

from __future__ import annotations

import base64
import html
import json
import re
from datetime import UTC, datetime
from typing import Any

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
from mailticket.backends.errors import (
    AuthError,
    Conflict,
    NotFound,
    ValidationError,
)

STATUSES: dict[str, Normalized] = {
    "new": Normalized.open, "assigned": Normalized.open, "escalated_tto": Normalized.open,
    "escalated_ttr": Normalized.open, "waiting_for_approval": Normalized.pending,
    "approved": Normalized.open, "dispatched": Normalized.open,
    "redispatched": Normalized.open, "pending": Normalized.pending,
    "resolved": Normalized.resolved, "closed": Normalized.closed,
    "rejected": Normalized.canceled,
}
PRIORITY = {"critical": "1", "high": "2", "normal": "3", "low": "4"}
STAMP = "%Y-%m-%d %H:%M:%S"
READ_FIELDS = "id,ref,status,last_update,org_id"
_NOT_FOUND = re.compile(r"no (item|object)|not found|invalid object|does not exist", re.I)


class ITopConfig(BackendConfig):
    base_url: str  # the iTop root, e.g. https://itop.example.org
    auth_user: str | None = None
    auth_pwd: SecretStr | None = None
    auth_token: SecretStr | None = None  # authent-token module, iTop >= 3.1
    ticket_class: str = "UserRequest"
    org_id: str  # an id, or OQL such as SELECT Organization WHERE name='X'
    caller_id: str | None = None
    origin: str = "mail"
    # Field of the ticket class that stores our op key (none by default in iTop's datamodel).
    op_key_field: str | None = None
    team_id: str | None = None  # for ev_assign when a new request must be assigned first
    agent_id: str | None = None
    service_id: str | None = None
    resolution_code: str | None = None
    also_close: bool = False  # follow ev_resolve with ev_close
    comment: str = "mailticket"  # iTop's change-tracking comment on every write


def _to_html(text: str) -> str:
    return "<p>" + html.escape(text).replace("\n", "<br>") + "</p>"


class ITopBackend(TicketBackend[ITopConfig]):
    kind = "itop"
    Config = ITopConfig
    capabilities = frozenset({
        Cap.INTERNAL_NOTES, Cap.ATTACHMENTS, Cap.CLOSE, Cap.EXTERNAL_ID_LOOKUP, Cap.POLLING,
        Cap.HTML_BODY,
    })

    def _auth(self) -> dict[str, str]:
        cfg = self.config
        if cfg.auth_token is not None:
            return {"auth_token": cfg.auth_token.get_secret_value()}
        if cfg.auth_user is None or cfg.auth_pwd is None:
            raise AuthError("configure auth_user+auth_pwd or auth_token", backend=self.name)
        return {"auth_user": cfg.auth_user, "auth_pwd": cfg.auth_pwd.get_secret_value()}

    async def _op(self, operation: str, **params: Any) -> dict[str, Any]:
        payload = {"operation": operation, "comment": self.config.comment, **params}
        url = self.config.base_url.rstrip("/") + "/webservices/rest.php"
        resp = await http.request(
            self.client, "POST", url, backend=self.name, params={"version": "1.3"},
            ambiguous=operation not in ("core/get", "list_operations"),
            data={"json_data": json.dumps(payload), **self._auth()},
        )
        body = http.body_of(resp)
        if not isinstance(body, dict) or "code" not in body:
            http.fail(f"{operation}: not an iTop REST answer: {body!r:.200}", self.name, resp)
        self._check(int(body["code"]), body.get("message"), body)
        for obj in (body.get("objects") or {}).values():
            self._check(int(obj.get("code", 0)), obj.get("message"), body)
        return body

    def _check(self, code: int, message: Any, raw: Any) -> None:
        if code == 0:
            return
        text = f"iTop code {code}: {message or 'no message'}"
        if code in (1, 5, 6):
            raise AuthError(text, backend=self.name, status=200, raw=raw)
        if code == 100 and "Invalid stimulus" in str(message):
            raise Conflict(text, backend=self.name, status=200, raw=raw)
        if code == 100 and _NOT_FOUND.search(str(message)):
            raise NotFound(text, backend=self.name, status=200, raw=raw)
        raise ValidationError(text, backend=self.name, status=200, raw=raw)

    def _objects(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        return list((body.get("objects") or {}).values())  # `null` when nothing matched

    def _ref(self, obj: dict[str, Any]) -> RemoteRef:
        key = str(obj["key"])
        cls = obj.get("class") or self.config.ticket_class
        url = f"{self.config.base_url.rstrip('/')}/pages/UI.php?operation=details&class={cls}&id={key}"
        return RemoteRef(self.name, key, (obj.get("fields") or {}).get("ref") or None, url)

    def _ticket(self, obj: dict[str, Any]) -> RemoteTicket:
        fields = obj.get("fields") or {}
        status = str(fields.get("status") or "")
        when = None
        if fields.get("last_update"):
            when = datetime.strptime(fields["last_update"], STAMP).replace(tzinfo=UTC)
        return RemoteTicket(self._ref(obj), status, self.normalize_status(status, STATUSES),
                            when, obj)

    async def _get_one(self, ref: RemoteRef, fields: str = READ_FIELDS) -> dict[str, Any]:
        body = await self._op("core/get", **{"class": self.config.ticket_class},
                              key=ref.id, output_fields=fields)
        objs = self._objects(body)
        if not objs:
            raise NotFound(f"{self.config.ticket_class} {ref.id} not found", backend=self.name,
                           status=200, raw=body)
        return objs[0]

    async def test_connection(self) -> str:
        try:
            await self._op("list_operations")
        except AuthError as exc:
            who = self.config.auth_user or "the token"
            raise AuthError(f"iTop at {self.config.base_url} rejected {who} (bad password, or "
                            f"the user lacks the REST Services User profile): {exc.args[0]}",
                            backend=self.name, status=exc.status, raw=exc.raw) from exc
        return f"iTop {self.config.base_url}: REST 1.3 reachable"

    async def create_ticket(self, draft: TicketDraft, *, op_key: str) -> RemoteRef:
        cfg = self.config
        fields: dict[str, Any] = {
            "org_id": cfg.org_id, "title": draft.subject[:255],
            "description": draft.html or _to_html(draft.text), "origin": cfg.origin,
            "urgency": PRIORITY.get(draft.priority, "3"),
        }
        if cfg.caller_id:
            fields["caller_id"] = cfg.caller_id
        if cfg.op_key_field:
            fields[cfg.op_key_field] = op_key
        # push_to_backend hands over remote field names already; local names still map.
        for name, value in draft.custom_fields.items():
            fields[cfg.custom_field_mappings.get(name, name)] = value
        body = await self._op("core/create", **{"class": cfg.ticket_class}, fields=fields,
                              output_fields="id,ref,status")
        objs = self._objects(body)
        if not objs:
            http.fail("core/create answered without the object", self.name)
        return self._ref(objs[0])

    async def find_by_op_key(self, op_key: str) -> RemoteRef | None:
        field = self.config.op_key_field
        if not field or not re.fullmatch(r"[A-Za-z0-9_-]+", op_key):
            return None
        oql = f"SELECT {self.config.ticket_class} WHERE {field} = '{op_key}'"
        objs = self._objects(await self._op(
            "core/get", **{"class": self.config.ticket_class}, key=oql,
            output_fields="id,ref", limit=1))
        return self._ref(objs[0]) if objs else None

    async def get_ticket(self, ref: RemoteRef) -> RemoteTicket:
        return self._ticket(await self._get_one(ref))

    async def _update(self, ref: RemoteRef, fields: dict[str, Any], out: str) -> dict[str, Any]:
        body = await self._op("core/update", **{"class": self.config.ticket_class},
                              key=ref.id, fields=fields, output_fields=out)
        objs = self._objects(body)
        if not objs:
            http.fail("core/update answered without the object", self.name)
        return objs[0]

    async def _stimulus(self, ref: RemoteRef, stimulus: str, fields: dict[str, Any]) -> None:
        await self._op("core/apply_stimulus", **{"class": self.config.ticket_class},
                       key=ref.id, stimulus=stimulus, fields=fields,
                       output_fields="id,status")

    async def patch_ticket(self, ref: RemoteRef, patch: TicketPatch) -> RemoteTicket:
        if patch.status in ("resolved", "closed"):
            return await self.close_ticket(ref)
        if patch.status == "pending":
            await self._stimulus(ref, "ev_pending", {"pending_reason": "Waiting for customer"})
        elif patch.status not in (None, "open"):
            raise ValidationError(f"no iTop stimulus for {patch.status!r}", backend=self.name)
        fields: dict[str, Any] = {self.config.custom_field_mappings.get(k, k): v
                                  for k, v in patch.fields.items()}
        if patch.priority is not None:
            fields["urgency"] = PRIORITY.get(patch.priority, "3")
        if patch.assignee is not None:
            fields["agent_id"] = patch.assignee
        if fields:
            await self._update(ref, fields, READ_FIELDS)
        return await self.get_ticket(ref)

    async def close_ticket(self, ref: RemoteRef, resolution: str | None = None) -> RemoteTicket:
        cfg = self.config
        current = await self.get_ticket(ref)
        if current.status_raw == "new" and cfg.team_id and cfg.agent_id:
            # ev_resolve is only valid once the request is assigned.
            await self._stimulus(ref, "ev_assign",
                                 {"team_id": cfg.team_id, "agent_id": cfg.agent_id})
        fields: dict[str, Any] = {"solution": resolution or "Resolved via mailticket."}
        if cfg.service_id:
            fields["service_id"] = cfg.service_id
        if cfg.resolution_code:
            fields["resolution_code"] = cfg.resolution_code
        if current.status_raw not in ("resolved", "closed"):
            await self._stimulus(ref, "ev_resolve", fields)
        if cfg.also_close and current.status_raw != "closed":
            await self._stimulus(ref, "ev_close", {})
        return await self.get_ticket(ref)

    async def create_comment(self, ref: RemoteRef, comment: CommentDraft, *, op_key: str) -> str:
        log = "public_log" if comment.public else "private_log"
        item = ({"message": comment.html, "format": "html"} if comment.html
                else {"message": comment.text, "format": "text"})
        obj = await self._update(ref, {log: {"add_item": item}}, log)
        entries = ((obj.get("fields") or {}).get(log) or {}).get("entries") or []
        # Case log entries have no ids: name one by its position, oldest first.
        return f"{log}:{max(len(entries) - 1, 0)}"

    async def list_comments(self, ref: RemoteRef) -> list[RemoteComment]:
        fields = (await self._get_one(ref, "public_log,private_log")).get("fields") or {}
        out = []
        for log in ("public_log", "private_log"):
            for i, e in enumerate((fields.get(log) or {}).get("entries") or []):
                when = datetime.strptime(e["date"], STAMP).replace(tzinfo=UTC) if e.get(
                    "date") else None
                ours = bool(self.config.auth_user) and e.get("user_login") == self.config.auth_user
                out.append(RemoteComment(ref, f"{log}:{i}", str(e.get("message", "")),
                                         log == "public_log", e.get("user_login"), when,
                                         op_key="ours" if ours else None))
        return out

    async def create_attachment(
        self, ref: RemoteRef, attachment: AttachmentDraft, *, public: bool, op_key: str
    ) -> str:
        ticket = await self._get_one(ref, "id,org_id")
        body = await self._op("core/create", **{"class": "Attachment"}, output_fields="id",
                              fields={
            "item_class": self.config.ticket_class, "item_id": ref.id,
            "item_org_id": (ticket.get("fields") or {}).get("org_id") or self.config.org_id,
            "contents": {"data": base64.b64encode(attachment.data).decode(),
                         "filename": attachment.filename, "mimetype": attachment.content_type},
        })
        objs = self._objects(body)
        if not objs:
            http.fail("Attachment create answered without the object", self.name)
        return str(objs[0]["key"])

    async def query_tickets(
        self, *, updated_since: datetime | None, cursor: str | None = None, limit: int = 100
    ) -> Page:
        # iTop stores local server time; the instance is expected to run in UTC.
        oql = f"SELECT {self.config.ticket_class}"
        if updated_since is not None:
            since = updated_since.astimezone(UTC) if updated_since.tzinfo else updated_since
            oql += f" WHERE last_update > '{since.strftime(STAMP)}'"
        page = int(cursor or 1)
        body = await self._op("core/get", **{"class": self.config.ticket_class}, key=oql,
                              output_fields=READ_FIELDS, limit=limit, page=page)
        items = [self._ticket(o) for o in self._objects(body)]
        items.sort(key=lambda t: (t.updated_at or datetime.min.replace(tzinfo=UTC)))
        return Page(items, str(page + 1) if len(items) >= limit else None)


__all__ = ["ITopBackend", "ITopConfig"]
