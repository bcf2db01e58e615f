"""Fake SMAX: cookie sign-in, ems/bulk with completion_status, collaboration comments,
ces/attachment uploads, EMS queries with a small filter language."""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from tests.backends.fakes._server import FakeVendor
from tests.backends.fakes.contract import Contract, Problem
from tests.backends.fakes.faults import Fault

TENANT = "100000002"


class FakeSmax(FakeVendor):
    contract = Contract("smax.yaml")

    def __init__(self, login: str = "integration", password: str = "pw") -> None:
        self.login, self.password = login, password
        self.tokens: set[str] = set()
        self.requests: dict[str, dict[str, Any]] = {}
        self.comments: list[dict[str, Any]] = []
        self.uploads: dict[str, dict[str, Any]] = {}
        self.persons: dict[str, dict[str, Any]] = {
            "10016": {"Id": "10016", "Name": "Integration User", "Email": "integration@example.org"},
            "10020": {"Id": "10020", "Name": "Carol Customer", "Email": "carol@example.com"},
        }
        self.groups = {"20001": "Service Desk", "20002": "Network"}
        self.services = {"30001": "Email", "30002": "Laptops"}
        self.clock_ms = 1_767_254_400_000  # 2026-01-01T08:00:00Z
        self._next = 50000
        super().__init__()

    def routes(self) -> list[Route]:
        auth = "/auth/authentication-endpoint/authenticate"
        rest = f"/rest/{TENANT}"
        return [
            Route(f"{auth}/login", self.sign_in, methods=["POST"]),
            Route(f"{auth}/token", self.sign_in, methods=["POST"]),
            Route(f"{rest}/ems/bulk", self.bulk, methods=["POST"]),
            Route(f"{rest}/ems/Request", self.query),
            Route(f"{rest}/ems/Request/{{rid}}", self.one),
            Route(f"{rest}/ems/Person", self.person_query),
            Route(f"{rest}/ems/Person/{{pid}}", self.person_one),
            Route(f"{rest}/ems/PersonGroup", self.group_query),
            Route(f"{rest}/ems/ActualService", self.service_query),
            Route(f"{rest}/collaboration/comments/Request/{{rid}}", self.comment,
                  methods=["GET", "POST"]),
            Route(f"{rest}/ces/attachment", self.upload, methods=["POST"]),
        ]

    def tick(self) -> int:
        self.clock_ms += 1000
        return self.clock_ms

    def expire_tokens(self) -> None:
        self.tokens.clear()

    def set_phase(self, rid: str, phase: str, status: str = "RequestStatusInProgress") -> None:
        self.requests[rid].update(PhaseId=phase, Status=status, LastUpdateTime=self.tick())

    async def sign_in(self, request: Request) -> Response:
        body = await request.json()
        if request.query_params.get("TENANTID") != TENANT or (
                body.get("login"), body.get("password")) != (self.login, self.password):
            return PlainTextResponse("Authentication failed: bad credentials", 401)
        token = uuid.uuid4().hex
        self.tokens.add(token)
        return PlainTextResponse(token)

    def _denied(self, request: Request) -> Response | None:
        cookie = request.cookies.get("LWSSO_COOKIE_KEY") or request.cookies.get(
            "SMAX_AUTH_TOKEN")
        if cookie in self.tokens:
            return None
        return self.refuse_credentials()

    def refuse_credentials(self) -> Response:
        return JSONResponse({"code": 401, "message": "Unauthorized"}, 401)

    def fault_answer(self, kind: Fault, retry_after: int) -> Response:
        if kind is Fault.RATE_LIMITED:  # SMAX documents none; its gateway answers
            return JSONResponse({"code": 429, "message": "Too Many Requests"}, 429,
                                {"Retry-After": str(retry_after)})
        if kind is Fault.SERVER_ERROR:
            return JSONResponse({"code": 500, "message": "Internal Server Error"}, 500)
        return super().fault_answer(kind, retry_after)

    def reject(self, problems: list[Problem]) -> Response:
        text = "; ".join(p.message for p in problems)
        if all(p.unknown for p in problems):
            return JSONResponse({"code": 404, "message": text}, 404)
        return JSONResponse({"meta": {"completion_status": "FAILED",
                                      "errorDetailsList": [{"message": text}]}}, 400)

    def delete_ticket(self, ticket: str) -> None:
        del self.requests[ticket]

    def _fail(self, message: str, status: str = "BAD_REQUEST") -> dict[str, Any]:
        return {"completion_status": "FAILED",
                "errorDetails": {"httpStatus": status, "message": message}}

    def _apply(self, op: str, props: dict[str, Any], entity: str = "Request") -> dict[str, Any]:
        if entity == "Person":
            if op != "CREATE" or not props.get("Name"):
                return self._fail("Mandatory properties missing: Name")
            self._next += 1
            pid = str(self._next)
            self.persons[pid] = {**props, "Id": pid}
            return {"completion_status": "OK", "entity": {"entity_type": "Person",
                                                          "properties": {"Id": pid}}}
        if op == "CREATE":
            missing = [p for p in ("DisplayLabel", "RequestedByPerson") if not props.get(p)]
            if missing:
                return self._fail(f"Mandatory properties missing: {', '.join(missing)}")
            if str(props["RequestedByPerson"]) not in self.persons:
                return self._fail(f"Invalid value for RequestedByPerson: "
                                  f"{props['RequestedByPerson']}")
            self._next += 1
            rid = str(self._next)
            self.requests[rid] = {**props, "Id": rid, "PhaseId": "Log",
                                  "Status": "RequestStatusReady", "LastUpdateTime": self.tick()}
            return {"completion_status": "OK", "entity": {
                "entity_type": "Request", "properties": {"Id": rid, "LastUpdateTime":
                                                         self.requests[rid]["LastUpdateTime"]}}}
        rec = self.requests.get(str(props.get("Id")))
        if rec is None:
            return self._fail(f"Entity Request with id {props.get('Id')} not found", "NOT_FOUND")
        stamp = props.get("LastUpdateTime")
        if stamp is not None and stamp != rec["LastUpdateTime"]:
            return self._fail("The entity was modified by another user (LastUpdateTime)",
                              "CONFLICT")
        rec.update({k: v for k, v in props.items() if k != "LastUpdateTime"})
        rec["LastUpdateTime"] = self.tick()
        return {"completion_status": "OK", "entity": {"entity_type": "Request",
                                                      "properties": {"Id": rec["Id"]}}}

    async def bulk(self, request: Request) -> Response:
        if (denied := self._denied(request)) is not None:
            return denied
        body = await request.json()
        results = [self._apply(body["operation"], e["properties"], e.get("entity_type", "Request"))
                   for e in body["entities"]]
        ok = all(r["completion_status"] == "OK" for r in results)
        meta = {"completion_status": "OK" if ok else "FAILED",
                "errorDetailsList": [] if ok else [r["errorDetails"] for r in results
                                                   if "errorDetails" in r]}
        return JSONResponse({"entity_result_list": results, "meta": meta})  # 200 even if FAILED

    @staticmethod
    def _layout(rec: dict[str, Any], layout: str | None) -> dict[str, Any]:
        keys = layout.split(",") if layout else list(rec)
        return {k: rec[k] for k in keys if k in rec}

    async def one(self, request: Request) -> Response:
        if (denied := self._denied(request)) is not None:
            return denied
        rec = self.requests.get(request.path_params["rid"])
        entities = [] if rec is None else [{"entity_type": "Request", "properties":
                                            self._layout(rec, request.query_params.get("layout"))}]
        return JSONResponse({"entities": entities, "meta": {"completion_status": "OK"}})

    async def query(self, request: Request) -> Response:
        if (denied := self._denied(request)) is not None:
            return denied
        qp = request.query_params
        rows = list(self.requests.values())
        flt = qp.get("filter")
        if flt:
            found = self._filter(rows, flt)
            if found is None:
                return JSONResponse({"meta": {"completion_status": "FAILED",
                                              "errorDetailsList": ["bad filter"]}}, 400)
            rows = found
        if qp.get("order") == "LastUpdateTime asc":
            rows.sort(key=lambda r: r["LastUpdateTime"])
        skip, size = int(qp.get("skip", 0)), int(qp.get("size", 250))
        chunk = rows[skip : skip + size]
        meta: dict[str, Any] = {"completion_status": "OK"}
        if qp.get("meta") == "TotalCount":
            meta["total_count"] = len(rows)
        return JSONResponse({"entities": [{"entity_type": "Request", "properties":
                                           self._layout(r, qp.get("layout"))} for r in chunk],
                             "meta": meta})

    @staticmethod
    def _filter(rows: list[dict[str, Any]], flt: str) -> list[dict[str, Any]] | None:
        """The filter subset we use: `F = 'v'`, `F > n`, `F in ('a','b')`."""
        m = re.fullmatch(r"(\w+) in \(((?:'[^']*',?\s*)*)\)", flt)
        if m is not None:
            wanted = set(re.findall(r"'([^']*)'", m.group(2)))
            return [r for r in rows if str(r.get(m.group(1))) in wanted]
        m = re.fullmatch(r"(\w+) (=|>) '?([^']*)'?", flt)
        if m is None:
            return None
        field, op, value = m.groups()
        return [r for r in rows if (str(r.get(field)) == value if op == "=" else
                                    int(r.get(field) or 0) > int(value))]

    def _entities(self, kind: str, rows: list[dict[str, Any]], layout: str | None) -> Response:
        return JSONResponse({"entities": [{"entity_type": kind, "properties":
                                           self._layout(r, layout)} for r in rows],
                             "meta": {"completion_status": "OK"}})

    async def person_query(self, request: Request) -> Response:
        if (denied := self._denied(request)) is not None:
            return denied
        qp = request.query_params
        rows = list(self.persons.values())
        if qp.get("filter"):
            rows = self._filter(rows, qp["filter"]) or []
        return self._entities("Person", rows, qp.get("layout"))

    async def person_one(self, request: Request) -> Response:
        if (denied := self._denied(request)) is not None:
            return denied
        rec = self.persons.get(request.path_params["pid"])
        return self._entities("Person", [rec] if rec else [], request.query_params.get("layout"))

    async def group_query(self, request: Request) -> Response:
        return self._denied(request) or self._entities(
            "PersonGroup", [{"Id": k, "Name": v} for k, v in self.groups.items()],
            request.query_params.get("layout"))

    async def service_query(self, request: Request) -> Response:
        return self._denied(request) or self._entities(
            "ActualService", [{"Id": k, "DisplayLabel": v} for k, v in self.services.items()],
            request.query_params.get("layout"))

    def agent_comment(self, rid: str, body: str, privacy: str = "INTERNAL") -> dict[str, Any]:
        """A SMAX agent comments in the UI."""
        entry = {"Id": uuid.uuid4().hex, "EntityId": rid, "Body": f"<p>{body}</p>",
                 "PrivacyType": privacy, "Submitter": {"UserId": "10099"},
                 "CreateTime": self.tick()}
        self.comments.append(entry)
        self.requests[rid]["LastUpdateTime"] = entry["CreateTime"]
        return entry

    async def comment(self, request: Request) -> Response:
        if (denied := self._denied(request)) is not None:
            return denied
        rid = request.path_params["rid"]
        if rid not in self.requests:
            return JSONResponse({"code": 404, "message": "Request not found"}, 404)
        if request.method == "GET":
            return JSONResponse([c for c in self.comments if c["EntityId"] == rid])
        body = await request.json()
        if body.get("PrivacyType") not in ("PUBLIC", "INTERNAL"):
            return JSONResponse({"code": 400, "message": "PrivacyType invalid"}, 400)
        cid = uuid.uuid4().hex
        self.comments.append({**body, "Id": cid, "EntityId": rid, "CreateTime": self.tick()})
        return JSONResponse({"Id": cid})

    async def upload(self, request: Request) -> Response:
        if (denied := self._denied(request)) is not None:
            return denied
        form = await request.form()
        (f,) = [f for f in form.getlist("files[]") if isinstance(f, UploadFile)]
        data = await f.read()
        guid = str(uuid.uuid4())
        self.uploads[guid] = {"name": f.filename, "contentType": f.content_type, "data": data}
        return JSONResponse({"guid": guid, "name": f.filename, "contentLength": len(data),
                             "contentType": f.content_type, "lastModified": self.clock_ms})

    def attachments_of(self, rid: str) -> list[dict[str, Any]]:
        raw = self.requests[rid].get("RequestAttachments")
        return [p["properties"] for p in json.loads(raw)["complexTypeProperties"]] if raw else []
