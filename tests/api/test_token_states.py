"""A token's listed state is the one a use of it meets (SQLite and PostgreSQL): a token scoped
to a deactivated customer is refused (401), so `tokens list` says it is suspended, not active."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from mailticket.api import tokens
from mailticket.api.models import ApiToken
from mailticket.cli import main
from tests.api.conftest import Api

BASE = "/api/v1/customers"
ACME = {"key": "acme", "name": "ACME", "domains": ["acme.example"]}


def _listed(db_url: str, name: str, monkeypatch: pytest.MonkeyPatch,
            capsys: pytest.CaptureFixture[str]) -> str:
    monkeypatch.setenv("DATABASE_URL", db_url)
    assert main(["tokens", "list"]) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.endswith(name)]
    assert len(lines) == 1, out
    return lines[0]


def test_tokens_list_shows_a_deactivated_customers_token_as_suspended(
    api: Api, db_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    admin = api.auth("admin")
    acme = api.client.post(BASE, headers=admin, json=ACME).json()
    with api.runtime.session_factory() as s:
        _, plain = tokens.create_token(s, name="acme portal", scope="read", customer="acme")
        s.commit()
    portal = {"Authorization": f"Bearer {plain}"}

    def state() -> str:
        line = _listed(db_url, "acme portal", monkeypatch, capsys)
        found = re.match(r"\s*\d+ read +(?P<state>.+?) +customer \d+ +last used ", line)
        assert found is not None, line
        return found["state"]

    assert state() == "active"
    assert api.client.put(f"{BASE}/{acme['id']}", headers=admin,
                          json={**ACME, "active": False}).status_code == 200
    assert api.client.get("/api/v1/tickets", headers=portal).status_code == 401
    assert state() == "suspended: customer deactivated"
    # The unscoped tokens beside it are still listed as active, columns aligned.
    out_lines = [_listed(db_url, f"test-{scope}", monkeypatch, capsys) for scope in tokens.SCOPES]
    assert all(" active " in line for line in out_lines)
    assert api.client.put(f"{BASE}/{acme['id']}", headers=admin,
                          json={**ACME, "active": True}).status_code == 200
    assert api.client.get("/api/v1/tickets", headers=portal).status_code == 200
    assert state() == "active"
    with api.runtime.session_factory() as s:
        row = s.scalars(select(ApiToken).where(ApiToken.name == "acme portal")).one()
        tokens.revoke_token(s, row.id)
        s.commit()
    assert api.client.put(f"{BASE}/{acme['id']}", headers=admin,
                          json={**ACME, "active": False}).status_code == 200
    assert state() == "revoked"  # revoked is for good, whatever the customer


def test_state_of_names_every_case() -> None:
    live = ApiToken(name="x", token_hash="h", scope="read")
    assert tokens.state_of(live, None) == tokens.ACTIVE
    scoped = ApiToken(name="x", token_hash="h", scope="read", customer_id=7)
    assert tokens.state_of(scoped, True) == tokens.ACTIVE
    assert tokens.state_of(scoped, False) == "suspended: customer deactivated"
    assert tokens.state_of(scoped, None) == "suspended: customer gone"
