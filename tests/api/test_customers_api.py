"""Customers through the API (admin scope), on SQLite and PostgreSQL: CRUD in database mode,
read-only with a 409 when CUSTOMERS_PATH is the source, 422 for what the directory refuses,
409 for what another customer holds, never a 500."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from mailticket.api import tokens
from mailticket.customers import directory
from mailticket.customers.models import Customer
from mailticket.runtime import prepare_worker
from mailticket.store.models import Ticket
from tests.api.conftest import Api
from tests.mailfactory import make_email

BASE = "/api/v1/customers"
ACME: dict[str, Any] = {
    "key": "acme",
    "name": "ACME Corp",
    "domains": ["Acme.Example"],
    "contacts": [{"address": "Boss@Gmail.com", "name": "The boss"}],
}


def _problem(r: Any, status: int) -> dict[str, Any]:
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = r.json()
    assert body["status"] == status and "Traceback" not in r.text
    return body


def test_crud_in_database_mode_and_detection_follows(api: Api) -> None:
    admin = api.auth("admin")
    listing = api.client.get(BASE, headers=admin).json()
    assert listing == {"read_only": False, "source": "database", "customers": []}

    created = api.client.post(BASE, headers=admin, json=ACME)
    assert created.status_code == 201, created.text
    acme = created.json()
    # Stored normalised, as the YAML path stores them.
    assert acme["key"] == "acme" and acme["source"] == "api" and acme["active"] is True
    assert acme["domains"] == ["acme.example"]
    assert acme["contacts"] == [{"address": "boss@gmail.com", "name": "The boss"}]
    assert api.client.get(f"{BASE}/{acme['id']}", headers=admin).json() == acme
    assert api.client.get(f"{BASE}/acme", headers=admin).json() == acme  # by key too
    assert [c["key"] for c in api.client.get(BASE, headers=admin).json()["customers"]] == ["acme"]

    # Detection reads what the API wrote: by domain, and by exact address on a shared domain.
    by_domain = api.ingest(make_email(sender="jane@mail.acme.example"))
    by_address = api.ingest(make_email(sender="boss@gmail.com"))
    with api.runtime.session_factory() as s:
        assert s.get_one(Ticket, by_domain.ticket_id).customer_id == acme["id"]
        assert s.get_one(Ticket, by_address.ticket_id).customer_id == acme["id"]

    pinned = api.client.post(BASE, headers=admin, json={
        "key": "globex", "name": "Globex", "id": 4242, "domains": ["globex.example"]})
    assert pinned.status_code == 201 and pinned.json()["id"] == 4242
    # The next assigned id does not collide with the pinned one (PostgreSQL's sequence).
    third = api.client.post(BASE, headers=admin, json={"key": "initech", "name": "Initech"})
    assert third.status_code == 201 and third.json()["id"] not in (acme["id"], 4242)

    replaced = api.client.put(f"{BASE}/4242", headers=admin, json={
        "key": "globex", "name": "Globex Corporation", "domains": ["globex.example", "gx.example"],
        "contacts": [{"address": "hank@gmail.com"}]})
    assert replaced.status_code == 200, replaced.text
    assert replaced.json()["name"] == "Globex Corporation"
    assert replaced.json()["domains"] == ["globex.example", "gx.example"]

    # Deactivated: kept (its tickets keep the id) but its domains are free again.
    off = api.client.put(f"{BASE}/{acme['id']}", headers=admin, json={**ACME, "active": False})
    assert off.status_code == 200 and off.json()["active"] is False and off.json()["domains"] == []
    keys = [c["key"] for c in api.client.get(BASE, headers=admin).json()["customers"]]
    assert keys == ["globex", "initech"]
    every = api.client.get(BASE, headers=admin, params={"include_inactive": "true"}).json()
    assert [c["key"] for c in every["customers"]] == ["acme", "globex", "initech"]
    later = api.ingest(make_email(sender="joe@acme.example"))
    with api.runtime.session_factory() as s:
        assert s.get_one(Ticket, later.ticket_id).customer_id is None

    # DELETE: gone when nothing refers to it; refused while tickets do.
    gone = api.client.delete(f"{BASE}/{third.json()['id']}", headers=admin)
    assert gone.status_code == 204 and gone.content == b""
    _problem(api.client.get(f"{BASE}/{third.json()['id']}", headers=admin), 404)
    _problem(api.client.delete(f"{BASE}/{third.json()['id']}", headers=admin), 404)
    used = _problem(api.client.delete(f"{BASE}/{acme['id']}", headers=admin), 409)
    assert "2 ticket(s)" in used["detail"] and "deactivate" in used["detail"]
    with api.runtime.session_factory() as s:
        tokens.create_token(s, name="globex portal", scope="read", customer="globex")
        s.commit()
    held = _problem(api.client.delete(f"{BASE}/4242", headers=admin), 409)
    assert "1 API token(s)" in held["detail"]


def test_a_deactivated_customers_scoped_tokens_stop_and_come_back_with_it(api: Api) -> None:
    admin = api.auth("admin")
    acme = api.client.post(BASE, headers=admin, json=ACME).json()
    with api.runtime.session_factory() as s:
        _, plain = tokens.create_token(s, name="acme portal", scope="read", customer="acme")
        s.commit()
    portal = {"Authorization": f"Bearer {plain}"}
    assert api.client.get("/api/v1/tickets", headers=portal).status_code == 200

    off = api.client.put(f"{BASE}/{acme['id']}", headers=admin, json={**ACME, "active": False})
    assert off.status_code == 200, off.text
    refused = api.client.get("/api/v1/tickets", headers=portal)
    assert refused.status_code == 401 and "Traceback" not in refused.text

    on = api.client.put(f"{BASE}/{acme['id']}", headers=admin, json={**ACME, "active": True})
    assert on.status_code == 200, on.text
    assert api.client.get("/api/v1/tickets", headers=portal).status_code == 200


def test_malformed_input_is_422_and_what_cannot_be_409(api: Api) -> None:
    admin = api.auth("admin")
    assert api.client.post(BASE, headers=admin, json=ACME).status_code == 201
    other = {"key": "other", "name": "Other"}
    conflicts = [
        ({**ACME, "name": "again"}, "customer key 'acme' is taken"),
        ({**other, "domains": ["ACME.example"]}, "domain 'acme.example' belongs to customer 'acme'"),
        ({**other, "contacts": [{"address": "boss@GMAIL.com"}]}, "belongs to customer 'acme'"),
        # Well formed, but no one customer's: the deployment's shared list, the PSL.
        ({**other, "domains": ["gmail.com"]}, "shared mail domain"),
        ({**other, "domains": ["co.uk"]}, "public suffix"),
        ({**other, "domains": ["a.example", "A.example"]}, "listed twice"),
        ({**other, "contacts": [{"address": "x@a.example"}, {"address": "X@a.example"}]},
         "listed twice"),
    ]
    for body, reason in conflicts:
        problem = _problem(api.client.post(BASE, headers=admin, json=body), 409)
        assert reason in problem["detail"], problem
    invalid: list[tuple[dict[str, Any], str]] = [
        ({**other, "key": "Not A Key"}, "key"),
        ({**other, "domains": ["*.acme.example"]}, "domains"),
        ({**other, "contacts": [{"address": "no-at-sign"}]}, "address"),
        ({**other, "name": ""}, "name"),
        ({**other, "name": "nul\x00"}, "NUL"),
        ({**other, "colour": "red"}, "colour"),
        ({**other, "id": 0}, "id"),
        ({**other, "id": True}, "id"),
        ({**other, "active": 0}, "active"),
    ]
    for body, hint in invalid:
        problem = _problem(api.client.post(BASE, headers=admin, json=body), 422)
        assert hint in problem["detail"] + str(problem.get("errors")), (body, problem)
    _problem(api.client.post(BASE, headers=admin, content=b"{not json"), 422)
    for missing in ("999", "None", "99999999999", "nobody"):
        _problem(api.client.get(f"{BASE}/{missing}", headers=admin), 404)
    _problem(api.client.put(f"{BASE}/999", headers=admin, json=other), 404)
    acme_id = api.client.get(BASE, headers=admin).json()["customers"][0]["id"]
    moved = _problem(api.client.put(f"{BASE}/{acme_id}", headers=admin,
                                    json={**ACME, "id": acme_id + 1}), 409)
    assert "cannot change" in moved["detail"]
    # Nothing half-written: the directory still holds exactly the one customer.
    assert [c["key"] for c in api.client.get(BASE, headers=admin).json()["customers"]] == ["acme"]


def test_only_admin_tokens_reach_customers(api: Api) -> None:
    for scope in ("read", "write"):
        for method, path in (("GET", BASE), ("POST", BASE), ("GET", f"{BASE}/1"),
                             ("PUT", f"{BASE}/1"), ("DELETE", f"{BASE}/1")):
            r = api.client.request(method, path, headers=api.auth(scope), json=ACME)
            _problem(r, 403)


def test_yaml_mode_is_read_only(make_api: Callable[..., Api], tmp_path: Path) -> None:
    path = tmp_path / "customers.yaml"
    path.write_text(textwrap.dedent("""
        customers:
          - key: acme
            name: ACME
            id: 101
            domains: [acme.example]
    """), encoding="utf-8")
    api = make_api(customers_path=path)
    prepare_worker(api.runtime)
    admin = api.auth("admin")
    listing = api.client.get(BASE, headers=admin).json()
    assert listing["read_only"] is True and listing["source"] == str(path)
    assert [(c["id"], c["key"], c["source"]) for c in listing["customers"]] == [(101, "acme", "yaml")]
    assert api.client.get(f"{BASE}/101", headers=admin).json()["domains"] == ["acme.example"]
    for method, url, body in (
        ("POST", BASE, {"key": "globex", "name": "Globex"}),
        ("PUT", f"{BASE}/101", {"key": "acme", "name": "Renamed"}),
        ("PUT", f"{BASE}/999", {"key": "acme", "name": "Renamed"}),
        ("DELETE", f"{BASE}/101", None),
        ("DELETE", f"{BASE}/999", None),
    ):
        problem = _problem(api.client.request(method, url, headers=admin, json=body), 409)
        assert "CUSTOMERS_PATH" in problem["detail"] and str(path) in problem["detail"]
    with api.runtime.session_factory() as s:
        assert [(c.key, c.name, c.active) for c in s.scalars(select(Customer))] == [
            ("acme", "ACME", True)]


def test_tokens_cli_scopes_a_token_to_a_customer(api: Api, db_url: str) -> None:
    env = {**os.environ, "DATABASE_URL": db_url}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "mailticket.cli", "tokens", *args],
                              capture_output=True, text=True, env=env, timeout=60)

    acme = api.client.post(BASE, headers=api.auth("admin"), json=ACME).json()
    api.ingest(make_email(sender="jane@acme.example", subject="ACME printer"))
    api.ingest(make_email(sender="joe@initech.example", subject="Initech secret"))
    created = cli("create", "--scope", "write", "--name", "acme portal", "--customer", "acme")
    assert created.returncode == 0, created.stderr
    assert f"customer {acme['id']}" in created.stderr
    headers = {"Authorization": f"Bearer {created.stdout.strip()}"}
    listed = api.client.get("/api/v1/tickets", headers=headers).json()["tickets"]
    assert [t["subject"] for t in listed] == ["ACME printer"]
    _problem(api.client.get("/api/v1/quarantine", headers=headers), 403)
    assert f"customer {acme['id']}" in cli("list").stdout
    for args, reason in ((("--customer", "nobody"), "no customer 'nobody'"),
                         (("--customer", "acme", "--scope", "admin"), "never admin")):
        refused = cli("create", "--name", "x", *(args if "--scope" in args
                                                 else ("--scope", "read", *args)))
        assert refused.returncode == 2 and reason in refused.stderr, refused.stderr


def test_customers_cli_add_and_remove(api: Api, db_url: str, tmp_path: Path) -> None:
    env = {**os.environ, "DATABASE_URL": db_url}

    def cli(*args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "mailticket.cli", "customers", *args],
                              capture_output=True, text=True, env={**env, **extra}, timeout=60)

    added = cli("add", "acme", "--name", "ACME", "--domain", "Acme.Example",
                "--contact", "boss@gmail.com")
    assert added.returncode == 0, added.stderr
    got = api.client.get(f"{BASE}/acme", headers=api.auth("admin")).json()
    assert got["domains"] == ["acme.example"] and got["source"] == "api"
    for args, reason in (
        (("add", "other", "--name", "O", "--domain", "acme.example"), "belongs to customer 'acme'"),
        (("add", "other", "--name", "O", "--domain", "gmail.com"), "shared mail domain"),
        (("add", "Bad Key", "--name", "O"), "key"),
    ):
        refused = cli(*args)
        assert refused.returncode == 2 and reason in refused.stderr, refused.stderr
        assert "Traceback" not in refused.stderr
    api.ingest(make_email(sender="jane@acme.example"))
    used = cli("remove", "acme")
    assert used.returncode == 1 and "1 ticket(s)" in used.stderr, used.stderr
    assert cli("add", "initech", "--name", "Initech").returncode == 0
    assert cli("remove", "initech").returncode == 0
    assert "no customer 'initech'" in cli("remove", "initech").stderr
    path = tmp_path / "customers.yaml"
    path.write_text("customers: []\n", encoding="utf-8")
    yaml_mode = cli("add", "x", "--name", "X", CUSTOMERS_PATH=str(path))
    assert yaml_mode.returncode == 2 and "CUSTOMERS_PATH" in yaml_mode.stderr


def test_a_race_the_checks_miss_is_a_409(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two requests may both pass the directory's checks before either writes; the
    database's unique constraints then refuse the second (here: the checks are skipped)."""
    admin = api.auth("admin")
    assert api.client.post(BASE, headers=admin, json=ACME).status_code == 201
    monkeypatch.setattr(directory, "_check_claims", lambda *a, **k: None)
    raced = _problem(api.client.post(BASE, headers=admin, json={
        "key": "other", "name": "Other", "domains": ["acme.example"]}), 409)
    assert "concurrent change" in raced["detail"]
    keys = [c["key"] for c in api.client.get(BASE, headers=admin).json()["customers"]]
    assert keys == ["acme"]
