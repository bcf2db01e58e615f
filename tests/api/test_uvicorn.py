"""The API through a real uvicorn server and a real HTTP client (no in-process transport)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime

import httpx
import pytest

from tests.api.conftest import Api
from tests.api.server import free_port, running
from tests.mailfactory import make_email


def test_thread_over_real_http(api: Api) -> None:
    first = api.ingest(make_email(subject="Printer on fire", message_id="<p1@example.com>"),
                       received_at=datetime(2025, 12, 15, 10, 0, tzinfo=UTC))
    api.ingest(make_email(subject="Re: Printer on fire", in_reply_to="<p1@example.com>",
                          message_id="<p2@example.com>"),
               received_at=datetime(2025, 12, 15, 11, 0, tzinfo=UTC))
    with running(api.app) as base, httpx.Client(base_url=base, timeout=10) as http:
        assert http.get("/healthz").json()["status"] == "ok"
        denied = http.get(f"/api/v1/tickets/{first.ticket_id}/emails")
        assert denied.status_code == 401
        assert denied.headers["content-type"] == "application/problem+json"
        r = http.get(f"/api/v1/tickets/{first.ticket_number}/emails", headers=api.auth())
        assert r.status_code == 200
        inbound = [m for m in r.json()["emails"] if m["direction"] == "in"]
        assert [m["email_message_id"] for m in inbound] == ["<p1@example.com>", "<p2@example.com>"]
        assert inbound[1]["matched_by"] == "in_reply_to"
        spec = http.get("/openapi.json").json()
        assert "/api/v1/tickets/{ticket_id}/emails" in spec["paths"]
        assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"


def test_mailticket_serve_command(api: Api, db_url: str) -> None:
    """`mailticket serve` as an operator starts it: its own process, settings from the env."""
    port = free_port()
    env = {**os.environ, "DATABASE_URL": db_url}
    proc = subprocess.Popen(
        [sys.executable, "-m", "mailticket.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(300):
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)
        else:
            pytest.fail("mailticket serve did not become ready")
        assert httpx.get(f"{base}/api/v1/tickets").status_code == 401
        r = httpx.get(f"{base}/api/v1/tickets", headers=api.auth())
        assert r.status_code == 200 and r.json() == {"tickets": [], "next_cursor": None}
    finally:
        proc.terminate()
        # uvicorn shuts down gracefully, then re-raises SIGTERM so the exit status tells why.
        assert proc.wait(timeout=30) in (0, -signal.SIGTERM)


def test_every_api_answer_forbids_sniffing_and_framing(api: Api) -> None:
    # Mail text reaches the JSON: a browser sent to an API URL must not read it as a page,
    # and no other site may frame it; whatever made the answer (a route, an error handler,
    # the gate's refusal before any route).
    out = api.ingest(make_email(subject="<html><script>alert(1)</script>"))
    with running(api.app) as base, httpx.Client(base_url=base, timeout=10) as http:
        read, write = api.auth(), api.auth("write")
        answers = {
            "a ticket": http.get(f"/api/v1/tickets/{out.ticket_id}", headers=read),
            "its mail": http.get(f"/api/v1/tickets/{out.ticket_id}/emails", headers=read),
            "no token (the gate)": http.get("/api/v1/tickets"),
            "not found": http.get("/api/v1/tickets/%3Cscript%3E", headers=read),
            "invalid": http.get("/api/v1/tickets?limit=x", headers=read),
            "too large (the gate)": http.post(
                f"/api/v1/tickets/{out.ticket_id}/comments", headers=write,
                content=b"x" * (api.runtime.settings.api_max_body_bytes + 1)),
            "no content": http.delete("/api/v1/tokens/999999", headers=api.auth("admin")),
            "health": http.get("/healthz"),
            "openapi": http.get("/openapi.json"),
        }
        assert [r.status_code for r in answers.values()] == [
            200, 200, 401, 404, 422, 413, 404, 200, 200]
        for name, r in answers.items():
            assert r.headers.get("x-content-type-options") == "nosniff", (name, r.headers)
            assert r.headers.get("x-frame-options") == "DENY", (name, r.headers)
            csp = r.headers.get("content-security-policy", "")
            assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp, (name, csp)
        # The thread view and the downloads keep their own policies.
        login = http.get("/ui/login")
        assert "form-action 'self'" in login.headers["content-security-policy"]
        raw = http.get(f"/api/v1/emails/{out.email_log_id}/raw", headers=read)
        assert raw.headers["content-security-policy"] == "sandbox"
        assert raw.headers["x-content-type-options"] == "nosniff"


def test_an_unhandled_error_carries_the_same_headers(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Starlette answers an unhandled error outside every middleware.
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("the database went away")

    monkeypatch.setattr("mailticket.api.queries.list_tickets", broken)
    with running(api.app) as base, httpx.Client(base_url=base, timeout=10) as http:
        r = http.get("/api/v1/tickets", headers=api.auth())
        assert r.status_code == 500 and r.headers["content-type"] == "application/problem+json"
        assert "the database went away" not in r.text
        assert r.headers.get("x-content-type-options") == "nosniff", r.headers
        assert r.headers.get("x-frame-options") == "DENY", r.headers
        assert "frame-ancestors 'none'" in r.headers.get("content-security-policy", "")
