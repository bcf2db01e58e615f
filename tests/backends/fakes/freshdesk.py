"""Fake Freshdesk API v2: tickets, notes, replies, multipart attachments, search, paging."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from typing import Any

from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.backends.fakes._server import FakeVendor
from tests.backends.fakes.contract import Contract, Problem
from tests.backends.fakes.faults import Fault


def invalid(*errors: tuple[str, str, str]) -> JSONResponse:
    return JSONResponse({"description": "Validation failed", "errors": [
        {"field": f, "message": m, "code": c} for f, m, c in errors]}, 400)


class FakeFreshdesk(FakeVendor):
    contract = Contract("freshdesk.yaml")

    def __init__(self, api_key: str = "fdkey", custom_fields: frozenset[str] = frozenset()
                 ) -> None:
        self.api_key = api_key
        # Custom ticket fields an admin added (a stock helpdesk has none).
        self.custom_fields = set(custom_fields)
        self.contacts: dict[int, dict[str, Any]] = {
            4401: {"id": 4401, "name": "Carol Customer", "email": "carol@example.com"}}
        self.tickets: dict[int, dict[str, Any]] = {}
        self.conversations: dict[int, list[dict[str, Any]]] = {}
        self.clock = datetime(2026, 1, 1, 8, 0, 0, tzinfo=UTC)
        self._next = 10
        super().__init__()

    def routes(self) -> list[Route]:
        return [
            Route("/api/v2/agents/me", self.me),
            Route("/api/v2/tickets", self.tickets_root, methods=["GET", "POST"]),
            Route("/api/v2/tickets/{tid:int}", self.one, methods=["GET", "PUT"]),
            Route("/api/v2/tickets/{tid:int}/notes", self.note, methods=["POST"]),
            Route("/api/v2/tickets/{tid:int}/reply", self.reply, methods=["POST"]),
            Route("/api/v2/tickets/{tid:int}/conversations", self.conversation_list),
            Route("/api/v2/search/tickets", self.search),
            Route("/api/v2/contacts", self.contact_list),
            Route("/api/v2/groups", self.groups),
            Route("/api/v2/ticket_fields", self.ticket_fields),
        ]

    def _requester(self, body: dict[str, Any]) -> int | None:
        """requester_id, or email: the contact with it, else a new contact."""
        if body.get("requester_id") is not None:
            return int(body["requester_id"]) if int(body["requester_id"]) in self.contacts else None
        email = str(body.get("email") or "").lower()
        if not email:
            return None
        for contact in self.contacts.values():
            if contact["email"] == email:
                return int(contact["id"])
        cid = self.nid()
        self.contacts[cid] = {"id": cid, "name": body.get("name") or email, "email": email}
        return cid

    async def contact_list(self, request: Request) -> Response:
        if (denied := self._denied(request)) is not None:
            return denied
        email = request.query_params.get("email", "").lower()
        return JSONResponse([c for c in self.contacts.values() if not email or c["email"] == email])

    async def groups(self, request: Request) -> Response:
        return self._denied(request) or JSONResponse([{"id": 7001, "name": "Billing"},
                                                      {"id": 7002, "name": "Support"}])

    async def ticket_fields(self, request: Request) -> Response:
        if (denied := self._denied(request)) is not None:
            return denied
        return JSONResponse([
            {"id": 1, "name": "requester", "label": "Search a requester", "type": "default_requester"},
            {"id": 2, "name": "status", "label": "Status", "type": "default_status",
             "choices": {"2": ["Open", "Being Processed"], "3": ["Pending", "Awaiting your Reply"],
                         "4": ["Resolved", "This ticket has been Resolved"],
                         "5": ["Closed", "This ticket has been Closed"]}},
            *({"id": 100 + n, "name": name, "label": name, "type": "custom_text"}
              for n, name in enumerate(sorted(self.custom_fields)))])

    def tick(self) -> str:
        self.clock += timedelta(seconds=1)
        return self.clock.strftime("%Y-%m-%dT%H:%M:%SZ")

    def nid(self) -> int:
        self._next += 1
        return self._next

    def set_status(self, tid: int, status: int) -> None:
        self.tickets[tid].update(status=status, updated_at=self.tick())

    def _denied(self, request: Request) -> Response | None:
        expected = base64.b64encode(f"{self.api_key}:X".encode()).decode()
        if request.headers.get("authorization") == f"Basic {expected}":
            return None
        return self.refuse_credentials()

    def refuse_credentials(self) -> Response:
        return JSONResponse({"code": "invalid_credentials",
                             "message": "You have to be logged in to perform this action."}, 401)

    def fault_answer(self, kind: Fault, retry_after: int) -> Response:
        if kind is Fault.RATE_LIMITED:
            return JSONResponse(
                {"code": "rate_limit_exceeded",
                 "message": "You have exceeded the limit of requests per hour"}, 429,
                {"Retry-After": str(retry_after), "X-RateLimit-Total": "200",
                 "X-RateLimit-Remaining": "0", "X-RateLimit-Used-CurrentRequest": "1"})
        if kind is Fault.SERVER_ERROR:
            return JSONResponse({"code": "internal_error",
                                 "message": "We're sorry, but something went wrong."}, 500)
        return super().fault_answer(kind, retry_after)

    def reject(self, problems: list[Problem]) -> Response:
        if all(p.unknown for p in problems):
            return Response(status_code=404)
        return invalid(*(("", p.message, "invalid_value") for p in problems))

    def delete_ticket(self, ticket: str) -> None:
        del self.tickets[int(ticket)]

    async def me(self, request: Request) -> Response:
        return self._denied(request) or JSONResponse(
            {"id": 1, "contact": {"email": "agent@example.org"}})

    async def tickets_root(self, request: Request) -> Response:
        if (denied := self._denied(request)) is not None:
            return denied
        if request.method == "GET":
            qp = request.query_params
            rows = [t for t in self.tickets.values()
                    if t["updated_at"] >= qp.get("updated_since", "")]
            rows.sort(key=lambda t: t["updated_at"])
            per, page = int(qp.get("per_page", 30)), int(qp.get("page", 1))
            headers = {}
            if page * per < len(rows):
                headers["Link"] = f'<{request.url.include_query_params(page=page + 1)}>; rel="next"'
            return JSONResponse(rows[(page - 1) * per : page * per], 200, headers)
        body = await request.json()
        problems = [(f, "It should be a/an String", "missing_field")
                    for f in ("subject",) if not body.get(f)]
        requester = self._requester(body)
        if requester is None:
            problems.append(("requester_id", "Please fill at least 1 of email, mobile, phone, "
                             "twitter_id, unique_external_id, requester_id fields",
                             "missing_field"))
        if body.get("status") not in (2, 3, 4, 5):
            problems.append(("status", "It should be one of these values: '2,3,4,5'",
                             "invalid_value"))
        problems += [(name, "Unexpected/invalid field in request", "invalid_field")
                     for name in body.get("custom_fields") or {} if name not in self.custom_fields]
        if problems:
            return invalid(*problems)
        tid = self.nid()
        now = self.tick()
        self.tickets[tid] = {**body, "id": tid, "created_at": now, "updated_at": now,
                             "requester_id": requester, "priority": body.get("priority", 1),
                             "tags": list(body.get("tags") or []),
                             "custom_fields": body.get("custom_fields", {})}
        return JSONResponse(self.tickets[tid], 201)

    async def one(self, request: Request) -> Response:
        if (denied := self._denied(request)) is not None:
            return denied
        ticket = self.tickets.get(request.path_params["tid"])
        if ticket is None:
            return Response(status_code=404)
        if request.method == "PUT":
            body = await request.json()
            if "status" in body and body["status"] not in (2, 3, 4, 5):
                return invalid(("status", "It should be one of these values: '2,3,4,5'",
                                "invalid_value"))
            custom = body.pop("custom_fields", {})
            ticket.update(body)
            ticket["custom_fields"].update(custom)
            ticket["updated_at"] = self.tick()
        return JSONResponse(ticket)

    def agent_note(self, tid: int, body: str, private: bool = True) -> dict[str, Any]:
        """A human agent (user 2, not the API key's agent 1) adds a note in the UI."""
        return self._add(tid, {"body": body, "private": private, "kind": "note",
                               "attachments": []}, user_id=2)

    def _add(self, tid: int, entry: dict[str, Any], user_id: int = 1) -> dict[str, Any]:
        entry.update(id=self.nid(), ticket_id=tid, created_at=self.tick(), user_id=user_id)
        self.conversations.setdefault(tid, []).append(entry)
        return entry

    async def note(self, request: Request) -> Response:
        if (denied := self._denied(request)) is not None:
            return denied
        tid = request.path_params["tid"]
        if tid not in self.tickets:
            return Response(status_code=404)
        if request.headers.get("content-type", "").startswith("multipart/form-data"):
            form = await request.form()
            files = [f for f in form.getlist("attachments[]") if isinstance(f, UploadFile)]
            atts = [{"id": self.nid(), "name": f.filename, "content_type": f.content_type,
                     "data": await f.read()} for f in files]
            body: dict[str, Any] = {"body": form.get("body"),
                                    "private": form.get("private") != "false",
                                    "attachments": atts}
        else:
            body = await request.json()
            body = {"body": body.get("body"), "private": body.get("private", True),
                    "attachments": []}
        if not body["body"]:
            return invalid(("body", "It should be a/an String", "missing_field"))
        entry = self._add(tid, {**body, "kind": "note"})
        out = {**entry, "attachments": [{k: v for k, v in a.items() if k != "data"}
                                        for a in entry["attachments"]]}
        return JSONResponse(out, 201)

    async def reply(self, request: Request) -> Response:
        if (denied := self._denied(request)) is not None:
            return denied
        tid = request.path_params["tid"]
        if tid not in self.tickets:
            return Response(status_code=404)
        body = await request.json()
        entry = self._add(tid, {"body": body["body"], "private": False, "kind": "reply",
                                "attachments": []})
        return JSONResponse(entry, 201)

    async def conversation_list(self, request: Request) -> Response:
        if (denied := self._denied(request)) is not None:
            return denied
        items = self.conversations.get(request.path_params["tid"], [])
        return JSONResponse([{"id": c["id"], "body": c["body"], "body_text": c["body"],
                              "private": c["private"], "user_id": c["user_id"],
                              "created_at": c["created_at"]} for c in items])

    async def search(self, request: Request) -> Response:
        if (denied := self._denied(request)) is not None:
            return denied
        query = request.query_params["query"]
        if not (query.startswith('"') and query.endswith('"')):
            return invalid(("query", "It should be wrapped in double quotes", "invalid_value"))
        name, _, value = query.strip('"').partition(":")
        value = value.strip("'")
        if name == "tag":
            rows = [t for t in self.tickets.values() if value in t["tags"]]
        else:
            rows = [t for t in self.tickets.values()
                    if t["custom_fields"].get(f"cf_{name}") == value]
        return JSONResponse({"results": rows, "total": len(rows)})
