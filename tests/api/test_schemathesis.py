"""Schemathesis over the whole API, with every check, against a real server on PostgreSQL.

Two runs: the schemathesis command line (all phases: examples, coverage, fuzzing, stateful;
all checks, including status-code, content-type and response-schema conformance, negative
data rejection and ignored auth), and an in-process run that samples the token's scope per
case, so read and write tokens meet the write operations too. Both must find nothing.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import CHECKS, load_all_checks
from schemathesis.core import NOT_SET

from mailticket.api import tokens
from mailticket.customers.directory import CustomersMode, create_customer
from mailticket.customers.lookup import shared_for
from mailticket.customers.schema import ContactSpec, CustomerSpec
from tests.api.conftest import Api
from tests.api.server import running
from tests.mailfactory import make_email

CLI = Path(sys.executable).with_name("schemathesis")


def _seed(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows with small ids, so generated ids sometimes hit real data, not only 404s."""
    msg = EmailMessage()
    msg["From"] = "a@example.com"
    msg["To"] = "support@example.com"
    msg["Subject"] = "with attachment"
    msg["Message-ID"] = "<seed-1@example.com>"
    msg.set_content("body")
    msg.add_attachment(b"data", maintype="application", subtype="octet-stream", filename="f.bin")
    api.ingest(msg.as_bytes())
    api.ingest(make_email(subject="Re: with attachment", in_reply_to="<seed-1@example.com>"))

    def boom(email: object) -> None:
        raise RuntimeError("poison")

    monkeypatch.setattr(api.runtime.classifier, "classify", boom)
    assert api.ingest(make_email(subject="poison")).action == "quarantined"
    monkeypatch.undo()


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_the_cli_with_all_checks_finds_nothing(
    api: Api, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _seed(api, monkeypatch)
    report = tmp_path / "report.json"
    with running(api.app) as base:
        done = subprocess.run(
            [
                str(CLI), "run", f"{base}/openapi.json", "--checks", "all",
                "--phases", "examples,coverage,fuzzing,stateful", "--mode", "all",
                "--max-examples", "100", "--seed", "20251215", "--workers", "1",
                "--generation-database", "none", "--no-color", "--request-timeout", "30",
                "--header", f"Authorization: Bearer {api.tokens['admin']}",
                "--report", "json", "--report-json-path", str(report),
            ],
            capture_output=True, text=True, timeout=1500, cwd=tmp_path,
        )
    # The whole output stays with the test's files, for when this fails.
    (tmp_path / "schemathesis.out").write_text(done.stdout + done.stderr)
    assert done.returncode == 0, done.stdout[-8000:] + done.stderr[-2000:]
    run = json.loads(report.read_text())
    assert run["complete"] and run["exit_code"] == 0
    ops = run["operations"]
    assert ops["tested"] == ops["selected"] == ops["total"] >= 20 and ops["errored"] == 0
    cases = run["test_cases"]
    assert cases["generated"] >= 1000, cases
    assert cases["with_failures"] == cases["unique_failures"] == cases["errored"] == 0, cases
    assert run["failures"] == [] and run["errors"] == []
    assert {name: p["status"] for name, p in run["phases"].items() if name != "examples"} == {
        "coverage": "success", "fuzzing": "success", "stateful": "success"}
    print(f"schemathesis: {ops['tested']} operations, {cases['generated']} cases, 0 failures")


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_every_scope_meets_every_operation(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    # A customer-scoped write token too, whose customer owns the seeded mail: its answers
    # leave out the staff-only fields and it is refused more, all as the document says.
    with api.runtime.session_factory() as s:
        create_customer(
            s, CustomerSpec(key="seed", name="Seed", contacts=(
                ContactSpec(address="a@example.com"), ContactSpec(address="customer@example.com"))),
            mode=CustomersMode.db, shared=shared_for(api.runtime.settings),
            now=datetime(2025, 12, 15, tzinfo=UTC))
        _, api.tokens["customer"] = tokens.create_token(
            s, name="seed portal", scope="write", customer="seed")
        s.commit()
    _seed(api, monkeypatch)
    schema = schemathesis.openapi.from_asgi("/openapi.json", api.app)
    operations = [result.ok() for result in schema.get_all_operations()]
    labels = {op.label for op in operations}
    assert "GET /api/v1/tickets/{ticket_id}/emails" in labels
    assert "POST /api/v1/test/email-to-ticket" in labels
    load_all_checks()
    all_checks = CHECKS.get_all()
    assert len(all_checks) >= 10
    statuses: Counter[tuple[str, int]] = Counter()
    customer_ok: set[str] = set()
    for operation in operations:
        @settings(
            max_examples=25, deadline=None, database=None, derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy(), scope=st.sampled_from(["read", "write", "admin", "customer"]))
        def check(case: schemathesis.Case, scope: str) -> None:
            response = case.call(headers=api.auth(scope))
            statuses[(case.operation.label, response.status_code)] += 1
            if scope == "customer" and response.status_code == 200:
                customer_ok.add(case.operation.label)
            case.validate_response(response, checks=all_checks, headers=api.auth(scope))
            if response.status_code >= 400:
                assert "Traceback" not in response.text

        check()
    answered = {label for label, code in statuses if code < 400}
    # The customer-scoped token's own tickets, by real ids, with every check: its answers
    # (staff-only fields left out) conform to the document too.
    by_label = {op.label: op for op in operations}
    own = api.client.get("/api/v1/tickets", headers=api.auth("customer")).json()["tickets"]
    assert own and not {"tags", "assigned_to_user_id"} & own[0].keys()
    calls: list[tuple[str, dict[str, Any], Any]] = [
        ("GET /api/v1/tickets", {}, NOT_SET),
        ("GET /api/v1/tickets/{ticket_id}", {"ticket_id": str(own[0]["id"])}, NOT_SET),
        ("GET /api/v1/tickets/{ticket_id}/emails", {"ticket_id": str(own[0]["id"])}, NOT_SET),
        ("PATCH /api/v1/tickets/{ticket_id}", {"ticket_id": str(own[0]["id"])},
         {"status": "closed"}),
        ("PATCH /api/v1/tickets/{ticket_id}", {"ticket_id": str(own[0]["id"])}, {"tags": []}),
        ("POST /api/v1/tickets/{ticket_id}/comments", {"ticket_id": str(own[0]["id"])},
         {"body": "thanks"}),
    ]
    for label, params, body in calls:
        case = by_label[label].Case(path_parameters=params, body=body,
                                    media_type="application/json" if body is not NOT_SET else None)
        response = case.call(headers=api.auth("customer"))
        assert response.status_code in (200, 201, 403), (label, response.text)
        customer_ok.add(label)
        case.validate_response(response, checks=all_checks, headers=api.auth("customer"))
    assert customer_ok >= {label for label, _, _ in calls}
    # Not only errors: most operations also answered successfully at least once.
    assert len(answered) >= len(labels) // 2, statuses
    print(f"in-process: {len(labels)} operations, {sum(statuses.values())} cases, all checks")
