"""One harness per vendor fake, so the conformance tests run the same story against each.

A harness starts its fake, says how to configure an instance of the backend against it
(and how to get the credentials wrong), names the requests the stories break, and reads the
fake's state the way a vendor's user would see it. Faults go through the fakes' uniform
`fail_next` (fakes/faults.py): an applied request whose answer is lost, a deleted ticket, a
refused password; and a ready-made vendor answer for a "not found" from a write while the
ticket exists. Every fake checks what it sees against its vendor's document (contract.py).
"""

from __future__ import annotations

import base64
from contextlib import ExitStack
from typing import Any, ClassVar

from starlette.responses import JSONResponse, Response

from mailticket.backends.autotask import AutotaskBackend
from tests.backends.conftest import jira_instance
from tests.backends.fakes._server import serve
from tests.backends.fakes.autotask import FakeAutotask
from tests.backends.fakes.base import Resp
from tests.backends.fakes.faults import Fault
from tests.backends.fakes.freshdesk import FakeFreshdesk
from tests.backends.fakes.itop import FakeITop, operation
from tests.backends.fakes.jira import STATUS_CATEGORY, FakeJira
from tests.backends.fakes.servicenow import FakeServiceNow, failure
from tests.backends.fakes.smax import TENANT, FakeSmax
from tests.backends.fakes.webhook_receiver import FakeReceiver
from tests.backends.fakes.zammad import FakeZammad
from tests.backends.fakes.zendesk import FakeZendesk

WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()


class Vendor:
    kind: ClassVar[str]
    pollable: ClassVar[bool] = True  # status comes back by polling (else: call-backs)
    # Reference data kinds `backends refresh` must report (empty: credentials check only).
    reference_kinds: ClassVar[tuple[str, ...]] = ()
    # The vendor's id of the person carol@example.com (known to every fake), if it has one.
    known_requester: ClassVar[str | None] = None
    # (method, path as a regular expression) of the create and of a comment on ticket {rid}
    CREATE: ClassVar[tuple[str, str]]
    COMMENT: ClassVar[tuple[str, str]]

    def __init__(self) -> None:
        self._stack = ExitStack()
        self.url = ""
        self.fake: Any = None

    def __enter__(self) -> Vendor:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def start(self) -> None:
        raise NotImplementedError

    def instance(self, **over: Any) -> dict[str, Any]:
        raise NotImplementedError

    def bad_credentials(self) -> dict[str, Any]:
        raise NotImplementedError

    def lose_answer(self, what: str) -> None:
        """The next create ("create") or comment ("comment") is applied, its answer lost."""
        method, path = self.CREATE if what == "create" else self.COMMENT
        self.fake.fail_next(Fault.LOST_ANSWER, method=method, path=path.format(rid=r"[^/]+"))

    def refuse_password(self) -> None:
        """The next request meets the vendor's answer to a password changed at its end."""
        self.fake.fail_next(Fault.WRONG_PASSWORD)

    def delete(self, rid: str) -> None:
        """Someone deletes the ticket at the vendor's end."""
        self.fake.fail_next(Fault.DELETED, ticket=rid)

    def not_found(self, rid: str) -> Any:
        """The vendor's answer to a write on a ticket it cannot find."""
        raise NotImplementedError

    def not_found_on_next_comment(self, rid: str) -> None:
        """The next comment write on `rid` answers the vendor's "not found", although the
        ticket is still there (a read says so)."""
        method, path = self.COMMENT
        self.fake.fail_next(self.not_found(rid), method=method, path=path.format(rid=rid))

    def tickets(self) -> list[str]:
        raise NotImplementedError

    def comments(self, rid: str) -> list[str]:
        """Texts of the comments on a ticket (not its description)."""
        raise NotImplementedError

    def visible_text(self, rid: str) -> str:
        """What a vendor's user sees of a ticket: title, description, labels, fields."""
        raise NotImplementedError

    def requester_of(self, rid: str) -> str | None:
        return None

    def resolve(self, rid: str) -> None:
        raise NotImplementedError

    def is_open(self, rid: str) -> bool:
        raise NotImplementedError

    def is_resolved(self, rid: str) -> bool:
        raise NotImplementedError


