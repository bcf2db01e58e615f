"""The HTTP API under hostile input: no 500, no work done for a caller without a token, and
an OpenAPI document that declares what really comes back."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi import FastAPI
from fastapi.routing import APIRoute

from mailticket.api.app import WEBHOOK_PREFIX, iter_routes
from mailticket.backends.webhook import sign
from mailticket.backends.webhook_api import build_router
from mailticket.store.models import Ticket
from tests.api.conftest import Api
from tests.mailfactory import make_email

PROBLEM = "application/problem+json"
SECRET = "whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="


def _is_problem(r: Any, status: int) -> None:
    assert r.status_code == status, (r.status_code, r.text[:300])
    assert r.headers["content-type"] == PROBLEM, r.headers
    body = r.json()
    assert body["status"] == status and body["title"] and "Traceback" not in r.text


# --- ticket refs ------------------------------------------------------------------------------


def test_only_ascii_digits_are_ticket_ids(api: Api) -> None:
    out = api.ingest(make_email(subject="first"))
    assert out.ticket_id == 1
    assert api.get("/api/v1/tickets/1").json()["ticket_number"] == out.ticket_number
    # ¹ (superscript one), ١ (Arabic-Indic one), １ (fullwidth one): str.isdigit() says yes.
    for ref in ("%C2%B9", "%D9%A1", "%EF%BC%91", "%D9%A1%D9%A1"):
        for suffix in ("", "/emails"):
            _is_problem(api.get(f"/api/v1/tickets/{ref}{suffix}"), 404)
    for ref in ("2147483648", "9" * 64, "0"):
        _is_problem(api.get(f"/api/v1/tickets/{ref}"), 404)


# --- NUL ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_nul_is_refused_wherever_input_meets_the_database(api: Api) -> None:
    out = api.ingest(make_email(subject="keep me"))
    tid = out.ticket_id
    gets = [
        "/api/v1/tickets/a%00b", "/api/v1/tickets/a%00b/emails", f"/api/v1/tickets/{tid}%00",
        "/api/v1/tickets?search=a%00b", "/api/v1/tickets?tag=a%00b",
        "/api/v1/tickets?cursor=a%00b", "/api/v1/tickets?status=open%00",
        "/api/v1/tickets?unknown=%00", "/api/v1/tickets/by-email/a%00b@example.com",
        "/api/v1/quarantine?status=held%00", "/api/v1/emails/1%00/raw", "/healthz?x=%00",
    ]
    for url in gets:
        _is_problem(api.get(url), 422)
    write = api.auth("write")
    bodies: list[tuple[str, str, dict[str, Any]]] = [
        ("POST", f"/api/v1/tickets/{tid}/comments", {"body": "a\x00b"}),
        ("POST", f"/api/v1/tickets/{tid}/comments", {"body": "x", "author_email": "a\x00@b.c"}),
        ("POST", f"/api/v1/tickets/{tid}/comments", {"body": "x", "a\x00": 1}),
        ("PATCH", f"/api/v1/tickets/{tid}", {"tags": ["ok", "a\x00b"]}),
        ("POST", "/api/v1/workflows/validate", {"yaml": "workflows: []\x00"}),
        ("POST", "/api/v1/test/email-to-ticket",
         {"email_data": {"from_address": "a@b.example", "body": "x\x00"}}),
        ("POST", "/api/v1/test/email-to-ticket",
         {"email_data": {"from_address": "a@b.example", "subject": "x\x00"}}),
    ]
    for method, url, body in bodies:
        r = api.client.request(method, url, headers=write, json=body)
        _is_problem(r, 422)
        assert "NUL" in r.text or "extra" in r.text, r.text
    with api.runtime.session_factory() as s:
        ticket = s.get_one(Ticket, tid)
        assert ticket.tags == [] and ticket.comments == []
    # The thread view: the same rule, answered with a page.
    api.client.post("/ui/login", data={"token": api.tokens["read"]})
    for url in ("/ui/tickets?search=a%00b", "/ui/tickets/a%00b", "/ui/tickets?tag=%00"):
        r = api.client.get(url)
        assert r.status_code == 422 and r.headers["content-type"].startswith("text/html"), url


# --- workflow YAML ------------------------------------------------------------------------------


def _bomb(levels: int, fan: int = 10) -> str:
    lines = ["anchors:", "  - &l0 [" + ", ".join(["lol"] * fan) + "]"]
    for i in range(1, levels):
        lines.append(f"  - &l{i} [" + ", ".join([f"*l{i - 1}"] * fan) + "]")
    lines += [
        "workflows:",
        "  - name: bomb",
        "    classification_trigger: support_request",
        "    workflow_steps:",
        "      - action: create_ticket",
        f"        params: {{x: *l{levels - 1}}}",
    ]
    return "\n".join(lines) + "\n"


HOSTILE_YAML = {
    "deep flow": "workflows: " + "[" * 5000 + "]" * 5000,
    "deep block": "workflows:\n" + "- " * 3000 + "x\n",
    "deep mapping": "workflows: " + "{a: " * 3000 + "}" * 3000,
    "deep indentation": "workflows:\n" + "".join(" " * i + "a:\n" for i in range(400)),
    "alias bomb": _bomb(6),
    "recursive alias": "workflows: &a [*a]\n",
}


def test_deep_and_exploding_yaml_is_refused_cleanly(
    make_api: Callable[..., Api], tmp_path: Path
) -> None:
    wf = tmp_path / "workflows.yaml"
    wf.write_text(
        "workflows:\n  - name: ok\n    classification_trigger: &t [support_request]\n"
        "    workflow_steps: [{action: create_ticket}]\n"
        "  - name: same trigger\n    classification_trigger: *t\n    enabled: false\n"
        "    workflow_steps: [{action: ignore}]\n"
    )
    api = make_api(workflows_path=wf)
    fine = api.client.post("/api/v1/workflows/validate", headers=api.auth("read"),
                           json={"yaml": wf.read_text()})
    assert fine.json() == {"valid": True, "issues": [], "workflows": ["ok"]}
    for name, text in HOSTILE_YAML.items():
        r = api.client.post("/api/v1/workflows/validate", headers=api.auth("read"),
                            json={"yaml": text})
        assert r.status_code == 200, (name, r.status_code, r.text[:300])
        body = r.json()
        assert body["valid"] is False, name
        reasons = " ".join(i["reason"] for i in body["issues"])
        assert any(word in reasons for word in ("deeper", "aliases", "alias refers")), (name, body)
    # The same file on disk, through reload: refused, and the running set stays.
    for name, text in HOSTILE_YAML.items():
        wf.write_text(text)
        r = api.client.post("/api/v1/workflows/reload", headers=api.auth("admin"))
        _is_problem(r, 422)
        assert [w["name"] for w in api.get("/api/v1/workflows").json()["workflows"]] == [
            "ok", "same trigger"], name


# --- webhooks -----------------------------------------------------------------------------------


def _webhook_api(make_api: Callable[..., Api], tmp_path: Path, **overrides: Any) -> Api:
    backends = tmp_path / "backends.yaml"
    backends.write_text(yaml.safe_dump({"instances": {"secret-hook-name": {
        "kind": "webhook", "url": "http://127.0.0.1:9/hook", "secret": SECRET,
    }}}))
    return make_api(backends_file=backends, **overrides)


def test_webhook_deliveries_with_hostile_headers_get_4xx(
    make_api: Callable[..., Api], tmp_path: Path
) -> None:
    api = _webhook_api(make_api, tmp_path)
    url = f"{WEBHOOK_PREFIX}secret-hook-name"
    body = b'{"type": "ticket.updated"}'
    for stamp in ("9" * 400, "-" + "9" * 400, "١٧٠٠٠٠٠٠٠٠", "+1700000000", "1_700_000_000"):
        headers = {"webhook-id": "msg_1", "webhook-timestamp": stamp.encode(),
                   "webhook-signature": "v1,AAAA"}
        r = api.client.post(url, content=body, headers=headers)
        _is_problem(r, 400 if not stamp.isascii() else 401)
    # A non-ASCII signature would reach hmac.compare_digest, which raises TypeError on it.
    stamp = "1700000000"
    for name, value in (("webhook-signature", "v1,\xe9t\xe9".encode("latin-1")),
                        ("webhook-id", b"\xff")):
        headers = {"webhook-id": b"msg_1", "webhook-timestamp": stamp.encode(),
                   "webhook-signature": sign_ok(body, stamp).encode(), name: value}
        r = api.client.post(url, content=body, headers=headers)
        assert 400 <= r.status_code < 500, (name, r.status_code, r.text)
    # An unknown instance: 404, and no word about which instances exist.
    r = api.client.post(f"{WEBHOOK_PREFIX}nope", content=body)
    _is_problem(r, 404)
    assert "secret-hook-name" not in r.text


def sign_ok(body: bytes, stamp: str) -> str:
    from pydantic import SecretStr

    return sign(SecretStr(SECRET), "msg_1", int(stamp), body)


# --- authentication before the body, and the body's size -----------------------------------------


class _Body:
    """An ASGI receive() that hands out `total` bytes in 64 KiB chunks, counting what it gave."""

    def __init__(self, total: int, chunk: int = 65536) -> None:
        self.total = total
        self.chunk = b"{" * chunk
        self.given = 0

    async def __call__(self) -> dict[str, Any]:
        if self.given >= self.total:
            await asyncio.sleep(3600)  # the client has nothing more to say (disconnect)
        part = self.chunk[: self.total - self.given]
        self.given += len(part)
        return {"type": "http.request", "body": part, "more_body": self.given < self.total}


def _asgi(app: FastAPI, method: str, path: str, headers: dict[str, str], body: _Body) -> int:
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
        "scheme": "http", "path": path, "raw_path": path.encode(), "root_path": "",
        "query_string": b"", "server": ("testserver", 80), "client": ("127.0.0.1", 1),
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
    }
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(asyncio.wait_for(app(scope, body, send), 60))
    return int(next(m for m in sent if m["type"] == "http.response.start")["status"])


def _body_routes(api: Api) -> list[tuple[str, str]]:
    found = []
    for path, methods, route in iter_routes(api.app):
        if not path.startswith("/api/") or path.startswith(WEBHOOK_PREFIX):
            continue
        if isinstance(route, APIRoute) and route.body_field is not None:
            found += [(m, path.replace("{ticket_id}", "1")) for m in methods]
    return found


def test_the_token_is_checked_before_the_body_is_read(api: Api) -> None:
    api.ingest(make_email())
    routes = _body_routes(api)
    assert ("POST", "/api/v1/workflows/validate") in routes and len(routes) >= 4
    for method, path in routes:
        for auth in ({}, {"Authorization": "Bearer mtk_wrong"}):
            # A 64 MiB body that would be read and parsed if anything looked at it.
            body = _Body(64 * 1024 * 1024)
            headers = {**auth, "content-type": "application/json",
                       "content-length": str(body.total)}
            assert _asgi(api.app, method, path, headers, body) == 401, (method, path, auth)
            assert body.given == 0, (method, path, "the body was read before the token")
            # Malformed JSON without a token is a 401 too, not a 422.
            r = api.client.request(method, path, content=b"{not json", headers={
                **auth, "content-type": "application/json"})
            _is_problem(r, 401)


def test_bodies_are_capped_while_they_arrive(
    make_api: Callable[..., Api], tmp_path: Path
) -> None:
    api = _webhook_api(make_api, tmp_path, api_max_body_bytes=100_000)
    out = api.ingest(make_email())
    comments = f"/api/v1/tickets/{out.ticket_id}/comments"
    # Declared too large: refused before a byte is read.
    big = {"body": "x" * 100_001}
    _is_problem(api.client.post(comments, headers=api.auth("write"), json=big), 413)
    assert api.client.post(comments, headers=api.auth("write"),
                           json={"body": "x" * 1000}).status_code == 201
    # Not declared (chunked): refused once the limit is passed, not after reading it all.
    for path, auth in ((comments, api.auth("write")),
                       ("/api/v1/workflows/validate", api.auth("read")),
                       (f"{WEBHOOK_PREFIX}secret-hook-name", {})):
        body = _Body(50 * 1024 * 1024)
        status = _asgi(api.app, "POST", path, {**auth, "content-type": "application/json"}, body)
        assert status == 413, path
        assert body.given <= 100_000 + 65536, (path, body.given)


def test_the_webhook_route_checks_its_limit_while_reading(
    make_api: Callable[..., Api], tmp_path: Path
) -> None:
    """The backends' router on its own (as tests/backends mount it), without the gate."""
    api = _webhook_api(make_api, tmp_path, api_max_body_bytes=100_000)
    bare = FastAPI()
    bare.include_router(build_router(api.runtime))
    body = _Body(50 * 1024 * 1024)
    status = _asgi(bare, "POST", f"{WEBHOOK_PREFIX}secret-hook-name",
                   {"content-type": "application/json"}, body)
    assert status == 413 and body.given <= 100_000 + 65536, body.given


