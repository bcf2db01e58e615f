"""ServiceNow incidents over the Table API.

Our op key goes into `correlation_id`, and "mailticket TKT-…" into `correlation_display`
(also the description's footer), so that a create whose answer was lost can be found again
before retrying and agents see which local ticket it is. Customer-visible comments are the
`comments` journal, internal notes the `work_notes` journal; both are written by a PATCH on
the incident, which answers with the incident and not the journal entry, so the entry id is
read back from sys_journal_field. Each entry ends with a footer `[mailticket ref m2t-…]`: a
lost answer's entry is found by it (valueLIKE), and our entries are told apart from the
agents' by it, not by the user name. The caller is the sys_user with the requester's
address (or a new one, or `caller_id`). ServiceNow has no signed webhooks: poll.
"""

from __future__ import annotations

from collections.abc import Sequence
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
    marker_in,
    op_marker,
    text_with_footer,
)
from mailticket.backends.errors import AuthError, Unsupported, ValidationError

STAMP = "%Y-%m-%d %H:%M:%S"
STATES: dict[str, Normalized] = {
    "1": Normalized.open,
    "2": Normalized.open,
    "3": Normalized.pending,
    "6": Normalized.resolved,
    "7": Normalized.closed,
    "8": Normalized.canceled,
}
LOCAL_TO_STATE = {"open": "2", "pending": "3", "resolved": "6", "closed": "7", "canceled": "8"}
# Local priority -> (urgency, impact); ServiceNow derives priority from the pair.
PRIORITY = {"critical": ("1", "1"), "high": ("1", "2"), "normal": ("2", "2"), "low": ("3", "3")}
READ_FIELDS = "sys_id,number,state,close_code,close_notes,sys_updated_on"
OURS = "mailticket"  # correlation_display starts with it on every incident we created


class ServiceNowConfig(BackendConfig):
    base_url: str  # https://<instance>.service-now.com
    username: str | None = None
    password: SecretStr | None = None
    api_key: SecretStr | None = None  # x-sn-apikey, when token auth is enabled
    table: str = "incident"
    caller_id: str | None = None  # when no sys_user has the requester's address
    create_requester: bool = False  # create a sys_user for an unknown requester
    assignment_group: str | None = None
    contact_type: str = "email"
    close_code: str = "Solved (Permanently)"
    close_notes: str = "Resolved via mailticket"
    # Poll only incidents we created (correlation_display=mailticket).
    poll_only_ours: bool = True


def _error_message(body: Any) -> str | None:
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        err = body["error"]
        parts = [str(err[k]) for k in ("message", "detail") if err.get(k)]
        return ": ".join(parts) or None
    return http.default_message(body)


def _value(record: dict[str, Any], field: str) -> str:
    """Plain or `sysparm_display_value=all` shape ({"value", "display_value"})."""
    raw = record.get(field)
    if isinstance(raw, dict):
        return str(raw.get("value") or "")
    return "" if raw is None else str(raw)


def _stamp(value: str) -> datetime | None:
    try:
        return datetime.strptime(value, STAMP).replace(tzinfo=UTC)
    except ValueError:
        return None


