"""Ops writing beside a running worker (another process): a quarantine replay, an archive
import. On SQLite each takes its write turn up front instead of failing "database is locked"."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, event, func, select, text
from sqlalchemy.exc import OperationalError

from mailticket.runtime import Runtime
from mailticket.store.models import EmailLog, QuarantineEntry, RawMessage
from mailticket.ticketing import quarantine
from tests.mailfactory import make_email


def _worker_writes(other: Engine, refused: str) -> str:
    """What the worker in another process does meanwhile: commit a row of its own, at once
    ("stored"), or be refused because this process holds the write lock (`refused`)."""
    try:
        with other.begin() as c:
            c.execute(text(
                "INSERT INTO mailticket_raw_messages (sha256, size, raw, source)"
                " VALUES (:h, 1, :r, 'worker')"
            ), {"h": "0" * 64, "r": b"x"})
    except OperationalError:
        return refused
    return "stored"


def test_a_retry_survives_another_process_writing_meanwhile(
    make_runtime: Callable[..., Runtime], db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker stores mail while ops replay a held message. On SQLite the retry read
    first and asked for the write lock only at its first INSERT: a commit by another process
    in between made its snapshot stale and the retry failed ("database is locked", left
    held) however long the busy timeout. It now takes its write turn up front, so the other
    writer waits for it instead (here: gives up at once, having no timeout)."""
    rt = make_runtime()
    real = rt.classifier.classify

    def boom(email: Any) -> Any:
        raise RuntimeError("classifier exploded")

    monkeypatch.setattr(rt.classifier, "classify", boom)
    held = rt.pipeline.process(make_email(subject="Rückfrage", message_id="<held@x.example>"), "m1")
    assert held.action == "quarantined"
    monkeypatch.setattr(rt.classifier, "classify", real)
    with rt.session_factory() as session:
        entry_id = session.scalars(select(QuarantineEntry.id)).one()

    # Another process's connection: no busy wait, so it never blocks this thread.
    other = create_engine(db_url, connect_args={"timeout": 0} if db_url.startswith("sqlite") else {})
    others: list[str] = []

    def another_process_writes(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if others or not statement.lstrip().upper().startswith("INSERT"):
            return
        others.append(_worker_writes(other, "waited for the retry"))

    event.listen(rt.engine, "before_cursor_execute", another_process_writes)
    try:
        outcome = quarantine.retry(rt.pipeline, entry_id)
    finally:
        event.remove(rt.engine, "before_cursor_execute", another_process_writes)
        other.dispose()

    assert others, "the other writer never ran"
    assert outcome.action == "created", outcome.error
    with rt.session_factory() as session:
        assert session.get_one(QuarantineEntry, entry_id).status == "released"
        inbound = select(func.count()).select_from(EmailLog).where(EmailLog.direction == "in")
        assert session.scalar(inbound) == 1
        workers = session.scalar(
            select(func.count()).select_from(RawMessage).where(RawMessage.source == "worker")
        )
    assert workers == (1 if others == ["stored"] else 0)


def test_a_bulk_ingest_survives_another_process_writing_meanwhile(
    make_runtime: Callable[..., Runtime], db_url: str
) -> None:
    """`mailticket ingest` of an archive while the worker stores mail: on SQLite a batch
    that read first and wrote later failed "database is locked" when the worker committed
    in between, and the whole import stopped halfway. Each batch now takes its write turn
    up front."""
    rt = make_runtime()
    other = create_engine(db_url, connect_args={"timeout": 0} if db_url.startswith("sqlite") else {})
    others: list[str] = []

    def another_process_writes(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if not statement.lstrip().upper().startswith("INSERT INTO TTICKET_NUMBER_COUNTERS"):
            return
        others.append(_worker_writes(other, "waited for the batch"))

    mails = [(f"archive/{n}", make_email(subject=f"Altfall {n}", message_id=f"<old{n}@x.example>"))
             for n in range(6)]
    event.listen(rt.engine, "before_cursor_execute", another_process_writes)
    try:
        outcomes = list(rt.pipeline.ingest_many(mails, batch_size=2))
    finally:
        event.remove(rt.engine, "before_cursor_execute", another_process_writes)
        other.dispose()

    assert len(others) == 3, others  # once per batch
    assert [o.action for o in outcomes] == ["created"] * 6
    with rt.session_factory() as session:
        inbound = select(func.count()).select_from(EmailLog).where(EmailLog.direction == "in")
        assert session.scalar(inbound) == 6
        workers = session.scalar(
            select(func.count()).select_from(RawMessage).where(RawMessage.source == "worker")
        )
    assert workers == others.count("stored")
