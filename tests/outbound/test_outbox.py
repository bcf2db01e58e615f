"""The durable outbox on both databases: idempotent enqueue, leases, backoff, dead items."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import String, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from mailticket.store import outbox
from mailticket.store.db import make_engine, make_session_factory
from mailticket.store.outbox import (
    OutboxError,
    OutboxItem,
    PermanentError,
    RetryPolicy,
    TransientError,
)
from mailticket.store.outbox_models import as_utc as outbox_models_as_utc

POLICY = RetryPolicy(
    max_attempts=3, base_delay=timedelta(seconds=30), max_delay=timedelta(minutes=5)
)


def _enqueue(session: Session, key: str, **kw: Any) -> OutboxItem:
    return outbox.enqueue(
        session,
        kind=kw.pop("kind", "smtp"),
        target=kw.pop("target", "smtp"),
        operation="send_mail",
        payload=kw.pop("payload", {"n": key}),
        idempotency_key=key,
        **kw,
    )


def _count(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(OutboxItem)) or 0


def test_retry_policy_is_exponential_and_capped() -> None:
    p = RetryPolicy(base_delay=timedelta(seconds=30), max_delay=timedelta(minutes=10), factor=2)
    assert [p.delay(n).total_seconds() for n in (1, 2, 3, 4, 5, 6)] == [30, 60, 120, 240, 480, 600]
    assert p.delay(50) == timedelta(minutes=10)
    jittered = RetryPolicy(base_delay=timedelta(seconds=100), jitter=0.5)
    assert all(100 <= jittered.delay(1).total_seconds() <= 150 for _ in range(50))


def test_enqueue_is_idempotent(session_factory: sessionmaker[Session]) -> None:
    with session_factory.begin() as s:
        first = _enqueue(s, "k1", payload={"v": 1})
        again = _enqueue(s, "k1", payload={"v": 2})
        assert again.id == first.id
    with session_factory.begin() as s:
        third = _enqueue(s, "k1", payload={"v": 3})
        assert third.id == first.id
        assert third.payload == {"v": 1}
        assert third.status == "pending" and third.attempts == 0
        assert _count(s) == 1
    with session_factory.begin() as s, pytest.raises(OutboxError):
        _enqueue(s, "")


def test_enqueue_rolls_back_with_its_transaction(session_factory: sessionmaker[Session]) -> None:
    with session_factory() as s:
        s.begin()
        _enqueue(s, "gone")
        s.rollback()
    with session_factory() as s:
        assert _count(s) == 0


def test_claim_backoff_and_lease(session_factory: sessionmaker[Session]) -> None:
    t0 = datetime.now(UTC)
    with session_factory.begin() as s:
        _enqueue(s, "a")
        _enqueue(s, "later", not_before=t0 + timedelta(hours=1))
        _enqueue(s, "other-kind", kind="backend", target="jira")
    with session_factory.begin() as s:
        got = outbox.claim(s, kind="smtp", now=t0 + timedelta(seconds=1))
        assert [i.idempotency_key for i in got] == ["a"]
        assert got[0].status == "in_flight" and got[0].attempts == 1
        # in flight and leased: nobody else gets it
        assert outbox.claim(s, kind="smtp", now=t0 + timedelta(seconds=2)) == []
        assert outbox.mark_failed(s, got[0], TransientError("down"), POLICY, now=t0) == "pending"
        assert got[0].last_error == "TransientError: down"
    with session_factory.begin() as s:
        # backoff of 30 s after the first attempt
        assert outbox.claim(s, kind="smtp", now=t0 + timedelta(seconds=29)) == []
        got = outbox.claim(s, kind="smtp", now=t0 + timedelta(seconds=31))
        assert [i.attempts for i in got] == [2]
        # the worker died holding the lease: after 5 minutes the item is due again
        assert outbox.claim(s, kind="smtp", now=t0 + timedelta(minutes=5)) == []
        again = outbox.claim(s, kind="smtp", now=t0 + timedelta(minutes=6))
        assert [i.attempts for i in again] == [3]
        assert outbox.mark_failed(s, again[0], TransientError("still"), POLICY) == "dead"
        assert "gave up after 3 attempts" in (again[0].last_error or "")
    with session_factory.begin() as s:
        backend = outbox.claim(s, kind="backend", target="jira")
        assert [i.idempotency_key for i in backend] == ["other-kind"]
        assert outbox.claim(s, kind="backend", target="zammad") == []


def test_retry_after_is_honoured(session_factory: sessionmaker[Session]) -> None:
    with session_factory.begin() as s:
        _enqueue(s, "a")
        t0 = datetime.now(UTC)
        [item] = outbox.claim(s, kind="smtp", now=t0)
        outbox.mark_failed(s, item, TransientError("slow down", retry_after=600), POLICY, now=t0)
    with session_factory.begin() as s:
        assert outbox.claim(s, kind="smtp", now=t0 + timedelta(seconds=599)) == []
        assert len(outbox.claim(s, kind="smtp", now=t0 + timedelta(seconds=601))) == 1


def test_permanent_error_is_dead_until_requeued(session_factory: sessionmaker[Session]) -> None:
    with session_factory.begin() as s:
        item = _enqueue(s, "a")
        [claimed] = outbox.claim(s, kind="smtp")
        assert outbox.mark_failed(s, claimed, PermanentError("550 no such user"), POLICY) == "dead"
        item_id = item.id
    with session_factory.begin() as s:
        assert outbox.claim(s, kind="smtp", now=datetime.now(UTC) + timedelta(days=9)) == []
        assert [i.id for i in outbox.list_items(s, status="dead", kind="smtp")] == [item_id]
        assert outbox.list_items(s, status="dead", kind="backend") == []
        with pytest.raises(OutboxError, match="unknown status"):
            outbox.list_items(s, status="bogus")
        requeued = outbox.requeue(s, item_id)
        assert requeued.status == "pending" and requeued.attempts == 0
    with session_factory.begin() as s:
        [claimed] = outbox.claim(s, kind="smtp")
        outbox.mark_done(s, claimed, {"ok": True})
    with session_factory.begin() as s:
        done = s.get_one(OutboxItem, item_id)
        assert done.status == "done" and done.result == {"ok": True} and done.done_at is not None
        with pytest.raises(OutboxError, match="is done"):
            outbox.requeue(s, item_id)
        with pytest.raises(OutboxError, match="no outbox item"):
            outbox.requeue(s, 999_999)


async def test_drain_counts_each_outcome(session_factory: sessionmaker[Session]) -> None:
    with session_factory.begin() as s:
        for key in ("ok", "transient", "permanent", "bug"):
            _enqueue(s, key, payload={"do": key})
    calls: list[str] = []

    async def handler(item: OutboxItem) -> dict[str, Any] | None:
        calls.append(item.payload["do"])
        match item.payload["do"]:
            case "transient":
                raise TransientError("421 try later")
            case "permanent":
                raise PermanentError("550 rejected")
            case "bug":
                raise KeyError("unexpected")
        return {"sent": True}

    report = await outbox.drain(
        session_factory, kind="smtp", handler=handler, policy=POLICY, batch=2
    )
    assert (report.done, report.retried, report.dead) == (1, 2, 1)
    assert sorted(calls) == ["bug", "ok", "permanent", "transient"]
    # nothing is due until the backoff passes
    again = await outbox.drain(session_factory, kind="smtp", handler=handler, policy=POLICY)
    assert again.total == 0 and len(calls) == 4
    with session_factory() as s:
        by_key = {i.idempotency_key: i for i in outbox.list_items(s)}
    assert by_key["ok"].status == "done" and by_key["ok"].result == {"sent": True}
    assert by_key["bug"].status == "pending" and "KeyError" in (by_key["bug"].last_error or "")
    assert by_key["permanent"].status == "dead"


async def test_a_drain_records_done_items_as_mark_done_does(
    session_factory: sessionmaker[Session],
) -> None:
    """The drain writes performed items without loading them (mark_done_many): the rows are
    those mark_done writes, a retried item's last error cleared, a None result kept None."""
    results: dict[str, dict[str, Any] | None] = {
        "dict": {"smtp": "h:25", "reply": "250 ok", "refused": {"x@y": "550 no"}, "n": [1, 2]},
        "none": None,
        "retried": {"sent": True},
    }
    with session_factory.begin() as s:
        for key in results:
            _enqueue(s, f"drain-{key}")
            _enqueue(s, f"orm-{key}")
    with session_factory.begin() as s:  # a failed attempt first: a last error to clear
        for item in outbox.claim(s, kind="smtp", limit=10):
            if item.idempotency_key.endswith("retried"):
                outbox.mark_failed(s, item, TransientError("421"), POLICY, now=item.updated_at)
                item.next_attempt_at = item.updated_at
            else:
                outbox.release(s, [item])

    async def handler(item: OutboxItem) -> dict[str, Any] | None:
        return results[item.idempotency_key.removeprefix("drain-")]

    # The drain takes the drain-* items; the orm-* ones are done by mark_done directly.
    with session_factory.begin() as s:
        s.execute(
            update(OutboxItem)
            .where(OutboxItem.idempotency_key.like("orm-%"))
            .values(kind="other")
        )
    report = await outbox.drain(session_factory, kind="smtp", handler=handler, policy=POLICY)
    assert report.done == 3
    with session_factory.begin() as s:
        for item in outbox.claim(s, kind="other", limit=10):
            outbox.mark_done(s, item, results[item.idempotency_key.removeprefix("orm-")])
    columns = ("status", "result", "last_error", "attempts")
    with session_factory() as s:
        rows = {i.idempotency_key: i for i in outbox.list_items(s)}
        # The JSON as the database holds it (a JSON null and SQL NULL differ there).
        stored = dict(
            s.execute(
                select(OutboxItem.idempotency_key, func.coalesce(
                    func.cast(OutboxItem.result, String()), "SQL NULL"
                ))
            ).all()
        )
    for key in results:
        drained, direct = rows[f"drain-{key}"], rows[f"orm-{key}"]
        assert [getattr(drained, c) for c in columns] == [getattr(direct, c) for c in columns]
        assert stored[f"drain-{key}"] == stored[f"orm-{key}"]
        assert drained.done_at is not None and drained.done_at == drained.updated_at
    assert rows["drain-retried"].last_error is None and rows["drain-none"].result is None


