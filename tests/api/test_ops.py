"""Quarantine, workflows, health, readiness and metrics over HTTP."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import text

from mailticket import metrics
from mailticket.store.outbox_models import OutboxItem
from mailticket.ticketing import quarantine
from tests.api.conftest import Api
from tests.mailfactory import make_email

WORKFLOW = """\
workflows:
  - name: Support → ticket
    classification_trigger: support_request
    workflow_steps:
      - action: create_ticket
"""


def _poison(api: Api, monkeypatch: pytest.MonkeyPatch) -> int:
    def boom(email: object) -> None:
        raise RuntimeError("classifier exploded")

    real = api.runtime.classifier.classify
    monkeypatch.setattr(api.runtime.classifier, "classify", boom)
    out = api.ingest(make_email(subject="poison", sender="poison@example.com"))
    monkeypatch.setattr(api.runtime.classifier, "classify", real)
    assert out.action == "quarantined"
    listed = api.get("/api/v1/quarantine").json()["entries"]
    assert len(listed) == 1
    return int(listed[0]["id"])


def test_quarantine_list_show_retry(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    entry_id = _poison(api, monkeypatch)
    entry = api.get(f"/api/v1/quarantine/{entry_id}").json()
    assert entry["status"] == "held" and "classifier exploded" in entry["reason"]
    assert entry["error_type"] == "RuntimeError" and entry["size"] > 0
    assert entry["traceback"] is None, "tracebacks are for admin tokens only"
    admin_view = api.get(f"/api/v1/quarantine/{entry_id}", scope="admin").json()
    assert "RuntimeError" in admin_view["traceback"]

    r = api.client.post(f"/api/v1/quarantine/{entry_id}/retry", headers=api.auth("write"))
    assert r.status_code == 200, r.text
    assert r.json()["action"] == "created" and r.json()["ticket_number"]
    assert api.get("/api/v1/quarantine").json()["entries"] == []
    released = api.get("/api/v1/quarantine", params={"status": "released"}).json()["entries"]
    assert [e["id"] for e in released] == [entry_id]
    missing = api.client.post("/api/v1/quarantine/9999/retry", headers=api.auth("write"))
    assert missing.status_code == 404 and missing.json()["status"] == 404


def test_a_too_large_entry_is_a_409_not_a_ticket_of_its_headers(api: Api) -> None:
    """The Maildir and IMAP workers hold an over-size message's header block only; a retry
    made a ticket of it (no text) and the whole message became a duplicate of that."""
    whole = make_email(subject="huge log", body="the log says: disk full",
                       message_id="<huge-api@customer.example>")
    headers = whole.split(b"\n\n", 1)[0] + b"\n"
    with api.runtime.session_factory() as session:
        entry = quarantine.quarantine_raw(
            session, headers, "/srv/Maildir/new/1.huge",
            quarantine.too_large_reason(30_000_000, "; file kept at /srv/Maildir/held/1.huge"),
            "<huge-api@customer.example>",
        )
        session.commit()
        entry_id = entry.id
    r = api.client.post(f"/api/v1/quarantine/{entry_id}/retry", headers=api.auth("write"))
    assert r.status_code == 409, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert "holds only the headers" in r.json()["detail"]
    assert api.get("/api/v1/tickets").json()["tickets"] == []
    assert [e["id"] for e in api.get("/api/v1/quarantine").json()["entries"]] == [entry_id]
    assert api.ingest(whole).action == "created"


def test_workflows_list_validate_reload(make_api: Callable[..., Api], tmp_path: Path) -> None:
    path = tmp_path / "workflows.yaml"
    path.write_text(WORKFLOW, encoding="utf-8")
    api = make_api(workflows_path=path)
    listed = api.get("/api/v1/workflows").json()
    assert [w["name"] for w in listed["workflows"]] == ["Support → ticket"]
    assert listed["workflows"][0]["steps"][0]["action"] == "create_ticket"

    ok = api.client.post("/api/v1/workflows/validate", json={"yaml": WORKFLOW},
                         headers=api.auth("read"))
    assert ok.json() == {"valid": True, "issues": [], "workflows": ["Support → ticket"]}
    bad_yaml = WORKFLOW + "      - action: no_such_action\n"
    bad = api.client.post("/api/v1/workflows/validate", json={"yaml": bad_yaml},
                          headers=api.auth("read")).json()
    assert bad["valid"] is False
    assert bad["issues"][0]["line"] == 6 and "no_such_action" in bad["issues"][0]["reason"]
    assert bad["issues"][0]["file"] == "workflows.yaml", "no server paths in the answer"

    path.write_text(WORKFLOW + WORKFLOW.replace("workflows:\n", "").replace(
        "Support → ticket", "Second"), encoding="utf-8")
    r = api.client.post("/api/v1/workflows/reload", headers=api.auth("admin"))
    assert r.status_code == 200, r.text
    assert [w["name"] for w in r.json()["workflows"]] == ["Support → ticket", "Second"]
    assert len(api.runtime.pipeline.workflows) == 2

    path.write_text(bad_yaml, encoding="utf-8")
    refused = api.client.post("/api/v1/workflows/reload", headers=api.auth("admin"))
    assert refused.status_code == 422
    assert "no_such_action" in refused.json()["issues"][0]
    assert len(api.runtime.pipeline.workflows) == 2, "a bad file leaves the old set running"
    path.write_text("workflows:\n  - name: \x08\n", encoding="utf-8")
    control = api.client.post("/api/v1/workflows/reload", headers=api.auth("admin"))
    assert control.status_code == 422 and len(api.runtime.pipeline.workflows) == 2


def test_health_ready_and_metrics(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    assert api.client.get("/healthz").json() == {"status": "ok", "detail": None}
    assert api.client.get("/readyz").status_code == 200
    api.ingest(make_email())
    _poison(api, monkeypatch)
    with api.runtime.session_factory() as s:
        for i in range(3):
            s.add(OutboxItem(kind="smtp", target="smtp", operation="send",
                             idempotency_key=f"k{i}", payload={}, status="pending"))
        s.add(OutboxItem(kind="backend", target="zendesk", operation="create",
                         idempotency_key="b1", payload={}, status="dead"))
        s.commit()
    r = api.client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    lines = r.text.splitlines()
    assert "mailticket_quarantine_held 1.0" in lines  # prometheus_client writes floats
    pending_smtp = [ln for ln in lines if ln.startswith('mailticket_outbox_pending{kind="smtp"}')]
    assert pending_smtp and float(pending_smtp[0].split()[-1]) >= 3
    assert 'mailticket_outbox_pending{kind="backend"} 0.0' in lines
    assert any(ln.startswith(metrics.EMAILS_PROCESSED) for ln in lines)
    assert any(ln.startswith(f"{metrics.PROCESSING_SECONDS}_bucket") for ln in lines)


def test_readyz_fails_when_migrations_are_behind(api: Api) -> None:
    with api.runtime.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0003_live'"))
    r = api.client.get("/readyz")
    assert r.status_code == 503
    assert r.json()["detail"] == "database migrations are not at head"
