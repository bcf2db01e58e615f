"""The same stories against every backend's fake (issue 13, "What a real iTop showed").

Each story runs the whole path: mail -> pipeline -> outbox -> backend -> fake vendor over
HTTP, and back by polling where the vendor is polled:
- a lost answer (applied, answer dropped) on a create and on a comment makes no duplicate;
- the ticket number is where the vendor's users see it, the requester is the vendor's person;
- a customer's reply after resolution reopens the remote ticket too, and a poll in between
  does not undo it;
- a "not found" from a write, while the ticket exists, leaves the link alone;
- a deletion is found by the poll, without a write;
- `backends refresh` reads reference data, and fails on wrong credentials (ours, or a
  password the vendor no longer takes).

Faults come from each fake's `fail_next` (fakes/faults.py), and every fake checks every
request and answer against its vendor's document: a story that breaks the contract fails.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from mailticket.backends.actions import queue_ticket_update
from mailticket.backends.registry import registry_for
from mailticket.backends.sync import SyncReport, poll_backend
from mailticket.cli import main
from mailticket.runtime import Runtime
from mailticket.store.models import Comment, Ticket
from tests.backends.helpers import drain, drain_until_quiet, items, link_of, write_backends
from tests.backends.mail import mail
from tests.backends.vendors import VENDORS, Vendor

NAME = "crm"
WORKFLOW = f"""\
workflows:
  - name: Support mail mirrored
    classification_trigger: any
    workflow_steps:
      - action: create_ticket
      - action: push_to_backend
        params:
          backend: {NAME}