def test_skip_locked_claimers_never_share_a_row(pg_url: str) -> None:
    engine = make_engine(pg_url)
    factory = make_session_factory(engine)
    try:
        with factory.begin() as s:
            for n in range(200):
                _enqueue(s, f"item-{n}")
        # One claimer holds its claim open while another claims: the second skips the
        # locked rows instead of waiting or taking them.
        holder = factory()
        holder.begin()
        held = {i.id for i in outbox.claim(holder, kind="smtp", limit=50)}
        with factory.begin() as s:
            other = {i.id for i in outbox.claim(s, kind="smtp", limit=500)}
        holder.commit()
        holder.close()
        assert len(held) == 50 and len(other) == 150 and not held & other

        with factory.begin() as s:
            s.execute(
                update(OutboxItem).values(
                    status="pending", attempts=0, next_attempt_at=datetime.now(UTC)
                )
            )
        seen: list[list[int]] = []
        lock = threading.Lock()
        start = threading.Barrier(8)

        def worker() -> None:
            mine: list[int] = []
            start.wait()
            while True:
                with factory.begin() as s:
                    got = outbox.claim(s, kind="smtp", limit=7)
                    mine.extend(i.id for i in got)
                if not got:
                    break
            with lock:
                seen.append(mine)

        threads = [threading.Thread(target=worker) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        flat = [i for mine in seen for i in mine]
        assert len(seen) == 8
        assert len(flat) == 200 and len(set(flat)) == 200
    finally:
        engine.dispose()


async def test_a_drain_that_stops_hands_back_what_it_did_not_try(
    session_factory: sessionmaker[Session],
) -> None:
    import asyncio

    with session_factory.begin() as s:
        for n in range(10):
            _enqueue(s, f"k{n}", payload={"n": n})
    started: list[int] = []
    blocked = asyncio.Event()

    async def handler(item: OutboxItem) -> dict[str, Any] | None:
        started.append(item.payload["n"])
        if item.payload["n"] == 3:
            blocked.set()
            await asyncio.sleep(3600)  # e.g. a relay that hangs while the worker stops
        return {"sent": item.payload["n"]}

    task = asyncio.create_task(
        outbox.drain(session_factory, kind="smtp", handler=handler, policy=POLICY, batch=10)
    )
    await asyncio.wait_for(blocked.wait(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    with session_factory() as s:
        by_n = {i.payload["n"]: i for i in outbox.list_items(s)}
    assert started == [0, 1, 2, 3]
    # What was performed is recorded, even though the drain was cancelled.
    assert all(by_n[n].status == "done" for n in (0, 1, 2))
    # The one in the middle of being performed keeps its lease (it may have gone out).
    assert by_n[3].status == "in_flight"
    # The rest are due again at once, their claim not counted as an attempt.
    now = datetime.now(UTC)
    for n in range(4, 10):
        assert (by_n[n].status, by_n[n].attempts) == ("pending", 0)
        assert outbox_models_as_utc(by_n[n].next_attempt_at) <= now


async def test_a_failed_bookkeeping_write_is_retried_not_sent_again(
    session_factory: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    from sqlalchemy.exc import OperationalError

    from mailticket.store.outbox import draining as drain_module

    with session_factory.begin() as s:
        for n in range(5):
            _enqueue(s, f"k{n}", payload={"n": n})
    real = drain_module._record_group
    failures = iter([True, True])  # the first two recordings meet a locked database

    def flaky(session: Session, group: Any, policy: RetryPolicy) -> list[str]:
        if next(failures, False):
            raise OperationalError("UPDATE mailticket_outbox", {}, Exception("database is locked"))
        return real(session, group, policy)

    monkeypatch.setattr(drain_module, "_record_group", flaky)
    sent: list[int] = []

    async def handler(item: OutboxItem) -> dict[str, Any] | None:
        sent.append(item.payload["n"])
        return {"ok": True}

    report = await outbox.drain(session_factory, kind="smtp", handler=handler, policy=POLICY)
    assert report.done == 5 and sorted(sent) == [0, 1, 2, 3, 4]
    with session_factory() as s:
        assert {i.status for i in outbox.list_items(s)} == {"done"}
    # Long after any lease: nothing is due, nothing goes out a second time.
    later = await outbox.drain(session_factory, kind="smtp", handler=handler, policy=POLICY)
    assert later.total == 0 and len(sent) == 5
    with session_factory.begin() as s:
        assert outbox.claim(s, kind="smtp", now=datetime.now(UTC) + timedelta(hours=1)) == []


def test_prune_deletes_delivered_items_after_the_retention(
    session_factory: sessionmaker[Session],
) -> None:
    t0 = datetime.now(UTC)
    with session_factory.begin() as s:
        for key in ("old-done", "new-done", "old-dead", "pending"):
            _enqueue(s, key)
        for item in outbox.claim(s, kind="smtp", limit=10):
            if item.idempotency_key.endswith("done"):
                outbox.mark_done(s, item)
            elif item.idempotency_key == "old-dead":
                outbox.mark_failed(s, item, PermanentError("550"), POLICY)
            else:
                outbox.release(s, [item])
        s.execute(
            update(OutboxItem)
            .where(OutboxItem.idempotency_key.like("old-%"))
            .values(done_at=t0 - timedelta(days=40), updated_at=t0 - timedelta(days=40))
        )
    with session_factory.begin() as s:
        assert outbox.prune(s, before=t0 - timedelta(days=30)) == 1
    with session_factory() as s:
        assert sorted(i.idempotency_key for i in outbox.list_items(s)) == [
            "new-done", "old-dead", "pending"
        ]