# --- by-email -----------------------------------------------------------------------------------


def test_by_email_needs_an_address(api: Api) -> None:
    msg = EmailMessage()
    msg["To"] = "support@example.com"
    msg["Subject"] = "no sender at all"
    msg["Message-ID"] = "<nofrom@example.com>"
    msg.set_content("who am I")
    api.ingest(msg.as_bytes())
    known = api.ingest(make_email(sender="Customer@Example.com"))
    for blank in ("%20", "%09", "%20%20", "x", "customer.example.com"):
        _is_problem(api.get(f"/api/v1/tickets/by-email/{blank}"), 422)
    # the address left out: not a redirect to a lookup of the ticket "by-email"
    for path in ("/api/v1/tickets/by-email/", "/api/v1/tickets/by-email"):
        r = api.get(path, follow_redirects=False)
        _is_problem(r, 422)
        assert "by-email/{address}" in r.json()["detail"]
    for nobody in ("@", "%20@%20", "a@", "@b"):
        assert api.get(f"/api/v1/tickets/by-email/{nobody}").json()["tickets"] == [], nobody
    for spelling in ("CUSTOMER@example.com", "%20customer@example.com%20"):
        found = api.get(f"/api/v1/tickets/by-email/{spelling}").json()
        assert found["email_address"] == "customer@example.com"
        assert [t["ticket_number"] for t in found["tickets"]] == [known.ticket_number]


