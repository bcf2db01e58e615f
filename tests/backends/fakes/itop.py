"""Fake iTop REST 1.3 endpoint: always HTTP 200, outcome in `code`, OQL subset, lifecycle."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.backends.fakes._server import FakeVendor
from tests.backends.fakes.contract import Contract, Problem
from tests.backends.fakes.faults import Fault

# stimulus -> (from states, to state, mandatory fields)
LIFECYCLE: dict[str, tuple[tuple[str, ...], str, tuple[str, ...]]] = {
    "ev_assign": (("new", "escalated_tto"), "assigned", ("team_id", "agent_id")),
    "ev_pending": (("assigned",), "pending", ("pending_reason",)),
    "ev_resolve": (("assigned", "pending"), "resolved", ("solution",)),
    "ev_close": (("resolved",), "closed", ()),
}


def answer(code: int, message: str | None, objects: Any = None) -> JSONResponse:
    return JSONResponse({"code": code, "message": message, "objects": objects})


@dataclass(frozen=True)
class AddedFields:
    """A datamodel an admin extended: UserRequest also has these attributes."""

    names: tuple[str, ...]

    def __call__(self, document: dict[str, Any]) -> None:
        fields = document["components"]["schemas"]["UserRequestFields"]["properties"]
        fields.update({name: {"type": ["string", "integer"]} for name in self.names})


# With the web server up and its database down (backend-contracts.md addendum).
ERROR_PAGE = (b"<html><head><title>iTop</title></head><body>"
              b"<p>iTop: An error occurred, check the error log for details.</p></body></html>")


class FakeITop(FakeVendor):
    contract = Contract("itop.yaml")

    def __init__(self, user: str = "rest", password: str = "pw", token: str = "tok", *,
                 added_fields: tuple[str, ...] = ()) -> None:
        """`added_fields`: UserRequest attributes an admin added to the stock datamodel."""
        self.user, self.password, self.token = user, password, token
        if added_fields:
            self.contract = Contract("itop.yaml", overlays=(AddedFields(added_fields),))
        self.objects: dict[str, dict[int, dict[str, Any]]] = {"UserRequest": {},
                                                              "Attachment": {}}
        self.clock = datetime(2026, 1, 1, 8, 0, 0)
        self._next = 0
        self.comments_seen: list[str] = []
        super().__init__()

    def routes(self) -> list[Route]:
        return [Route("/webservices/rest.php", self.rest, methods=["POST"])]

    def delete_ticket(self, ticket: str) -> None:
        del self.objects["UserRequest"][int(ticket)]

    def refuse_credentials(self) -> Response:
        return answer(1, "Error: Invalid login")

    def fault_answer(self, kind: Fault, retry_after: int) -> Response:
        if kind is Fault.SERVER_ERROR:
            return Response(ERROR_PAGE, 500, media_type="text/html")
        if kind is Fault.RATE_LIMITED:  # iTop has none; the web server in front answers
            return Response(b"<html><body><h1>429 Too Many Requests</h1></body></html>", 429,
                            {"Retry-After": str(retry_after)}, media_type="text/html")
        return super().fault_answer(kind, retry_after)

    def reject(self, problems: list[Problem]) -> Response:
        if all(p.unknown for p in problems):  # not rest.php: the web server's 404
            return Response(b"<html><body><h1>Not Found</h1></body></html>", 404,
                            media_type="text/html")
        text = "; ".join(p.message for p in problems)
        if "(at json_data/operation)" in text:
            return answer(11, "Error: Unknown operation")
        return answer(100, "Error: " + text)

    def tick(self) -> str:
        self.clock += timedelta(seconds=1)
        return self.clock.strftime("%Y-%m-%d %H:%M:%S")

    def set_status(self, key: int, status: str) -> None:
        self.objects["UserRequest"][key].update(status=status, last_update=self.tick())

    def add_log(self, key: int, log: str, message: str, who: str = "agent") -> None:
        entries = self.objects["UserRequest"][key][log]["entries"]
        entries.append({"date": self.tick(), "user_login": who, "user_id": "7",
                        "message": message, "message_html": f"<p>{message}</p>"})

    def _out(self, cls: str, key: int, fields: str, message: str) -> dict[str, Any]:
        rec = self.objects[cls][key]
        names = list(rec) if fields in ("*", "") else fields.split(",")
        return {f"{cls}::{key}": {"code": 0, "message": message, "class": cls, "key": str(key),
                                  "fields": {n: rec.get(n, "") for n in names}}}

    def _select(self, cls: str, key: Any) -> list[int]:
        rows = self.objects.get(cls, {})
        if isinstance(key, int) or str(key).isdigit():
            return [int(key)] if int(key) in rows else []
        m = re.fullmatch(rf"SELECT {cls}(?: WHERE (\w+) (=|>) '([^']*)')?", str(key))
        if m is None:
            raise ValueError(f"unsupported OQL {key}")
        field, op, value = m.groups()
        if field is None:
            return sorted(rows)
        return sorted(k for k, r in rows.items()
                      if (str(r.get(field, "")) == value if op == "=" else
                          str(r.get(field, "")) > value))

    async def rest(self, request: Request) -> Response:
        if request.query_params.get("version") != "1.3":
            return answer(2, "Missing parameter 'version'")
        form = await request.form()
        token, user, pwd = form.get("auth_token"), form.get("auth_user"), form.get("auth_pwd")
        if token != self.token and (user, pwd) != (self.user, self.password):
            return answer(1, "Error: Invalid login")
        raw = form.get("json_data")
        if raw is None:
            return answer(3, "Error: Missing parameter 'json_data'")
        try:
            data = json.loads(str(raw))
        except ValueError:
            return answer(4, "Error: Invalid JSON")
        self.comments_seen.append(str(data.get("comment")))
        op = data.get("operation")
        handler = {"list_operations": self.list_operations, "core/create": self.create,
                   "core/get": self.get, "core/update": self.update,
                   "core/apply_stimulus": self.stimulus}.get(op)
        if handler is None:
            return answer(11, f"Error: Unknown operation '{op}'")
        return handler(data)

    def list_operations(self, data: dict[str, Any]) -> Response:
        return JSONResponse({"version": "1.3", "operations": [
            {"verb": v} for v in ("core/create", "core/get", "core/update",
                                  "core/apply_stimulus")], "code": 0, "message": "Operations: 4"})

    def create(self, data: dict[str, Any]) -> Response:
        cls, fields = data["class"], dict(data.get("fields") or {})
        self._next += 1
        key = self._next
        if cls == "UserRequest":
            missing = [f for f in ("org_id", "title", "description") if not fields.get(f)]
            if missing:
                return answer(100, f"Error: Missing mandatory attribute(s): {', '.join(missing)}")
            fields.update(ref=f"R-{key:06d}", status="new", last_update=self.tick(),
                          public_log={"entries": []}, private_log={"entries": []}, id=str(key))
        elif cls == "Attachment":
            item = self.objects["UserRequest"].get(int(fields.get("item_id", 0)))
            if item is None:
                return answer(100, "Error: item_id: no item found")
        self.objects[cls][key] = {k: v if isinstance(v, dict) else str(v)
                                  for k, v in fields.items()}
        return answer(0, None, self._out(cls, key, data.get("output_fields", "id"), "created"))

    def get(self, data: dict[str, Any]) -> Response:
        cls = data["class"]
        keys = self._select(cls, data["key"])
        limit, page = int(data.get("limit", 0) or 0), int(data.get("page", 1) or 1)
        if limit:
            keys = keys[(page - 1) * limit : page * limit]
        objects: dict[str, Any] = {}
        for k in keys:
            objects.update(self._out(cls, k, data.get("output_fields", "*"), ""))
        return answer(0, f"Found: {len(keys)}", objects or None)

    def update(self, data: dict[str, Any]) -> Response:
        cls, key = data["class"], int(data["key"])
        rec = self.objects[cls].get(key)
        if rec is None:
            return answer(100, f"Error: No item found with criteria: {key}")
        for name, value in (data.get("fields") or {}).items():
            if name in ("public_log", "private_log"):
                item = value["add_item"] if isinstance(value, dict) else {"message": value}
                self.add_log(key, name, item["message"], who=self.user)
            else:
                rec[name] = str(value)
        rec["last_update"] = self.tick()
        return answer(0, None, self._out(cls, key, data.get("output_fields", "id"), "updated"))

    def stimulus(self, data: dict[str, Any]) -> Response:
        cls, key, stim = data["class"], int(data["key"]), data["stimulus"]
        rec = self.objects[cls].get(key)
        if rec is None:
            return answer(100, f"Error: No item found with criteria: {key}")
        fields = data.get("fields") or {}
        sources, target, mandatory = LIFECYCLE.get(stim, ((), "", ()))
        if rec["status"] not in sources:
            return answer(100, f"Invalid stimulus: '{stim}' on the object {rec['ref']} in "
                          f"state '{rec['status']}'")
        missing = [m for m in mandatory if not fields.get(m)]
        if missing:
            return answer(100, "Missing mandatory attribute(s) for applying the stimulus: "
                          f"{', '.join(missing)}.")
        rec.update({k: str(v) for k, v in fields.items()})
        rec.update(status=target, last_update=self.tick())
        return answer(0, None, self._out(cls, key, data.get("output_fields", "id"), "updated"))
