"""Zammad end to end against its fake: push, articles, tags lookup, triggers, polling."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from sqlalchemy import select

from mailticket.backends.registry import registry_for
from mailticket.backends.sync import poll_backend
from mailticket.backends.webhook_api import build_router
from mailticket.runtime import Runtime
from mailticket.store.models import Comment, Ticket
from tests.backends.fakes.asgi import AsgiServer
from tests.backends.fakes.faults import Fault
from tests.backends.fakes.zammad import FakeZammad
from tests.backends.helpers import (
    drain,
    drain_until_quiet,
    items,
    link_of,
    workflow_for,
    write_backends,
)
from tests.backends.mail import mail


@pytest.fixture
def zammad() -> Iterator[FakeZammad]:
    with FakeZammad() as server:
        yield server


def _runtime(make_runtime: Callable[..., Runtime], server: FakeZammad, tmp_path: Path,
             **extra: object) -> Runtime:
    path = write_backends(tmp_path / "b.yaml", {"zd": {
        "kind": "zammad", "base_url": server.url, "token": server.token,
        "webhook_secret": server.webhook_secret, "group": "Support", "timeout": 5, **extra,
    }})
    return make_runtime(workflows_path=workflow_for(tmp_path, "zd"), backends_file=path)


async def test_push_comments_attachments_and_outage(
    make_runtime: Callable[..., Runtime], zammad: FakeZammad, tmp_path: Path
) -> None:
    rt = _runtime(make_runtime, zammad, tmp_path)
    raw, mid = mail(attachment=("log.txt", "text/plain", b"line 1\n"))
    ticket_id = rt.pipeline.process(raw, "t").ticket_id
    assert ticket_id is not None
    zammad.fail_next(Fault.LOST_ANSWER, method="POST", path="/api/v1/tickets")  # created, answer lost
    await drain(rt)
    rt.pipeline.process(mail(body="second mail", reply_to=mid)[0], "t")
    zammad.fail_next(Fault.LOST_ANSWER, method="POST", path="/api/v1/ticket_articles")
    report = await drain_until_quiet(rt)
    assert report.dead == 0
    assert len(zammad.tickets) == 1
    t = next(iter(zammad.tickets.values()))
    assert t["group"] == "Support" and t["customer_id"] == 7  # found by e-mail
    arts = zammad.articles[t["id"]]
    assert [a["body"] for a in arts[1:]].count("Attachment: log.txt") == 1
    assert sum("second mail" in a["body"] for a in arts) == 1
    assert all(a["type"] == "note" for a in arts)  # never an outgoing email
    files = [f for a in arts for f in a["attachments"]]
    assert [(f["filename"], f["data"]) for f in files] == [("log.txt", b"line 1\n")]
    with rt.session_factory() as s:
        assert all(i.status == "done" for i in items(s))
        link = link_of(s, ticket_id, "zd")
        assert link.remote_key == t["number"]
        assert link.remote_url == f"{zammad.url}/#ticket/zoom/{t['id']}"


async def test_trigger_and_polling_bring_status_and_notes_back(
    make_runtime: Callable[..., Runtime], zammad: FakeZammad, tmp_path: Path
) -> None:
    rt = _runtime(make_runtime, zammad, tmp_path, status_map={"merged": "canceled"})
    raw, mid = mail()
    ticket_id = rt.pipeline.process(raw, "t").ticket_id
    rt.pipeline.process(mail(body="ours", reply_to=mid)[0], "t")
    await drain_until_quiet(rt)
    tid = next(iter(zammad.tickets))
    app = FastAPI()
    app.include_router(build_router(rt))
    with AsgiServer(app) as api:
        url = f"{api.url}/api/v1/webhooks/zd"
        zammad.set_state(tid, "pending close")
        note = zammad.add_agent_note(tid, "Waiting for the part.")
        resp = zammad.trigger(url, tid, article=note, delivery="z-1")
        assert resp.status_code == 200 and resp.json()["comments"] == 1
        assert zammad.trigger(url, tid, delivery="z-1").json()["status"] == "duplicate"
        assert zammad.trigger(url, tid, delivery="z-2", secret="wrong").status_code == 401
        # Our own article, echoed by a trigger: recognised by its message_id.
        ours = next(a for a in zammad.articles[tid] if "ours" in str(a.get("body")))
        assert zammad.trigger(url, tid, article=ours, delivery="z-3").json()["comments"] == 0
    with rt.session_factory() as s:
        assert s.get_one(Ticket, ticket_id).status == "pending"
        mirrored = s.scalars(select(Comment).where(Comment.source == "backend")).all()
        assert [c.is_internal for c in mirrored] == [True]
        assert "Waiting for the part." in mirrored[0].body

    zammad.set_state(tid, "merged")
    backend = registry_for(rt.settings.backends_file).build("zd")
    try:
        report = await poll_backend(rt.session_factory, rt.settings, backend)
        assert report.updated == 1 and report.comments == 0
        again = await poll_backend(rt.session_factory, rt.settings, backend)  # cursor kept: no changes
        assert again.updated == 0
    finally:
        await backend.aclose()
    with rt.session_factory() as s:
        ticket = s.get_one(Ticket, ticket_id)
        assert ticket.status == "closed"
        assert ticket.custom_fields["remote_resolution"] == "canceled"


async def test_bad_token_and_deleted_ticket(
    make_runtime: Callable[..., Runtime], zammad: FakeZammad, tmp_path: Path
) -> None:
    rt = _runtime(make_runtime, zammad, tmp_path, token="wrong")
    backend = registry_for(rt.settings.backends_file).build("zd")
    try:
        from mailticket.backends.errors import AuthError

        with pytest.raises(AuthError, match="Authentication failed"):
            await backend.test_connection()
    finally:
        await backend.aclose()

    second = tmp_path / "second"  # its own files, inside this test's temp folder
    second.mkdir()
    rt = _runtime(make_runtime, zammad, second)
    raw, mid = mail()
    ticket_id = rt.pipeline.process(raw, "t").ticket_id
    await drain(rt)
    zammad.tickets.clear()
    rt.pipeline.process(mail(body="hello", reply_to=mid)[0], "t")
    report = await drain_until_quiet(rt)
    assert report.dead == 1 and zammad.tickets == {}
    with rt.session_factory() as s:
        assert link_of(s, ticket_id, "zd").state == "broken"
