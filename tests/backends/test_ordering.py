"""Operations on one remote ticket are delivered in the order they were made (issue 13, 8).

After an outage the retried items fall due in jittered order; a later comment must still
wait for an earlier one, without using up its attempts while it waits.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from sqlalchemy import update

from mailticket.backends import fake
from mailticket.runtime import Runtime
from mailticket.store.outbox_models import OutboxItem, utcnow
from tests.backends.helpers import drain, drain_until_quiet, items, workflow_for, write_backends
from tests.backends.mail import mail


async def test_a_retried_comment_is_not_overtaken(
    make_runtime: Callable[..., Runtime], tmp_path: Path
) -> None:
    store = fake.store(f"order-{tmp_path.name}")
    path = write_backends(tmp_path / "b.yaml", {"jira": {"kind": "fake",
                                                         "store": f"order-{tmp_path.name}"}})
    rt = make_runtime(workflows_path=workflow_for(tmp_path, "jira"), backends_file=path)
    raw, mid = mail()
    rt.pipeline.process(raw, "t")
    await drain(rt)
    for n in (1, 2, 3):
        rt.pipeline.process(mail(body=f"reply {n}", reply_to=mid)[0], "t")

    store.fail_next[:] = ["transient"]  # the first reply meets the outage
    report = await drain(rt)
    assert (report.done, report.retried) == (0, 3)  # 2 and 3 wait behind 1
    with rt.session_factory() as s:
        first, second, third = items(s)[1:]
        assert "Transient" in (first.last_error or "")
        assert "waiting for operation" in (second.last_error or "")
        assert (first.attempts, second.attempts, third.attempts) == (1, 0, 0)
        # Jitter: the first reply's retry falls due after the others.
        s.execute(update(OutboxItem).where(OutboxItem.id == first.id)
                  .values(next_attempt_at=utcnow() + timedelta(hours=1)))
        s.execute(update(OutboxItem).where(OutboxItem.id.in_([second.id, third.id]))
                  .values(next_attempt_at=utcnow() - timedelta(seconds=1)))
        s.commit()
    report = await drain(rt, due=False)
    assert (report.done, report.retried) == (0, 2)
    (remote,) = store.tickets.values()
    assert remote.comments == []

    await drain_until_quiet(rt)
    assert [c.text.splitlines()[-1].strip() for c in remote.comments] == [
        "reply 1", "reply 2", "reply 3"]
    with rt.session_factory() as s:
        assert [i.attempts for i in items(s)[1:]] == [2, 1, 1]
        assert {i.status for i in items(s)} == {"done"}


async def test_a_dead_operation_does_not_hold_the_queue(
    make_runtime: Callable[..., Runtime], tmp_path: Path
) -> None:
    store = fake.store(f"dead-{tmp_path.name}")
    path = write_backends(tmp_path / "b.yaml", {"jira": {"kind": "fake",
                                                         "store": f"dead-{tmp_path.name}"}})
    rt = make_runtime(workflows_path=workflow_for(tmp_path, "jira"), backends_file=path)
    raw, mid = mail()
    rt.pipeline.process(raw, "t")
    await drain(rt)
    rt.pipeline.process(mail(body="first", reply_to=mid)[0], "t")
    rt.pipeline.process(mail(body="second", reply_to=mid)[0], "t")
    with rt.session_factory() as s:
        s.execute(update(OutboxItem).where(OutboxItem.id == items(s)[1].id)
                  .values(status="dead", last_error="operator gave up on it"))
        s.commit()
    await drain_until_quiet(rt)
    (remote,) = store.tickets.values()
    assert [c.text.splitlines()[-1].strip() for c in remote.comments] == ["second"]
