"""Fake iTop REST 1.3 endpoint, as a live iTop 3.2.0 behaves (backend-contracts.md addendum).

Always HTTP 200 with the outcome in `code`; `objects` is null when nothing matches; values
come back as strings (an empty external key is "0"); dates are local time of the server
(Europe/Paris by default); a stock UserRequest has no `external_ref` (or any other unknown
attribute); "Invalid object <Class>::<id>" answers any bad external key, the ticket's own
included; ev_assign takes empty team/agent; ev_reopen exists; a case-log entry's
`user_login` is the author's display name when the account has a contact. The database
being down is HTTP 500 text/html (`Fault.SERVER_ERROR`).

Every request and answer is checked against fakes/schemas/itop.yaml (see contract.py).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl
from zoneinfo import ZoneInfo

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from tests.backends.fakes._server import FakeVendor
from tests.backends.fakes.contract import Contract, Exchange, Problem
from tests.backends.fakes.faults import Fault

# stimulus -> (from states, to state, mandatory fields)
LIFECYCLE: dict[str, tuple[tuple[str, ...], str, tuple[str, ...]]] = {
    "ev_assign": (("new", "escalated_tto", "pending"), "assigned", ()),
    "ev_pending": (("assigned",), "pending", ("pending_reason",)),
    "ev_resolve": (("assigned", "pending"), "resolved", ("solution",)),
    "ev_reopen": (("resolved",), "assigned", ()),
    "ev_close": (("resolved",), "closed", ()),
}
# Attributes of a stock UserRequest (the ones the REST layer would accept from us).
USER_REQUEST = {
    "id", "ref", "title", "description", "org_id", "caller_id", "origin", "urgency",
    "impact", "priority", "status", "team_id", "agent_id", "service_id",
    "servicesubcategory_id", "resolution_code", "solution", "pending_reason", "public_log",
    "private_log", "last_update", "start_date", "close_date",
}
EXTERNAL_KEYS = {"org_id": "Organization", "caller_id": "Person", "agent_id": "Person",
                 "team_id": "Team", "service_id": "Service", "item_org_id": "Organization"}
MANDATORY = {"UserRequest": ("org_id", "title", "description"), "Person": ("name", "org_id")}
HTML_500 = ("<html><head><title>iTop</title></head><body><p>iTop: An error occurred, check "
            "the database connection.</p></body></html>")
_OQL = re.compile(
    r"SELECT (?P<cls>\w+)(?: WHERE (?P<field>\w+) (?P<op>=|>|LIKE|IN) "
    r"(?P<value>'(?:[^'\\]|\\.)*'|\(\s*[\d\s,]*\)|\d+))?")


def answer(code: int, message: str | None, objects: Any = None) -> JSONResponse:
    return JSONResponse({"code": code, "message": message, "objects": objects})


def operation(verb: str) -> Callable[[Exchange], bool]:
    """Matches a REST request for one operation (`fail_next(..., where=operation(...))`):
    every iTop request goes to the same path, the operation is in `json_data`."""

    def match(ex: Exchange) -> bool:
        form = dict(parse_qsl(ex.body.decode("utf-8", "replace")))
        try:
            return bool(json.loads(form.get("json_data", "")).get("operation") == verb)
        except (ValueError, AttributeError):
            return False

    return match


@dataclass(frozen=True)
class AddedFields:
    """A datamodel an admin extended: UserRequest also has these attributes."""

    names: tuple[str, ...]

    def __call__(self, document: dict[str, Any]) -> None:
        fields = document["components"]["schemas"]["UserRequestFields"]["properties"]
        fields.update({name: {"type": ["string", "integer"]} for name in self.names})


class Refused(Exception):
    """An iTop error answer (code, message)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


