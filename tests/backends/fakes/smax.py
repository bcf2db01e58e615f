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
            Route(f"{rest}/collaboration/comments/Request/{{rid}}", self.comment,
                  methods=["POST"]),
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

    def _apply(self, op: str, props: dict[str, Any]) -> dict[str, Any]:
        if op == "CREATE":
            missing = [p for p in ("DisplayLabel", "RequestedByPerson") if not props.get(p)]
            if missing:
                return self._fail(f"Mandatory properties missing: {', '.join(missing)}")
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
        results = [self._apply(body["operation"], e["properties"]) for e in body["entities"]]
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
            m = re.fullmatch(r"(\w+) (=|>) '?([^']*)'?", flt)
            if m is None:
                return JSONResponse({"meta": {"completion_status": "FAILED",
                                              "errorDetailsList": ["bad filter"]}}, 400)
            field, op, value = m.groups()
            rows = [r for r in rows if (str(r.get(field)) == value if op == "=" else
                                        int(r.get(field) or 0) > int(value))]
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

    async def comment(self, request: Request) -> Response:
        if (denied := self._denied(request)) is not None:
            return denied
        rid = request.path_params["rid"]
        if rid not in self.requests:
            return JSONResponse({"code": 404, "message": "Request not found"}, 404)
        body = await request.json()
        if body.get("PrivacyType") not in ("PUBLIC", "INTERNAL"):
            return JSONResponse({"code": 400, "message": "PrivacyType invalid"}, 400)
        cid = uuid.uuid4().hex
        self.comments.append({**body, "Id": cid, "EntityId": rid})
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
