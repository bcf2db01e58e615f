"""Vendor adapters end to end: pipeline -> outbox -> fake vendor over HTTP -> back again.

ServiceNow stands for the vendors without an idempotency key (the retry finds the incident by
its correlation_id) and comes back by polling; Zendesk replays its Idempotency-Key and comes
back by a signed webhook.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from mailticket.backends.registry import registry_for
from mailticket.backends.sync import poll_backend
from mailticket.backends.webhook_api import build_router
from mailticket.runtime import Runtime
from mailticket.store.models import Comment, Ticket
from tests.backends.conftest import ZD_SECRET
from tests.backends.fakes._server import serve
from tests.backends.fakes.servicenow import FakeServiceNow, failure
from tests.backends.fakes.zendesk import FakeZendesk
from tests.backends.helpers import PUSH_WORKFLOW, drain, drain_until_quiet, items, link_of
from tests.backends.mail import mail

PDF = ("report.pdf", "application/pdf", b"%PDF-1.4 bytes")


def _workflow(folder: Path, backend: str, field: str) -> Path:
    path = folder / f"push_{backend}.yaml"
    path.write_text(PUSH_WORKFLOW.read_text().replace("backend: jira", f"backend: {backend}")
                    .replace("customfield_10050", field))
    return path


def _backends(folder: Path, instance: dict[str, object], name: str) -> Path:
    import yaml

    path = folder / "backends.yaml"
    path.write_text(yaml.safe_dump({"instances": {name: instance}}))
    return path


def _ingest(rt: Runtime, raw: bytes) -> int:
    outcome = rt.pipeline.process(raw, "test")
    assert outcome.ticket_id is not None, outcome
    return outcome.ticket_id


@pytest.fixture
def snow() -> Iterator[tuple[FakeServiceNow, str]]:
    fake = FakeServiceNow()
    with serve(fake.app) as url:
        yield fake, url


@pytest.fixture
def snow_rt(make_runtime: Callable[..., Runtime], snow: tuple[FakeServiceNow, str],
            tmp_path: Path) -> Runtime:
    _, url = snow
    backends = _backends(tmp_path, {"kind": "servicenow", "base_url": url, "username": "svc",
                                    "password": "pw", "timeout": 5}, "snow")
    return make_runtime(workflows_path=_workflow(tmp_path, "snow", "u_reporter"),
                        backends_file=backends)


async def test_servicenow_outage_then_recovery_and_poll(
    snow_rt: Runtime, snow: tuple[FakeServiceNow, str]
) -> None:
    rt, (fake, _) = snow_rt, snow
    first, mid = mail(attachment=PDF)
    ticket_id = _ingest(rt, first)
    _ingest(rt, mail(body="follow-up one", reply_to=mid)[0])

    # The create happens remotely but its answer is lost; then the instance is down.
    fake.drop_after("POST", "/api/now/table/incident")
    assert (await drain(rt)).done == 0
    assert len(fake.incidents) == 1
    fake.fail_next(failure(503, "Service Unavailable"), times=3)
    assert (await drain(rt)).dead == 0

    report = await drain_until_quiet(rt)
    assert report.dead == 0
    (incident,) = fake.incidents.values()  # found by correlation_id, not created again
    assert incident["u_reporter"] == "carol@example.com"
    assert incident["correlation_display"] == "mailticket TKT-20251215-001"
    assert [a["file_name"] for a in fake.attachments] == ["report.pdf"]
    bodies = [j["value"] for j in fake.journal if j["element"] == "comments"]
    assert len(bodies) == 1 and "follow-up one" in bodies[0]
    with rt.session_factory() as s:
        assert all(i.status == "done" for i in items(s))
        assert items(s)[0].result["found_existing"] is True
        link = link_of(s, ticket_id, "snow")
        assert (link.state, link.remote_id, link.remote_key) == (
            "linked", incident["sys_id"], incident["number"])

    # Back by polling: resolved remotely, plus an agent's work note mirrored once.
    fake.set_state(incident["sys_id"], "6")
    fake.agent_note(incident["sys_id"], "replaced the toner")
    backend = registry_for(rt.settings.backends_file).build("snow")
    try:
        report1 = await poll_backend(rt.session_factory, rt.settings, backend)
        report2 = await poll_backend(rt.session_factory, rt.settings, backend)
    finally:
        await backend.aclose()
    assert report1.comments == 1 and report2.comments == 0
    with rt.session_factory() as s:
        ticket = s.get_one(Ticket, ticket_id)
        assert ticket.status == "resolved"
        mirrored = s.scalars(select(Comment).where(Comment.ticket_id == ticket_id,
                                                   Comment.source == "backend")).all()
        assert len(mirrored) == 1 and "replaced the toner" in mirrored[0].body
        assert mirrored[0].is_internal


async def test_zendesk_replay_and_webhook(zd_rt: Runtime, zd: tuple[FakeZendesk, str]) -> None:
    rt, (fake, _) = zd_rt, zd
    ticket_id = _ingest(rt, mail(attachment=PDF)[0])
    fake.drop_after("POST", "/api/v2/tickets.json")
    assert (await drain(rt)).done == 0
    assert (await drain_until_quiet(rt)).dead == 0
    (remote,) = fake.tickets.values()
    assert remote["custom_fields"] == [{"id": 360, "value": "carol@example.com"}]
    comments = fake.comments[remote["id"]]
    assert [a["file_name"] for c in comments for a in c["attachments"]] == ["report.pdf"]

    app = FastAPI()
    app.include_router(build_router(rt))
    fake.set_status(remote["id"], "solved")
    agent = fake.agent_comment(remote["id"], "fixed the spooler")
    payload = {"type": "zen:event-type:ticket.status_changed", "id": "e1",
               "detail": {"id": str(remote["id"]), "status": "SOLVED"},
               "event": {"current": "SOLVED", "previous": "OPEN"}}
    with serve(app) as api:
        url = f"{api}/api/v1/webhooks/zd"
        headers, body = fake.webhook(ZD_SECRET, payload, invocation="inv-1")
        async with httpx.AsyncClient() as client:
            ok = await client.post(url, content=body, headers=headers)
            dup = await client.post(url, content=body, headers=headers)
            forged_h, forged_b = fake.webhook("wrong", payload, invocation="inv-2")
            forged = await client.post(url, content=forged_b, headers=forged_h)
    assert ok.status_code == 200 and ok.json()["status"] == "ok", ok.text
    assert dup.json()["status"] == "duplicate"
    assert forged.status_code == 401
    with rt.session_factory() as s:
        assert s.get_one(Ticket, ticket_id).status == "resolved"
        mirrored = s.scalars(select(Comment).where(Comment.ticket_id == ticket_id,
                                                   Comment.source == "backend")).all()
        # Only the agent's comment: not the description, not our attachment comment.
        assert [m.body.endswith(agent["body"]) for m in mirrored] == [True]


