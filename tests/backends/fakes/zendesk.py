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


CONTRACT = Contract("zendesk-support-api.openapi.json.gz", rewrite=_without_json_suffix,
                    overlays=(_custom_field_values,))


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
        self.user_ids: dict[str, int] = {}  # requester e-mail -> end-user id
        self.clock = datetime(2026, 1, 1, 8, 0, 0, tzinfo=UTC)
        self._next = 100
        super().__init__()

    def routes(self) -> list[Route]:
        return [
            Route("/api/v2/users/me.json", self.me, methods=["GET"]),
            Route("/api/v2/tickets.json", self.tickets_root, methods=["GET", "POST"]),
            Route("/api/v2/tickets/{tid:int}.json", self.one, methods=["GET", "PUT"]),
            Route("/api/v2/tickets/{tid:int}/comments.json", self.list_comments),
            Route("/api/v2/uploads.json", self.upload, methods=["POST"]),
            Route("/api/v2/search.json", self.search, methods=["GET"]),
        ]

    def tick(self) -> str:
        self.clock += timedelta(seconds=1)
        return iso(self.clock)

    def nid(self) -> int:
        self._next += 1
        return self._next

    def set_status(self, tid: int, status: str) -> None:
        self.tickets[tid].update(status=status, updated_at=self.tick())

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
        self.tickets[tid]["updated_at"] = self.tick()
        return entry

    def shown(self, ticket: dict[str, Any]) -> dict[str, Any]:
        """A ticket as Zendesk answers it: `requester` is write-only, `requester_id` is
        always there (the API user when the create named nobody)."""
        out = {k: v for k, v in ticket.items() if k != "requester"}
        requester = ticket.get("requester") or {}
        out.setdefault("requester_id", self.user_ids.setdefault(requester.get("email"), 7)
                       if requester.get("email") else 7)
        return out

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
        tid = self.nid()
        now = self.tick()
        email = (t.get("requester") or {}).get("email")
        if email:
            self.user_ids.setdefault(email, self.nid())
        ticket = {"id": tid, "subject": t["subject"], "status": "new",
                  "priority": t.get("priority"), "external_id": t.get("external_id"),
                  "tags": t.get("tags", []), "requester": t.get("requester"),
                  "custom_fields": t.get("custom_fields", []), "created_at": now,
                  "updated_at": now}
        self.tickets[tid] = ticket
        comment = self._add_comment(tid, t.get("comment") or {})
        answer = {"ticket": self.shown(ticket),
                  "audit": {"id": self.nid(), "events": [comment]}}
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
        events = []
        if "comment" in t:
            try:
                events.append(self._add_comment(tid, t.pop("comment")))
            except KeyError:
                return JSONResponse({"error": "RecordInvalid", "description": "bad upload token"},
                                    422)
        ticket.update(t)
        ticket["updated_at"] = self.tick()
        return JSONResponse({"ticket": self.shown(ticket),
                             "audit": {"id": self.nid(), "events": events}})

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