"""


@pytest.fixture(params=VENDORS, ids=lambda cls: cls.kind)
def vendor(request: pytest.FixtureRequest) -> Iterator[Vendor]:
    with request.param() as v:
        yield v


@pytest.fixture
def rt(make_runtime: Callable[..., Runtime], vendor: Vendor, tmp_path: Path) -> Runtime:
    flows = tmp_path / "mirror.yaml"
    flows.write_text(WORKFLOW)
    path = write_backends(tmp_path / "backends.yaml", {NAME: vendor.instance()})
    return make_runtime(workflows_path=flows, backends_file=path)


def _ingest(rt: Runtime, raw: bytes) -> int:
    outcome = rt.pipeline.process(raw, "test")
    assert outcome.ticket_id is not None, outcome
    return outcome.ticket_id


async def _poll(rt: Runtime) -> SyncReport:
    backend = registry_for(rt.settings.backends_file).build(NAME)
    try:
        return await poll_backend(rt.session_factory, rt.settings, backend)
    finally:
        await backend.aclose()


def _status(rt: Runtime, ticket_id: int) -> str:
    with rt.session_factory() as s:
        return s.get_one(Ticket, ticket_id).status


async def test_lost_answers_make_no_duplicates(rt: Runtime, vendor: Vendor) -> None:
    raw, mid = mail()
    ticket_id = _ingest(rt, raw)
    vendor.lose_answer("create")
    assert (await drain(rt)).done == 0  # applied remotely, but we could not tell
    assert len(vendor.tickets()) == 1
    assert (await drain_until_quiet(rt)).dead == 0
    (rid,) = vendor.tickets()

    _ingest(rt, mail(body="The second words.", reply_to=mid)[0])
    vendor.lose_answer("comment")
    assert (await drain(rt)).done == 0
    assert (await drain_until_quiet(rt)).dead == 0
    assert vendor.tickets() == [rid]
    assert sum("The second words." in text for text in vendor.comments(rid)) == 1
    with rt.session_factory() as s:
        assert [i.status for i in items(s)] == ["done", "done"]
        assert link_of(s, ticket_id, NAME).remote_id == rid


async def test_ticket_number_and_requester_are_the_vendors(rt: Runtime, vendor: Vendor) -> None:
    ticket_id = _ingest(rt, mail()[0])
    await drain_until_quiet(rt)
    (rid,) = vendor.tickets()
    with rt.session_factory() as s:
        number = s.get_one(Ticket, ticket_id).ticket_number
    assert number in vendor.visible_text(rid)
    assert vendor.requester_of(rid) == vendor.known_requester


async def _resolve(rt: Runtime, vendor: Vendor, ticket_id: int, rid: str) -> None:
    if vendor.pollable:
        vendor.resolve(rid)  # an agent resolves it in the vendor's UI
        await _poll(rt)
    else:
        with rt.session_factory() as s, s.begin():  # what PATCH status=resolved does
            ticket = s.get_one(Ticket, ticket_id)
            ticket.status = "resolved"
            queue_ticket_update(s, ticket, status="resolved")
        await drain_until_quiet(rt)
    # Vendors without a "resolved" (Zammad) close instead.
    assert _status(rt, ticket_id) in ("resolved", "closed") and vendor.is_resolved(rid)


async def test_reopen_by_a_reply_reaches_the_backend(rt: Runtime, vendor: Vendor) -> None:
    raw, mid = mail()
    ticket_id = _ingest(rt, raw)
    await drain_until_quiet(rt)
    (rid,) = vendor.tickets()
    await _resolve(rt, vendor, ticket_id, rid)

    _ingest(rt, mail(body="It is broken again.", reply_to=mid)[0])
    assert _status(rt, ticket_id) == "open"
    with rt.session_factory() as s:
        waiting = items(s, "pending")
        # The reopen goes out first, then the comment.
        assert [i.operation for i in waiting] == ["patch_ticket", "create_comment"]
        assert waiting[0].payload["patch"]["status"] == "open"
    if vendor.pollable:
        report = await _poll(rt)  # the remote still says resolved: not applied
        assert report.kept_local >= 1 and _status(rt, ticket_id) == "open"
    assert (await drain_until_quiet(rt)).dead == 0
    assert vendor.is_open(rid)
    assert any("It is broken again." in text for text in vendor.comments(rid))
    if vendor.pollable:
        await _poll(rt)
        assert _status(rt, ticket_id) == "open"

    # And once more: a second reopen is not mistaken for a replay of the first.
    await _resolve(rt, vendor, ticket_id, rid)
    _ingest(rt, mail(body="Broken a third time.", reply_to=mid)[0])
    assert (await drain_until_quiet(rt)).dead == 0
    assert vendor.is_open(rid) and _status(rt, ticket_id) == "open"
    with rt.session_factory() as s:
        assert {i.status for i in items(s)} == {"done"}
        assert [i.operation for i in items(s)].count("patch_ticket") == 2
        # Our own comments never came back as an agent's comment.
        mirrored = s.scalars(select(Comment).where(Comment.ticket_id == ticket_id,
                                                   Comment.source == "backend")).all()
        assert not any("broken" in c.body.lower() for c in mirrored)


async def test_not_found_from_a_write_keeps_a_live_link(rt: Runtime, vendor: Vendor) -> None:
    raw, mid = mail()
    ticket_id = _ingest(rt, raw)
    await drain_until_quiet(rt)
    (rid,) = vendor.tickets()
    vendor.not_found_on_next_comment(rid)
    _ingest(rt, mail(body="Any news?", reply_to=mid)[0])
    report = await drain_until_quiet(rt)
    assert report.dead == 1
    with rt.session_factory() as s:
        link = link_of(s, ticket_id, NAME)
        assert link.state == "linked"
        error = items(s, "dead")[0].last_error or ""
        assert "link kept" in error and "marked broken" not in error
    assert vendor.tickets() == [rid]


async def test_deletion_is_found_by_the_poll(rt: Runtime, vendor: Vendor) -> None:
    if not vendor.pollable:
        pytest.skip(f"{vendor.kind} is not polled: it cannot be asked about its tickets")
    ticket_id = _ingest(rt, mail()[0])
    await drain_until_quiet(rt)
    (rid,) = vendor.tickets()
    assert (await _poll(rt)).checked == 1  # the first poll checks at once
    vendor.delete(rid)
    with rt.session_factory() as s:
        from mailticket.backends.models import SyncCursor

        s.get_one(SyncCursor, NAME).checked_at = None  # the interval has passed
        s.commit()
    report = await _poll(rt)
    assert (report.checked, report.broken) == (1, 1)
    with rt.session_factory() as s:
        link = link_of(s, ticket_id, NAME)
        assert link.state == "broken" and "deleted remotely" in (link.broken_reason or "")
        assert len(items(s)) == 1  # found without any write
    assert (await _poll(rt)).checked == 0  # not again before the interval


def test_refresh_reads_reference_data_and_refuses_bad_credentials(
    vendor: Vendor, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = write_backends(tmp_path / "b.yaml", {
        "good": vendor.instance(), "bad": vendor.instance(**vendor.bad_credentials())})
    monkeypatch.setenv("BACKENDS_FILE", str(path))
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'unused.db'}")
    monkeypatch.chdir(tmp_path)  # no stray .env
    assert main(["backends", "refresh", "bad"]) == 1  # wrong in our configuration
    assert "bad: authentication failed" in capsys.readouterr().err
    vendor.refuse_password()  # changed at the vendor's end: its own refusal
    assert main(["backends", "refresh", "good"]) == 1
    assert "good: authentication failed" in capsys.readouterr().err
    assert main(["backends", "refresh", "good"]) == 0
    out = capsys.readouterr().out
    if vendor.reference_kinds:
        assert "good: refreshed" in out
        for kind in vendor.reference_kinds:
            assert f"  {kind}: " in out
    else:
        assert "credentials ok" in out
