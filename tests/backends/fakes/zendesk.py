"""Fake Zendesk Support: tickets, Idempotency-Key replays, uploads, search, signed webhooks."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.backends.fakes._server import FakeVendor
from tests.backends.fakes.contract import Contract, Problem
from tests.backends.fakes.faults import Fault


def _without_json_suffix(path: str) -> str:
    # Zendesk serves every endpoint with or without ".json"; the document names them without.
    return path.removesuffix(".json")


def _custom_field_values(document: dict[str, Any]) -> None:
    # A ticket's `custom_fields` are values, [{"id", "value"}] ("Setting custom field values",
    # linked from the field's own description, and the document's TicketObject example), not
    # the ticket-field definitions (CustomFieldObject) that the document points them at.
    ticket = document["components"]["schemas"]["TicketUpdateInput"]["properties"]
    ticket["custom_fields"]["items"] = {
        "type": "object", "required": ["id"],
        "properties": {"id": {"type": "integer"}, "value": {}},
    }


def _path_parameters_in_the_path(document: dict[str, Any]) -> None:
    # Some operations serve two paths ("List Groups": /api/v2/groups and
    # /api/v2/users/{user_id}/groups) and the document hangs both paths' parameters on each,
    # so /api/v2/groups "requires" a user_id it cannot have. OpenAPI 3.0.3 (Parameter
    # Object, `name`): a path parameter MUST correspond to a template expression in the path;
    # Zendesk's own reference lists GET /api/v2/groups without one.
    shared = document["components"]["parameters"]
    for path, item in document["paths"].items():
        for operation in item.values():
            if not isinstance(operation, dict) or "parameters" not in operation:
                continue
            kept = []
            for parameter in operation["parameters"]:
                spec = shared[parameter["$ref"].rsplit("/", 1)[1]] if "$ref" in parameter \
                    else parameter
                if spec.get("in") != "path" or "{" + spec["name"] + "}" in path:
                    kept.append(parameter)
            operation["parameters"] = kept


CONTRACT = Contract("zendesk-support-api.openapi.json.gz", rewrite=_without_json_suffix,
                    overlays=(_custom_field_values, _path_parameters_in_the_path))


def iso(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def sign(secret: str, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret.encode(), timestamp.encode() + body, hashlib.sha256)
    return base64.b64encode(mac.digest()).decode()


class FakeZendesk(FakeVendor):
    contract = CONTRACT

    def __init__(self, email: str = "agent@example.org", token: str = "tok") -> None:
        self.email, self.token = email, token
        self.tickets: dict[int, dict[str, Any]] = {}
        self.comments: dict[int, list[dict[str, Any]]] = {}
        self.uploads: dict[str, dict[str, Any]] = {}
        self.idempotency: dict[str, tuple[str, dict[str, Any]]] = {}
        self.audits: dict[int, list[dict[str, Any]]] = {}
        self.users: dict[int, dict[str, Any]] = {
            7: {"id": 7, "email": email, "name": "Integration", "role": "agent"},
            501: {"id": 501, "email": "carol@example.com", "name": "Carol Customer",
                  "role": "end-user"},
        }
        self.clock = datetime(2026, 1, 1, 8, 0, 0, tzinfo=UTC)
        self._next = 100
        super().__init__()

    def routes(self) -> list[Route]:
        return [
            Route("/api/v2/users/me.json", self.me, methods=["GET"]),
            Route("/api/v2/tickets.json", self.tickets_root, methods=["GET", "POST"]),
            Route("/api/v2/tickets/{tid:int}.json", self.one, methods=["GET", "PUT"]),
            Route("/api/v2/tickets/{tid:int}/comments.json", self.list_comments),
            Route("/api/v2/tickets/{tid:int}/audits", self.list_audits),
            Route("/api/v2/tickets/show_many", self.show_many),
            Route("/api/v2/uploads.json", self.upload, methods=["POST"]),
            Route("/api/v2/search.json", self.search, methods=["GET"]),
            Route("/api/v2/users/search", self.user_search),
            Route("/api/v2/groups", self.groups),
            Route("/api/v2/ticket_fields", self.ticket_fields),
        ]

    def tick(self) -> str:
        self.clock += timedelta(seconds=1)
        return iso(self.clock)

    def nid(self) -> int:
        self._next += 1
        return self._next

    def set_status(self, tid: int, status: str) -> None:
        self.tickets[tid].update(status=status, updated_at=self.tick())

    def _audit(self, tid: int, events: list[dict[str, Any]], metadata: Any,
               author: int = 7) -> dict[str, Any]:
        audit = {"id": self.nid(), "ticket_id": tid, "author_id": author,
                 "created_at": iso(self.clock), "events": events,
                 "metadata": {"custom": dict((metadata or {}).get("custom") or {}),
                              "system": {"ip_address": "127.0.0.1"}}}
        self.audits.setdefault(tid, []).append(audit)
        return audit

    def _requester(self, t: dict[str, Any]) -> int | None:
        """requester_id, or requester {email, name}: found, else a new end user."""
        if t.get("requester_id") is not None:
            return int(t["requester_id"]) if int(t["requester_id"]) in self.users else -1
        r = t.get("requester")
        if not isinstance(r, dict) or not r.get("email"):
            return 7  # the API user
        for user in self.users.values():
            if user["email"] == str(r["email"]).lower():
                return int(user["id"])
        uid = self.nid()
        self.users[uid] = {"id": uid, "email": str(r["email"]).lower(),
                           "name": r.get("name") or r["email"], "role": "end-user"}
        return uid

    def _auth(self, request: Request) -> bool:
        header = request.headers.get("authorization", "")
        expected = base64.b64encode(f"{self.email}/token:{self.token}".encode()).decode()
        return header == f"Basic {expected}"

    @staticmethod
    def _denied() -> JSONResponse:
        return JSONResponse({"error": "Couldn't authenticate you"}, 401)

    def refuse_credentials(self) -> Response:
        return self._denied()

    def fault_answer(self, kind: Fault, retry_after: int) -> Response:
        if kind is Fault.RATE_LIMITED:
            return JSONResponse({"error": "TooManyRequests",
                                 "description": "You have exceeded the rate limit"}, 429,
                                {"Retry-After": str(retry_after)})
        if kind is Fault.SERVER_ERROR:
            return JSONResponse({"error": "InternalError",
                                 "description": "Something went wrong"}, 500)
        return super().fault_answer(kind, retry_after)

    def reject(self, problems: list[Problem]) -> Response:
        if all(p.unknown for p in problems):
            return JSONResponse({"error": "InvalidEndpoint", "description": "Not found"}, 404)
        return JSONResponse({"error": "RecordInvalid", "description": "; ".join(
            p.message for p in problems)}, 400)

    def delete_ticket(self, ticket: str) -> None:
        del self.tickets[int(ticket)]

    @staticmethod
    def _missing() -> JSONResponse:
        return JSONResponse({"error": "RecordNotFound", "description": "Not found"}, 404)

    async def me(self, request: Request) -> Response:
        if not self._auth(request):
            return self._denied()
        return JSONResponse({"user": {"id": 7, "name": "API agent", "email": self.email,
                                      "role": "agent"}})

    def agent_comment(self, tid: int, body: str, public: bool = False) -> dict[str, Any]:
        """A human agent (not our API user) comments in the Zendesk UI."""
        entry = {"id": self.nid(), "type": "Comment", "body": body, "public": public,
                 "author_id": 99, "attachments": []}
        self.comments[tid].append(entry)
        self._audit(tid, [entry], None, author=99)
        self.tickets[tid]["updated_at"] = self.tick()
        return entry

    def shown(self, ticket: dict[str, Any]) -> dict[str, Any]:
        """A ticket as Zendesk answers it: `requester` is write-only (the answer has the
        `requester_id` it resolved to)."""
        return {k: v for k, v in ticket.items() if k != "requester"}

    def _add_comment(self, tid: int, c: dict[str, Any]) -> dict[str, Any]:
        tokens = c.get("uploads") or []
        if any(t not in self.uploads for t in tokens):
            raise KeyError("upload token")
        entry = {"id": self.nid(), "type": "Comment", "body": c.get("body") or c.get("html_body"),
                 "public": c.get("public", True), "author_id": 7,
                 "attachments": [self.uploads[t] for t in tokens]}
        self.comments.setdefault(tid, []).append(entry)
        return entry

    async def tickets_root(self, request: Request) -> Response:
        if not self._auth(request):
            return self._denied()
        if request.method == "GET":
            ext = request.query_params.get("external_id")
            found = [t for t in self.tickets.values() if ext is None or t["external_id"] == ext]
            return JSONResponse({"tickets": [self.shown(t) for t in found],
                                 "count": len(found)})
        raw = await request.body()
        key = request.headers.get("idempotency-key")
        if key and key in self.idempotency:
            digest, answer = self.idempotency[key]
            if digest != hashlib.sha256(raw).hexdigest():
                return JSONResponse({"error": "IdempotentRequestError",
                                     "description": "key reused with another payload"}, 400)
            return JSONResponse(answer, 201, {"x-idempotency-lookup": "hit"})
        t = json.loads(raw)["ticket"]
        if not t.get("subject"):
            return JSONResponse({"error": "RecordInvalid", "description": "Record validation errors",
                                 "details": {"subject": [{"description": "Subject: cannot be blank"}]}},
                                422)
        requester = self._requester(t)
        if requester == -1:
            return JSONResponse({"error": "RecordInvalid", "description": "Record validation "
                                 "errors", "details": {"requester": [
                                     {"description": "Requester: is invalid"}]}}, 422)
        tid = self.nid()
        now = self.tick()
        ticket = {"id": tid, "subject": t["subject"], "status": "new",
                  "priority": t.get("priority"), "external_id": t.get("external_id"),
                  "tags": [str(x).lower() for x in t.get("tags", [])],
                  "requester": t.get("requester"), "requester_id": requester,
                  "custom_fields": t.get("custom_fields", []), "created_at": now,
                  "updated_at": now}
        self.tickets[tid] = ticket
        comment = self._add_comment(tid, t.get("comment") or {})
        audit = self._audit(tid, [comment], t.get("metadata"))
        answer = {"ticket": self.shown(ticket), "audit": audit}
        if key:
            self.idempotency[key] = (hashlib.sha256(raw).hexdigest(), answer)
        return JSONResponse(answer, 201, {"x-idempotency-lookup": "miss"})

    async def one(self, request: Request) -> Response:
        if not self._auth(request):
            return self._denied()
        tid = request.path_params["tid"]
        ticket = self.tickets.get(tid)
        if ticket is None:
            return self._missing()
        if request.method == "GET":
            return JSONResponse({"ticket": self.shown(ticket)})
        if ticket["status"] == "closed":
            return JSONResponse({"error": "RecordInvalid", "description": "Record validation errors",
                                 "details": {"status": [{"description":
                                             "Status: closed prevents ticket update"}]}}, 422)
        t = (await request.json())["ticket"]
        metadata = t.pop("metadata", None)  # write-only: kept on the audit
        events = []
        if "comment" in t:
            try:
                events.append(self._add_comment(tid, t.pop("comment")))
            except KeyError:
                return JSONResponse({"error": "RecordInvalid", "description": "bad upload token"},
                                    422)
        ticket.update(t)
        ticket["updated_at"] = self.tick()
        audit = self._audit(tid, events, metadata)
        return JSONResponse({"ticket": self.shown(ticket), "audit": audit})

    async def list_audits(self, request: Request) -> Response:
        if not self._auth(request):
            return self._denied()
        tid = request.path_params["tid"]
        if tid not in self.tickets:
            return self._missing()
        audits = self.audits.get(tid, [])
        return JSONResponse({"audits": audits, "count": len(audits), "next_page": None,
                             "previous_page": None})

    async def show_many(self, request: Request) -> Response:
        if not self._auth(request):
            return self._denied()
        ids = [int(x) for x in request.query_params.get("ids", "").split(",") if x]
        return JSONResponse({"tickets": [self.shown(self.tickets[i]) for i in ids
                                         if i in self.tickets]})

    async def user_search(self, request: Request) -> Response:
        if not self._auth(request):
            return self._denied()
        query = request.query_params.get("query", "")
        wanted = query.removeprefix("email:").strip('"').lower()
        users = [u for u in self.users.values() if u["email"] == wanted]
        return JSONResponse({"users": users, "count": len(users), "next_page": None})

    async def groups(self, request: Request) -> Response:
        if not self._auth(request):
            return self._denied()
        return JSONResponse({"groups": [{"id": 5, "name": "Support"},
                                        {"id": 6, "name": "Billing"}], "count": 2})

    async def ticket_fields(self, request: Request) -> Response:
        if not self._auth(request):
            return self._denied()
        return JSONResponse({"ticket_fields": [
            {"id": 1, "title": "Subject", "type": "subject"},
            {"id": 360, "title": "Site", "type": "text"},
            {"id": 361, "title": "Plan", "type": "tagger"}], "count": 3})

    async def list_comments(self, request: Request) -> Response:
        if not self._auth(request):
            return self._denied()
        tid = request.path_params["tid"]
        if tid not in self.tickets:
            return self._missing()
        return JSONResponse({"comments": self.comments.get(tid, [])})

    async def upload(self, request: Request) -> Response:
        if not self._auth(request):
            return self._denied()
        token = f"tok{self.nid()}"
        self.uploads[token] = {"file_name": request.query_params["filename"],
                               "content_type": request.headers.get("content-type"),
                               "data": base64.b64encode(await request.body()).decode()}
        return JSONResponse({"upload": {"token": token, "attachment": self.uploads[token]}}, 201)

    async def search(self, request: Request) -> Response:
        if not self._auth(request):
            return self._denied()
        terms = request.query_params["query"].split()
        rows = list(self.tickets.values())
        for term in terms:
            if term.startswith("updated>"):
                rows = [r for r in rows if r["updated_at"] > term[8:]]
        rows.sort(key=lambda r: r["updated_at"])
        per, page = int(request.query_params["per_page"]), int(request.query_params["page"])
        chunk = rows[(page - 1) * per : page * per]
        nxt = str(request.url.include_query_params(page=page + 1)) if page * per < len(rows) else None
        return JSONResponse({"results": [self.shown(r) for r in chunk], "count": len(rows),
                             "next_page": nxt})

    def webhook(self, secret: str, payload: dict[str, Any], *, invocation: str,
                when: datetime | None = None) -> tuple[dict[str, str], bytes]:
        """What Zendesk would POST to our receiver."""
        body = json.dumps(payload).encode()
        stamp = iso(when or datetime.now(UTC))
        return {
            "X-Zendesk-Webhook-Signature": sign(secret, stamp, body),
            "X-Zendesk-Webhook-Signature-Timestamp": stamp,
            "X-Zendesk-Webhook-Id": "01HWEBHOOK",
            "X-Zendesk-Webhook-Invocation-Id": invocation,
        }, body