class JiraVendor(Vendor):
    kind = "jira"
    reference_kinds = ("projects", "issue_types", "statuses", "transitions")
    known_requester = "acc-carol"
    CREATE = ("POST", r"/rest/api/2/issue")
    COMMENT = ("POST", r"/rest/api/2/issue/{rid}/comment")

    def start(self) -> None:
        self.fake = self._stack.enter_context(FakeJira())
        self.url = self.fake.url

    def instance(self, **over: Any) -> dict[str, Any]:
        return jira_instance(self.fake, **over)

    def bad_credentials(self) -> dict[str, Any]:
        return {"api_token": "nope"}

    def not_found(self, rid: str) -> Resp:
        return Resp(404, {"errorMessages": [
            "Issue does not exist or you do not have permission to see it."], "errors": {}})

    def tickets(self) -> list[str]:
        return list(self.fake.issues)

    def comments(self, rid: str) -> list[str]:
        return [str(c["body"]) for c in self.fake.comments[rid]]

    def visible_text(self, rid: str) -> str:
        f = self.fake.issues[rid]["fields"]
        return " ".join([f["summary"], f["description"], *f.get("labels", [])])

    def requester_of(self, rid: str) -> str | None:
        return (self.fake.issues[rid]["fields"].get("reporter") or {}).get("accountId")

    def resolve(self, rid: str) -> None:
        self.fake.set_status(rid, "Resolved")

    def _category(self, rid: str) -> str:
        return str(STATUS_CATEGORY[self.fake.issues[rid]["fields"]["status"]["name"]])

    def is_open(self, rid: str) -> bool:
        return self._category(rid) != "done"

    def is_resolved(self, rid: str) -> bool:
        return self.fake.issues[rid]["fields"]["status"]["name"] == "Resolved"



class ITopVendor(Vendor):
    kind = "itop"
    reference_kinds = ("organizations", "teams", "services")
    known_requester = "12"

    def start(self) -> None:
        self.fake = FakeITop()
        self.url = self._stack.enter_context(serve(self.fake.app))

    def instance(self, **over: Any) -> dict[str, Any]:
        return {"kind": "itop", "base_url": self.url, "auth_user": "rest", "auth_pwd": "pw",
                "org_id": "3", "timeout": 5, **over}

    def bad_credentials(self) -> dict[str, Any]:
        return {"auth_pwd": "wrong"}

    def lose_answer(self, what: str) -> None:
        # Every operation goes to rest.php: the operation tells a create from a comment.
        verb = "core/create" if what == "create" else "core/update"
        self.fake.fail_next(Fault.LOST_ANSWER, path=FakeITop.REST, where=operation(verb))

    def not_found_on_next_comment(self, rid: str) -> None:
        # The wording iTop uses for a missing ticket; a wrong team or agent id is told
        # apart by its class (test_itop), this one only by reading the ticket back.
        self.fake.fail_next(JSONResponse({"code": 100, "objects": None,
                                          "message": f"Invalid object UserRequest::{rid}"}),
                            path=FakeITop.REST, where=operation("core/update"))

    def _rec(self, rid: str) -> dict[str, Any]:
        return self.fake.objects["UserRequest"][int(rid)]

    def tickets(self) -> list[str]:
        return [str(k) for k in self.fake.objects["UserRequest"]]

    def comments(self, rid: str) -> list[str]:
        rec = self._rec(rid)
        return [str(e["message"]) for log in ("public_log", "private_log")
                for e in rec[log]["entries"]]

    def visible_text(self, rid: str) -> str:
        rec = self._rec(rid)
        return f"{rec['title']} {rec['description']}"

    def requester_of(self, rid: str) -> str | None:
        return str(self._rec(rid)["caller_id"])

    def resolve(self, rid: str) -> None:
        self.fake.set_status(int(rid), "resolved", solution="Replaced the toner.")

    def is_open(self, rid: str) -> bool:
        return self._rec(rid)["status"] in ("new", "assigned", "escalated_tto")

    def is_resolved(self, rid: str) -> bool:
        return self._rec(rid)["status"] == "resolved"