# --- the OpenAPI document ------------------------------------------------------------------------


def test_openapi_declares_what_really_comes_back(make_api: Callable[..., Api]) -> None:
    api = make_api(api_max_page_size=120)
    doc = api.client.get("/openapi.json").json()
    problem = doc["components"]["schemas"]["Problem"]
    assert set(problem["required"]) == {"type", "title", "status"}
    checked = 0
    for path, item in doc["paths"].items():
        for method, op in item.items():
            responses = op["responses"]
            for code, response in responses.items():
                if code.startswith(("4", "5")) and not (path == "/readyz" and code == "503"):
                    assert list(response["content"]) == [PROBLEM], (path, method, code)
                    assert response["content"][PROBLEM]["schema"] == {
                        "$ref": "#/components/schemas/Problem"}
            expected = {"413", "422"}
            if path.startswith("/api/"):
                expected.add("503")  # the database unavailable (test_pg_restart.py)
            if path.startswith("/api/") and not path.startswith(WEBHOOK_PREFIX):
                expected.add("401")
            if "{" in path:
                expected.add("404")
            assert expected <= set(responses), (path, method, sorted(responses))
            checked += 1
    assert checked >= 18
    assert "403" in doc["paths"]["/api/v1/tickets/{ticket_id}"]["patch"]["responses"]
    assert "403" in doc["paths"]["/api/v1/workflows/reload"]["post"]["responses"]
    assert "403" not in doc["paths"]["/api/v1/tickets/{ticket_id}"]["get"]["responses"]
    limit = next(p for p in doc["paths"]["/api/v1/tickets"]["get"]["parameters"]
                 if p["name"] == "limit")
    maxima = [b.get("maximum") for b in limit["schema"].get("anyOf", [limit["schema"]])]
    assert 120 in maxima and 1000 not in maxima
    assert api.get("/api/v1/tickets?limit=120").status_code == 200
    _is_problem(api.get("/api/v1/tickets?limit=121"), 422)
    # The real error bodies have the declared shape.
    required = set(problem["required"])
    for r in (api.client.get("/api/v1/tickets"), api.get("/api/v1/tickets/999"),
              api.client.patch("/api/v1/tickets/1", headers=api.auth("read"), json={}),
              api.get("/api/v1/tickets?limit=0"), api.get("/api/v1/tickets?search=%00")):
        body = r.json()
        assert required <= set(body) and set(body) <= set(problem["properties"]), body


