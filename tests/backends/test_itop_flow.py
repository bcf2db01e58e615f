"""What a real iTop 3.2.0 showed, replayed end to end against its fake (issue 13).

Pipeline -> outbox -> iTop REST, and back by polling: a wrong agent id is not a deleted
ticket; an API PATCH reopens (or is reported as impossible, never "done"); our own case-log
entries are not mirrored back although iTop shows our contact's name on them; the
resolution text comes back once; the database being down (HTTP 500 text/html) is retried.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from mailticket.backends.actions import queue_ticket_update
from mailticket.backends.registry import registry_for
from mailticket.backends.sync import SyncReport, poll_backend
from mailticket.runtime import Runtime
from mailticket.store.models import Comment, Ticket
from tests.backends.fakes._server import serve
from tests.backends.fakes.faults import Fault
from tests.backends.fakes.itop import FakeITop
from tests.backends.helpers import drain, drain_until_quiet, items, link_of, write_backends
from tests.backends.mail import mail

WORKFLOW = """\
workflows:
  - name: Support mail to iTop
    classification_trigger: any
    workflow_steps:
      - action: create_ticket
      - action: push_to_backend
        params:
          backend: itop
"""


@pytest.fixture
def itop() -> Iterator[tuple[FakeITop, str]]:
    fake = FakeITop()
    with serve(fake.app) as url:
        yield fake, url


def _runtime(make_runtime: Callable[..., Runtime], url: str, tmp_path: Path,
             **over: Any) -> Runtime:
    flows = tmp_path / "itop.yaml"
    flows.write_text(WORKFLOW)
    path = write_backends(tmp_path / "b.yaml", {"itop": {
        "kind": "itop", "base_url": url, "auth_user": "rest", "auth_pwd": "pw", "org_id": "3",
        "timeout": 5, **over}})
    return make_runtime(workflows_path=flows, backends_file=path)


def _ingest(rt: Runtime, raw: bytes) -> int:
    outcome = rt.pipeline.process(raw, "test")
    assert outcome.ticket_id is not None, outcome
    return outcome.ticket_id


async def _poll(rt: Runtime) -> SyncReport:
    backend = registry_for(rt.settings.backends_file).build("itop")
    try:
        return await poll_backend(rt.session_factory, rt.settings, backend)
    finally:
        await backend.aclose()


def _set_status(rt: Runtime, ticket_id: int, status: str) -> None:
    """What PATCH /api/v1/tickets/{id} does."""
    with rt.session_factory() as s, s.begin():
        ticket = s.get_one(Ticket, ticket_id)
        ticket.status = status
        queue_ticket_update(s, ticket, status=status)


async def test_a_wrong_agent_id_does_not_break_a_live_link(
    make_runtime: Callable[..., Runtime], itop: tuple[FakeITop, str], tmp_path: Path
) -> None:
    fake, url = itop
    rt = _runtime(make_runtime, url, tmp_path, agent_id="99")
    ticket_id = _ingest(rt, mail()[0])
    await drain_until_quiet(rt)
    _set_status(rt, ticket_id, "resolved")
    report = await drain_until_quiet(rt)
    assert report.dead == 1
    with rt.session_factory() as s:
        assert link_of(s, ticket_id, "itop").state == "linked"
        error = items(s, "dead")[0].last_error or ""
    assert "Invalid object Person::99" in error and "agent_id" in error
    (rec,) = fake.requests()
    assert rec["status"] == "new"


async def test_api_reopen_goes_out_and_a_closed_request_is_reported_unable(
    make_runtime: Callable[..., Runtime], itop: tuple[FakeITop, str], tmp_path: Path
) -> None:
    fake, url = itop
    rt = _runtime(make_runtime, url, tmp_path)
    ticket_id = _ingest(rt, mail()[0])
    await drain_until_quiet(rt)
    (rec,) = fake.requests()
    _set_status(rt, ticket_id, "resolved")
    await drain_until_quiet(rt)
    assert rec["status"] == "resolved"
    _set_status(rt, ticket_id, "open")
    assert (await drain_until_quiet(rt)).done == 1
    assert rec["status"] == "assigned"
    assert "core/apply_stimulus:ev_reopen" in fake.operations

    fake.set_status(int(rec["id"]), "closed")
    await _poll(rt)
    with rt.session_factory() as s:
        assert s.get_one(Ticket, ticket_id).status == "closed"
    _set_status(rt, ticket_id, "open")
    report = await drain_until_quiet(rt)
    assert (report.done, report.unable) == (0, 1)
    with rt.session_factory() as s:
        (unable,) = items(s, "unable")
        assert unable.operation == "patch_ticket"
        assert "cannot patch ticket" in (unable.last_error or "")
        assert "closed" in (unable.last_error or "")
        assert link_of(s, ticket_id, "itop").state == "linked"


async def test_own_entries_are_not_echoed_and_the_resolution_comes_back(
    make_runtime: Callable[..., Runtime], itop: tuple[FakeITop, str], tmp_path: Path
) -> None:
    fake, url = itop
    rt = _runtime(make_runtime, url, tmp_path)
    raw, mid = mail()
    ticket_id = _ingest(rt, raw)
    _ingest(rt, mail(body="Still on fire.", reply_to=mid)[0])
    await drain_until_quiet(rt)
    (rec,) = fake.requests()
    # iTop shows our REST account's contact on our entry, not the login.
    assert rec["public_log"]["entries"][0]["user_login"] == "Rest Integration"
    fake.add_log(int(rec["id"]), "public_log", "A technician is on the way.", who="Pat Agent")
    fake.set_status(int(rec["id"]), "resolved", solution="Replaced the fuser unit.")
    first = await _poll(rt)
    again = await _poll(rt)
    assert (first.comments, again.comments) == (2, 0)
    with rt.session_factory() as s:
        ticket = s.get_one(Ticket, ticket_id)
        assert ticket.status == "resolved"
        assert ticket.custom_fields["remote_solution"] == "Replaced the fuser unit."
        mirrored = [c.body for c in s.scalars(select(Comment).where(
            Comment.ticket_id == ticket_id, Comment.source == "backend"))]
    assert len(mirrored) == 2
    assert any("A technician is on the way." in body for body in mirrored)
    assert any(body.startswith("[itop resolution]") and "fuser" in body for body in mirrored)
    assert not any("Still on fire." in body for body in mirrored)


async def test_our_own_resolution_text_is_not_brought_back(
    make_runtime: Callable[..., Runtime], itop: tuple[FakeITop, str], tmp_path: Path
) -> None:
    fake, url = itop
    rt = _runtime(make_runtime, url, tmp_path)
    ticket_id = _ingest(rt, mail()[0])
    await drain_until_quiet(rt)
    _set_status(rt, ticket_id, "resolved")
    await drain_until_quiet(rt)
    (rec,) = fake.requests()
    assert rec["solution"] == "Resolved via mailticket."
    fake.set_status(int(rec["id"]), "closed")
    report = await _poll(rt)
    assert report.comments == 0
    with rt.session_factory() as s:
        assert s.get_one(Ticket, ticket_id).status == "closed"


async def test_database_down_is_retried_not_dead(
    make_runtime: Callable[..., Runtime], itop: tuple[FakeITop, str], tmp_path: Path
) -> None:
    fake, url = itop
    rt = _runtime(make_runtime, url, tmp_path)
    _ingest(rt, mail()[0])
    fake.fail_next(Fault.SERVER_ERROR, times=3)
    report = await drain(rt)
    assert (report.retried, report.dead) == (1, 0)
    with rt.session_factory() as s:
        assert "iTop: An error occurred" in (items(s)[0].last_error or "")
    assert (await drain_until_quiet(rt)).dead == 0
    assert len(fake.requests()) == 1


async def test_existence_check_interval_zero_never_checks(
    make_runtime: Callable[..., Runtime], itop: tuple[FakeITop, str], tmp_path: Path
) -> None:
    fake, url = itop
    rt = _runtime(make_runtime, url, tmp_path, existence_check_interval=0)
    ticket_id = _ingest(rt, mail()[0])
    await drain_until_quiet(rt)
    (rec,) = fake.requests()
    fake.fail_next(Fault.DELETED, ticket=rec["id"])
    report = await _poll(rt)
    assert (report.checked, report.broken) == (0, 0)
    with rt.session_factory() as s:
        assert link_of(s, ticket_id, "itop").state == "linked"
