"""Jira Cloud / Jira Service Management over REST API v2 (plain-string bodies, no ADF).

Auth is chosen in the documented order of preference: OAuth2 bearer > PAT (Data Center)
> API token (Cloud, Basic email:token) > basic user:password. Jira has no idempotency key,
so each create carries a label `m2t-<op key>` that `find_by_op_key` searches with JQL
(search lags behind writes, which is why the outbox row, not the search, is the first
line of defence); a second label and the description's footer carry our ticket number.
Comments carry two properties: `sd.public.comment` (JSM's internal-note flag) and
`mailticket` with the op key, so our own comments are recognised when read back. The
reporter is the Jira user (or JSM customer) with the requester's address.
Admin webhooks are signed `X-Hub-Signature: sha256=<hex HMAC(body)>` and deduplicated on
`X-Atlassian-Webhook-Identifier`.
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
    text_with_footer,
)
from mailticket.backends.errors import (
    AuthError,
    Unsupported,
    ValidationError,
    WebhookSignatureError,
)

# Status names seen on stock Jira / JSM workflows. "Done" is deliberately absent: it is
# used for both solved and abandoned work, so it must be mapped per site (status_map).
STATUSES: dict[str, Normalized] = {
    "open": Normalized.open,
    "to do": Normalized.open,
    "in progress": Normalized.open,
    "reopened": Normalized.open,
    "waiting for support": Normalized.open,
    "waiting for customer": Normalized.pending,
    "pending": Normalized.pending,
    "resolved": Normalized.resolved,
    "closed": Normalized.closed,
    "canceled": Normalized.canceled,
    "cancelled": Normalized.canceled,
    "declined": Normalized.canceled,
    "won't do": Normalized.canceled,
}
# Categories that are unambiguous; "done" is not (solved or abandoned?), so not here.
CATEGORIES = {"new": Normalized.open, "indeterminate": Normalized.open}
OP_PROPERTY = "mailticket"
_LABEL_BAD = re.compile(r"\s+")


class JiraConfig(BackendConfig):
    # Site (https://x.atlassian.net) or, for OAuth2, https://api.atlassian.com/ex/jira/{cloudId}
    base_url: str
    browse_url: str | None = None  # for links shown to humans; default: base_url
    project_key: str
    issue_type: str = "Task"
    oauth2_token: SecretStr | None = None
    pat: SecretStr | None = None
    email: str | None = None
    api_token: SecretStr | None = None
    username: str | None = None
    password: SecretStr | None = None
    # JSM: internal notes via the sd.public.comment property. Plain Jira: restrict the
    # comment to this project role instead.
    service_desk: bool = True
    internal_role: str = "Developers"
    close_transition: str | None = None  # transition name; default: the first to "done"
    resolution: str = "Done"
    # Local status -> transition name, for patch_ticket(status=...).
    transitions: dict[str, str] = {}
    priority_map: dict[str, str] = {}  # local priority -> Jira priority name; empty: not sent
    webhook_secret: SecretStr | None = None
    # Reporter when no Jira user has the requester's address (accountId; empty: our user).
    default_reporter: str | None = None
    # Create a JSM customer for an unknown requester (service_desk instances; needs the
    # account's permission to add customers).
    create_requester: bool = False

    @model_validator(mode="after")
    def _some_auth(self) -> JiraConfig:
        if not (self.oauth2_token or self.pat or (self.email and self.api_token)
                or (self.username and self.password)):
            raise ValueError(
                "needs credentials: oauth2_token, pat, email + api_token, or username + password"
            )
        return self


def _when(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    for fmt in ("%Y-%m-%dT%H:%M:%S.%f%z", "%Y-%m-%dT%H:%M:%S%z"):
        try:
            return datetime.strptime(value, fmt).astimezone(UTC)
        except ValueError:
            continue
    return None


class JiraBackend(TicketBackend[JiraConfig]):
    kind: ClassVar[str] = "jira"
    Config: ClassVar[type[BackendConfig]] = JiraConfig
    capabilities: ClassVar[frozenset[Cap]] = frozenset({
        Cap.INTERNAL_NOTES, Cap.ATTACHMENTS, Cap.CLOSE, Cap.EXTERNAL_ID_LOOKUP,
        Cap.WEBHOOKS, Cap.POLLING,
    })

    # --- plumbing ----------------------------------------------------------------------

    def auth_header(self) -> tuple[str, str]:
        """(scheme, what it is) in the documented order of preference."""
        c = self.config
        if c.oauth2_token is not None:
            return f"Bearer {c.oauth2_token.get_secret_value()}", "OAuth2"
        if c.pat is not None:
            return f"Bearer {c.pat.get_secret_value()}", "personal access token"
        if c.email and c.api_token is not None:
            pair = f"{c.email}:{c.api_token.get_secret_value()}"
            return f"Basic {base64.b64encode(pair.encode()).decode()}", "API token"
        assert c.username and c.password is not None
        pair = f"{c.username}:{c.password.get_secret_value()}"
        return f"Basic {base64.b64encode(pair.encode()).decode()}", "basic auth"

    async def _call(self, method: str, path: str, **kw: Any) -> Any:
        headers = {"Authorization": self.auth_header()[0], "Accept": "application/json",
                   **kw.pop("headers", {})}
        resp = await http.request(
            self.client, method, self.config.base_url.rstrip("/") + path,
            backend=self.name, headers=headers, **kw,
        )
        return http.body_of(resp) if resp.content else None

    def _ref(self, issue_id: str, key: str | None) -> RemoteRef:
        site = (self.config.browse_url or self.config.base_url).rstrip("/")
        return RemoteRef(self.name, str(issue_id), key, f"{site}/browse/{key}" if key else None)

    def _remote(self, issue: Mapping[str, Any]) -> RemoteTicket:
        fields = issue.get("fields") or {}
        status = fields.get("status") or {}
        name = str(status.get("name") or "")
        norm = self.normalize_status(name, STATUSES)
        if norm is Normalized.unknown and name not in self.config.status_map:
            category = (status.get("statusCategory") or {}).get("key")
            norm = CATEGORIES.get(str(category), Normalized.unknown)
        return RemoteTicket(
            ref=self._ref(str(issue["id"]), issue.get("key")), status_raw=name, status=norm,
            updated_at=_when(fields.get("updated")), raw=dict(issue),
        )

    @staticmethod
    def op_label(op_key: str) -> str:
        return f"m2t-{op_key[:40]}"

    # --- TicketBackend -------------------------------------------------------------------

    def default_statuses(self) -> Mapping[str, Normalized]:
        return STATUSES

    async def test_connection(self) -> str:
        me = await self._call("GET", "/rest/api/2/myself")
        who = (me or {}).get("displayName") or (me or {}).get("emailAddress") or "?"
        return f"authenticated as {who} via {self.auth_header()[1]}"

    async def refresh_reference_data(self) -> ReferenceData:
        cfg = self.config
        found = await self._call("GET", "/rest/api/3/project/search", params={"maxResults": 100})
        data: ReferenceData = {"projects": {
            str(p.get("key")): str(p.get("name", "")) for p in (found or {}).get("values", [])}}
        if cfg.project_key not in data["projects"]:
            raise ValidationError(f"project_key {cfg.project_key} is not a Jira project "
                                  f"(known: {', '.join(sorted(data['projects']))})",
                                  backend=self.name)
        types = await self._call("GET", f"/rest/api/3/issue/createmeta/{cfg.project_key}"
                                 "/issuetypes")
        data["issue_types"] = {str(t["id"]): str(t.get("name", ""))
                               for t in (types or {}).get("issueTypes", [])}
        if cfg.issue_type not in data["issue_types"].values():
            raise ValidationError(f"issue_type {cfg.issue_type!r} is not an issue type of "
                                  f"{cfg.project_key}", backend=self.name)
        per_type = await self._call("GET", f"/rest/api/3/project/{cfg.project_key}/statuses")
        data["statuses"] = {str(st["id"]): str(st.get("name", "")) for t in per_type or []
                            if t.get("name") == cfg.issue_type for st in t.get("statuses", [])}
        try:
            flows = await self._call("GET", "/rest/api/3/workflow/search",
                                     params={"expand": "transitions", "isActive": "true"})
        except AuthError as exc:
            if exc.status != 403:
                raise
            return data  # reading workflows needs admin rights: transitions stay unknown
        data["transitions"] = {str(t.get("id")): str(t.get("name", ""))
                               for w in (flows or {}).get("values", [])
                               for t in w.get("transitions", [])}
        wanted = [*cfg.transitions.values(), *([cfg.close_transition] if cfg.close_transition
                                                 else [])]
        unknown = [n for n in wanted if n not in data["transitions"].values()]
        if unknown:
            raise ValidationError(f"configured transitions {unknown} are not in any active "
                                  "workflow", backend=self.name)
        return data

    async def _reporter(self, draft: TicketDraft) -> str | None:
        email = (draft.requester_email or "").strip().lower()
        if email:
            users = await self._call("GET", "/rest/api/2/user/search",
                                     params={"query": email, "maxResults": 10})
            for user in users or []:
                if str(user.get("emailAddress", "")).lower() == email and user.get("accountId"):
                    return str(user["accountId"])
            if self.config.create_requester and self.config.service_desk:
                made = await self._call("POST", "/rest/servicedeskapi/customer", json={
                    "email": email, "displayName": draft.requester_name or email})
                if isinstance(made, dict) and made.get("accountId"):
                    return str(made["accountId"])
        return self.config.default_reporter

    async def create_ticket(self, draft: TicketDraft, *, op_key: str) -> RemoteRef:
        summary = " ".join(draft.subject.split())[:255] or "(no subject)"
        labels = [_LABEL_BAD.sub("_", t) for t in draft.tags if t] + [self.op_label(op_key)]
        if draft.local_number:
            labels.append(_LABEL_BAD.sub("_", draft.local_number))
        fields: dict[str, Any] = {
            "project": {"key": self.config.project_key},
            "issuetype": {"name": self.config.issue_type},
            "summary": summary,
            "description": text_with_footer(draft.text, op_key, draft.local_number),
            "labels": labels,
            **dict(draft.custom_fields),
        }
        reporter = await self._reporter(draft)
        if reporter:
            fields["reporter"] = {"accountId": reporter}
        priority = self.config.priority_map.get(draft.priority)
        if priority:
            fields["priority"] = {"name": priority}
        body = await self._call("POST", "/rest/api/2/issue", json={"fields": fields})
        if not isinstance(body, dict) or "id" not in body:
            http.fail("create answered without an issue id", self.name)
        return self._ref(str(body["id"]), body.get("key"))

    async def _search(self, jql: str, limit: int, token: str | None) -> Any:
        payload: dict[str, Any] = {"jql": jql, "fields": ["status", "updated"], "maxResults": limit}
        if token:
            payload["nextPageToken"] = token
        return await self._call("POST", "/rest/api/3/search/jql", json=payload, ambiguous=False)

    async def find_by_op_key(self, op_key: str) -> RemoteRef | None:
        found = await self._search(f'labels = "{self.op_label(op_key)}"', 1, None)
        issues = (found or {}).get("issues") or []
        return self._ref(str(issues[0]["id"]), issues[0].get("key")) if issues else None

    async def get_ticket(self, ref: RemoteRef) -> RemoteTicket:
        issue = await self._call(
            "GET", f"/rest/api/2/issue/{ref.id}", params={"fields": "status,resolution,updated"}
        )
        return self._remote(issue)

    async def missing_tickets(self, refs: Sequence[RemoteRef]) -> set[str]:
        # Bulk fetch leaves out what it cannot find (up to 100 per call).
        ids = [r.id for r in refs]
        found = await self._call("POST", "/rest/api/3/issue/bulkfetch", ambiguous=False,
                                 json={"issueIdsOrKeys": ids, "fields": ["status"]})
        seen = {str(i.get("id")) for i in (found or {}).get("issues", [])}
        seen |= {str(i.get("key")) for i in (found or {}).get("issues", [])}
        return {r.id for r in refs if r.id not in seen and (r.key or "") not in seen}

    async def patch_ticket(self, ref: RemoteRef, patch: TicketPatch) -> RemoteTicket:
        fields: dict[str, Any] = dict(patch.fields)
        if patch.priority and self.config.priority_map.get(patch.priority):
            fields["priority"] = {"name": self.config.priority_map[patch.priority]}
        if patch.assignee:
            fields["assignee"] = {"accountId": patch.assignee}
        if fields:
            await self._call("PUT", f"/rest/api/2/issue/{ref.id}", json={"fields": fields})
        if patch.status:
            if patch.status in ("closed", "resolved") and patch.status not in self.config.transitions:
                return await self.close_ticket(ref)
            name = self.config.transitions.get(patch.status)
            if name is not None:
                await self._transition(ref, lambda t: t.get("name") == name, None)
            elif patch.status == "open":
                await self._reopen(ref)
            else:
                raise Unsupported(f"no transition configured for local status {patch.status!r}",
                                  backend=self.name)
        return await self.get_ticket(ref)

    async def _reopen(self, ref: RemoteRef) -> None:
        """Back to work: a transition into a "new" status, else an "indeterminate" one."""
        current = await self.get_ticket(ref)
        category = ((current.raw.get("fields") or {}).get("status") or {}).get(
            "statusCategory", {}).get("key")
        if current.status is Normalized.open or category in ("new", "indeterminate"):
            return

        def into(cat: str) -> Any:
            return lambda t: ((t.get("to") or {}).get("statusCategory") or {}).get("key") == cat

        try:
            await self._transition(ref, into("new"), None)
        except Unsupported:
            await self._transition(ref, into("indeterminate"), None)

    async def _transition(self, ref: RemoteRef, pick: Any, resolution: str | None) -> None:
        found = await self._call(
            "GET", f"/rest/api/2/issue/{ref.id}/transitions",
            params={"expand": "transitions.fields"},
        )
        choices = [t for t in (found or {}).get("transitions", []) if pick(t)]
        if not choices:
            names = ", ".join(t.get("name", "?") for t in (found or {}).get("transitions", []))
            raise Unsupported(f"no matching transition from here (available: {names or 'none'})",
                              backend=self.name)
        chosen = choices[0]
        body: dict[str, Any] = {"transition": {"id": str(chosen["id"])}}
        if resolution and "resolution" in (chosen.get("fields") or {}):
            body["fields"] = {"resolution": {"name": resolution}}
        await self._call("POST", f"/rest/api/2/issue/{ref.id}/transitions", json=body,
                         ambiguous=False)

    async def close_ticket(self, ref: RemoteRef, resolution: str | None = None) -> RemoteTicket:
        name = self.config.close_transition

        def pick(t: Mapping[str, Any]) -> bool:
            if name is not None:
                return bool(t.get("name") == name)
            return bool(((t.get("to") or {}).get("statusCategory") or {}).get("key") == "done")

        await self._transition(ref, pick, resolution or self.config.resolution)
        return await self.get_ticket(ref)

    async def create_comment(self, ref: RemoteRef, comment: CommentDraft, *, op_key: str) -> str:
        body: dict[str, Any] = {"body": comment.text, "properties": [
            {"key": OP_PROPERTY, "value": {"op_key": op_key}},
        ]}
        if self.config.service_desk:
            body["properties"].append(
                {"key": "sd.public.comment", "value": {"internal": not comment.public}}
            )
        elif not comment.public:
            body["visibility"] = {"type": "role", "value": self.config.internal_role}
        made = await self._call("POST", f"/rest/api/2/issue/{ref.id}/comment", json=body)
        if not isinstance(made, dict) or "id" not in made:
            http.fail("comment answered without an id", self.name)
        return str(made["id"])

    def _comment(self, ref: RemoteRef, c: Mapping[str, Any]) -> RemoteComment:
        props = {p.get("key"): p.get("value") for p in c.get("properties") or []}
        sd = props.get("sd.public.comment") or {}
        ours = props.get(OP_PROPERTY) or {}
        author = c.get("author") or {}
        return RemoteComment(
            ref=ref, id=str(c["id"]), text=str(c.get("body") or ""),
            public=not bool(sd.get("internal")) and "visibility" not in c,
            author=author.get("emailAddress") or author.get("displayName"),
            created_at=_when(c.get("created")),
            op_key=ours.get("op_key") if isinstance(ours, dict) else None,
        )

    async def list_comments(self, ref: RemoteRef) -> list[RemoteComment]:
        found = await self._call(
            "GET", f"/rest/api/2/issue/{ref.id}/comment",
            params={"expand": "properties", "maxResults": 1000},
        )
        return [self._comment(ref, c) for c in (found or {}).get("comments", [])]

    async def find_comment_by_op_key(self, ref: RemoteRef, op_key: str) -> str | None:
        return next((c.id for c in await self.list_comments(ref) if c.op_key == op_key), None)

    async def create_attachment(
        self, ref: RemoteRef, attachment: AttachmentDraft, *, public: bool, op_key: str
    ) -> str:
        made = await self._call(
            "POST", f"/rest/api/2/issue/{ref.id}/attachments",
            headers={"X-Atlassian-Token": "no-check"},
            files={"file": (attachment.filename, attachment.data, attachment.content_type)},
        )
        if not isinstance(made, list) or not made or "id" not in made[0]:
            http.fail("attachment answered without an id", self.name)
        return str(made[0]["id"])

    async def find_attachment_by_op_key(
        self, ref: RemoteRef, op_key: str, attachment: AttachmentDraft
    ) -> str | None:
        # Jira keeps no key on attachments; the same name and size on the issue is taken
        # as the earlier, unanswered upload (a repeat upload would be an exact duplicate).
        issue = await self._call(
            "GET", f"/rest/api/2/issue/{ref.id}", params={"fields": "attachment"}
        )
        for a in ((issue or {}).get("fields") or {}).get("attachment") or []:
            if a.get("filename") == attachment.filename and a.get("size") == len(attachment.data):
                return str(a["id"])
        return None

    async def query_tickets(
        self, *, updated_since: datetime | None, cursor: str | None = None, limit: int = 100
    ) -> Page:
        jql = f'project = "{self.config.project_key}"'
        if updated_since is not None:
            jql += f' AND updated >= "{updated_since.astimezone(UTC):%Y-%m-%d %H:%M}"'
        found = await self._search(jql + " ORDER BY updated ASC", limit, cursor) or {}
        items = [self._remote(issue) for issue in found.get("issues", [])]
        return Page(items, found.get("nextPageToken") or None)

    def parse_webhook(self, headers: Mapping[str, str], body: bytes) -> WebhookEvent:
        secret = self.config.webhook_secret
        if secret is None:
            raise WebhookSignatureError("no webhook_secret configured", backend=self.name)
        given = headers.get("x-hub-signature", "")
        expected = "sha256=" + hmac.new(
            secret.get_secret_value().encode(), body, hashlib.sha256
        ).hexdigest()
        if not hmac.compare_digest(given.encode(), expected.encode()):
            raise WebhookSignatureError("X-Hub-Signature does not match", backend=self.name)
        try:
            data = json.loads(body)
        except ValueError as exc:
            raise WebhookSignatureError("body is not JSON", backend=self.name) from exc
        issue = data.get("issue") or {}
        ref = self._ref(str(issue.get("id")), issue.get("key")) if issue.get("id") else None
        raw_comment = data.get("comment")
        comment = (self._comment(ref, raw_comment) if ref is not None
                   and isinstance(raw_comment, dict) and "id" in raw_comment else None)
        status = ((issue.get("fields") or {}).get("status") or {}).get("name")
        return WebhookEvent(
            delivery_id=headers.get("x-atlassian-webhook-identifier", ""),
            event=str(data.get("webhookEvent") or ""),
            ticket_id=ref.id if ref else None,
            status_raw=status, comment=comment, raw=data,
        )
