"""Zammad fake following backend-contracts.md §2 (tickets, articles, search, triggers)."""

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

from tests.backends.fakes.base import FakeVendor, Req, Resp
from tests.backends.fakes.contract import Contract, Problem
from tests.backends.fakes.faults import Fault

# A fresh Zammad's ids (api/ticket/states.rst, priorities.rst; group 1 is "Users").
STATE_IDS = {"new": 1, "open": 2, "pending reminder": 3, "closed": 4, "merged": 5,
             "removed": 6, "pending close": 7}
PRIORITY_IDS = {"1 low": 1, "2 normal": 2, "3 high": 3}


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class FakeZammad(FakeVendor):
    contract = Contract("zammad.yaml")

    def __init__(self, *, token: str = "ztoken", webhook_secret: str = "zhook") -> None:
        super().__init__()
        self.token, self.webhook_secret = token, webhook_secret
        self.tickets: dict[int, dict[str, Any]] = {}
        self.articles: dict[int, list[dict[str, Any]]] = {}
        self._ids = itertools.count(1)
        self._num = itertools.count(31001)
        self.users: dict[int, dict[str, Any]] = {
            3: {"id": 3, "login": "bot", "email": "bot@example.org", "firstname": "Bot"},
            7: {"id": 7, "login": "carol@example.com", "email": "carol@example.com",
                "firstname": "Carol", "lastname": "Customer"},
        }
        self.groups = {1: "Users", 2: "Support"}
        self.states = {v: k for k, v in STATE_IDS.items()}
        self.priorities = {v: k for k, v in PRIORITY_IDS.items()}
        self.route("GET", r"/api/v1/users/me", lambda r: Resp(200, self.users[3]))
        self.route("GET", r"/api/v1/users/search", self._user_search)
        self.route("GET", r"/api/v1/groups", lambda r: Resp(200, [
            {"id": k, "name": v, "active": True} for k, v in self.groups.items()]))
        self.route("GET", r"/api/v1/ticket_states", lambda r: Resp(200, [
            {"id": k, "name": v, "active": True} for k, v in self.states.items()]))
        self.route("GET", r"/api/v1/ticket_priorities", lambda r: Resp(200, [
            {"id": k, "name": v, "active": True} for k, v in self.priorities.items()]))
        self.route("POST", r"/api/v1/tickets", self._create)
        self.route("GET", r"/api/v1/tickets/search", self._search)
        self.route("GET", r"/api/v1/tickets/(?P<id>\d+)", self._get)
        self.route("PUT", r"/api/v1/tickets/(?P<id>\d+)", self._put)
        self.route("POST", r"/api/v1/ticket_articles", self._article)
        self.route("GET", r"/api/v1/ticket_articles/by_ticket/(?P<id>\d+)", self._by_ticket)

    def check_auth(self, req: Req) -> Resp | None:
        if req.headers.get("authorization") == f"Token token={self.token}":
            return None
        return self.refuse_credentials(req)

    def refuse_credentials(self, req: Req) -> Resp:
        return Resp(401, {"error": "authentication failed", "error_human": "Authentication failed"})

    def fault_answer(self, kind: Fault, req: Req, retry_after: int) -> Resp:
        if kind is Fault.RATE_LIMITED:
            return Resp(429, {"error": "Too many requests"}, {"Retry-After": str(retry_after)})
        if kind is Fault.SERVER_ERROR:
            return Resp(500, {"error": "An internal server error occurred"})
        return super().fault_answer(kind, req, retry_after)

    def reject(self, req: Req, problems: list[Problem]) -> Resp:
        text = "; ".join(p.message for p in problems)
        if all(p.unknown for p in problems):
            return Resp(404, {"error": f"No route matches [{req.method}] {req.path}"})
        return Resp(422, {"error": text, "error_human": text})

    def delete_ticket(self, ticket: str) -> None:
        del self.tickets[int(ticket)]

    def shown(self, ticket: dict[str, Any]) -> dict[str, Any]:
        """A ticket as Zammad answers it: ids for its relations (the names, as with
        ?expand=true, stay too)."""
        shown = {k: v for k, v in ticket.items() if k != "from_header"}
        group_id = next(k for k, v in self.groups.items() if v == ticket["group"])
        return {**shown, "priority": ticket.get("priority") or "2 normal", "group_id": group_id,
                "state_id": STATE_IDS[ticket["state"]],
                "priority_id": PRIORITY_IDS.get(str(ticket.get("priority")), 2),
                "created_at": ticket.get("created_at", ticket["updated_at"])}

    def _missing(self) -> Resp:
        return Resp(404, {"error": "Couldn't find Ticket with 'id'",
                          "error_human": "Couldn't find Ticket"})

    def ticket(self, tid: int | str) -> dict[str, Any] | None:
        return self.tickets.get(int(tid))

    def set_state(self, tid: int | str, state: str) -> None:
        with self.lock:
            t = self.tickets[int(tid)]
            t["state"], t["updated_at"] = state, _now()

    def add_agent_note(self, tid: int | str, body: str, *, internal: bool = True) -> dict[str, Any]:
        with self.lock:
            a = {"id": next(self._ids), "ticket_id": int(tid), "body": body, "internal": internal,
                 "type": "note", "sender": "Agent", "from": "Agent Smith", "message_id": None,
                 "created_at": _now(), "attachments": []}
            self.articles[int(tid)].append(a)
            self.tickets[int(tid)]["updated_at"] = _now()
            return a

    def trigger(self, url: str, tid: int | str, *, article: dict[str, Any] | None = None,
                delivery: str | None = None, secret: str | None = None) -> httpx.Response:
        with self.lock:
            payload = {"ticket": dict(self.tickets.get(int(tid)) or {"id": int(tid)}),
                       "article": article or {}}
        body = json.dumps(payload).encode()
        sig = hmac.new((secret or self.webhook_secret).encode(), body, hashlib.sha1).hexdigest()
        return httpx.post(url, content=body, headers={
            "Content-Type": "application/json", "X-Hub-Signature": f"sha1={sig}",
            "X-Zammad-Trigger": "mailticket sync", "X-Zammad-Delivery": delivery or str(uuid.uuid4()),
        })

    def _user_search(self, req: Req) -> Resp:
        query = req.query.get("query", "")
        m = re.fullmatch(r'email:"?([^"]+)"?', query)
        wanted = m.group(1).lower() if m else query.lower()
        return Resp(200, [u for u in self.users.values()
                          if wanted and wanted == str(u.get("email", "")).lower()])

    def _customer(self, value: Any) -> int | None:
        """`customer_id`: a user id, or guess:<email> (found, else created)."""
        if isinstance(value, str) and value.startswith("guess:"):
            email = value.removeprefix("guess:").lower()
            for user in self.users.values():
                if user.get("email") == email:
                    return int(user["id"])
            uid = next(self._ids) + 1000
            self.users[uid] = {"id": uid, "login": email, "email": email}
            return uid
        if value is not None and int(value) in self.users:
            return int(value)
        return None

    def _create(self, req: Req) -> Resp:
        body = req.json() or {}
        if not body.get("title") or not body.get("group"):
            return Resp(422, {"error": "Title and group are required"})
        if body.get("group") not in self.groups.values():
            return Resp(422, {"error": f"No lookup value found for 'group': {body['group']!r}"})
        customer = self._customer(body.get("customer_id"))
        if customer is None:
            return Resp(422, {"error": "Missing required value for field 'customer_id'!"})
        article = body.get("article") or {}
        tid = next(self._ids)
        tags = [t for t in str(body.get("tags") or "").split(",") if t]
        ticket = {"id": tid, "number": str(next(self._num)), "title": body["title"],
                  "group": body["group"], "state": "new", "priority": body.get("priority"),
                  "customer_id": customer, "tags": tags, "updated_at": _now(),
                  "from_header": req.headers.get("from")}
        self.tickets[tid] = ticket
        self.articles[tid] = [{**article, "id": next(self._ids), "ticket_id": tid,
                               "created_at": _now(), "attachments": []}]
        return Resp(201, self.shown(ticket))

    def _get(self, req: Req) -> Resp:
        t = self.ticket(req.params["id"])
        return Resp(200, self.shown(t)) if t else self._missing()

    def _put(self, req: Req) -> Resp:
        t = self.ticket(req.params["id"])
        if t is None:
            return self._missing()
        body = req.json() or {}
        if "state" in body and body["state"] not in ("new", "open", "closed", "pending close",
                                                     "pending reminder"):
            return Resp(422, {"error": f"Unknown state {body['state']}"})
        t.update(body)
        t["updated_at"] = _now()
        return Resp(200, self.shown(t))

    def _article(self, req: Req) -> Resp:
        body = req.json() or {}
        t = self.ticket(body.get("ticket_id", 0))
        if t is None:
            return self._missing()
        if not body.get("body"):
            return Resp(422, {"error": "body is required"})
        files = []
        for f in body.get("attachments") or []:
            files.append({"id": next(self._ids), "filename": f["filename"],
                          "data": base64.b64decode(f["data"]), "preferences": {"Mime-Type": f["mime-type"]}})
        a = {**body, "id": next(self._ids), "created_at": _now(), "attachments": files}
        self.articles[t["id"]].append(a)
        t["updated_at"] = _now()
        shown = {**a, "attachments": [{k: v for k, v in f.items() if k != "data"} for f in files]}
        return Resp(201, shown)

    def _by_ticket(self, req: Req) -> Resp:
        if self.ticket(req.params["id"]) is None:
            return self._missing()
        out = [{**a, "attachments": [{k: v for k, v in f.items() if k != "data"}
                                     for f in a["attachments"]]}
               for a in self.articles[int(req.params["id"])]]
        return Resp(200, out)

    def _search(self, req: Req) -> Resp:
        query = req.query.get("query", "")
        found = list(self.tickets.values())
        if m := re.fullmatch(r"tags:(\S+)", query):
            found = [t for t in found if m.group(1) in t["tags"]]
        elif m := re.fullmatch(r"updated_at:>=(\S+)", query):
            if m.group(1) != "*":
                since = m.group(1).replace("Z", "")
                found = [t for t in found if t["updated_at"][:19] >= since[:19]]
        else:
            return Resp(422, {"error": f"unsupported query {query!r}"})
        found.sort(key=lambda t: t["updated_at"])
        per = int(req.query.get("per_page") or req.query.get("limit") or 50)
        page = int(req.query.get("page") or 1)
        chunk = found[(page - 1) * per: page * per]
        if req.query.get("expand") == "true":
            return Resp(200, [self.shown(t) for t in chunk])
        return Resp(200, {"tickets": [t["id"] for t in chunk],
                          "assets": {"Ticket": {str(t["id"]): self.shown(t) for t in chunk}}})
