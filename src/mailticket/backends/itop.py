"""Combodo iTop user requests over the single REST endpoint (`rest.php?version=1.3`).

Every call is a form POST with `json_data` and the credentials; every answer is HTTP 200 and
the JSON `code` carries the outcome (1 unauthorized, 100 everything else including
validation and invalid stimuli). Anything that is not such a JSON answer (HTTP 500
text/html while the database is down, a proxy's page) is a transient failure.

A stock UserRequest has no field for an outside key (`external_ref` does not exist), so the
description ends with a footer `[mailticket TKT-… ref m2t-…]`: it shows iTop's users which
local ticket this is, and `find_by_op_key` finds it again with OQL `LIKE` after a lost
answer. Each case-log entry we write ends with its own footer, which is how
`find_comment_by_op_key` finds a comment whose answer was lost and how our own entries are
told apart from the agents' (an entry's `user_login` is the author's display name, so names
prove nothing). A site that added a dedicated field may name it in `op_key_field`.

The caller is the iTop Person whose email is the requester's; else `caller_id`, or a new
Person when `create_requester` asks for one. iTop stores dates in the server's time zone
(`timezone`, Europe/Paris on a default install). "Invalid object X::id" is iTop's wording
for any bad external key in a request, so only "Invalid object <ticket class>::<id>" counts
as the ticket being gone, and even that is confirmed by a read (delivery.py).
"""

from __future__ import annotations

import base64
import html
import json
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import SecretStr, field_validator

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
    html_with_footer,
    marker_in,
    op_marker,
    text_with_footer,
)
from mailticket.backends.errors import (
    AuthError,
    Conflict,
    NotFound,
    Transient,
    Unsupported,
    ValidationError,
)

STATUSES: dict[str, Normalized] = {
    "new": Normalized.open, "assigned": Normalized.open, "escalated_tto": Normalized.open,
    "escalated_ttr": Normalized.open, "waiting_for_approval": Normalized.pending,
    "approved": Normalized.open, "dispatched": Normalized.open,
    "redispatched": Normalized.open, "reopened": Normalized.open,
    "pending": Normalized.pending, "resolved": Normalized.resolved,
    "closed": Normalized.closed, "rejected": Normalized.canceled,
}
# States from which ev_resolve / ev_pending need an ev_assign first.
UNASSIGNED = ("new", "escalated_tto")
PRIORITY = {"critical": "1", "high": "2", "normal": "3", "low": "4"}
STAMP = "%Y-%m-%d %H:%M:%S"
READ_FIELDS = "id,ref,status,last_update,org_id,solution"
_INVALID_OBJECT = re.compile(r"Invalid object (\w+)::(\S+)", re.I)
_TAGS = re.compile(r"<[^>]+>")


class ITopConfig(BackendConfig):
    base_url: str  # the iTop root, e.g. https://itop.example.org
    auth_user: str | None = None
    auth_pwd: SecretStr | None = None
    auth_token: SecretStr | None = None  # authent-token module, iTop >= 3.1
    ticket_class: str = "UserRequest"
    org_id: str  # an id, or OQL such as SELECT Organization WHERE name='X'
    # The caller when no Person has the requester's email (empty: no caller).
    caller_id: str | None = None
    # Create a Person (in org_id) for a requester iTop does not know yet.
    create_requester: bool = False
    origin: str = "mail"
    # A field the site added to the ticket class for our op key. Stock iTop has none: the
    # description footer carries it instead.
    op_key_field: str | None = None
    team_id: str | None = None  # for ev_assign; empty is accepted by iTop
    agent_id: str | None = None
    service_id: str | None = None
    resolution_code: str | None = None
    also_close: bool = False  # follow ev_resolve with ev_close
    # Local "open" from these states: the stimulus that gets there.
    reopen_stimuli: dict[str, str] = {"resolved": "ev_reopen", "pending": "ev_assign"}
    comment: str = "mailticket"  # iTop's change-tracking comment on every write
    # iTop's `timezone` setting: dates in the API are local time of the server.
    timezone: str = "Europe/Paris"

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value