class ServiceNowBackend(TicketBackend[ServiceNowConfig]):
    kind = "servicenow"
    Config = ServiceNowConfig
    capabilities = frozenset(
        {Cap.INTERNAL_NOTES, Cap.ATTACHMENTS, Cap.CLOSE, Cap.EXTERNAL_ID_LOOKUP, Cap.POLLING}
    )

    @property
    def _base(self) -> str:
        return self.config.base_url.rstrip("/") + "/api/now"

    def _auth(self) -> dict[str, Any]:
        cfg = self.config
        headers = {"Accept": "application/json"}
        if cfg.api_key is not None:
            headers["x-sn-apikey"] = cfg.api_key.get_secret_value()
            return {"headers": headers}
        if cfg.username is None or cfg.password is None:
            raise AuthError("configure username+password or api_key", backend=self.name)
        return {"headers": headers, "auth": (cfg.username, cfg.password.get_secret_value())}

    async def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        return http.body_of(await self._send(method, path, **kwargs))

    async def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        opts = self._auth()
        opts["headers"].update(kwargs.pop("headers", {}))
        try:
            resp = await http.request(
                self.client, method, self._base + path, backend=self.name,
                extract_message=_error_message, **opts, **kwargs,
            )
        except AuthError as exc:
            # ServiceNow answers data-policy violations (mandatory fields) with 403 too.
            if exc.status == 403 and "Data Policy" in str(exc):
                raise ValidationError(
                    _error_message(exc.raw) or "data policy", backend=self.name,
                    status=403, raw=exc.raw,
                ) from exc
            raise
        return resp

    def _ref(self, record: dict[str, Any]) -> RemoteRef:
        sys_id = _value(record, "sys_id")
        if not sys_id:
            http.fail(f"answer without sys_id: {record!r:.200}", self.name)
        url = f"{self.config.base_url.rstrip('/')}/nav_to.do?uri={self.config.table}.do?sys_id={sys_id}"
        return RemoteRef(self.name, sys_id, _value(record, "number") or None, url)

    def _ticket(self, record: dict[str, Any]) -> RemoteTicket:
        state = _value(record, "state")
        return RemoteTicket(
            ref=self._ref(record),
            status_raw=state,
            status=self.normalize_status(state, STATES),
            updated_at=_stamp(_value(record, "sys_updated_on")),
            raw=record,
            resolution=_value(record, "close_notes").strip() or None,
        )

    @staticmethod
    def _result(body: Any) -> Any:
        return body.get("result") if isinstance(body, dict) else None

    async def test_connection(self) -> str:
        try:
            await self._call("GET", f"/table/{self.config.table}",
                             params={"sysparm_limit": "1", "sysparm_fields": "sys_id"})
        except AuthError as exc:
            who = self.config.username or "the API key"
            raise AuthError(
                f"ServiceNow at {self.config.base_url} rejected {who}: {exc}",
                backend=self.name, status=exc.status, raw=exc.raw,
            ) from exc
        return f"ServiceNow {self.config.base_url}: table {self.config.table} readable"

    async def refresh_reference_data(self) -> ReferenceData:
        cfg = self.config
        groups = self._result(await self._call("GET", "/table/sys_user_group", params={
            "sysparm_query": "active=true", "sysparm_fields": "sys_id,name"})) or []
        data: ReferenceData = {"groups": {_value(g, "sys_id"): _value(g, "name") for g in groups}}
        for kind, element in (("states", "state"), ("close_codes", "close_code")):
            rows = self._result(await self._call("GET", "/table/sys_choice", params={
                "sysparm_query": f"name={cfg.table}^element={element}^inactive=false",
                "sysparm_fields": "value,label"})) or []
            data[kind] = {_value(r, "value"): _value(r, "label") for r in rows}
        if cfg.assignment_group and cfg.assignment_group not in data["groups"]:
            raise ValidationError(f"assignment_group {cfg.assignment_group} is not an active "
                                  "group (sys_user_group)", backend=self.name)
        if data["close_codes"] and cfg.close_code not in data["close_codes"]:
            raise ValidationError(f"close_code {cfg.close_code!r} is not a close code of "
                                  f"{cfg.table} (known: {', '.join(data['close_codes'])})",
                                  backend=self.name)
        return data

    async def _caller(self, draft: TicketDraft) -> str | None:
        email = (draft.requester_email or "").strip()
        # An encoded query cannot quote: an address with ^ or = is never spliced into one.
        if email and "^" not in email and "=" not in email:
            rows = self._result(await self._call("GET", "/table/sys_user", params={
                "sysparm_query": f"email={email}", "sysparm_limit": "1",
                "sysparm_fields": "sys_id"})) or []
            if rows:
                return _value(rows[0], "sys_id")
            if self.config.create_requester:
                name = (draft.requester_name or email.split("@")[0]).strip()
                first, _, last = name.rpartition(" ")
                made = self._result(await self._call("POST", "/table/sys_user", json={
                    "user_name": email, "email": email, "first_name": first or name,
                    "last_name": last or name}, params={"sysparm_fields": "sys_id"}))
                if isinstance(made, dict) and _value(made, "sys_id"):
                    return _value(made, "sys_id")
        return self.config.caller_id or None

    async def create_ticket(self, draft: TicketDraft, *, op_key: str) -> RemoteRef:
        cfg = self.config
        urgency, impact = PRIORITY.get(draft.priority, PRIORITY["normal"])
        body: dict[str, Any] = {
            "short_description": draft.subject[:160],
            "description": text_with_footer(draft.text, op_key, draft.local_number),
            "contact_type": cfg.contact_type,
            "urgency": urgency,
            "impact": impact,
            "correlation_id": op_key[:100],
            "correlation_display": f"{OURS} {draft.local_number or ''}".strip()[:100],
        }
        caller = await self._caller(draft)
        if caller:
            body["caller_id"] = caller
        if cfg.assignment_group:
            body["assignment_group"] = cfg.assignment_group
        # push_to_backend hands over remote field names already; local names still map.
        for name, value in draft.custom_fields.items():
            body[cfg.custom_field_mappings.get(name, name)] = value
        out = await self._call("POST", f"/table/{cfg.table}", json=body,
                               params={"sysparm_fields": "sys_id,number,state"})
        return self._ref(self._result(out) or {})

    async def find_by_op_key(self, op_key: str) -> RemoteRef | None:
        out = await self._call("GET", f"/table/{self.config.table}", params={
            "sysparm_query": f"correlation_id={op_key[:100]}",
            "sysparm_limit": "1", "sysparm_fields": "sys_id,number",
        })
        rows = self._result(out) or []
        return self._ref(rows[0]) if rows else None

    async def get_ticket(self, ref: RemoteRef) -> RemoteTicket:
        out = await self._call("GET", f"/table/{self.config.table}/{ref.id}", params={
            "sysparm_display_value": "all", "sysparm_fields": READ_FIELDS,
        })
        return self._ticket(self._result(out) or {})

    async def missing_tickets(self, refs: Sequence[RemoteRef]) -> set[str]:
        ids = [r.id for r in refs if r.id.isalnum()]
        if not ids:
            return set()
        rows = self._result(await self._call("GET", f"/table/{self.config.table}", params={
            "sysparm_query": f"sys_idIN{','.join(ids)}", "sysparm_fields": "sys_id",
            "sysparm_limit": str(len(ids))})) or []
        return set(ids) - {_value(r, "sys_id") for r in rows}

    async def _patch(self, ref: RemoteRef, body: dict[str, Any]) -> dict[str, Any]:
        out = await self._call("PATCH", f"/table/{self.config.table}/{ref.id}", json=body,
                               params={"sysparm_fields": READ_FIELDS})
        result = self._result(out)
        if not isinstance(result, dict):
            http.fail("PATCH answered without a result", self.name)
        return result

    async def patch_ticket(self, ref: RemoteRef, patch: TicketPatch) -> RemoteTicket:
        if patch.status in ("resolved", "closed"):
            return await self.close_ticket(ref)
        body: dict[str, Any] = {}
        if patch.status is not None:
            if patch.status not in LOCAL_TO_STATE:
                raise Unsupported(f"no ServiceNow state for {patch.status!r}",
                                  backend=self.name)
            if patch.status == "open":
                current = await self.get_ticket(ref)
                if current.status in (Normalized.closed, Normalized.canceled):
                    raise Unsupported(f"a {current.status.value} incident cannot be reopened",
                                      backend=self.name)
            body["state"] = LOCAL_TO_STATE[patch.status]
        if patch.priority is not None:
            body["urgency"], body["impact"] = PRIORITY.get(patch.priority, PRIORITY["normal"])
        if patch.assignee is not None:
            body["assigned_to"] = patch.assignee
        for local, value in patch.fields.items():
            body[self.config.custom_field_mappings.get(local, local)] = value
        return self._ticket(await self._patch(ref, body))

    async def close_ticket(self, ref: RemoteRef, resolution: str | None = None) -> RemoteTicket:
        return self._ticket(await self._patch(ref, {
            "state": "6",
            "close_code": self.config.close_code,
            "close_notes": resolution or self.config.close_notes,
        }))

    async def create_comment(self, ref: RemoteRef, comment: CommentDraft, *, op_key: str) -> str:
        element = "comments" if comment.public else "work_notes"
        record = await self._patch(ref, {element: text_with_footer(comment.text, op_key)})
        # The PATCH does not name the journal entry it made; read the newest one back.
        out = await self._call("GET", "/table/sys_journal_field", params={
            "sysparm_query": f"element_id={ref.id}^element={element}^ORDERBYDESCsys_created_on",
            "sysparm_limit": "1", "sysparm_fields": "sys_id",
        })
        rows = self._result(out) or []
        if rows:
            return _value(rows[0], "sys_id")
        return f"{ref.id}:{element}:{_value(record, 'sys_updated_on')}"

    async def find_comment_by_op_key(self, ref: RemoteRef, op_key: str) -> str | None:
        marker = op_marker(op_key)
        body = await self._call("GET", "/table/sys_journal_field", params={
            "sysparm_query": f"element_id={ref.id}^valueLIKE{marker}",
            "sysparm_fields": "sys_id,value",
        })
        for row in self._result(body) or []:
            if marker_in(_value(row, "value")) == marker:
                return _value(row, "sys_id")
        return None

    async def list_comments(self, ref: RemoteRef) -> list[RemoteComment]:
        """Both journals, oldest first; ours end with the marker we wrote."""
        out: list[RemoteComment] = []
        for element in ("comments", "work_notes"):
            body = await self._call("GET", "/table/sys_journal_field", params={
                "sysparm_query": f"element_id={ref.id}^element={element}^ORDERBYsys_created_on",
                "sysparm_fields": "sys_id,value,sys_created_on,sys_created_by",
            })
            for row in self._result(body) or []:
                text = _value(row, "value")
                out.append(RemoteComment(
                    ref, _value(row, "sys_id"), text, element == "comments",
                    _value(row, "sys_created_by") or None,
                    _stamp(_value(row, "sys_created_on")), op_key=marker_in(text),
                ))
        out.sort(key=lambda c: c.created_at or datetime.min.replace(tzinfo=UTC))
        return out

    async def create_attachment(
        self, ref: RemoteRef, attachment: AttachmentDraft, *, public: bool, op_key: str
    ) -> str:
        out = await self._call(
            "POST", "/attachment/file",
            params={"table_name": self.config.table, "table_sys_id": ref.id,
                    "file_name": attachment.filename},
            headers={"Content-Type": attachment.content_type or "application/octet-stream"},
            content=attachment.data,
        )
        result = self._result(out)
        if not isinstance(result, dict) or not result.get("sys_id"):
            http.fail("attachment answer without sys_id", self.name)
        return str(result["sys_id"])

    async def query_tickets(
        self, *, updated_since: datetime | None, cursor: str | None = None, limit: int = 100
    ) -> Page:
        terms = []
        if updated_since is not None:
            since = updated_since.astimezone(UTC) if updated_since.tzinfo else updated_since
            terms.append(f"sys_updated_on>{since.strftime(STAMP)}")
        if self.config.poll_only_ours:
            terms.append(f"correlation_displaySTARTSWITH{OURS}")
        terms.append("ORDERBYsys_updated_on")
        offset = int(cursor or 0)
        resp = await self._send("GET", f"/table/{self.config.table}", params={
            "sysparm_query": "^".join(terms), "sysparm_fields": READ_FIELDS,
            "sysparm_limit": str(limit), "sysparm_offset": str(offset),
        })
        rows = self._result(http.body_of(resp)) or []
        has_next = 'rel="next"' in resp.headers.get("link", "")
        items = [self._ticket(r) for r in rows]
        return Page(items, str(offset + len(rows)) if has_next and rows else None)


__all__ = ["ServiceNowBackend", "ServiceNowConfig"]
