"""`mailticket run` performs due backend operations and polls status, like outgoing mail."""

from __future__ import annotations

from mailticket.live.worker import Worker
from mailticket.runtime import Runtime
from mailticket.store.models import Ticket
from tests.backends.fakes.jira import FakeJira
from tests.backends.helpers import link_of
from tests.backends.mail import mail


async def test_run_once_delivers_and_poll_job_syncs(
    jira_runtime: Runtime, fake_jira: FakeJira
) -> None:
    rt = jira_runtime
    ticket_id = rt.pipeline.process(mail()[0], "t").ticket_id
    assert ticket_id is not None
    worker = Worker(rt.settings, rt.engine, rt.session_factory, rt.pipeline)
    await worker.run_once()  # no mail sources configured: just the outboxes
    assert len(fake_jira.issues) == 1
    issue = next(iter(fake_jira.issues.values()))
    fake_jira.set_status(issue["key"], "Waiting for customer")
    await worker._poll_backends()  # what the APScheduler interval job runs
    with rt.session_factory() as s:
        assert s.get_one(Ticket, ticket_id).status == "pending"
        assert link_of(s, ticket_id, "jira").last_status_raw == "Waiting for customer"
