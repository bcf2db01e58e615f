"""Fake ServiceNow instance: Table API (incident, sys_journal_field) and Attachment API."""

from __future__ import annotations

import base64
import re
import uuid
from datetime import datetime, timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.backends.fakes._server import FakeVendor
from tests.backends.fakes.contract import Contract, Problem
from tests.backends.fakes.faults import Fault

FMT = "%Y-%m-%d %H:%M:%S"
STATE_LABELS = {"1": "New", "2": "In Progress", "3": "On Hold", "6": "Resolved", "7": "Closed",
                "8": "Canceled"}


def failure(status: int, message: str, detail: str = "") -> JSONResponse:
    return JSONResponse(
        {"error": {"message": message, "detail": detail}, "status": "failure"}, status
    )


def _holds(have: str, op: str, value: str) -> bool:
    if op == "STARTSWITH":
        return have.startswith(value)
    if op == "LIKE":
        return value in have
    if op == "IN":
        return have in value.split(",")
    if op == ">":
        return have > value
    return have == value


class FakeServiceNow(FakeVendor):
    contract = Contract("servicenow.yaml")

    def __init__(self, user: str = "svc", password: str = "pw") -> None:
        self.user, self.password = user, password
        self.incidents: dict[str, dict[str, str]] = {}
        self.journal: list[dict[str, str]] = []
        self.attachments: list[dict[str, Any]] = []
        self.clock = datetime(2026, 1, 1, 8, 0, 0)
        self.tables: dict[str, dict[str, dict[str, str]]] = {
            "sys_user": {"6816f79cc0a8016401c5a33be04be441": {
                "sys_id": "6816f79cc0a8016401c5a33be04be441", "user_name": "carol.customer",
                "email": "carol@example.com", "first_name": "Carol", "last_name": "Customer"}},
            "sys_user_group": {
                "8a4dde73c6112278017a6a4baf547aa7": {
                    "sys_id": "8a4dde73c6112278017a6a4baf547aa7", "name": "Service Desk",
                    "active": "true"},
                "287ebd7da9fe198100f92cc8d1d2154e": {
                    "sys_id": "287ebd7da9fe198100f92cc8d1d2154e", "name": "Network",
                    "active": "true"}},
            "sys_choice": {f"c{n}": {"sys_id": f"c{n}", "name": "incident", "element": el,
                                     "value": v, "label": label, "inactive": "false"}
                           for n, (el, v, label) in enumerate(
                               [("state", k, v) for k, v in STATE_LABELS.items()]
                               + [("close_code", "Solved (Permanently)", "Solved (Permanently)"),
                                  ("close_code", "Solved (Work Around)", "Solved (Work Around)"),
                                  ("close_code", "Not Solved (Too Costly)",
                                   "Not Solved (Too Costly)")])},
        }
        super().__init__()

    def routes(self) -> list[Route]:
        return [
            Route("/api/now/table/incident", self.list_or_create, methods=["GET", "POST"]),
            Route("/api/now/table/incident/{sys_id}", self.one, methods=["GET", "PATCH"]),
            Route("/api/now/table/sys_journal_field", self.journal_list, methods=["GET"]),
            Route("/api/now/attachment/file", self.attach, methods=["POST"]),
            Route("/api/now/table/{table}", self.other_table, methods=["GET", "POST"]),
        ]

    def tick(self) -> str:
        self.clock += timedelta(seconds=1)
        return self.clock.strftime(FMT)

    def set_state(self, sys_id: str, state: str) -> None:
        """A ServiceNow agent changes the state in the UI."""
        self.incidents[sys_id].update(state=state, sys_updated_on=self.tick())

    def agent_note(self, sys_id: str, text: str, element: str = "work_notes") -> str:
        """An agent writes in the incident's journal from the ServiceNow UI."""
        entry = {"sys_id": uuid.uuid4().hex, "element": element, "element_id": sys_id,
                 "name": "incident", "value": text, "sys_created_on": self.tick(),
                 "sys_created_by": "beth.anglin"}
        self.journal.append(entry)
        self.incidents[sys_id]["sys_updated_on"] = entry["sys_created_on"]
        return entry["sys_id"]

    def _authorized(self, request: Request) -> bool:
        header = request.headers.get("authorization", "")
        if not header.startswith("Basic "):
            return False
        user, _, pw = base64.b64decode(header[6:]).decode().partition(":")
        return (user, pw) == (self.user, self.password)

    def delete_ticket(self, ticket: str) -> None:
        del self.incidents[ticket]

    def refuse_credentials(self) -> Response:
        return self._unauth()

    def fault_answer(self, kind: Fault, retry_after: int) -> Response:
        if kind is Fault.RATE_LIMITED:  # an instance rate-limit rule
            return JSONResponse({"error": {"message": "Too Many Requests",
                                           "detail": "Rate limit exceeded"}, "status": "failure"},
                                429, {"Retry-After": str(retry_after)})
        if kind is Fault.SERVER_ERROR:
            return failure(500, "Internal server error", "An unexpected error occurred")
        return super().fault_answer(kind, retry_after)

    def reject(self, problems: list[Problem]) -> Response:
        detail = "; ".join(p.message for p in problems)
        if all(p.unknown for p in problems):
            return failure(400, "Requested URI does not represent any resource", detail)
        return failure(400, "Invalid request", detail)

    def _unauth(self) -> JSONResponse:
        return failure(401, "User Not Authenticated", "Required to provide Auth information")

    @staticmethod
    def _matches(rec: dict[str, str], query: str) -> bool:
        """The encoded-query subset we use: = > STARTSWITH LIKE IN, joined by ^."""
        for term in filter(None, query.split("^")):
            if term.startswith("ORDERBY"):
                continue
            m = re.fullmatch(r"([a-z_]+)(STARTSWITH|LIKE|IN|>|=)(.*)", term)
            if m is None:
                raise ValueError(f"unsupported query term {term!r}")
            field, op, value = m.groups()
            if not _holds(rec.get(field, ""), op, value):
                return False
        return True

    @staticmethod
    def _shape(rec: dict[str, str], fields: str | None, display: str | None) -> dict[str, Any]:
        keys = fields.split(",") if fields else list(rec)
        if display == "all":
            out: dict[str, Any] = {}
            for k in keys:
                value = rec.get(k, "")
                label = STATE_LABELS.get(value, value) if k == "state" else value
                out[k] = {"display_value": label, "value": value}
            return out
        return {k: rec.get(k, "") for k in keys}

    async def list_or_create(self, request: Request) -> Response:
        if not self._authorized(request):
            return self._unauth()
        qp = request.query_params
        if request.method == "POST":
            body = await request.json()
            if not body.get("short_description"):
                return failure(400, "Mandatory field missing", "short_description")
            sys_id = uuid.uuid4().hex
            now = self.tick()
            rec = {k: str(v) for k, v in body.items() if k not in ("comments", "work_notes")}
            rec.update(sys_id=sys_id, number=f"INC{10001 + len(self.incidents):07d}",
                       state=rec.get("state", "1"), sys_updated_on=now, sys_created_on=now)
            self.incidents[sys_id] = rec
            return JSONResponse({"result": self._shape(rec, qp.get("sysparm_fields"), None)}, 201)
        query = qp.get("sysparm_query", "")
        rows = [r for r in self.incidents.values() if self._matches(r, query)]
        if "ORDERBYsys_updated_on" in query:
            rows.sort(key=lambda r: r["sys_updated_on"])
        offset, limit = int(qp.get("sysparm_offset", 0)), int(qp.get("sysparm_limit", 10000))
        page = rows[offset : offset + limit]
        headers = {"X-Total-Count": str(len(rows))}
        if offset + limit < len(rows):
            nxt = request.url.include_query_params(sysparm_offset=offset + limit)
            headers["Link"] = f'<{nxt}>;rel="next"'
        result = [self._shape(r, qp.get("sysparm_fields"), qp.get("sysparm_display_value"))
                  for r in page]
        return JSONResponse({"result": result}, 200, headers)

    async def one(self, request: Request) -> Response:
        if not self._authorized(request):
            return self._unauth()
        rec = self.incidents.get(request.path_params["sys_id"])
        if rec is None:
            return failure(404, "No Record found",
                           "Record doesn't exist or ACL restricts the record retrieval")
        qp = request.query_params
        if request.method == "PATCH":
            body = await request.json()
            if str(body.get("state")) == "6" and not (body.get("close_code")
                                                     and body.get("close_notes")):
                return failure(403, "Operation Failed",
                               "Data Policy Exception: Resolution code, Resolution notes")
            now = self.tick()
            for element in ("comments", "work_notes"):
                if element in body:
                    self.journal.append({"sys_id": uuid.uuid4().hex, "element": element,
                                         "element_id": rec["sys_id"], "name": "incident",
                                         "value": str(body.pop(element)),
                                         "sys_created_on": now, "sys_created_by": self.user})
            rec.update({k: str(v) for k, v in body.items()})
            rec["sys_updated_on"] = now
        return JSONResponse({"result": self._shape(rec, qp.get("sysparm_fields"),
                                                   qp.get("sysparm_display_value"))})

    async def journal_list(self, request: Request) -> Response:
        if not self._authorized(request):
            return self._unauth()
        query = request.query_params.get("sysparm_query", "")
        rows = [r for r in self.journal if self._matches(r, query)]
        if "ORDERBYDESCsys_created_on" in query:
            rows.reverse()
        limit = int(request.query_params.get("sysparm_limit", 10000))
        return JSONResponse({"result": rows[:limit]})

    async def other_table(self, request: Request) -> Response:
        if not self._authorized(request):
            return self._unauth()
        rows = self.tables.get(request.path_params["table"])
        if rows is None:
            return failure(400, "Invalid table", request.path_params["table"])
        qp = request.query_params
        if request.method == "POST":
            body = {k: str(v) for k, v in (await request.json()).items()}
            body["sys_id"] = uuid.uuid4().hex
            rows[body["sys_id"]] = body
            return JSONResponse({"result": self._shape(body, qp.get("sysparm_fields"), None)},
                                201)
        found = [r for r in rows.values() if self._matches(r, qp.get("sysparm_query", ""))]
        limit = int(qp.get("sysparm_limit", 10000))
        return JSONResponse({"result": [self._shape(r, qp.get("sysparm_fields"), None)
                                        for r in found[:limit]]})

    async def attach(self, request: Request) -> Response:
        if not self._authorized(request):
            return self._unauth()
        qp = request.query_params
        if qp.get("table_sys_id") not in self.incidents:
            # "404: the record specified by table_name and table_sys_id does not exist"
            return failure(404, "Record not found", "table_sys_id")
        sys_id = uuid.uuid4().hex
        data = await request.body()
        self.attachments.append({
            "sys_id": sys_id, "table_name": qp["table_name"], "table_sys_id": qp["table_sys_id"],
            "file_name": qp["file_name"], "content_type": request.headers.get("content-type"),
            "data": data,
        })
        return JSONResponse({"result": {
            "sys_id": sys_id, "file_name": qp["file_name"], "table_name": qp["table_name"],
            "table_sys_id": qp["table_sys_id"], "size_bytes": str(len(data)),
            "content_type": request.headers.get("content-type") or "",
            "download_link": f"/api/now/attachment/{sys_id}/file"}}, 201)
