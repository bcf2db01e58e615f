"""Secure by default: every /api and /ui route refuses a request without a valid token."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import types
from collections.abc import Callable

import pytest
from fastapi import APIRouter
from fastapi.routing import APIRoute
from sqlalchemy import select

from mailticket.api.app import WEBHOOK_PREFIX, create_app, iter_routes
from mailticket.api.models import ApiToken
from mailticket.api.tokens import hash_token
from tests.api.conftest import Api, build_api
from tests.mailfactory import make_email

# Routes anyone may call: process health and the API description, the login form and the
# stylesheet it uses.
PUBLIC = {
    "/healthz", "/readyz", "/metrics", "/openapi.json", "/docs", "/docs/oauth2-redirect",
    "/redoc", "/ui/login", "/ui/style.css",
}

# The smallest scope each /api route needs. A new route must be added here (the test below
# fails otherwise), which is the point: nobody adds an endpoint without deciding who may call it.
SCOPES = {
    ("GET", "/api/v1/tickets"): "read",
    ("GET", "/api/v1/tickets/by-email/{email_address}"): "read",
    # the address left out: a 422 (still behind a token)
    ("GET", "/api/v1/tickets/by-email"): "read",
    ("GET", "/api/v1/tickets/by-email/"): "read",
    ("GET", "/api/v1/tickets/{ticket_id}"): "read",
    ("PATCH", "/api/v1/tickets/{ticket_id}"): "write",
    ("POST", "/api/v1/tickets/{ticket_id}/comments"): "write",
    ("GET", "/api/v1/tickets/{ticket_id}/participants"): "read",
    ("POST", "/api/v1/tickets/{ticket_id}/participants"): "write",
    ("DELETE", "/api/v1/tickets/{ticket_id}/participants/{address}"): "write",
    ("GET", "/api/v1/tickets/{ticket_id}/emails"): "read",
    ("GET", "/api/v1/emails/{email_id}/raw"): "read",
    ("GET", "/api/v1/emails/{email_id}/attachments"): "read",
    ("GET", "/api/v1/emails/{email_id}/attachments/{attachment_id}"): "read",
    ("GET", "/api/v1/quarantine"): "read",
    ("GET", "/api/v1/quarantine/{entry_id}"): "read",
    ("POST", "/api/v1/quarantine/{entry_id}/retry"): "write",
    ("GET", "/api/v1/workflows"): "read",
    ("POST", "/api/v1/workflows/validate"): "read",
    ("POST", "/api/v1/workflows/reload"): "admin",
    ("POST", "/api/v1/test/email-to-ticket"): "write",
    ("GET", "/api/v1/customers"): "admin",
    ("POST", "/api/v1/customers"): "admin",
    ("GET", "/api/v1/customers/{customer}"): "admin",
    ("PUT", "/api/v1/customers/{customer}"): "admin",
    ("DELETE", "/api/v1/customers/{customer}"): "admin",
    ("GET", "/api/v1/tokens"): "admin",
    ("POST", "/api/v1/tokens"): "admin",
    ("POST", "/api/v1/tokens/{token_id}/revoke"): "admin",
}


def _concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "1", path)


def _routes(api: Api) -> list[tuple[str, str]]:
    found = []
    for path, methods, _ in iter_routes(api.app):
        for method in sorted((methods or {"GET"}) - {"HEAD", "OPTIONS"}):
            found.append((method, path))
    return found


def test_no_route_answers_without_a_token(api: Api) -> None:
    # Something real to leak, so a leak would show.
    out = api.ingest(make_email(subject="secret subject", sender="victim@example.com"))
    assert out.action == "created"
    routes = _routes(api)
    assert len(routes) > 20
    checked = 0
    for method, path in routes:
        if path in PUBLIC or path.startswith(WEBHOOK_PREFIX):
            continue
        url = _concrete(path)
        assert path.startswith(("/api/", "/ui")), f"unexpected route outside /api and /ui: {path}"
        for headers in ({}, {"Authorization": "Bearer mtk_not-a-real-token"},
                        {"Authorization": "Basic dXNlcjpwYXNz"}, {"Cookie": "mailticket_token=x"}):
            r = api.client.request(method, url, headers=headers, follow_redirects=False)
            if path.startswith("/api/"):
                assert r.status_code == 401, (method, path, headers, r.status_code)
                assert r.headers["content-type"] == "application/problem+json"
                assert r.headers["www-authenticate"].startswith("Bearer")
            else:
                assert r.status_code == 303, (method, path, headers, r.status_code)
                assert r.headers["location"] == "/ui/login"
            assert "victim" not in r.text and "secret subject" not in r.text
            checked += 1
    assert checked >= 4 * 20
    api_routes = {
        (m, p) for m, p in routes if p.startswith("/api/") and not p.startswith(WEBHOOK_PREFIX)
    }
    assert api_routes == set(SCOPES), "every /api route needs an entry in SCOPES"


def test_wrong_scope_is_403_and_enough_scope_passes(api: Api) -> None:
    order = ["read", "write", "admin"]
    for (method, path), needed in SCOPES.items():
        url = _concrete(path)
        for held in order:
            r = api.client.request(method, url, headers=api.auth(held), json={})
            if order.index(held) < order.index(needed):
                assert r.status_code == 403, (method, path, held, r.text)
                assert r.json()["status"] == 403
                assert 'error="insufficient_scope"' in r.headers["www-authenticate"]
            else:
                assert r.status_code not in (401, 403), (method, path, held, r.text)


def test_revoked_token_stops_working_and_only_a_hash_is_stored(api: Api) -> None:
    plain = api.token("admin", "short-lived")
    headers = {"Authorization": f"Bearer {plain}"}
    assert api.client.get("/api/v1/tickets", headers=headers).status_code == 200
    with api.runtime.session_factory() as s:
        row = s.scalars(select(ApiToken).where(ApiToken.name == "short-lived")).one()
        assert row.token_hash == hash_token(plain) and plain not in row.token_hash
        assert row.last_used_at is not None
        row_id = row.id
    from mailticket.api import tokens

    with api.runtime.session_factory() as s:
        tokens.revoke_token(s, row_id)
        s.commit()
    r = api.client.get("/api/v1/tickets", headers=headers)
    assert r.status_code == 401 and r.json()["detail"] == "the token is unknown or revoked"


def test_tokens_cli_create_list_revoke(api: Api, db_url: str) -> None:
    env = {**os.environ, "DATABASE_URL": db_url}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "mailticket.cli", "tokens", *args],
                              capture_output=True, text=True, env=env, timeout=60)

    created = cli("create", "--scope", "write", "--name", "ci bot")
    assert created.returncode == 0, created.stderr
    plain = created.stdout.strip()
    assert plain.startswith("mtk_") and "not shown again" in created.stderr
    headers = {"Authorization": f"Bearer {plain}"}
    assert api.client.get("/api/v1/tickets", headers=headers).status_code == 200
    assert api.client.post("/api/v1/workflows/reload", headers=headers).status_code == 403

    listed = cli("list")
    assert listed.returncode == 0 and "ci bot" in listed.stdout and plain not in listed.stdout
    token_id = next(line.split()[0] for line in listed.stdout.splitlines() if "ci bot" in line)
    assert "write" in listed.stdout

    assert cli("revoke", token_id).returncode == 0
    assert "revoked" in cli("list").stdout
    assert api.client.get("/api/v1/tickets", headers=headers).status_code == 401
    assert cli("revoke", "99999").returncode == 1
    bad = cli("create", "--scope", "root", "--name", "x")
    assert bad.returncode == 2


def test_webhook_routes_are_included_and_marked(
    make_api: Callable[..., Api], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The backends feature's webhook router is mounted when installed; its routes
    authenticate by signature, so they are the one exception to the token rule."""
    fake = types.ModuleType("mailticket.backends.webhook_api")

    def build_router(runtime: object) -> APIRouter:
        router = APIRouter()

        @router.post(f"{WEBHOOK_PREFIX}fake")
        def hook() -> dict[str, str]:
            return {"ok": "signed"}

        return router

    fake.build_router = build_router  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "mailticket.backends.webhook_api", fake)
    api = make_api()
    app = create_app(api.runtime)
    hooks = [r for p, _, r in iter_routes(app) if p.startswith(WEBHOOK_PREFIX)]
    assert len(hooks) == 1 and isinstance(hooks[0], APIRoute)
    assert hooks[0].openapi_extra == {"x-auth": "signature"}
    spec = app.openapi()["paths"][f"{WEBHOOK_PREFIX}fake"]["post"]
    assert spec["x-auth"] == "signature"
    assert build_api(api.runtime).client.post(f"{WEBHOOK_PREFIX}fake").json() == {"ok": "signed"}
