"""Jira Cloud / JSM fake following backend-contracts.md §1 (REST v2, search/jql, webhooks)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
import re
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx

from tests.backends.fakes.base import FakeVendor, Req, Resp, multipart_files
from tests.backends.fakes.contract import Contract, Problem
from tests.backends.fakes.faults import Fault

# name -> category, and the transitions (id, name, to) offered from anywhere
STATUS_CATEGORY = {
    "Open": "new", "In Progress": "indeterminate", "Waiting for customer": "indeterminate",
    "Resolved": "done", "Canceled": "done", "Done": "done", "Reopened": "new",
}
TRANSITIONS = [("21", "Start Progress", "In Progress"), ("31", "Resolve", "Resolved"),
               ("41", "Cancel", "Canceled"), ("51", "Reopen", "Reopened")]
ISSUE_TYPES = [("10001", "Task"), ("10002", "Bug"), ("10003", "Service Request")]


def _as_v3(path: str) -> str:
    # Atlassian publishes v3 only; v2 has the same operations and differs only in taking plain
    # strings where v3 takes Atlassian Document Format, which the v3 document leaves untyped
    # (Comment.body, IssueUpdateDetails.fields).
    return re.sub(r"^/rest/api/2/", "/rest/api/3/", path)


def _attachment_parts(document: dict[str, Any]) -> None:
    # "Add attachment" types its multipart body as an array, which no multipart/form-data
    # body is; its description says what is meant: parts named `file`, and the request must
    # carry `X-Atlassian-Token: no-check` or it is blocked.
    post = document["paths"]["/rest/api/3/issue/{issueIdOrKey}/attachments"]["post"]
    post["requestBody"]["content"]["multipart/form-data"]["schema"] = {
        "type": "object", "required": ["file"],
        "properties": {"file": {"type": "array", "items": {"type": "string",
                                                           "format": "binary"}}},
    }
    post.setdefault("parameters", []).append({
        "name": "X-Atlassian-Token", "in": "header", "required": True,
        "schema": {"type": "string", "enum": ["no-check"]},
    })


def _jira_date_time(value: object) -> bool:
    # Jira writes offsets without a colon ("2021-01-17T12:34:00.000+0000", as in the
    # document's own examples), which ISO 8601 allows and RFC 3339 `date-time` does not.
    if not isinstance(value, str):
        return True
    try:
        return datetime.fromisoformat(value).tzinfo is not None
    except ValueError:
        return False


CONTRACT = Contract("jira-cloud-platform.v3.openapi.json.gz", rewrite=_as_v3,
                    overlays=(_attachment_parts,), formats=(("date-time", _jira_date_time),),
                    beside=(("/rest/servicedeskapi/",
                             Contract("jira-service-management.yaml")),))


def _stamp() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "+0000"


def _err(status: int, *messages: str, **errors: str) -> Resp:
    return Resp(status, {"errorMessages": list(messages), "errors": errors})


class FakeJira(FakeVendor):
    contract = CONTRACT

    def __init__(self, *, project: str = "OPS", email: str = "bot@example.com",
                 token: str = "secret-token", webhook_secret: str = "hook-secret") -> None:
        super().__init__()
        self.project, self.email, self.token = project, email, token
        self.bearer: set[str] = set()
        self.webhook_secret = webhook_secret
        self.issues: dict[str, dict[str, Any]] = {}
        self.comments: dict[str, list[dict[str, Any]]] = {}
        self.attachments: dict[str, list[tuple[str, str, bytes]]] = {}
        self._ids = itertools.count(10000)
        self._num = itertools.count(1)
        self.auth_seen: list[str] = []
        # Users our account may see, by e-mail (Jira Cloud hides many addresses).
        self.users: dict[str, dict[str, Any]] = {
            "carol@example.com": {"accountId": "acc-carol", "emailAddress": "carol@example.com",
                                  "displayName": "Carol Customer", "accountType": "customer",
                                  "active": True},
        }
        self.workflow_admin = True  # may the account read workflows?
        self.route("GET", r"/rest/api/2/myself", self._myself)
        self.route("POST", r"/rest/api/2/issue", self._create)
        self.route("GET", r"/rest/api/2/issue/(?P<id>[^/]+)", self._get)
        self.route("PUT", r"/rest/api/2/issue/(?P<id>[^/]+)", self._put)
        self.route("GET", r"/rest/api/2/issue/(?P<id>[^/]+)/transitions", self._transitions)
        self.route("POST", r"/rest/api/2/issue/(?P<id>[^/]+)/transitions", self._transition)
        self.route("GET", r"/rest/api/2/issue/(?P<id>[^/]+)/comment", self._list_comments)
        self.route("POST", r"/rest/api/2/issue/(?P<id>[^/]+)/comment", self._comment)
        self.route("POST", r"/rest/api/2/issue/(?P<id>[^/]+)/attachments", self._attach)
        self.route("POST", r"/rest/api/3/search/jql", self._search)
        self.route("POST", r"/rest/api/3/issue/bulkfetch", self._bulkfetch)
        self.route("GET", r"/rest/api/2/user/search", self._user_search)
        self.route("POST", r"/rest/servicedeskapi/customer", self._new_customer)
        self.route("GET", r"/rest/api/3/project/search", self._projects)
        self.route("GET", r"/rest/api/3/issue/createmeta/(?P<key>[^/]+)/issuetypes",
                   self._issue_types)
        self.route("GET", r"/rest/api/3/project/(?P<key>[^/]+)/statuses", self._statuses)
        self.route("GET", r"/rest/api/3/workflow/search", self._workflows)

    # --- auth ------------------------------------------------------------------------------

    def check_auth(self, req: Req) -> Resp | None:
        given = req.headers.get("authorization", "")
        self.auth_seen.append(given.split(" ", 1)[0])
        basic = base64.b64encode(f"{self.email}:{self.token}".encode()).decode()
        if given == f"Basic {basic}" or given.removeprefix("Bearer ") in self.bearer:
            return None
        return self.refuse_credentials(req)

    def refuse_credentials(self, req: Req) -> Resp:
        return _err(401, "You are not authenticated. Authentication required to perform this operation.")

    def fault_answer(self, kind: Fault, req: Req, retry_after: int) -> Resp:
        if kind is Fault.RATE_LIMITED:  # backend-contracts.md section 1, Errors and rate limits
            return Resp(429, {"errorMessages": ["Rate limit exceeded."], "errors": {}},
                        {"Retry-After": str(retry_after), "RateLimit-Reason": "jira-burst-based"})
        if kind is Fault.SERVER_ERROR:
            return _err(500, "Internal server error")
        return super().fault_answer(kind, req, retry_after)

    def reject(self, req: Req, problems: list[Problem]) -> Resp:
        if all(p.unknown for p in problems):
            return _err(404, f"null for uri: {req.path}")
        return _err(400, *(p.message for p in problems))

    def delete_ticket(self, ticket: str) -> None:
        with self.lock:
            issue = self.issue(ticket)
            assert issue is not None
            del self.issues[issue["id"]]

    # --- helpers ---------------------------------------------------------------------------

    def issue(self, id_or_key: str) -> dict[str, Any] | None:
        found = self.issues.get(id_or_key)
        if found is None:
            found = next((i for i in self.issues.values() if i["key"] == id_or_key), None)
        return found

    def _missing(self) -> Resp:
        return _err(404, "Issue does not exist or you do not have permission to see it.")

    def set_status(self, id_or_key: str, name: str, category: str | None = None) -> dict[str, Any]:
        with self.lock:
            issue = self.issue(id_or_key)
            assert issue is not None
            cat = category or STATUS_CATEGORY.get(name, "new")
            issue["fields"]["status"] = {"name": name, "statusCategory": {"key": cat}}
            issue["fields"]["updated"] = _stamp()
            return issue

    def add_remote_comment(self, id_or_key: str, body: str, *, internal: bool = False,
                           author: str = "agent@example.com") -> dict[str, Any]:
        with self.lock:
            issue = self.issue(id_or_key)
            assert issue is not None
            comment = {"id": str(next(self._ids)), "body": body, "created": _stamp(),
                       "author": {"emailAddress": author, "displayName": author},
                       "properties": [{"key": "sd.public.comment", "value": {"internal": internal}}]}
            self.comments[issue["id"]].append(comment)
            issue["fields"]["updated"] = _stamp()
            return comment

    def create_by_hand(self, summary: str) -> dict[str, Any]:
        """An issue made in Jira's UI, not through us."""
        body = json.dumps({"fields": {"project": {"key": self.project}, "summary": summary}})
        with self.lock:
            made = self._create(Req("POST", "/rest/api/2/issue", {}, {}, body.encode()))
            return self.issues[made.body["id"]]

    def webhook(self, url: str, event: str, id_or_key: str, *, comment: dict[str, Any] | None = None,
                delivery_id: str | None = None, secret: str | None = None) -> httpx.Response:
        """Send a signed admin-webhook delivery the way Jira does."""
        with self.lock:
            issue = json.loads(json.dumps(self.issue(id_or_key) or {"id": id_or_key}))
        payload: dict[str, Any] = {"timestamp": 1, "webhookEvent": event, "issue": issue}
        if comment is not None:
            payload["comment"] = {k: v for k, v in comment.items() if k != "properties"}
        body = json.dumps(payload).encode()
        sig = hmac.new((secret or self.webhook_secret).encode(), body, hashlib.sha256).hexdigest()
        headers = {"Content-Type": "application/json", "X-Hub-Signature": f"sha256={sig}",
                   "X-Atlassian-Webhook-Identifier": delivery_id or str(uuid.uuid4())}
        return httpx.post(url, content=body, headers=headers)

    # --- routes ----------------------------------------------------------------------------

    def _myself(self, req: Req) -> Resp:
        return Resp(200, {"accountId": "abc", "emailAddress": self.email, "displayName": "Bot"})

    def _create(self, req: Req) -> Resp:
        fields = (req.json() or {}).get("fields") or {}
        if (fields.get("project") or {}).get("key") != self.project:
            return _err(400, project="valid project is required")
        reporter = (fields.get("reporter") or {}).get("accountId")
        if reporter is not None and reporter not in {u["accountId"] for u in self.users.values()}:
            return _err(400, reporter="Specified reporter is not a user.")
        if not fields.get("summary"):
            return _err(400, summary="You must specify a summary of the issue.")
        if "\n" in fields["summary"]:
            return _err(400, summary="The summary is invalid because it contains newline characters.")
        issue_id = str(next(self._ids))
        key = f"{self.project}-{next(self._num)}"
        issue = {"id": issue_id, "key": key, "self": f"{self.url}/rest/api/2/issue/{issue_id}",
                 "fields": {**fields, "updated": _stamp(),
                            "status": {"name": "Open", "statusCategory": {"key": "new"}}}}
        self.issues[issue_id] = issue
        self.comments[issue_id] = []
        self.attachments[issue_id] = []
        return Resp(201, {"id": issue_id, "key": key, "self": issue["self"]})

    def _get(self, req: Req) -> Resp:
        issue = self.issue(req.params["id"])
        return Resp(200, issue) if issue else self._missing()

    def _put(self, req: Req) -> Resp:
        issue = self.issue(req.params["id"])
        if issue is None:
            return self._missing()
        issue["fields"].update((req.json() or {}).get("fields") or {})
        issue["fields"]["updated"] = _stamp()
        return Resp(204)

    def _transitions(self, req: Req) -> Resp:
        if self.issue(req.params["id"]) is None:
            return self._missing()
        out = []
        for tid, name, to in TRANSITIONS:
            fields = {"resolution": {
                "required": True, "key": "resolution", "name": "Resolution",
                "operations": ["set"], "schema": {"type": "resolution", "system": "resolution"},
            }} if to == "Resolved" else {}
            out.append({"id": tid, "name": name, "fields": fields,
                        "to": {"name": to, "statusCategory": {"key": STATUS_CATEGORY[to]}}})
        return Resp(200, {"transitions": out})

    def _transition(self, req: Req) -> Resp:
        issue = self.issue(req.params["id"])
        if issue is None:
            return self._missing()
        body = req.json() or {}
        tid = (body.get("transition") or {}).get("id")
        match = [t for t in TRANSITIONS if t[0] == tid]
        if not match:
            return _err(400, "Transition id is not valid for this issue.")
        if match[0][2] == "Resolved" and not (body.get("fields") or {}).get("resolution"):
            return _err(400, resolution="Resolution is required.")
        if match[0][2] != "Resolved" and "fields" in body:
            return _err(400, resolution="Field 'resolution' cannot be set. It is not on the appropriate screen.")
        self.set_status(issue["id"], match[0][2])
        return Resp(204)

    def _list_comments(self, req: Req) -> Resp:
        issue = self.issue(req.params["id"])
        if issue is None:
            return self._missing()
        items = self.comments[issue["id"]]
        if req.query.get("expand") != "properties":
            items = [{k: v for k, v in c.items() if k != "properties"} for c in items]
        return Resp(200, {"startAt": 0, "maxResults": 1000, "total": len(items), "comments": items})

    def _comment(self, req: Req) -> Resp:
        issue = self.issue(req.params["id"])
        if issue is None:
            return self._missing()
        body = req.json() or {}
        if not body.get("body"):
            return _err(400, comment="Comment body can not be empty!")
        comment = {"id": str(next(self._ids)), "body": body["body"], "created": _stamp(),
                   "author": {"emailAddress": self.email, "displayName": "Bot"},
                   "properties": body.get("properties") or []}
        if "visibility" in body:
            comment["visibility"] = body["visibility"]
        self.comments[issue["id"]].append(comment)
        issue["fields"]["updated"] = _stamp()
        return Resp(201, {k: v for k, v in comment.items() if k != "properties"})

    def _attach(self, req: Req) -> Resp:
        if req.headers.get("x-atlassian-token") != "no-check":
            return Resp(403, b"XSRF check failed", {"Content-Type": "text/plain"})
        issue = self.issue(req.params["id"])
        if issue is None:
            return self._missing()
        files = multipart_files(req)
        if "file" not in files:
            return _err(400, "no file field in the multipart body")
        self.attachments[issue["id"]].append(files["file"])
        aid = str(next(self._ids))
        issue["fields"].setdefault("attachment", []).append(
            {"id": aid, "filename": files["file"][0], "size": len(files["file"][2])})
        return Resp(200, [{"id": aid, "filename": files["file"][0], "size": len(files["file"][2])}])

    def _bulkfetch(self, req: Req) -> Resp:
        wanted = (req.json() or {}).get("issueIdsOrKeys") or []
        found = [self.issue(str(k)) for k in wanted]
        # Issues that are not found are simply absent (not in issueErrors).
        return Resp(200, {"issues": [{"id": i["id"], "key": i["key"], "fields": {}}
                                     for i in found if i is not None], "issueErrors": []})

    def _user_search(self, req: Req) -> Resp:
        query = req.query.get("query", "").lower()
        return Resp(200, [u for e, u in self.users.items()
                          if query and (query == e or query in u["displayName"].lower())])

    def _new_customer(self, req: Req) -> Resp:
        body = req.json() or {}
        email = str(body.get("email") or "").lower()
        if not email:
            return _err(400, email="An email address is required.")
        if email in self.users:
            return _err(400, "A user with that email address already exists.")
        user = {"accountId": f"acc-{next(self._ids)}", "emailAddress": email,
                "displayName": body.get("displayName") or email, "accountType": "customer",
                "active": True}
        self.users[email] = user
        return Resp(201, user)

    def _projects(self, req: Req) -> Resp:
        values = [{"id": "10000", "key": self.project, "name": "Operations"},
                  {"id": "10001", "key": "HR", "name": "People"}]
        return Resp(200, {"values": values, "isLast": True, "startAt": 0,
                          "maxResults": 50, "total": len(values)})

    def _issue_types(self, req: Req) -> Resp:
        if req.params["key"] != self.project:
            return _err(404, f"No project could be found with key '{req.params['key']}'.")
        types = [{"id": i, "name": n, "subtask": False} for i, n in ISSUE_TYPES]
        return Resp(200, {"issueTypes": types, "startAt": 0, "maxResults": 50,
                          "total": len(types)})

    def _statuses(self, req: Req) -> Resp:
        if req.params["key"] != self.project:
            return _err(404, f"No project could be found with key '{req.params['key']}'.")
        statuses = [{"id": str(30 + n), "name": name,
                     "statusCategory": {"key": cat}} for n, (name, cat)
                    in enumerate(STATUS_CATEGORY.items())]
        return Resp(200, [{"self": f"{self.url}/rest/api/3/issuetype/{i}", "id": i, "name": n,
                           "subtask": False, "statuses": statuses} for i, n in ISSUE_TYPES])

    def _workflows(self, req: Req) -> Resp:
        if not self.workflow_admin:
            return _err(403, "You are not authorized to perform this action. "
                        "Administrator privileges are required.")
        status_ids = {name: str(30 + n) for n, name in enumerate(STATUS_CATEGORY)}
        # `to` is the target status's id; a transition with no `from` is "global".
        transitions = [{"id": t, "name": n, "description": "", "to": status_ids[n2],
                        "from": [], "type": "global"} for t, n, n2 in TRANSITIONS]
        return Resp(200, {"values": [{"id": {"name": "Software Simplified Workflow"},
                                      "description": "", "transitions": transitions}],
                          "isLast": True, "startAt": 0, "maxResults": 50, "total": 1})

    def _search(self, req: Req) -> Resp:
        body = req.json() or {}
        jql = str(body.get("jql") or "")
        items = list(self.issues.values())
        if m := re.search(r'labels = "([^"]+)"', jql):
            items = [i for i in items if m.group(1) in (i["fields"].get("labels") or [])]
        if m := re.search(r'project = "([^"]+)"', jql):
            items = [i for i in items if i["key"].startswith(m.group(1) + "-")]
        if m := re.search(r'updated >= "([^"]+)"', jql):
            since = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M").replace(tzinfo=UTC)
            items = [i for i in items
                     if datetime.strptime(i["fields"]["updated"], "%Y-%m-%dT%H:%M:%S.%f%z") >= since]
        items.sort(key=lambda i: i["fields"]["updated"])
        start = int(body.get("nextPageToken") or 0)
        size = int(body.get("maxResults") or 50)
        page = items[start:start + size]
        wanted = body.get("fields") or []
        out = [{"id": i["id"], "key": i["key"],
                "fields": {k: v for k, v in i["fields"].items() if k in wanted}} for i in page]
        result: dict[str, Any] = {"issues": out}
        if start + size < len(items):
            result["nextPageToken"] = str(start + size)
        return Resp(200, result)
