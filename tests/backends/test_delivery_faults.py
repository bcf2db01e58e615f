"""Outages, retries and deleted remote tickets: exactly one remote ticket, every comment once."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from mailticket.backends.models import RemoteLink
from mailticket.runtime import Runtime
from mailticket.store.models import WorkflowExecution
from mailticket.store.outbox_models import utcnow
from tests.backends.fakes.faults import Fault
from tests.backends.fakes.jira import FakeJira
from tests.backends.helpers import count, drain, drain_until_quiet, items, link_of
from tests.backends.mail import mail

ISSUE = r"/rest/api/2/issue"
COMMENT = r"/rest/api/2/issue/[^/]+/comment"


def _ingest(rt: Runtime, raw: bytes) -> int:
    outcome = rt.pipeline.process(raw, "test")
    assert outcome.ticket_id is not None, outcome
    return outcome.ticket_id


async def test_outage_then_recovery_creates_one_issue_and_each_comment_once(
    jira_runtime: Runtime, fake_jira: FakeJira
) -> None:
    rt = jira_runtime
    first, mid = mail()
    ticket_id = _ingest(rt, first)
    for n in range(2):
        _ingest(rt, mail(body=f"follow-up {n}", reply_to=mid)[0])

    # 1: the vendor processes the create but the connection drops before the answer.
    fake_jira.fail_next(Fault.LOST_ANSWER, method="POST", path=ISSUE)
    report = await drain(rt)
    assert report.done == 0 and report.dead == 0
    assert len(fake_jira.issues) == 1  # it did happen remotely
    with rt.session_factory() as s:
        create = items(s)[0]
        assert create.status == "pending" and "AmbiguousResult" in (create.last_error or "")
        # The comments waited behind the create instead of failing.
        assert all(i.status == "pending" for i in items(s))

    # 2: the outage: every call answers 500, then the search is also down.
    fake_jira.fail_next(Fault.SERVER_ERROR, method="POST", path=r"/rest/api/3/search/jql", times=2)
    assert (await drain(rt)).done == 0
    assert len(fake_jira.issues) == 1

    # 3: recovery. The retry finds the issue by its label instead of creating another;
    # the first comment is created but its answer is lost, the retry finds it.
    fake_jira.fail_next(Fault.LOST_ANSWER, method="POST", path=COMMENT)
    report = await drain_until_quiet(rt)
    assert report.dead == 0
    assert len(fake_jira.issues) == 1
    issue = next(iter(fake_jira.issues.values()))
    bodies = [c["body"] for c in fake_jira.comments[issue["id"]]]
    assert len(bodies) == 2
    assert any("follow-up 0" in b for b in bodies) and any("follow-up 1" in b for b in bodies)
    with rt.session_factory() as s:
        assert all(i.status == "done" for i in items(s))
        assert items(s)[0].result["found_existing"] is True
        assert link_of(s, ticket_id, "jira").remote_id == issue["id"]


async def test_rate_limit_retry_after_is_honoured(
    jira_runtime: Runtime, fake_jira: FakeJira
) -> None:
    rt = jira_runtime
    _ingest(rt, mail()[0])
    fake_jira.fail_next(Fault.RATE_LIMITED, method="POST", path=ISSUE, retry_after=120)
    before = utcnow()
    report = await drain(rt)
    assert report.retried == 1
    with rt.session_factory() as s:
        item = items(s)[0]
        when = item.next_attempt_at
        wait = (when if when.tzinfo else when.replace(tzinfo=before.tzinfo)) - before
        assert timedelta(seconds=119) <= wait <= timedelta(seconds=130)
        assert "RateLimited" in (item.last_error or "")
    # Not due yet: a drain without fast-forwarding leaves it alone.
    assert (await drain(rt, due=False)).total == 0
    assert (await drain(rt)).done == 1
    assert len(fake_jira.issues) == 1


async def test_validation_error_is_dead_lettered_with_the_vendor_message(
    make_runtime: object, fake_jira: FakeJira, tmp_path: object
) -> None:
    from pathlib import Path

    from tests.backends.conftest import jira_instance
    from tests.backends.helpers import PUSH_WORKFLOW, write_backends

    assert callable(make_runtime) and isinstance(tmp_path, Path)
    backends = write_backends(
        tmp_path / "b.yaml", {"jira": jira_instance(fake_jira, project_key="NOPE")}
    )
    rt = make_runtime(workflows_path=PUSH_WORKFLOW, backends_file=backends)
    _ingest(rt, mail()[0])
    report = await drain(rt)
    assert report.dead == 1
    with rt.session_factory() as s:
        assert "project: valid project is required" in (items(s)[0].last_error or "")
        assert "HTTP 400" in (items(s)[0].last_error or "")


async def test_deleted_remote_ticket_breaks_the_link_and_is_not_recreated(
    jira_runtime: Runtime, fake_jira: FakeJira
) -> None:
    rt = jira_runtime
    first, mid = mail()
    ticket_id = _ingest(rt, first)
    await drain(rt)
    issue = next(iter(fake_jira.issues.values()))
    fake_jira.fail_next(Fault.DELETED, ticket=issue["key"])

    _ingest(rt, mail(body="are you there?", reply_to=mid)[0])
    report = await drain_until_quiet(rt)
    assert report.dead == 1
    assert fake_jira.issues == {}  # nothing recreated
    with rt.session_factory() as s:
        link = link_of(s, ticket_id, "jira")
        assert link.state == "broken" and "does not exist" in (link.broken_reason or "")
        dead = items(s, "dead")[0]
        assert dead.operation == "create_comment"
        assert "link marked broken" in (dead.last_error or "")

    # Later mail: nothing queued for the broken link, the push step says why, no new issue.
    _ingest(rt, mail(body="hello?", reply_to=mid)[0])
    with rt.session_factory() as s:
        assert len(items(s)) == 2  # create + the dead comment: no new rows
        last = s.scalars(select(WorkflowExecution).order_by(WorkflowExecution.id.desc())).first()
        assert last is not None and last.status == "ok"
        push = [st for st in last.steps if st["action"] == "push_to_backend"][0]
        assert push["result"]["pushed"] is False and "broken" in push["result"]["reason"]
        assert count(s, RemoteLink) == 1
    await drain_until_quiet(rt)
    assert fake_jira.issues == {}


async def test_webhook_for_a_deleted_ticket_marks_it_broken(
    jira_runtime: Runtime, fake_jira: FakeJira
) -> None:
    from fastapi import FastAPI

    from mailticket.backends.webhook_api import build_router
    from tests.backends.fakes.asgi import AsgiServer

    rt = jira_runtime
    ticket_id = _ingest(rt, mail()[0])
    await drain(rt)
    issue = next(iter(fake_jira.issues.values()))
    fake_jira.fail_next(Fault.DELETED, ticket=issue["key"])
    app = FastAPI()
    app.include_router(build_router(rt))
    with AsgiServer(app) as api:
        # A hint about the issue: re-reading it answers 404.
        resp = fake_jira.webhook(f"{api.url}/api/v1/webhooks/jira", "jira:issue_updated",
                                 issue["id"])
    assert resp.status_code == 200 and resp.json()["broken"] == 1
    with rt.session_factory() as s:
        assert link_of(s, ticket_id, "jira").state == "broken"
        assert fake_jira.issues == {}


async def test_lost_attachment_answer_is_not_uploaded_twice(
    jira_runtime: Runtime, fake_jira: FakeJira
) -> None:
    rt = jira_runtime
    _ingest(rt, mail(attachment=("a.bin", "application/octet-stream", b"\x00" * 100))[0])
    fake_jira.fail_next(Fault.LOST_ANSWER, method="POST", path=r"/rest/api/2/issue/[^/]+/attachments")
    report = await drain_until_quiet(rt)
    assert report.dead == 0
    issue = next(iter(fake_jira.issues.values()))
    assert [a[0] for a in fake_jira.attachments[issue["id"]]] == ["a.bin"]
    with rt.session_factory() as s:
        assert items(s)[1].result["found_existing"] is True