def _to_html(text: str) -> str:
    return "<p>" + html.escape(text).replace("\n", "<br>") + "</p>"


def _oql_string(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _plain(body: Any) -> str | None:
    """The words of an HTML error page (iTop's own 500 page, or a proxy's)."""
    if isinstance(body, str):
        text = " ".join(html.unescape(_TAGS.sub(" ", body)).split())
        return text or None
    return http.default_message(body)


class ITopBackend(TicketBackend[ITopConfig]):
    kind = "itop"
    Config = ITopConfig
    capabilities = frozenset({
        Cap.INTERNAL_NOTES, Cap.ATTACHMENTS, Cap.CLOSE, Cap.EXTERNAL_ID_LOOKUP, Cap.POLLING,
        Cap.HTML_BODY, Cap.REFERENCE_DATA,
    })

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.config.timezone)

    def _when(self, value: Any) -> datetime | None:
        if not value:
            return None
        try:
            local = datetime.strptime(str(value), STAMP)
        except ValueError:
            return None
        return local.replace(tzinfo=self.zone).astimezone(UTC)

    def _stamp(self, when: datetime) -> str:
        aware = when if when.tzinfo else when.replace(tzinfo=UTC)
        return aware.astimezone(self.zone).strftime(STAMP)

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
            ambiguous=operation not in ("core/get", "list_operations"), extract_message=_plain,
            data={"json_data": json.dumps(payload), **self._auth()},
        )
        body = http.body_of(resp)
        if not isinstance(body, dict) or "code" not in body:
            # The REST layer always answers JSON: this came from a failing web server.
            raise Transient(f"{operation}: not an iTop REST answer: {_plain(body)!r:.200}",
                            backend=self.name, status=resp.status_code, raw=body)
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
        invalid = _INVALID_OBJECT.search(str(message))
        if code == 100 and invalid is not None:
            if invalid.group(1) == self.config.ticket_class:
                raise NotFound(text, backend=self.name, status=200, raw=raw)
            raise ValidationError(
                f"{text} (an id the request names does not exist: check the instance's "
                "org_id, caller_id, team_id, agent_id and service_id)",
                backend=self.name, status=200, raw=raw)
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
        solution = str(fields.get("solution") or "").strip() or None
        return RemoteTicket(self._ref(obj), status, self.normalize_status(status, STATUSES),
                            self._when(fields.get("last_update")), obj, resolution=solution)

    async def _select(self, cls: str, oql: str, fields: str, limit: int = 0) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"class": cls, "key": oql, "output_fields": fields}
        if limit:
            params["limit"] = limit
        return self._objects(await self._op("core/get", **params))

    async def _get_one(self, ref: RemoteRef, fields: str = READ_FIELDS) -> dict[str, Any]:
        body = await self._op("core/get", **{"class": self.config.ticket_class},
                              key=ref.id, output_fields=fields)
        objs = self._objects(body)
        if not objs:
            raise NotFound(f"{self.config.ticket_class} {ref.id} not found", backend=self.name,
                           status=200, raw=body)
        return objs[0]

    def default_statuses(self) -> dict[str, Normalized]:
        return STATUSES

    async def test_connection(self) -> str:
        try:
            await self._op("list_operations")
        except AuthError as exc:
            who = self.config.auth_user or "the token"
            raise AuthError(f"iTop at {self.config.base_url} rejected {who} (bad password, or "
                            f"the user lacks the REST Services User profile): {exc.args[0]}",
                            backend=self.name, status=exc.status, raw=exc.raw) from exc
        return f"iTop {self.config.base_url}: REST 1.3 reachable"

    async def refresh_reference_data(self) -> ReferenceData:
        data: ReferenceData = {}
        for kind, cls in (("organizations", "Organization"), ("teams", "Team"),
                          ("services", "Service")):
            rows = await self._select(cls, f"SELECT {cls}", "id,name")
            data[kind] = {str(o["key"]): str((o.get("fields") or {}).get("name", ""))
                          for o in rows}
        cfg = self.config
        for setting, kind, value in (("org_id", "organizations", cfg.org_id),
                                     ("team_id", "teams", cfg.team_id),
                                     ("service_id", "services", cfg.service_id)):
            if value and value.isdigit() and value not in data[kind]:
                raise ValidationError(f"{setting} {value} is not an iTop {kind[:-1]} "
                                      f"(known: {', '.join(sorted(data[kind])) or 'none'})",
                                      backend=self.name)
        for setting, value in (("agent_id", cfg.agent_id), ("caller_id", cfg.caller_id)):
            if value and value.isdigit() and not await self._select(
                    "Person", f"SELECT Person WHERE id = {value}", "id"):
                raise ValidationError(f"{setting} {value} is not an iTop Person",
                                      backend=self.name)
        return data

    async def _caller(self, draft: TicketDraft) -> str | None:
        """The Person whose email is the requester's; else the configured default, or a
        new Person when the instance asks for one."""
        email = (draft.requester_email or "").strip()
        if email:
            found = await self._select("Person", f"SELECT Person WHERE email = {_oql_string(email)}",
                                       "id", limit=1)
            if found:
                return str(found[0]["key"])
            if self.config.create_requester:
                name = (draft.requester_name or email.split("@")[0]).strip()
                first, _, last = name.rpartition(" ")
                body = await self._op("core/create", **{"class": "Person"}, output_fields="id",
                                      fields={"name": last or name, "first_name": first,
                                              "email": email, "org_id": self.config.org_id})
                made = self._objects(body)
                if made:
                    return str(made[0]["key"])
        return self.config.caller_id or None

    async def create_ticket(self, draft: TicketDraft, *, op_key: str) -> RemoteRef:
        cfg = self.config
        body_html = draft.html or _to_html(draft.text)
        fields: dict[str, Any] = {
            "org_id": cfg.org_id, "title": draft.subject[:255],
            "description": html_with_footer(body_html, op_key, draft.local_number),
            "origin": cfg.origin, "urgency": PRIORITY.get(draft.priority, "3"),
        }
        caller = await self._caller(draft)
        if caller:
            fields["caller_id"] = caller
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
        cls, field = self.config.ticket_class, self.config.op_key_field
        if field:
            if not re.fullmatch(r"[A-Za-z0-9_-]+", op_key):
                return None  # never spliced into OQL
            oql = f"SELECT {cls} WHERE {field} = '{op_key}'"
        else:
            oql = f"SELECT {cls} WHERE description LIKE '%{op_marker(op_key)}]%'"
        objs = await self._select(cls, oql, "id,ref", limit=1)
        return self._ref(objs[0]) if objs else None

    async def get_ticket(self, ref: RemoteRef) -> RemoteTicket:
        return self._ticket(await self._get_one(ref))

    async def missing_tickets(self, refs: Sequence[RemoteRef]) -> set[str]:
        ids = [r.id for r in refs if r.id.isdigit()]
        if not ids:
            return set()
        cls = self.config.ticket_class
        found = await self._select(cls, f"SELECT {cls} WHERE id IN ({','.join(ids)})", "id")
        return set(ids) - {str(o["key"]) for o in found}

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

    def _assignment(self) -> dict[str, Any]:
        # iTop accepts ev_assign with neither team nor agent, so a new request can always
        # be taken through assigned to resolved.
        cfg = self.config
        return {k: v for k, v in (("team_id", cfg.team_id), ("agent_id", cfg.agent_id)) if v}

    async def patch_ticket(self, ref: RemoteRef, patch: TicketPatch) -> RemoteTicket:
        if patch.status in ("resolved", "closed"):
            return await self.close_ticket(ref)
        if patch.status is not None:
            await self._move_to(ref, patch.status)
        fields: dict[str, Any] = {self.config.custom_field_mappings.get(k, k): v
                                  for k, v in patch.fields.items()}
        if patch.priority is not None:
            fields["urgency"] = PRIORITY.get(patch.priority, "3")
        if patch.assignee is not None:
            fields["agent_id"] = patch.assignee
        if fields:
            await self._update(ref, fields, READ_FIELDS)
        return await self.get_ticket(ref)

    async def _move_to(self, ref: RemoteRef, status: str) -> None:
        current = (await self.get_ticket(ref)).status_raw
        if status == "open":
            if STATUSES.get(current) is Normalized.open:
                return
            stimulus = self.config.reopen_stimuli.get(current)
            if stimulus is None:
                raise Unsupported(f"iTop offers no way from {current!r} back to an open "
                                  "request (a closed request stays closed)", backend=self.name)
            await self._stimulus(ref, stimulus,
                                 self._assignment() if stimulus == "ev_assign" else {})
        elif status == "pending":
            if current == "pending":
                return
            if current in UNASSIGNED:
                await self._stimulus(ref, "ev_assign", self._assignment())
            await self._stimulus(ref, "ev_pending", {"pending_reason": "Waiting for customer"})
        else:
            raise Unsupported(f"iTop has no stimulus for the local status {status!r}",
                              backend=self.name)

    async def close_ticket(self, ref: RemoteRef, resolution: str | None = None) -> RemoteTicket:
        cfg = self.config
        current = await self.get_ticket(ref)
        if current.status_raw in UNASSIGNED:
            # ev_resolve is only valid once the request is assigned.
            await self._stimulus(ref, "ev_assign", self._assignment())
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
        item = ({"message": html_with_footer(comment.html, op_key), "format": "html"}
                if comment.html else
                {"message": text_with_footer(comment.text, op_key), "format": "text"})
        obj = await self._update(ref, {log: {"add_item": item}}, log)
        entries = ((obj.get("fields") or {}).get(log) or {}).get("entries") or []
        # Case log entries have no ids: name ours by its position, oldest first.
        for i in range(len(entries) - 1, -1, -1):
            if self._marker(entries[i]) == op_marker(op_key):
                return f"{log}:{i}"
        return f"{log}:{max(len(entries) - 1, 0)}"

    @staticmethod
    def _marker(entry: dict[str, Any]) -> str | None:
        return marker_in(str(entry.get("message_html") or "")) or marker_in(
            str(entry.get("message") or ""))

    async def list_comments(self, ref: RemoteRef) -> list[RemoteComment]:
        fields = (await self._get_one(ref, "public_log,private_log")).get("fields") or {}
        out = []
        for log in ("public_log", "private_log"):
            for i, e in enumerate((fields.get(log) or {}).get("entries") or []):
                # `user_login` holds the author's display name once the account has a
                # contact: shown, but never used to decide whose entry it is.
                out.append(RemoteComment(ref, f"{log}:{i}", str(e.get("message", "")),
                                         log == "public_log", e.get("user_login"),
                                         self._when(e.get("date")), op_key=self._marker(e)))
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
        oql = f"SELECT {self.config.ticket_class}"
        if updated_since is not None:
            oql += f" WHERE last_update > '{self._stamp(updated_since)}'"
        page = int(cursor or 1)
        body = await self._op("core/get", **{"class": self.config.ticket_class}, key=oql,
                              output_fields=READ_FIELDS, limit=limit, page=page)
        items = [self._ticket(o) for o in self._objects(body)]
        items.sort(key=lambda t: (t.updated_at or datetime.min.replace(tzinfo=UTC)))
        return Page(items, str(page + 1) if len(items) >= limit else None)


__all__ = ["ITopBackend", "ITopConfig"]
