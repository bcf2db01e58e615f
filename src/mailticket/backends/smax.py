"""OpenText (Micro Focus) SMAX requests over the EMS REST API.

Sign-in trades user and password for a token that travels as a cookie (`LWSSO_COOKIE_KEY`
from `/authenticate/login`, or `SMAX_AUTH_TOKEN` from `/authenticate/token`); on a 401 we
sign in again once, since tokens expire under us. Writes go through `ems/bulk`, whose HTTP
status says little: `meta.completion_status` and each entity's `completion_status` are
the outcome. No webhooks and no idempotency: the op key goes into a request property
(`ExternalProcessReference`, stock, by default) that `find_by_op_key` filters on; the
description's footer names our ticket, and each comment's footer `[mailticket ref m2t-…]`
is how a comment whose answer was lost is found again and how ours are told apart. The
requester is the Person with the address (or a new Person, or `requested_by_person`).
Status is polled by `LastUpdateTime` (epoch milliseconds).
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Sequence
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
    html_with_footer,
    marker_in,
)
from mailticket.backends.errors import (
    AuthError,
    Conflict,
    NotFound,
    Unsupported,
    ValidationError,
)

PHASES: dict[str, Normalized] = {
    "Log": Normalized.open, "Classify": Normalized.open, "Escalate": Normalized.open,
    "Fulfill": Normalized.open, "Review": Normalized.resolved, "Accept": Normalized.resolved,
    "Close": Normalized.closed, "Abandon": Normalized.canceled,
}
LAYOUT = "Id,DisplayLabel,Status,PhaseId,LastUpdateTime,Solution"
PRIORITY = {"critical": "CriticalPriority", "high": "HighPriority",
            "normal": "MediumPriority", "low": "LowPriority"}
_SAFE = re.compile(r"[A-Za-z0-9_.:-]+")


class SmaxConfig(BackendConfig):
    base_url: str  # https://smax.example.org
    tenant_id: str
    login: str
    password: SecretStr
    auth_mode: Literal["lwsso", "token"] = "lwsso"
    # RequestedByPerson when no Person has the requester's address (a Person Id).
    requested_by_person: str | None = None
    create_requester: bool = False  # create a Person for an unknown requester
    submitter_user_id: str | None = None
    op_key_field: str = "ExternalProcessReference"
    close_phase: str = "Close"
    close_status: str = "RequestStatusComplete"
    completion_code: str = "CompletionCodeFulfilled"
    # A resolved request (Review/Accept) goes back to work here; a closed one cannot.
    reopen_phase: str = "Fulfill"
    reopen_status: str = "RequestStatusInProgress"


class SmaxBackend(TicketBackend[SmaxConfig]):
    kind = "smax"
    Config = SmaxConfig
    capabilities = frozenset({
        Cap.INTERNAL_NOTES, Cap.ATTACHMENTS, Cap.CLOSE, Cap.EXTERNAL_ID_LOOKUP, Cap.POLLING,
        Cap.HTML_BODY,
    })

    def __init__(self, instance: str, config: SmaxConfig, *,
                 client: httpx.AsyncClient | None = None) -> None:
        super().__init__(instance, config, client=client)
        self._token: str | None = None
        self.logins = 0

    @property
    def _host(self) -> str:
        return self.config.base_url.rstrip("/")

    async def _login(self) -> str:
        cfg = self.config
        path = "login" if cfg.auth_mode == "lwsso" else "token"
        url = f"{self._host}/auth/authentication-endpoint/authenticate/{path}"
        try:
            resp = await http.request(
                self.client, "POST", url, backend=self.name, ambiguous=False,
                params={"TENANTID": cfg.tenant_id},
                json={"login": cfg.login, "password": cfg.password.get_secret_value()},
            )
        except AuthError as exc:
            raise AuthError(f"SMAX sign-in refused for {cfg.login} on tenant {cfg.tenant_id}: "
                            f"{exc.args[0]}", backend=self.name, status=exc.status,
                            raw=exc.raw) from exc
        token = resp.text.strip().strip('"')
        if not token:
            http.fail("sign-in answered without a token", self.name, resp)
        self.logins += 1
        self._token = token
        return token

    async def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        cookie = "LWSSO_COOKIE_KEY" if self.config.auth_mode == "lwsso" else "SMAX_AUTH_TOKEN"
        url = f"{self._host}/rest/{self.config.tenant_id}/{path}"
        for attempt in (1, 2):
            token = self._token or await self._login()
            headers = {"Cookie": f"{cookie}={token}; TENANTID={self.config.tenant_id}"}
            try:
                return await http.request(self.client, method, url, backend=self.name,
                                          headers=headers, **kwargs)
            except AuthError as exc:
                if exc.status != 401 or attempt == 2:
                    raise
                self._token = None  # expired under us: sign in again, once
        raise AssertionError("unreachable")

    async def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        body = http.body_of(await self._send(method, path, **kwargs))
        if not isinstance(body, dict):
            http.fail(f"{method} {path}: not a JSON object", self.name)
        return body

    async def _bulk(self, operation: str, properties: dict[str, Any],
                    entity: str = "Request") -> dict[str, Any]:
        body = await self._call("POST", "ems/bulk", json={
            "entities": [{"entity_type": entity, "properties": properties}],
            "operation": operation,
        })
        results = body.get("entity_result_list") or []
        meta = body.get("meta") or {}
        failed = meta.get("completion_status") != "OK" or any(
            r.get("completion_status") != "OK" for r in results)
        if failed or not results:
            details = [r.get("errorDetails") for r in results if r.get("errorDetails")]
            details += meta.get("errorDetailsList") or []
            text = "; ".join(str(d.get("message", d)) if isinstance(d, dict) else str(d)
                             for d in details) or "no details"
            cls = (Conflict if re.search(r"LastUpdateTime|concurren|modified", text, re.I)
                   else ValidationError)
            raise cls(f"ems/bulk {operation} FAILED: {text}", backend=self.name,
                      status=200, raw=body)
        props: dict[str, Any] = (results[0].get("entity") or {}).get("properties") or {}
        return props

    def _ref(self, props: dict[str, Any]) -> RemoteRef:
        rid = str(props.get("Id") or "")
        if not rid:
            http.fail(f"entity without Id: {props!r:.200}", self.name)
        url = f"{self._host}/saw/Request/{rid}?TENANTID={self.config.tenant_id}"
        return RemoteRef(self.name, rid, rid, url)

    def _ticket(self, props: dict[str, Any]) -> RemoteTicket:
        phase, status = str(props.get("PhaseId") or ""), str(props.get("Status") or "")
        mapped = self.config.status_map.get(status) or self.config.status_map.get(phase)
        if mapped:
            norm = Normalized(mapped)
        elif status.startswith(("RequestStatusPending", "RequestStatusSuspended")):
            norm = Normalized.pending
        else:
            norm = PHASES.get(phase, Normalized.unknown)
        stamp = props.get("LastUpdateTime")
        when = datetime.fromtimestamp(int(stamp) / 1000, UTC) if stamp else None
        solution = str(props.get("Solution") or "").strip() or None
        return RemoteTicket(self._ref(props), phase, norm, when, props, resolution=solution)

    async def test_connection(self) -> str:
        self._token = None
        await self._login()
        await self._call("GET", "ems/Request", params={"layout": "Id", "size": "1"})
        return f"SMAX {self._host} tenant {self.config.tenant_id} as {self.config.login}"

    async def refresh_reference_data(self) -> ReferenceData:
        data: ReferenceData = {}
        for kind, entity, label in (("groups", "PersonGroup", "Name"),
                                    ("services", "ActualService", "DisplayLabel")):
            out = await self._call("GET", f"ems/{entity}", params={"layout": f"Id,{label}",
                                                                     "size": "1000"})
            data[kind] = {str((e.get("properties") or {}).get("Id")):
                          str((e.get("properties") or {}).get(label, ""))
                          for e in out.get("entities") or []}
        person = self.config.requested_by_person
        if person:
            found = await self._call("GET", f"ems/Person/{person}", params={"layout": "Id"})
            if not found.get("entities"):
                raise ValidationError(f"requested_by_person {person} is not a SMAX Person",
                                      backend=self.name)
        return data

    async def _requested_by(self, draft: TicketDraft) -> str:
        cfg = self.config
        email = (draft.requester_email or "").strip()
        if email and "'" not in email:  # a quote would end the filter's string
            out = await self._call("GET", "ems/Person", params={
                "filter": f"Email = '{email}'", "layout": "Id", "size": "1"})
            entities = out.get("entities") or []
            if entities:
                return str((entities[0].get("properties") or {}).get("Id"))
            if cfg.create_requester:
                name = (draft.requester_name or email.split("@")[0]).strip()
                first, _, last = name.rpartition(" ")
                made = await self._bulk("CREATE", {"Name": name, "Email": email,
                                                   "FirstName": first, "LastName": last or name},
                                        entity="Person")
                if made.get("Id"):
                    return str(made["Id"])
        if cfg.requested_by_person:
            return cfg.requested_by_person
        raise ValidationError(f"SMAX needs a RequestedByPerson: {email or 'no address'} is no "
                              "Person (set create_requester or requested_by_person)",
                              backend=self.name)

    async def create_ticket(self, draft: TicketDraft, *, op_key: str) -> RemoteRef:
        cfg = self.config
        props: dict[str, Any] = {
            "DisplayLabel": draft.subject[:250],
            "Description": html_with_footer(draft.html or _html(draft.text), op_key,
                                            draft.local_number),
            "RequestedByPerson": await self._requested_by(draft),
            "Priority": PRIORITY.get(draft.priority, "MediumPriority"),
            cfg.op_key_field: op_key,
        }
        # push_to_backend hands over remote field names already; local names still map.
        for name, value in draft.custom_fields.items():
            props[cfg.custom_field_mappings.get(name, name)] = value
        return self._ref(await self._bulk("CREATE", props))

    async def find_by_op_key(self, op_key: str) -> RemoteRef | None:
        if not _SAFE.fullmatch(op_key):
            return None
        out = await self._call("GET", "ems/Request", params={
            "filter": f"{self.config.op_key_field} = '{op_key}'", "layout": "Id", "size": "1"})
        entities = out.get("entities") or []
        return self._ref(entities[0].get("properties") or {}) if entities else None

    async def _read(self, ref: RemoteRef, layout: str = LAYOUT) -> dict[str, Any]:
        out = await self._call("GET", f"ems/Request/{ref.id}", params={"layout": layout})
        entities = out.get("entities") or []
        if not entities:
            raise NotFound(f"Request {ref.id} not found", backend=self.name, raw=out)
        props: dict[str, Any] = entities[0].get("properties") or {}
        return props

    async def get_ticket(self, ref: RemoteRef) -> RemoteTicket:
        return self._ticket(await self._read(ref))

    async def missing_tickets(self, refs: Sequence[RemoteRef]) -> set[str]:
        ids = [r.id for r in refs if _SAFE.fullmatch(r.id)]
        if not ids:
            return set()
        quoted = ",".join(f"'{i}'" for i in ids)
        out = await self._call("GET", "ems/Request", params={
            "filter": f"Id in ({quoted})", "layout": "Id", "size": str(len(ids))})
        return set(ids) - {str((e.get("properties") or {}).get("Id"))
                           for e in out.get("entities") or []}

    async def _update(self, ref: RemoteRef, props: dict[str, Any]) -> RemoteTicket:
        current = await self._read(ref)
        # LastUpdateTime makes the update optimistic: a concurrent edit fails it.
        await self._bulk("UPDATE", {"Id": ref.id, "LastUpdateTime": current.get(
            "LastUpdateTime"), **props})
        return await self.get_ticket(ref)

    async def patch_ticket(self, ref: RemoteRef, patch: TicketPatch) -> RemoteTicket:
        cfg = self.config
        if patch.status in ("resolved", "closed"):
            return await self.close_ticket(ref)
        if patch.status not in (None, "open"):
            raise Unsupported(f"no SMAX phase for {patch.status!r}", backend=self.name)
        props = {cfg.custom_field_mappings.get(k, k): v for k, v in patch.fields.items()}
        if patch.priority is not None:
            props["Priority"] = PRIORITY.get(patch.priority, "MediumPriority")
        if patch.status == "open":
            current = await self.get_ticket(ref)
            if current.status in (Normalized.closed, Normalized.canceled):
                raise Unsupported(f"a SMAX request in phase {current.status_raw!r} cannot be "
                                  "reopened", backend=self.name)
            if current.status is not Normalized.open:
                props.update(PhaseId=cfg.reopen_phase, Status=cfg.reopen_status)
        return await self._update(ref, props)

    async def close_ticket(self, ref: RemoteRef, resolution: str | None = None) -> RemoteTicket:
        cfg = self.config
        return await self._update(ref, {
            "PhaseId": cfg.close_phase, "Status": cfg.close_status,
            "CompletionCode": cfg.completion_code,
            "Solution": _html(resolution or "Resolved via mailticket."),
        })

    async def create_comment(self, ref: RemoteRef, comment: CommentDraft, *, op_key: str) -> str:
        body: dict[str, Any] = {
            "IsSystem": False,
            "Body": html_with_footer(comment.html or _html(comment.text), op_key),
            "PrivacyType": "PUBLIC" if comment.public else "INTERNAL",
            "ActualInterface": "API", "CommentFrom": "User",
        }
        if self.config.submitter_user_id:
            body["Submitter"] = {"UserId": self.config.submitter_user_id}
        out = await self._call("POST", f"collaboration/comments/Request/{ref.id}", json=body)
        if not out.get("Id"):
            http.fail("comment answered without Id", self.name)
        return str(out["Id"])

    async def list_comments(self, ref: RemoteRef) -> list[RemoteComment]:
        out = await self._send("GET", f"collaboration/comments/Request/{ref.id}")
        result = []
        for c in http.body_of(out) or []:
            if not isinstance(c, dict):
                continue
            text = str(c.get("Body") or "")
            stamp = c.get("CreateTime")
            when = datetime.fromtimestamp(int(stamp) / 1000, UTC) if stamp else None
            author = (c.get("Submitter") or {}).get("UserId")
            result.append(RemoteComment(ref, str(c.get("Id")), text,
                                        c.get("PrivacyType") == "PUBLIC",
                                        str(author) if author else None, when,
                                        op_key=marker_in(text)))
        return result

    async def create_attachment(
        self, ref: RemoteRef, attachment: AttachmentDraft, *, public: bool, op_key: str
    ) -> str:
        mime = attachment.content_type or "application/octet-stream"
        up = await self._call("POST", "ces/attachment", files=[
            ("files[]", (attachment.filename, attachment.data, mime))])
        guid = up.get("guid")
        if not guid:
            http.fail("ces/attachment answered without guid", self.name)
        current = await self._read(ref, "Id,LastUpdateTime,RequestAttachments")
        existing = json.loads(current.get("RequestAttachments") or "{}")
        items = list(existing.get("complexTypeProperties") or [])
        items.append({"properties": {
            "id": guid, "file_name": attachment.filename,
            "file_extension": attachment.filename.rsplit(".", 1)[-1]
            if "." in attachment.filename else "",
            "size": len(attachment.data), "mime_type": mime,
            "Creator": self.config.submitter_user_id or self.config.requested_by_person or "",
        }})
        await self._bulk("UPDATE", {
            "Id": ref.id, "LastUpdateTime": current.get("LastUpdateTime"),
            # SMAX wants the complex property as a JSON string, merged with what is there.
            "RequestAttachments": json.dumps({"complexTypeProperties": items}),
        })
        return str(guid)

    async def query_tickets(
        self, *, updated_since: datetime | None, cursor: str | None = None, limit: int = 100
    ) -> Page:
        params = {"layout": LAYOUT, "size": str(limit), "skip": str(int(cursor or 0)),
                  "meta": "TotalCount", "order": "LastUpdateTime asc"}
        if updated_since is not None:
            params["filter"] = f"LastUpdateTime > {int(updated_since.timestamp() * 1000)}"
        out = await self._call("GET", "ems/Request", params=params)
        entities = out.get("entities") or []
        skip = int(cursor or 0) + len(entities)
        total = (out.get("meta") or {}).get("total_count")
        more = skip < int(total) if total is not None else len(entities) >= limit
        items = [self._ticket(e.get("properties") or {}) for e in entities]
        return Page(items, str(skip) if more and entities else None)


def _html(text: str) -> str:
    return "<p>" + html.escape(text).replace("\n", "<br>") + "</p>"


__all__ = ["SmaxBackend", "SmaxConfig"]