# --- downloads ----------------------------------------------------------------------------------


def test_stored_mail_is_never_sniffed(api: Api) -> None:
    out = api.ingest(make_email(
        subject="with a file", body="<html><script>alert(1)</script></html>",
        attachments=[(b"<script>alert(2)</script>", "text/html", "page.html")],
    ))
    assert out.ticket_id is not None
    # The customer's message, by id, not its place in the thread: the thread lists mail by
    # time, and the auto-reply is stamped with the test clock, before or after the Date.
    email_id = out.email_log_id
    thread = api.get(f"/api/v1/tickets/{out.ticket_id}/emails").json()["emails"]
    assert email_id in [e["id"] for e in thread]
    attachment = api.get(f"/api/v1/emails/{email_id}/attachments").json()["attachments"][0]
    api.client.post("/ui/login", data={"token": api.tokens["read"]})
    for url in (f"/api/v1/emails/{email_id}/raw", attachment["download_url"],
                f"/ui/emails/{email_id}/raw",
                f"/ui/emails/{email_id}/attachments/{attachment['id']}"):
        r = api.get(url)
        assert r.status_code == 200, url
        assert r.headers["x-content-type-options"] == "nosniff", url
        assert r.headers["content-disposition"].startswith("attachment"), url
        assert not r.headers["content-type"].startswith("text/html"), url


def test_405_names_every_method_of_the_path(api: Api) -> None:
    r = api.client.request("OPTIONS", "/api/v1/tickets/1", headers=api.auth("read"))
    _is_problem(r, 405)
    assert r.headers["allow"] == "GET, PATCH"
    api.client.post("/ui/login", data={"token": api.tokens["read"]})
    page = api.client.post("/ui/tickets")
    assert page.status_code == 405 and page.headers["content-type"].startswith("text/html")
    assert page.headers["allow"] == "GET" and 'id="error-back"' in page.text


def test_ui_ids_out_of_range_are_4xx(api: Api) -> None:
    api.client.post("/ui/login", data={"token": api.tokens["read"]})
    big = "9" * 20
    for url in (f"/ui/emails/{big}/raw", f"/ui/emails/1/attachments/{big}",
                f"/ui/tickets/{big}", "/ui/tickets/%D9%A1", f"/ui/tickets?cursor={big}"):
        r = api.client.get(url)
        assert r.status_code < 500 and r.headers["content-type"].startswith("text/html"), url