class FakeITop(FakeVendor):
    contract = Contract("itop.yaml")
    REST = "/webservices/rest.php"

    def __init__(self, user: str = "rest", password: str = "pw", token: str = "tok", *,
                 contact_name: str | None = "Rest Integration",
                 zone: str = "Europe/Paris", added_fields: frozenset[str] = frozenset()) -> None:
        self.user, self.password, self.token = user, password, token
        # The REST account's linked contact: its entries show this name, not the login.
        self.contact_name = contact_name
        self.zone = ZoneInfo(zone)
        # Attributes a site added to its UserRequest (none on a stock install).
        self.attributes = set(USER_REQUEST)
        if added_fields:
            self.add_attributes(*added_fields)
        self.objects: dict[str, dict[int, dict[str, Any]]] = {
            "UserRequest": {}, "Attachment": {},
            "Organization": {3: {"id": "3", "name": "Demo"}, 4: {"id": "4", "name": "Acme"}},
            "Team": {5: {"id": "5", "name": "Helpdesk"}},
            "Service": {2: {"id": "2", "name": "Mail"}},
            "Person": {9: {"id": "9", "name": "Smith", "first_name": "Agent",
                           "email": "agent@example.org", "org_id": "3"},
                       12: {"id": "12", "name": "Customer", "first_name": "Carol",
                            "email": "carol@example.com", "org_id": "3"}},
        }
        self.clock = datetime(2026, 1, 1, 8, 0, 0, tzinfo=UTC)
        self._next = 100
        self.comments_seen: list[str] = []
        self.operations: list[str] = []
        super().__init__()

    def routes(self) -> list[Route]:
        return [Route("/webservices/rest.php", self.rest, methods=["POST"])]

    # --- test controls -----------------------------------------------------------------

    def tick(self) -> str:
        """Advance the server clock; the stamp is in the server's time zone, as iTop's."""
        self.clock += timedelta(seconds=1)
        return self.clock.astimezone(self.zone).strftime("%Y-%m-%d %H:%M:%S")

    def set_status(self, key: int, status: str, **fields: str) -> None:
        self.objects["UserRequest"][key].update(status=status, last_update=self.tick(),
                                                **fields)

    def add_log(self, key: int, log: str, message: str, who: str = "agent") -> None:
        entries = self.objects["UserRequest"][key][log]["entries"]
        entries.append({"date": self.tick(), "user_login": who, "user_id": "7",
                        "message": message, "message_html": f"<p>{message}</p>"})

    def add_attributes(self, *names: str) -> None:
        """An admin extends UserRequest with these attributes (iTop, and its document)."""
        self.attributes = self.attributes | set(names)
        extra = tuple(sorted(self.attributes - USER_REQUEST))
        self.contract = Contract("itop.yaml", overlays=(AddedFields(extra),))

    # --- what iTop says (fail_next, contract breaches) ------------------------------------

    def delete_ticket(self, ticket: str) -> None:
        del self.objects["UserRequest"][int(ticket)]

    def refuse_credentials(self) -> Response:
        return answer(1, "Error: Invalid login")

    def fault_answer(self, kind: Fault, retry_after: int) -> Response:
        if kind is Fault.SERVER_ERROR:  # the web server answers, the database does not
            return HTMLResponse(HTML_500, 500)
        if kind is Fault.RATE_LIMITED:  # iTop has none; the web server in front answers
            return HTMLResponse("<html><body><h1>429 Too Many Requests</h1></body></html>",
                                429, {"Retry-After": str(retry_after)})
        return super().fault_answer(kind, retry_after)

    def reject(self, problems: list[Problem]) -> Response:
        if all(p.unknown for p in problems):  # not rest.php: the web server's 404
            return HTMLResponse("<html><body><h1>Not Found</h1></body></html>", 404)
        text = "; ".join(p.message for p in problems)
        if "(at json_data/operation)" in text:
            return answer(11, "Error: Unknown operation")
        unknown = re.search(r"\('([^']+)'.* unexpected\) \(at json_data/fields\)", text)
        if unknown:  # iTop names the first attribute its class does not have
            return answer(100, f"Error: {unknown.group(1)}: Unknown attribute")
        return answer(100, "Error: " + text)

    def requests(self) -> list[dict[str, Any]]:
        return list(self.objects["UserRequest"].values())

    # --- protocol ----------------------------------------------------------------------

    def _out(self, cls: str, key: int, fields: str, message: str) -> dict[str, Any]:
        rec = self.objects[cls][key]
        names = list(rec) if fields in ("*", "") else fields.split(",")
        return {f"{cls}::{key}": {"code": 0, "message": message, "class": cls, "key": str(key),
                                  "fields": {n: rec.get(n, "") for n in names}}}

    @staticmethod
    def _unquote(value: str) -> str:
        return re.sub(r"\\(.)", r"\1", value[1:-1])

    def _select(self, cls: str, key: Any) -> list[int]:
        if cls not in self.objects:
            raise Refused(100, f"Error: Unknown class '{cls}'")
        rows = self.objects[cls]
        if isinstance(key, int) or str(key).isdigit():
            return [int(key)] if int(key) in rows else []
        m = _OQL.fullmatch(str(key))
        if m is None or m.group("cls") != cls:
            raise Refused(100, f"Error: unsupported OQL {key}")
        field, op, raw = m.group("field"), m.group("op"), m.group("value")
        if field is None:
            return sorted(rows)
        if op == "IN":
            wanted = {v.strip() for v in raw.strip("()").split(",") if v.strip()}
            return sorted(k for k in rows if str(k) in wanted)
        value = self._unquote(raw) if raw.startswith("'") else raw

        def hit(rec: dict[str, Any], k: int) -> bool:
            have = str(k) if field == "id" else rec.get(field, "")
            if op == "=":
                return str(have) == value
            if op == ">":
                return str(have) > value
            pattern = re.escape(value).replace("%", ".*").replace("_", ".")
            return re.fullmatch(pattern, str(have), re.S) is not None

        return sorted(k for k, r in rows.items() if hit(r, k))

    def _key_value(self, field: str, value: Any) -> str:
        """An external key as iTop resolves it: an id, or OQL; "Invalid object" if absent."""
        target = EXTERNAL_KEYS[field]
        text = str(value)
        if text in ("", "0"):
            return "0"
        if text.isdigit():
            if int(text) not in self.objects[target]:
                raise Refused(100, f"Invalid object {target}::{text}")
            return text
        found = self._select(target, text)
        if not found:
            raise Refused(100, f"Error: No item found with criteria: {text}")
        return str(found[0])

    def _ticket(self, cls: str, key: Any) -> dict[str, Any]:
        rec = self.objects[cls].get(int(key)) if str(key).isdigit() else None
        if rec is None:
            raise Refused(100, f"Invalid object {cls}::{key}")
        return rec

    def _fields(self, cls: str, fields: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, value in fields.items():
            if cls == "UserRequest" and name not in self.attributes:
                raise Refused(100, f"Error: {name}: Unknown attribute")
            if name in EXTERNAL_KEYS and cls != "Attachment":
                out[name] = self._key_value(name, value)
            else:
                out[name] = value if isinstance(value, dict) else str(value)
        return out

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
        self.operations.append(f"{op}:{data.get('stimulus') or data.get('class') or ''}")
        handler = {"list_operations": self.list_operations, "core/create": self.create,
                   "core/get": self.get, "core/update": self.update,
                   "core/apply_stimulus": self.stimulus, "core/delete": self.remove}.get(op)
        if handler is None:
            return answer(11, f"Error: Unknown operation '{op}'")
        try:
            return handler(data)
        except Refused as exc:
            return answer(exc.code, exc.message)

    def list_operations(self, data: dict[str, Any]) -> Response:
        verbs = ("core/create", "core/get", "core/update", "core/apply_stimulus", "core/delete")
        return JSONResponse({"version": "1.3", "operations": [{"verb": v} for v in verbs],
                             "code": 0, "message": f"Operations: {len(verbs)}"})

    def create(self, data: dict[str, Any]) -> Response:
        cls = data["class"]
        if cls not in self.objects:
            raise Refused(100, f"Error: Unknown class '{cls}'")
        fields = self._fields(cls, dict(data.get("fields") or {}))
        missing = [f for f in MANDATORY.get(cls, ()) if fields.get(f) in (None, "", "0")]
        if missing:
            raise Refused(100, f"Error: Missing mandatory attribute(s): {', '.join(missing)}")
        self._next += 1
        key = self._next
        if cls == "UserRequest":
            for name in ("caller_id", "team_id", "agent_id", "service_id"):
                fields.setdefault(name, "0")
            fields.update(ref=f"R-{key:06d}", status="new", last_update=self.tick(),
                          public_log={"entries": []}, private_log={"entries": []},
                          id=str(key), solution=fields.get("solution", ""))
        elif cls == "Attachment":
            self._ticket(str(fields.get("item_class")), fields.get("item_id", 0))
        else:
            fields["id"] = str(key)
        self.objects[cls][key] = fields
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

    def _log_entry(self, value: Any) -> tuple[str, str]:
        item = value["add_item"] if isinstance(value, dict) else {"message": value}
        message = str(item["message"])
        if item.get("format") == "html":
            return re.sub(r"<[^>]+>", "", message), message
        return message, "<p>" + message.replace("\n", "<br>") + "</p>"

    def update(self, data: dict[str, Any]) -> Response:
        cls, key = data["class"], data["key"]
        rec = self._ticket(cls, key)
        raw = dict(data.get("fields") or {})
        logs = {k: raw.pop(k) for k in ("public_log", "private_log") if k in raw}
        rec.update(self._fields(cls, raw))
        who = self.contact_name or self.user
        for name, value in logs.items():
            text, markup = self._log_entry(value)
            rec[name]["entries"].append({"date": self.tick(), "user_login": who,
                                         "user_id": "1", "message": text,
                                         "message_html": markup})
        rec["last_update"] = self.tick()
        return answer(0, None, self._out(cls, int(key), data.get("output_fields", "id"),
                                         "updated"))

    def stimulus(self, data: dict[str, Any]) -> Response:
        cls, key, stim = data["class"], data["key"], data["stimulus"]
        rec = self._ticket(cls, key)
        fields = self._fields(cls, dict(data.get("fields") or {}))
        sources, target, mandatory = LIFECYCLE.get(stim, ((), "", ()))
        if rec["status"] not in sources:
            raise Refused(100, f"Invalid stimulus: '{stim}' on the object {rec['ref']} in "
                          f"state '{rec['status']}'")
        missing = [m for m in mandatory if not fields.get(m)]
        if missing:
            raise Refused(100, "Missing mandatory attribute(s) for applying the stimulus: "
                          f"{', '.join(missing)}.")
        rec.update(fields)
        rec.update(status=target, last_update=self.tick())
        return answer(0, None, self._out(cls, int(key), data.get("output_fields", "id"),
                                         "updated"))

    def remove(self, data: dict[str, Any]) -> Response:
        cls = data["class"]
        keys = self._select(cls, data["key"])
        out = {f"{cls}::{k}": {"code": 0, "message": "deleted", "class": cls, "key": str(k)}
               for k in keys}
        for k in keys:
            del self.objects[cls][k]
        return answer(0, None, out or None)