class ZammadVendor(Vendor):
    kind = "zammad"
    reference_kinds = ("groups", "states", "priorities")
    known_requester = "7"
    CREATE = ("POST", r"/api/v1/tickets")
    COMMENT = ("POST", r"/api/v1/ticket_articles")  # the ticket id is in the body

    def start(self) -> None:
        self.fake = self._stack.enter_context(FakeZammad())
        self.url = self.fake.url

    def instance(self, **over: Any) -> dict[str, Any]:
        return {"kind": "zammad", "base_url": self.url, "token": self.fake.token,
                "group": "Support", "timeout": 5, **over}

    def bad_credentials(self) -> dict[str, Any]:
        return {"token": "wrong"}

    def not_found(self, rid: str) -> Resp:
        return Resp(404, {"error": "Couldn't find Ticket with 'id'",
                          "error_human": "Couldn't find Ticket"})

    def tickets(self) -> list[str]:
        return [str(k) for k in self.fake.tickets]

    def comments(self, rid: str) -> list[str]:
        return [str(a["body"]) for a in self.fake.articles[int(rid)][1:]]

    def visible_text(self, rid: str) -> str:
        t = self.fake.tickets[int(rid)]
        return " ".join([t["title"], str(self.fake.articles[int(rid)][0]["body"]), *t["tags"]])

    def requester_of(self, rid: str) -> str | None:
        return str(self.fake.tickets[int(rid)]["customer_id"])

    def resolve(self, rid: str) -> None:
        self.fake.set_state(rid, "closed")

    def is_open(self, rid: str) -> bool:
        return self.fake.tickets[int(rid)]["state"] in ("new", "open")

    def is_resolved(self, rid: str) -> bool:
        return self.fake.tickets[int(rid)]["state"] == "closed"



class ZendeskVendor(Vendor):
    kind = "zendesk"
    reference_kinds = ("groups", "ticket_fields")
    known_requester = "501"
    CREATE = ("POST", r"/api/v2/tickets\.json")
    COMMENT = ("PUT", r"/api/v2/tickets/{rid}\.json")  # a comment is a ticket update

    def start(self) -> None:
        self.fake = FakeZendesk()
        self.url = self._stack.enter_context(serve(self.fake.app))

    def instance(self, **over: Any) -> dict[str, Any]:
        return {"kind": "zendesk", "base_url": self.url, "email": self.fake.email,
                "api_token": self.fake.token, "timeout": 5, **over}

    def bad_credentials(self) -> dict[str, Any]:
        return {"api_token": "wrong"}

    def not_found(self, rid: str) -> Response:
        return JSONResponse({"error": "RecordNotFound", "description": "Not found"}, 404)

    def tickets(self) -> list[str]:
        return [str(k) for k in self.fake.tickets]

    def comments(self, rid: str) -> list[str]:
        return [str(c["body"]) for c in self.fake.comments[int(rid)][1:]]

    def visible_text(self, rid: str) -> str:
        t = self.fake.tickets[int(rid)]
        return " ".join([t["subject"], str(self.fake.comments[int(rid)][0]["body"]),
                         *t["tags"]])

    def requester_of(self, rid: str) -> str | None:
        return str(self.fake.tickets[int(rid)]["requester_id"])

    def resolve(self, rid: str) -> None:
        self.fake.set_status(int(rid), "solved")

    def is_open(self, rid: str) -> bool:
        return self.fake.tickets[int(rid)]["status"] in ("new", "open")

    def is_resolved(self, rid: str) -> bool:
        return self.fake.tickets[int(rid)]["status"] == "solved"



