"""Fake Autotask REST: zone lookup, Tickets, Notes, Attachments, TimeEntries, picklists."""

from __future__ import annotations

import functools
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.backends.fakes._server import FakeVendor
from tests.backends.fakes.contract import Contract, Problem
from tests.backends.fakes.faults import Fault

DOCUMENT = "autotask-psa-rest-v1.openapi.json.gz"


@functools.cache
def _segments() -> dict[str, str]:
    names = {"atservicesrest": "ATServicesRest"}
    for template in CONTRACT.paths():
        names.update({s.lower(): s for s in template.split("/") if s and "{" not in s})
    return names


def _document_case(path: str) -> str:
    # Autotask runs on IIS, which matches paths without regard to case; its own docs write
    # /atservicesrest/v1.0/zoneInformation where the Swagger has /V1.0/ZoneInformation.
    names = _segments()
    return "/".join(names.get(s.lower(), s) for s in path.split("/"))


def _dotnet_types(document: dict[str, Any]) -> None:
    # The document is Swashbuckle's Swagger 2.0 rendering of .NET models. Swagger 2.0 cannot
    # say "null", and a C# `object` becomes the schema `Object` = {"type": "object"}. Autotask
    # sends null for every unset field, {"item": null} for an id it does not have, and plain
    # numbers or strings where a C# `object` is declared (OperationResultModel.itemId is the
    # new entity's integer id; a query filter's `value` "can be either an Integer, String,
    # Boolean, an Array of Integers, or an Array of Strings", its own description says).
    schemas = document["components"]["schemas"]
    schemas["Object"] = {}
    schemas["Filter"]["properties"]["value"] = {"anyOf": [
        {"type": t} for t in ("integer", "string", "boolean")] + [
        {"type": "array", "items": {"type": t}} for t in ("integer", "string")]}
    for name, schema in schemas.items():
        for prop_name, prop in (schema.get("properties") or {}).items():
            if "$ref" not in prop:
                prop["nullable"] = True
            elif name.startswith("ItemQueryResultModel_") and prop_name == "item":
                schema["properties"]["item"] = {"anyOf": [
                    prop, {"type": "object", "nullable": True, "enum": [None]}]}


def _next_page(document: dict[str, Any]) -> None:
    # A query answers with pageDetails.nextPageUrl, which the client follows verbatim (GET,
    # same headers): <entity>/query/next?paging=...&search=.... The document lists only the
    # POST .../query that starts the walk.
    paths = document["paths"]
    for template in [t for t in paths if t.endswith("/query") and "post" in paths[t]]:
        query = paths[template]["post"]
        headers = [p for p in query.get("parameters", []) if p["in"] in ("header", "path")]
        paths[template + "/next"] = {"get": {
            "operationId": query["operationId"] + "NextPage",
            "parameters": [*headers, *({"name": name, "in": "query", "required": True,
                                         "schema": {"type": "string"}}
                                        for name in ("paging", "search"))],
            "responses": query["responses"],
        }}


CONTRACT = Contract(DOCUMENT, rewrite=_document_case, overlays=(_dotnet_types, _next_page))

API = "/ATServicesRest/V1.0"
REQUIRED = ("companyID", "title", "status", "priority", "queueID")
PICKLISTS = {
    "queueID": [(29683354, "Client Portal"), (29683378, "Monitoring Alert"),
                (8, "Retired", False)],
    "source": [(-1, "Insourced"), (2, "Phone"), (4, "Email")],
    "status": [(1, "New"), (5, "Complete"), (7, "Waiting Customer"), (8, "In Progress")],
    "priority": [(1, "High"), (2, "Medium"), (3, "Low"), (4, "Critical")],
}


def errors(*messages: str, status: int = 500) -> JSONResponse:
    return JSONResponse({"errors": list(messages)}, status)


