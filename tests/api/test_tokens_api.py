"""/api/v1/tokens: admins list, create and revoke tokens over HTTP (SQLite and PostgreSQL)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from mailticket.api.models import ApiToken
from tests.api.conftest import Api

BASE = "/api/v1/tokens"
PROBLEM = "application/problem+json"


def _problem(r: Any, status: int) -> dict[str, Any]:
    assert r.status_code == status, (status, r.status_code, r.text)
    assert r.headers["content-type"] == PROBLEM, r.headers
    assert "Traceback" not in r.text
    body: dict[str, Any] = r.json()
    assert body["status"] == status
    return body


def test_an_admin_creates_lists_and_revokes_a_token(api: Api) -> None:
    admin = api.auth("admin")
    made = api.client.post(BASE, headers=admin, json={"name": " ci bot ", "scope": "write"})
    assert made.status_code == 201, made.text
    assert made.headers["cache-control"] == "no-store"
    created = made.json()
    plain = created.pop("token")
    assert plain.startswith("mtk_")
    assert created["name"] == "ci bot" and created["scope"] == "write"
    assert created["state"] == "active" and created["customer_id"] is None
    assert created["revoked_at"] is None and created["created_at"].endswith("Z")
    bot = {"Authorization": f"Bearer {plain}"}
    assert api.client.get("/api/v1/tickets", headers=bot).status_code == 200
    assert api.client.post("/api/v1/workflows/reload", headers=bot).status_code == 403

    listed = api.client.get(BASE, headers=admin)
    assert listed.status_code == 200
    rows = {t["id"]: t for t in listed.json()["tokens"]}
    assert rows[created["id"]]["name"] == "ci bot" and rows[created["id"]]["state"] == "active"
    assert rows[created["id"]]["last_used_at"] is not None  # the two calls above
    assert [t["name"] for t in listed.json()["tokens"]][:3] == ["test-read", "test-write",
                                                                 "test-admin"]
    # The token is shown once: never listed, and neither is its hash.
    with api.runtime.session_factory() as s:
        stored = s.scalars(select(ApiToken.token_hash)).all()
    assert plain not in listed.text and not any(h in listed.text for h in stored)
    assert "token" not in rows[created["id"]] and "token_hash" not in rows[created["id"]]

    revoked = api.client.post(f"{BASE}/{created['id']}/revoke", headers=admin)
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["state"] == "revoked" and revoked.json()["revoked_at"] is not None
    assert api.client.get("/api/v1/tickets", headers=bot).status_code == 401
    again = api.client.post(f"{BASE}/{created['id']}/revoke", headers=admin)
    assert again.status_code == 200 and again.json()["revoked_at"] == revoked.json()["revoked_at"]
    after = {t["id"]: t for t in api.client.get(BASE, headers=admin).json()["tokens"]}
    assert after[created["id"]]["state"] == "revoked"


def test_only_admin_tokens_and_never_the_callers_own(api: Api) -> None:
    for scope in ("read", "write"):
        for method, path, body in (("GET", BASE, None),
                                   ("POST", BASE, {"name": "x", "scope": "admin"}),
                                   ("POST", f"{BASE}/1/revoke", None)):
            r = api.client.request(method, path, headers=api.auth(scope), json=body)
            assert "admin" in _problem(r, 403)["detail"]
    with api.runtime.session_factory() as s:
        own = s.scalars(select(ApiToken.id).where(ApiToken.name == "test-admin")).one()
    refused = _problem(api.client.post(f"{BASE}/{own}/revoke", headers=api.auth("admin")), 409)
    assert "cannot revoke itself" in refused["detail"]
    assert api.client.get(BASE, headers=api.auth("admin")).status_code == 200
    assert "no token 999999" in _problem(
        api.client.post(f"{BASE}/999999/revoke", headers=api.auth("admin")), 404)["detail"]


def test_bad_requests_are_clear_problems(api: Api) -> None:
    admin = api.auth("admin")
    assert api.client.post("/api/v1/customers", headers=admin,
                           json={"key": "acme", "name": "ACME"}).status_code == 201
    # Malformed: 422 (the document says so); well formed but impossible: 409 with the reason.
    for body, status, said in (
        ({"name": "x", "scope": "root"}, 422, None),
        ({"name": "", "scope": "read"}, 422, None),
        ({"name": " \t ", "scope": "read"}, 422, None),
        ({"scope": "read"}, 422, None),
        ({"name": "x", "scope": "read", "extra": 1}, 422, None),
        ({"name": "x", "scope": "read", "customer": True}, 422, None),
        ({"name": "x\x00", "scope": "read"}, 422, None),
        ({"name": "x", "scope": "read", "customer": "nobody"}, 409, "no customer"),
        ({"name": "x", "scope": "read", "customer": 424242}, 409, "no customer"),
        ({"name": "x", "scope": "admin", "customer": "acme"}, 409, "never admin"),
    ):
        detail = str(_problem(api.client.post(BASE, headers=admin, json=body), status))
        assert said is None or said in detail, (body, detail)
    with api.runtime.session_factory() as s:
        assert s.scalars(select(ApiToken.name)).all() == ["test-read", "test-write", "test-admin"]


def test_a_customer_scoped_token_over_http_and_its_suspension(api: Api) -> None:
    admin = api.auth("admin")
    acme = api.client.post("/api/v1/customers", headers=admin,
                           json={"key": "acme", "name": "ACME"}).json()
    by_key = api.client.post(BASE, headers=admin,
                             json={"name": "portal", "scope": "read", "customer": "acme"})
    by_id = api.client.post(BASE, headers=admin,
                            json={"name": "partner", "scope": "write", "customer": acme["id"]})
    assert by_key.status_code == by_id.status_code == 201, (by_key.text, by_id.text)
    assert by_key.json()["customer_id"] == by_id.json()["customer_id"] == acme["id"]
    portal = {"Authorization": f"Bearer {by_key.json()['token']}"}
    assert api.client.get("/api/v1/tickets", headers=portal).status_code == 200
    # A scoped token is never admin: the tokens API is closed to it.
    assert "customer-scoped" in _problem(api.client.get(BASE, headers=portal), 403)["detail"]
    off = api.client.put(f"/api/v1/customers/{acme['id']}", headers=admin,
                         json={"key": "acme", "name": "ACME", "active": False})
    assert off.status_code == 200, off.text
    assert api.client.get("/api/v1/tickets", headers=portal).status_code == 401
    states = {t["name"]: t["state"] for t in api.client.get(BASE, headers=admin).json()["tokens"]}
    assert states["portal"] == states["partner"] == "suspended: customer deactivated"
    assert states["test-admin"] == "active"
    # No new token for an inactive customer.
    assert "inactive" in _problem(api.client.post(
        BASE, headers=admin, json={"name": "late", "scope": "read", "customer": "acme"}), 409
    )["detail"]


def test_the_document_describes_the_tokens_api(api: Api) -> None:
    doc = api.client.get("/openapi.json").json()
    ops = {(m, p): op for p, item in doc["paths"].items() for m, op in item.items()
           if p.startswith(BASE)}
    assert set(ops) == {("get", BASE), ("post", BASE), ("post", f"{BASE}/{{token_id}}/revoke")}
    for op in ops.values():
        assert op["security"] == [{"HTTPBearer": []}]
        for code in ("401", "403", "422"):
            assert PROBLEM in op["responses"][code]["content"], (op["operationId"], code)
    created = ops[("post", BASE)]["responses"]["201"]
    assert "Cache-Control" in created["headers"]
    assert "token" in doc["components"]["schemas"]["TokenCreated"]["properties"]
    assert "token" not in doc["components"]["schemas"]["TokenOut"]["properties"]
    assert "409" in ops[("post", f"{BASE}/{{token_id}}/revoke")]["responses"]
    assert "409" in ops[("post", BASE)]["responses"]