class AutotaskVendor(Vendor):
    kind = "autotask"
    reference_kinds = ("queues", "sources", "statuses", "priorities")
    known_requester = "30"
    CREATE = ("POST", r"/ATServicesRest/V1\.0/Tickets")
    COMMENT = ("POST", r"/ATServicesRest/V1\.0/Tickets/{rid}/Notes")

    def start(self) -> None:
        AutotaskBackend.zone_cache.clear()
        self._stack.callback(AutotaskBackend.zone_cache.clear)
        self.fake = FakeAutotask()
        self.url = self._stack.enter_context(serve(self.fake.app))

    def instance(self, **over: Any) -> dict[str, Any]:
        return {"kind": "autotask", "username": self.fake.user, "secret": self.fake.secret,
                "integration_code": self.fake.code,
                "zone_lookup_url": f"{self.url}/atservicesrest/v1.0/", "company_id": 0,
                "queue_id": 29683354, "source": 4, "timeout": 5,
                "max_requests_per_hour": None, **over}

    def bad_credentials(self) -> dict[str, Any]:
        return {"secret": "nope"}

    def not_found(self, rid: str) -> Response:
        return JSONResponse({"errors": [f"Ticket {rid} not found"]}, 404)

    def tickets(self) -> list[str]:
        return [str(k) for k in self.fake.tickets]

    def comments(self, rid: str) -> list[str]:
        return [str(n["description"]) for n in self.fake.notes if n["ticketID"] == int(rid)]

    def visible_text(self, rid: str) -> str:
        t = self.fake.tickets[int(rid)]
        return f"{t['title']} {t['description']}"

    def requester_of(self, rid: str) -> str | None:
        return str(self.fake.tickets[int(rid)].get("contactID"))

    def resolve(self, rid: str) -> None:
        self.fake.set_status(int(rid), 5)

    def is_open(self, rid: str) -> bool:
        return self.fake.tickets[int(rid)]["status"] in (1, 8)

    def is_resolved(self, rid: str) -> bool:
        return self.fake.tickets[int(rid)]["status"] == 5



class ServiceNowVendor(Vendor):
    kind = "servicenow"
    reference_kinds = ("groups", "states", "close_codes")
    known_requester = "6816f79cc0a8016401c5a33be04be441"
    CREATE = ("POST", r"/api/now/table/incident")
    COMMENT = ("PATCH", r"/api/now/table/incident/{rid}")  # work notes are a field

    def start(self) -> None:
        self.fake = FakeServiceNow()
        self.url = self._stack.enter_context(serve(self.fake.app))

    def instance(self, **over: Any) -> dict[str, Any]:
        return {"kind": "servicenow", "base_url": self.url, "username": self.fake.user,
                "password": self.fake.password, "timeout": 5, **over}

    def bad_credentials(self) -> dict[str, Any]:
        return {"password": "wrong"}

    def not_found(self, rid: str) -> Response:
        return failure(404, "No Record found",
                       "Record doesn't exist or ACL restricts the record retrieval")

    def tickets(self) -> list[str]:
        return list(self.fake.incidents)

    def comments(self, rid: str) -> list[str]:
        return [j["value"] for j in self.fake.journal if j["element_id"] == rid]

    def visible_text(self, rid: str) -> str:
        rec = self.fake.incidents[rid]
        return " ".join([rec["short_description"], rec["description"],
                         rec["correlation_display"]])

    def requester_of(self, rid: str) -> str | None:
        return self.fake.incidents[rid].get("caller_id")

    def resolve(self, rid: str) -> None:
        self.fake.set_state(rid, "6")

    def is_open(self, rid: str) -> bool:
        return self.fake.incidents[rid]["state"] in ("1", "2")

    def is_resolved(self, rid: str) -> bool:
        return self.fake.incidents[rid]["state"] == "6"



class FreshdeskVendor(Vendor):
    kind = "freshdesk"
    reference_kinds = ("groups", "ticket_fields", "statuses")
    known_requester = "4401"
    CREATE = ("POST", r"/api/v2/tickets")
    COMMENT = ("POST", r"/api/v2/tickets/{rid}/(notes|reply)")

    def start(self) -> None:
        self.fake = FakeFreshdesk()  # a stock helpdesk: no custom fields
        self.url = self._stack.enter_context(serve(self.fake.app))

    def instance(self, **over: Any) -> dict[str, Any]:
        return {"kind": "freshdesk", "base_url": self.url, "api_key": self.fake.api_key,
                "timeout": 5, **over}

    def bad_credentials(self) -> dict[str, Any]:
        return {"api_key": "wrong"}

    def not_found(self, rid: str) -> Response:
        return JSONResponse({"code": "access_denied", "message": "Record not found"}, 404)

    def tickets(self) -> list[str]:
        return [str(k) for k in self.fake.tickets]

    def comments(self, rid: str) -> list[str]:
        return [str(c["body"]) for c in self.fake.conversations.get(int(rid), [])]

    def visible_text(self, rid: str) -> str:
        t = self.fake.tickets[int(rid)]
        return " ".join([t["subject"], t["description"], *t["tags"]])

    def requester_of(self, rid: str) -> str | None:
        return str(self.fake.tickets[int(rid)]["requester_id"])

    def resolve(self, rid: str) -> None:
        self.fake.set_status(int(rid), 4)

    def is_open(self, rid: str) -> bool:
        return self.fake.tickets[int(rid)]["status"] == 2

    def is_resolved(self, rid: str) -> bool:
        return self.fake.tickets[int(rid)]["status"] == 4



