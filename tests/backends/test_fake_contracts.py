"""Each fake refuses what its vendor's API description refuses, answers as the vendor would,
and records the breach so that the test that sent it fails (tests/backends/conftest.py).

Per vendor: a request missing something required, one with a wrong type, one to a path the
vendor does not have. And a fake whose answer drifts from the document is caught too.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest

from tests.backends.fakes import base, contract
from tests.backends.fakes.base import Resp
from tests.backends.fakes.jira import FakeJira
from tests.backends.fakes.smax import TENANT
from tests.backends.fakes.zendesk import FakeZendesk
from tests.backends.vendor_kits import BY_NAME, running


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def _auth(name: str, fake: Any) -> dict[str, str]:
    if name == "jira":
        return {"Authorization": _basic(fake.email, fake.token)}
    if name == "zendesk":
        return {"Authorization": _basic(f"{fake.email}/token", fake.token)}
    if name == "autotask":
        return {"UserName": fake.user, "Secret": fake.secret, "ApiIntegrationCode": fake.code}
    if name == "servicenow":
        return {"Authorization": _basic(fake.user, fake.password)}
    if name == "zammad":
        return {"Authorization": f"Token token={fake.token}"}
    if name == "freshdesk":
        return {"Authorization": _basic(fake.api_key, "X")}
    if name == "smax":
        fake.tokens.add("tok")
        return {"Cookie": "SMAX_AUTH_TOKEN=tok"}
    return {}


def _itop(payload: dict[str, Any]) -> dict[str, Any]:
    form = {"json_data": json.dumps(payload), "auth_user": "rest", "auth_pwd": "pw"}
    return {"content": urlencode(form).encode(),
            "headers": {"Content-Type": "application/x-www-form-urlencoded"}}


@dataclass(frozen=True)
class Bad:
    vendor: str
    what: str  # missing | type | path
    method: str
    path: str
    status: int  # what the vendor answers
    breach: str  # part of the recorded problem
    kwargs: dict[str, Any] = field(default_factory=dict)
    auth: bool = True


CASES = [
    Bad("jira", "missing", "POST", "/rest/api/2/issue/OPS-1/attachments", 400,
        "Missing required header parameter: X-Atlassian-Token",
        {"files": {"file": ("a.txt", b"a")}}),
    Bad("jira", "type", "POST", "/rest/api/3/search/jql", 400,
        "5 is not of type 'string' (at jql)", {"json": {"jql": 5}}),
    Bad("jira", "path", "GET", "/rest/api/2/no-such-thing", 404, "Path not found"),
    # Jira Service Management's own API (fakes/schemas/jira-service-management.yaml)
    Bad("jira", "jsm-type", "POST", "/rest/servicedeskapi/customer", 400,
        "5 is not of type 'string' (at email)", {"json": {"email": 5}}),
    Bad("jira", "jsm-path", "GET", "/rest/servicedeskapi/no-such-thing", 404, "Path not found"),
    Bad("zendesk", "missing", "POST", "/api/v2/tickets.json", 400,
        "'comment' is a required property (at ticket)", {"json": {"ticket": {"subject": "x"}}}),
    Bad("zendesk", "type", "POST", "/api/v2/tickets.json", 400,
        "5 is not of type 'string' (at ticket/subject)",
        {"json": {"ticket": {"subject": 5, "comment": {"body": "x"}}}}),
    Bad("zendesk", "path", "GET", "/api/v2/no_such_things.json", 404, "Path not found"),
    Bad("autotask", "missing", "POST", "/ATServicesRest/V1.0/Tickets/query", 500,
        "Missing required header parameter: Secret",
        {"json": {"filter": []}, "headers": {"UserName": "u", "ApiIntegrationCode": "c"}},
        auth=False),
    Bad("autotask", "type", "POST", "/ATServicesRest/V1.0/Tickets", 500,
        "'five' is not of type 'integer' (at companyID)",
        {"json": {"companyID": "five", "title": "t"}}),
    Bad("autotask", "path", "GET", "/ATServicesRest/V1.0/NoSuchEntities", 404, "Path not found"),
    Bad("itop", "missing", "POST", "/webservices/rest.php?version=1.3", 200,
        "'key' is a required property (at json_data)",
        _itop({"operation": "core/update", "comment": "c", "class": "UserRequest",
               "fields": {"title": "t"}})),
    Bad("itop", "type", "POST", "/webservices/rest.php?version=1.3", 200,
        "'ten' is not of type 'integer' (at json_data/limit)",
        _itop({"operation": "core/get", "class": "UserRequest", "key": "1", "limit": "ten"})),
    Bad("itop", "path", "POST", "/webservices/nothing.php", 404, "Path not found",
        _itop({"operation": "list_operations"})),
    Bad("servicenow", "missing", "POST",
        "/api/now/attachment/file?table_name=incident&file_name=a.txt", 400,
        "Missing required query parameter: table_sys_id",
        {"content": b"a", "headers": {"Content-Type": "text/plain"}}),
    Bad("servicenow", "type", "POST", "/api/now/table/incident", 400,
        "is not of type 'string', 'number', 'boolean', 'null' (at short_description)",
        {"json": {"short_description": {"text": "x"}}}),
    Bad("servicenow", "path", "GET", "/api/now/no_such_api", 400, "Path not found"),
    Bad("zammad", "missing", "POST", "/api/v1/tickets", 422,
        "'title' is a required property", {"json": {"group": "Users", "article": {}}}),
    Bad("zammad", "type", "POST", "/api/v1/ticket_articles", 422,
        "'one' is not of type 'integer' (at ticket_id)",
        {"json": {"ticket_id": "one", "body": "x"}}),
    Bad("zammad", "path", "GET", "/api/v1/no_such_things", 404, "Path not found"),
    Bad("freshdesk", "missing", "POST", "/api/v2/tickets", 400,
        "is not valid under any of the given schemas",
        {"json": {"subject": "x", "description": "d", "status": 2, "priority": 1}}),
    Bad("freshdesk", "type", "PUT", "/api/v2/tickets/11", 400,
        "'open' is not of type 'integer' (at status)", {"json": {"status": "open"}}),
    Bad("freshdesk", "path", "GET", "/api/v2/no_such_things", 404, "Path not found"),
    Bad("smax", "missing", "POST", f"/rest/{TENANT}/ems/bulk", 400,
        "'operation' is a required property",
        {"json": {"entities": [{"entity_type": "Request", "properties": {}}]}}),
    Bad("smax", "type", "POST", f"/rest/{TENANT}/collaboration/comments/Request/1", 400,
        "'SECRET' is not one of ['PUBLIC', 'INTERNAL'] (at PrivacyType)",
        {"json": {"Body": "x", "PrivacyType": "SECRET"}}),
    Bad("smax", "path", "GET", f"/rest/{TENANT}/no/such/api", 404, "Path not found"),
    Bad("webhook", "missing", "POST", "/hook", 400,
        "Missing required header parameter: webhook-signature",
        {"json": {"id": "evt_1", "type": "ping", "created_at": "2026-01-01T00:00:00Z"},
         "headers": {"webhook-id": "evt_1", "webhook-timestamp": "1"}}),
    Bad("webhook", "type", "POST", "/hook", 400,
        "'ticket.exploded' is not one of",
        {"json": {"id": "evt_1", "type": "ticket.exploded", "created_at": "2026-01-01T00:00:00Z"},
         "headers": {"webhook-id": "evt_1", "webhook-timestamp": "1",
                     "webhook-signature": "v1,AAAA"}}),
    Bad("webhook", "path", "POST", "/elsewhere", 404, "Path not found", {"json": {}}),
]


@pytest.mark.parametrize("bad", CASES, ids=[f"{c.vendor}-{c.what}" for c in CASES])
def test_request_the_vendor_refuses(bad: Bad) -> None:
    kit = BY_NAME[bad.vendor]
    fake = kit.fake()
    with running(fake) as url:
        kwargs = dict(bad.kwargs)
        headers = {**(_auth(bad.vendor, fake) if bad.auth else {}), **kwargs.pop("headers", {})}
        answer = httpx.request(bad.method, url + bad.path, headers=headers, timeout=10, **kwargs)
    assert answer.status_code == bad.status, answer.text
    if bad.vendor == "itop" and bad.what != "path":
        assert answer.json()["code"] == 100  # iTop: HTTP 200, the error in `code`
    breaches = fake.take_breaches()
    assert breaches and all(b.where == "request" for b in breaches)
    assert any(bad.breach in b.message for b in breaches), [b.message for b in breaches]
    assert kit.tickets(fake) == 0  # refused before anything happened


def test_an_unread_breach_fails_the_test() -> None:
    """What the autouse fixture reads at teardown: a breach nobody took stays there."""
    fake = FakeZendesk()
    with running(fake) as url:
        httpx.get(f"{url}/api/v2/no_such_things.json")
    found = contract.unread()  # taken here, so this test itself still passes
    assert [b.message for b in found] == [
        "Path not found for http://vendor.invalid/api/v2/no_such_things"]
    assert contract.unread() == []


def test_an_answer_that_drifts_from_the_document_is_caught() -> None:
    fake = FakeJira()
    # The fake answers the create with a number for `id` (Jira's CreatedIssue has a string).
    fake.routes = [(m, p, (lambda req: Resp(201, {"id": 10000, "key": "OPS-1"}))
                    if m == "POST" and p.pattern.endswith("/issue$") else h)
                   for m, p, h in fake.routes]
    with running(fake) as url:
        answer = httpx.post(f"{url}/rest/api/2/issue", json={"fields": {"summary": "x"}},
                            headers=_auth("jira", fake))
    assert answer.status_code == 201
    (breach,) = fake.take_breaches()
    assert breach.where == "response" and "10000 is not of type 'string' (at id)" in breach.message


def _served(fake: Any) -> list[tuple[str, str]]:
    """(method, a concrete path) for every route a fake serves."""
    if isinstance(fake, base.FakeVendor):
        found = []
        for method, pattern, _ in fake.routes:
            path = re.sub(r"\(\?P<\w+>[^)]*\)", "1", pattern.pattern.strip("^$"))
            found.append((method, path.replace("\\", "")))
        return found
    return [(method, re.sub(r"\{[^}]+\}", "1", route.path))
            for route in fake.routes() for method in sorted(route.methods or ())
            if method != "HEAD"]


@pytest.mark.parametrize("name", list(BY_NAME))
def test_every_route_a_fake_serves_is_in_its_document(name: str) -> None:
    """A fake may only answer what its vendor's document (or our schema for the vendor)
    describes: a route it serves beyond that would go unchecked."""
    fake = BY_NAME[name].fake()
    assert fake.contract is not None
    served = _served(fake)
    assert served
    missing = []
    for method, path in served:
        ex = contract.Exchange(method, path, "", {}, b"")
        if any(p.unknown for p in fake.contract.check_request(ex)):
            missing.append(f"{method} {path}")
    assert missing == []
