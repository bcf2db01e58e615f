"""Local changes going out (close / patch), re-linking a broken link, and the throttle."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from mailticket.backends.actions import queue_ticket_update
from mailticket.backends.throttle import TokenBucket
from mailticket.cli import main
from mailticket.runtime import Runtime
from mailticket.store.models import Ticket
from tests.backends.fakes.faults import Fault
from tests.backends.fakes.jira import FakeJira
from tests.backends.helpers import drain, drain_until_quiet, items, link_of
from tests.backends.mail import mail


async def test_local_close_goes_out_through_a_transition(
    jira_runtime: Runtime, fake_jira: FakeJira
) -> None:
    rt = jira_runtime
    ticket_id = rt.pipeline.process(mail()[0], "t").ticket_id
    assert ticket_id is not None
    await drain(rt)
    with rt.session_factory() as s, s.begin():
        ticket = s.get_one(Ticket, ticket_id)
        ticket.status = "resolved"
        assert queue_ticket_update(s, ticket, status="resolved", stamp="1") == ["jira"]
        # The same change queued twice is one operation.
        queue_ticket_update(s, ticket, status="resolved", stamp="1")
    report = await drain(rt)
    assert (report.done, report.dead) == (1, 0)
    issue = next(iter(fake_jira.issues.values()))
    assert issue["fields"]["status"]["name"] == "Resolved"
    with rt.session_factory() as s:
        assert link_of(s, ticket_id, "jira").last_status_raw == "Resolved"
        assert items(s)[-1].operation == "close_ticket"


async def test_relink_repairs_a_broken_link(
    jira_runtime: Runtime, fake_jira: FakeJira, monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    rt = jira_runtime
    raw, mid = mail()
    ticket_id = rt.pipeline.process(raw, "t").ticket_id
    assert ticket_id is not None
    await drain(rt)
    old = next(iter(fake_jira.issues.values()))
    fake_jira.fail_next(Fault.DELETED, ticket=old["key"])
    rt.pipeline.process(mail(body="lost", reply_to=mid)[0], "t")
    assert (await drain_until_quiet(rt)).dead == 1
    # An operator recreated it by hand (or found it moved) and re-links.
    new = fake_jira.create_by_hand("Printer on fire (recreated)")
    monkeypatch.setenv("BACKENDS_FILE", str(rt.settings.backends_file))
    monkeypatch.setenv("DATABASE_URL", rt.settings.database_url)
    monkeypatch.chdir(tmp_path)
    with rt.session_factory() as s:
        number = s.get_one(Ticket, ticket_id).ticket_number
    assert main(["backends", "relink", number, "jira", new["id"], "--key", new["key"]]) == 0
    assert f"linked to jira {new['key']}" in capsys.readouterr().out
    assert main(["backends", "relink", number, "jira", new["id"]]) == 1  # already linked
    rt.pipeline.process(mail(body="found you", reply_to=mid)[0], "t")
    await drain_until_quiet(rt)
    assert ["found you" in c["body"] for c in fake_jira.comments[new["id"]]] == [True]
    assert len(fake_jira.issues) == 1
    with rt.session_factory() as s:
        assert link_of(s, ticket_id, "jira").state == "linked"


def test_token_bucket_spaces_requests() -> None:
    now = [0.0]
    bucket = TokenBucket(rate_per_second=2.0, burst=2, clock=lambda: now[0])
    assert bucket.take() == 0.0 and bucket.take() == 0.0
    assert bucket.take() == pytest.approx(0.5)  # empty: the next token in half a second
    now[0] += 0.5
    assert bucket.take() == 0.0
    now[0] += 100  # refills, but never beyond the burst
    assert [bucket.take() for _ in range(3)] == [0.0, 0.0, pytest.approx(0.5)]


def test_acquire_waits_for_tokens() -> None:
    slept: list[float] = []
    now = [0.0]

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    bucket = TokenBucket(rate_per_second=1.0, burst=1, clock=lambda: now[0], sleep=fake_sleep)

    async def run() -> None:
        for _ in range(3):
            await bucket.acquire()

    asyncio.run(run())
    assert slept == [1.0, 1.0]


async def test_first_push_from_a_reply_keeps_the_reply(
    make_runtime: object, fake_jira: FakeJira, tmp_path: Path
) -> None:
    from tests.backends.conftest import jira_instance
    from tests.backends.helpers import PUSH_WORKFLOW, write_backends

    assert callable(make_runtime)
    plain = make_runtime()  # the default workflows: the ticket exists before any push
    raw, mid = mail()
    first = plain.pipeline.process(raw, "t")
    assert first.ticket_id is not None
    path = write_backends(tmp_path / "b.yaml", {"jira": jira_instance(fake_jira)})
    rt = make_runtime(workflows_path=PUSH_WORKFLOW, backends_file=path)
    reply = rt.pipeline.process(mail(body="the reply", reply_to=mid,
                                     attachment=("r.txt", "text/plain", b"r"))[0], "t")
    assert reply.ticket_id == first.ticket_id
    await drain_until_quiet(rt)
    issue = next(iter(fake_jira.issues.values()))
    assert len(fake_jira.issues) == 1
    assert ["the reply" in c["body"] for c in fake_jira.comments[issue["id"]]] == [True]
    assert [a[0] for a in fake_jira.attachments[issue["id"]]] == ["r.txt"]