class SmaxVendor(Vendor):
    kind = "smax"
    reference_kinds = ("groups", "services")
    known_requester = "10020"
    CREATE = ("POST", rf"/rest/{TENANT}/ems/bulk")
    COMMENT = ("POST", rf"/rest/{TENANT}/collaboration/comments/Request/{{rid}}")

    def start(self) -> None:
        self.fake = FakeSmax()
        self.url = self._stack.enter_context(serve(self.fake.app))

    def instance(self, **over: Any) -> dict[str, Any]:
        return {"kind": "smax", "base_url": self.url, "tenant_id": TENANT,
                "login": self.fake.login, "password": self.fake.password,
                "requested_by_person": "10016", "timeout": 5, **over}

    def bad_credentials(self) -> dict[str, Any]:
        return {"password": "nope"}

    def not_found(self, rid: str) -> Response:
        return JSONResponse({"code": 404, "message": "Request not found"}, 404)

    def tickets(self) -> list[str]:
        return list(self.fake.requests)

    def comments(self, rid: str) -> list[str]:
        return [str(c["Body"]) for c in self.fake.comments if c["EntityId"] == rid]

    def visible_text(self, rid: str) -> str:
        rec = self.fake.requests[rid]
        return f"{rec['DisplayLabel']} {rec['Description']}"

    def requester_of(self, rid: str) -> str | None:
        return str(self.fake.requests[rid]["RequestedByPerson"])

    def resolve(self, rid: str) -> None:
        self.fake.set_phase(rid, "Review", "RequestStatusComplete")

    def is_open(self, rid: str) -> bool:
        return self.fake.requests[rid]["PhaseId"] in ("Log", "Classify", "Escalate", "Fulfill")

    def is_resolved(self, rid: str) -> bool:
        return self.fake.requests[rid]["PhaseId"] == "Review"



class WebhookVendor(Vendor):
    kind = "webhook"
    pollable = False
    CREATE = COMMENT = ("POST", r"/hook")  # every event goes to the one URL

    def start(self) -> None:
        self.fake = self._stack.enter_context(FakeReceiver(WEBHOOK_SECRET))
        self.url = self.fake.url

    def instance(self, **over: Any) -> dict[str, Any]:
        return {"kind": "webhook", "url": f"{self.url}/hook", "secret": WEBHOOK_SECRET,
                "timeout": 5, **over}

    def bad_credentials(self) -> dict[str, Any]:
        return {"secret": "whsec_" + base64.b64encode(b"not-the-receivers-secret").decode()}

    def not_found(self, rid: str) -> Resp:
        return Resp(404, {"error": f"no ticket {rid}"})

    def _events(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.fake.events.values() if e["type"] == kind]

    def tickets(self) -> list[str]:
        return [str(e["ticket"]["id"]) for e in self._events("ticket.created")]

    def comments(self, rid: str) -> list[str]:
        return [str(e["comment"]["body"]) for e in self._events("comment.created")
                if str(e["ticket"]["id"]) == rid]

    def visible_text(self, rid: str) -> str:
        (created,) = [e for e in self._events("ticket.created") if str(e["ticket"]["id"]) == rid]
        return str(created["ticket"]["number"])

    def _last_status(self, rid: str) -> str:
        changes = [e for e in self.fake.events.values()
                   if e["type"] in ("ticket.updated", "ticket.closed")
                   and str(e["ticket"]["id"]) == rid and e["ticket"].get("status")]
        return str(changes[-1]["ticket"]["status"]) if changes else "open"

    def is_open(self, rid: str) -> bool:
        return self._last_status(rid) == "open"

    def is_resolved(self, rid: str) -> bool:
        return self._last_status(rid) in ("resolved", "closed")


VENDORS: list[type[Vendor]] = [JiraVendor, ITopVendor, ZammadVendor, ZendeskVendor,
                               AutotaskVendor, ServiceNowVendor, FreshdeskVendor, SmaxVendor,
                               WebhookVendor]

__all__ = ["VENDORS", "Vendor"]
