"""Escalation into an external system: a breach pushes the ticket to a (spec-checked fake)
Jira through the outbox, and the idle close follows it there; on both databases."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from mailticket.runtime import Runtime
from mailticket.sla.service import record_status
from mailticket.store.models import Ticket
from tests.backends.conftest import jira_instance
from tests.backends.fakes.jira import FakeJira
from tests.backends.helpers import drain_until_quiet, link_of, write_backends
from tests.escalation.helpers import berlin, setup
from tests.mailfactory import make_email

WORKFLOWS = """
workflows:
  - name: tickets
    classification_trigger: support_request
    workflow_steps: [{action: create_ticket}]
  - name: breaches go to Jira
    event_trigger: {event: sla_breached, target: first_response}
    workflow_steps:
      - action: push_to_backend
        params: {backend: jira}
  - name: close silent tickets
    event_trigger: {event: ticket_idle, days: 7, status: pending}
    workflow_steps:
      - action: close
        params: {status: resolved}
"""


@pytest.fixture
def fake_jira() -> Iterator[FakeJira]:
    with FakeJira() as server:
        yield server


async def test_breach_pushes_and_idle_close_follows(
    make_runtime: Callable[..., Runtime], tmp_path: Path, fake_jira: FakeJira
) -> None:
    backends = write_backends(tmp_path / "backends.yaml", {"jira": jira_instance(fake_jira)})
    env = setup(make_runtime, tmp_path, workflows=WORKFLOWS, backends_file=backends)
    opened = env.ingest(make_email(sender="jane@acme.example", subject="Printer on fire"))
    tid = opened.ticket_id
    assert fake_jira.issues == {}

    breach = env.sweep(berlin(2025, 12, 15, 14, 0))
    assert breach.runs == [("breaches go to Jira", "sla_breached:first_response", "ok")]
    await drain_until_quiet(env.runtime)
    (issue,) = fake_jira.issues.values()
    assert issue["fields"]["summary"] == "Printer on fire"
    with env.session() as s:
        assert link_of(s, tid, "jira").state == "linked"

    env.clock.set(berlin(2025, 12, 15, 15, 0))
    with env.session() as s:
        s.get_one(Ticket, tid).status = "pending"
        record_status(s, tid, "pending", env.clock(), source="api")
        s.commit()
    closed = env.sweep(berlin(2025, 12, 22, 15, 0))
    assert closed.runs == [("close silent tickets", "ticket_idle:7d", "ok")]
    await drain_until_quiet(env.runtime)
    assert issue["fields"]["status"]["name"] == "Resolved"
    with env.session() as s:
        assert s.scalar(select(Ticket.status).where(Ticket.id == tid)) == "resolved"
