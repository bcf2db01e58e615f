"""The shipped in-memory `fake` backend and the no-op `basic` backend through the pipeline."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from mailticket.backends import fake
from mailticket.backends.registry import registry_for
from mailticket.backends.sync import poll_backend
from mailticket.runtime import Runtime
from mailticket.store.models import Ticket
from tests.backends.helpers import (
    drain,
    drain_until_quiet,
    items,
    link_of,
    workflow_for,
    write_backends,
)
from tests.backends.mail import mail


async def test_fake_backend_round_trip(
    make_runtime: Callable[..., Runtime], tmp_path: Path
) -> None:
    store = fake.store(f"t-{tmp_path.name}")
    path = write_backends(tmp_path / "b.yaml", {"jira": {"kind": "fake", "store": f"t-{tmp_path.name}"}})
    rt = make_runtime(workflows_path=workflow_for(tmp_path, "jira"), backends_file=path)
    raw, mid = mail()
    ticket_id = rt.pipeline.process(raw, "t").ticket_id
    assert ticket_id is not None
    store.fail_next[:] = ["ratelimit"]
    assert (await drain(rt)).retried == 1
    with rt.session_factory() as s:
        assert "RateLimited" in (items(s)[0].last_error or "")
    store.fail_next[:] = ["ambiguous", "transient"]
    await drain_until_quiet(rt)
    assert len(store.tickets) == 1
    rt.pipeline.process(mail(body="b", reply_to=mid)[0], "t")
    store.fail_next[:] = ["ambiguous"]
    await drain_until_quiet(rt)
    (remote,) = store.tickets.values()
    assert len(remote.comments) == 1
    remote.status = "canceled"
    backend = registry_for(path).build("jira")
    try:
        report = await poll_backend(rt.session_factory, rt.settings, backend)
    finally:
        await backend.aclose()
    assert report.updated == 1
    with rt.session_factory() as s:
        assert s.get_one(Ticket, ticket_id).status == "closed"
        assert link_of(s, ticket_id, "jira").last_status_raw == "canceled"


async def test_basic_backend_links_without_a_remote_system(
    make_runtime: Callable[..., Runtime], tmp_path: Path
) -> None:
    path = write_backends(tmp_path / "b.yaml", {"local": {"kind": "basic"}})
    rt = make_runtime(workflows_path=workflow_for(tmp_path, "local"), backends_file=path)
    raw, mid = mail()
    ticket_id = rt.pipeline.process(raw, "t").ticket_id
    rt.pipeline.process(mail(body="b", reply_to=mid)[0], "t")
    report = await drain_until_quiet(rt)
    assert (report.done, report.dead) == (2, 0)
    with rt.session_factory() as s:
        assert ticket_id is not None
        assert link_of(s, ticket_id, "local").state == "linked"