class FakeAutotask(FakeVendor):
    contract = CONTRACT

    def __init__(self, user: str = "api@example.org", secret: str = "s3cret",
                 code: str = "INTEGRATION") -> None:
        self.user, self.secret, self.code = user, secret, code
        self.auth_status = 500  # Autotask's "bad credentials" often arrives as a 500
        self.tickets: dict[int, dict[str, Any]] = {}
        self.notes: list[dict[str, Any]] = []
        self.attachments: list[dict[str, Any]] = []
        self.time_entries: list[dict[str, Any]] = []
        self.contacts: dict[int, dict[str, Any]] = {
            30: {"id": 30, "companyID": 0, "firstName": "Carol", "lastName": "Customer",
                 "emailAddress": "carol@example.com", "isActive": 1},
        }
        self.clock = datetime(2026, 1, 1, 8, 0, 0, tzinfo=UTC)
        self._next = 1000
        super().__init__()

    def routes(self) -> list[Route]:
        return [
            Route("/atservicesrest/v1.0/zoneInformation", self.zone),
            Route(f"{API}/Tickets/entityInformation", self.entity_info),
            Route(f"{API}/Tickets/entityInformation/fields", self.fields),
            Route(f"{API}/Tickets", self.tickets_root, methods=["POST", "PATCH"]),
            Route(f"{API}/Tickets/query", self.query, methods=["POST"]),
            Route(f"{API}/Tickets/query/next", self.query_next),
            Route(f"{API}/Tickets/{{tid:int}}", self.one),
            Route(f"{API}/Tickets/{{tid:int}}/Notes", self.add_note, methods=["POST"]),
            Route(f"{API}/Tickets/{{tid:int}}/Attachments", self.add_attachment,
                  methods=["POST"]),
            Route(f"{API}/TimeEntries/query", self.time_query, methods=["POST"]),
            Route(f"{API}/TicketNotes/query", self.note_query, methods=["POST"]),
            Route(f"{API}/Contacts/query", self.contact_query, methods=["POST"]),
            Route(f"{API}/Companies/{{cid:int}}/Contacts", self.add_contact, methods=["POST"]),
        ]

    def tick(self) -> str:
        self.clock += timedelta(seconds=1)
        return self.clock.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"

    def nid(self) -> int:
        self._next += 1
        return self._next

    def set_status(self, tid: int, status: int) -> None:
        self.tickets[tid].update(status=status, lastActivityDate=self.tick())

    def technician_note(self, tid: int, text: str, publish: int = 1) -> dict[str, Any]:
        """A technician writes a note in Autotask."""
        note = {"id": self.nid(), "ticketID": tid, "title": text[:40], "description": text,
                "noteType": 1, "publish": publish, "creatorResourceID": 29682885,
                "createDateTime": self.tick()}
        self.notes.append(note)
        self.tickets[tid]["lastActivityDate"] = note["createDateTime"]
        return note

    def add_time_entry(self, tid: int, hours: float = 0.5) -> None:
        self.time_entries.append({"id": self.nid(), "ticketID": tid, "hoursWorked": hours})

    async def zone(self, request: Request) -> Response:
        if request.query_params.get("user", "").lower() != self.user:
            return errors("Zone information could not be determined", status=404)
        base = str(request.base_url).rstrip("/")
        return JSONResponse({"zoneName": "Fake Zone", "url": f"{base}/ATServicesRest/",
                             "webUrl": f"{base}/web/", "ci": 1})

    def refuse_credentials(self) -> Response:
        if self.auth_status == 401:
            return JSONResponse({"errors": ["Unauthorized"]}, 401)
        return errors("Unable to authenticate: the user name or secret is invalid, "
                      "or the ApiIntegrationCode is not valid")

    def fault_answer(self, kind: Fault, retry_after: int) -> Response:
        if kind is Fault.SERVER_ERROR:
            return errors("An unexpected error has occurred. Please try again.")
        if kind is Fault.RATE_LIMITED:  # the thread/request limits
            return JSONResponse({"errors": ["Request rate exceeded"]}, 429,
                                {"Retry-After": str(retry_after)})
        return super().fault_answer(kind, retry_after)

    def reject(self, problems: list[Problem]) -> Response:
        if all(p.unknown for p in problems):  # IIS: no such resource
            return Response(b"<html><body>404 - File or directory not found.</body></html>",
                            404, media_type="text/html")
        # Autotask answers an invalid payload with HTTP 500 and its `errors` list.
        return errors(*(p.message for p in problems))

    def delete_ticket(self, ticket: str) -> None:
        del self.tickets[int(ticket)]

    def _denied(self, request: Request) -> Response | None:
        h = request.headers
        if (h.get("username"), h.get("secret"), h.get("apiintegrationcode")) == (
            self.user, self.secret, self.code):
            return None
        if self.auth_status == 401:
            return JSONResponse({"errors": ["Unauthorized"]}, 401)
        return errors("Unable to authenticate: the user name or secret is invalid, "
                      "or the ApiIntegrationCode is not valid")

    async def entity_info(self, request: Request) -> Response:
        return self._denied(request) or JSONResponse(
            {"info": {"name": "Ticket", "canCreate": True, "canQuery": True}})

    async def fields(self, request: Request) -> Response:
        if (denied := self._denied(request)) is not None:
            return denied
        out = [{"name": "title", "isRequired": True, "isPickList": False}]
        for name, values in PICKLISTS.items():
            out.append({"name": name, "isRequired": True, "isPickList": True,
                        "picklistValues": [{"value": str(v[0]), "label": v[1],
                                            "isActive": v[2] if len(v) > 2 else True}
                                           for v in values]})
        return JSONResponse({"fields": out})

    async def tickets_root(self, request: Request) -> Response:
        if (denied := self._denied(request)) is not None:
            return denied
        body = await request.json()
        if request.method == "PATCH":
            ticket = self.tickets.get(int(body.get("id", 0)))
            if ticket is None:
                return errors(f"Ticket {body.get('id')} not found")
            ticket.update(body)
            ticket["lastActivityDate"] = self.tick()
            return JSONResponse({"itemId": ticket["id"]})
        missing = [f for f in REQUIRED if body.get(f) in (None, "")]
        if missing:
            return errors(*(f"Missing Required Field: {f}" for f in missing))
        if body.get("contactID") is not None and body["contactID"] not in self.contacts:
            return errors(f"Reference value on field: contactID of type: Contact does not "
                          f"exist or is invalid: {body['contactID']}")
        if len(body.get("externalID") or "") > 50:
            return errors("externalID: value exceeds the maximum length of 50")
        tid = self.nid()
        self.tickets[tid] = {**body, "id": tid, "ticketNumber": f"T20260101.{tid:04d}",
                             "lastActivityDate": self.tick()}
        return JSONResponse({"itemId": tid})

    async def one(self, request: Request) -> Response:
        return self._denied(request) or JSONResponse(
            {"item": self.tickets.get(request.path_params["tid"])})

    def _filter(self, rows: list[dict[str, Any]], flt: list[dict[str, Any]]
                ) -> list[dict[str, Any]]:
        def same(a: Any, b: Any) -> bool:  # Autotask compares strings case-insensitively
            return str(a).lower() == str(b).lower() if isinstance(b, str) else a == b

        for f in flt:
            field, value = f["field"], f["value"]
            if f["op"] == "eq":
                rows = [r for r in rows if same(r.get(field), value)]
            elif f["op"] == "gt":
                rows = [r for r in rows if str(r.get(field, "")) > str(value)]
            elif f["op"] == "in":
                rows = [r for r in rows if r.get(field) in value]
            elif f["op"] == "contains":
                rows = [r for r in rows if str(value).lower() in str(r.get(field, "")).lower()]
            else:
                raise ValueError(f"unsupported op {f['op']}")
        return rows

    def _page(self, request: Request, search: dict[str, Any], offset: int) -> Response:
        rows = self._filter(list(self.tickets.values()), search.get("filter", []))
        rows.sort(key=lambda r: r["id"])
        size = int(search.get("maxRecords", 500))
        chunk = rows[offset : offset + size]
        if "includeFields" in search:
            chunk = [{k: r.get(k) for k in search["includeFields"]} for r in chunk]
        nxt = None
        if offset + size < len(rows):
            nxt = str(request.url_for("query_next").include_query_params(
                paging=json.dumps({"pageSize": size, "offset": offset + size}),
                search=json.dumps(search)))
        return JSONResponse({"items": chunk, "pageDetails": {
            "count": len(chunk), "requestCount": size, "prevPageUrl": None,
            "nextPageUrl": nxt}})

    async def query(self, request: Request) -> Response:
        if (denied := self._denied(request)) is not None:
            return denied
        return self._page(request, await request.json(), 0)

    async def query_next(self, request: Request) -> Response:
        if (denied := self._denied(request)) is not None:
            return denied
        qp = request.query_params
        return self._page(request, json.loads(qp["search"]),
                          int(json.loads(qp["paging"])["offset"]))

    async def add_note(self, request: Request) -> Response:
        if (denied := self._denied(request)) is not None:
            return denied
        tid = request.path_params["tid"]
        if tid not in self.tickets:
            return errors(f"Ticket {tid} not found")
        body = await request.json()
        if not body.get("description") or body.get("noteType") is None:
            return errors("Missing Required Field: description/noteType")
        note = {**body, "id": self.nid(), "ticketID": tid, "creatorResourceID": 4,
                "createDateTime": self.tick()}
        self.notes.append(note)
        return JSONResponse({"itemId": note["id"]})

    async def add_attachment(self, request: Request) -> Response:
        if (denied := self._denied(request)) is not None:
            return denied
        tid = request.path_params["tid"]
        if tid not in self.tickets:
            return errors(f"Ticket {tid} not found")
        att = {**(await request.json()), "id": self.nid(), "parentID": tid}
        self.attachments.append(att)
        return JSONResponse({"itemId": att["id"]})

    async def note_query(self, request: Request) -> Response:
        if (denied := self._denied(request)) is not None:
            return denied
        search = await request.json()
        rows = self._filter(self.notes, search.get("filter", []))
        return JSONResponse({"items": rows[: int(search.get("maxRecords", 500))],
                             "pageDetails": {"count": len(rows), "nextPageUrl": None}})

    async def contact_query(self, request: Request) -> Response:
        if (denied := self._denied(request)) is not None:
            return denied
        search = await request.json()
        rows = self._filter(list(self.contacts.values()), search.get("filter", []))
        if "includeFields" in search:
            rows = [{k: r.get(k) for k in search["includeFields"]} for r in rows]
        return JSONResponse({"items": rows[: int(search.get("maxRecords", 500))],
                             "pageDetails": {"count": len(rows), "nextPageUrl": None}})

    async def add_contact(self, request: Request) -> Response:
        if (denied := self._denied(request)) is not None:
            return denied
        body = await request.json()
        missing = [f for f in ("firstName", "lastName", "isActive") if body.get(f) in (None, "")]
        if missing:
            return errors(*(f"Missing Required Field: {f}" for f in missing))
        cid = self.nid()
        self.contacts[cid] = {**body, "id": cid, "companyID": request.path_params["cid"]}
        return JSONResponse({"itemId": cid})

    async def time_query(self, request: Request) -> Response:
        if (denied := self._denied(request)) is not None:
            return denied
        search = await request.json()
        rows = self._filter(self.time_entries, search.get("filter", []))
        return JSONResponse({"items": rows[: int(search.get("maxRecords", 500))],
                             "pageDetails": {"count": len(rows), "nextPageUrl": None}})
