"""Helpers for the live-source tests: test messages, a stand-in handler, row counts."""

from __future__ import annotations

import email
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, event, func, select
from sqlalchemy.orm import Session

from mailticket.live.models import ImapLedgerEntry
from mailticket.store.batch import open_batch
from mailticket.store.models import EmailLog, QuarantineEntry
from mailticket.ticketing import quarantine
from mailticket.types import Outcome
from tests.mailfactory import make_email


@contextmanager
def commits_held(engine: Engine, seconds: float, times: list[float] | None = None) -> Iterator[None]:
    """Every commit on `engine` is held `seconds` before it reaches the database (a busy
    disk, a slow PostgreSQL); `times` gets each commit's monotonic time."""

    def hold(conn: Any) -> None:
        time.sleep(seconds)
        if times is not None:
            times.append(time.monotonic())

    event.listen(engine, "commit", hold)
    try:
        yield
    finally:
        event.remove(engine, "commit", hold)


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, as a service manager stops the worker; a kill only if it hangs."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def message(subject: str = "Help please", **kw: str) -> bytes:
    return make_email(subject=subject, message_id=f"<{uuid.uuid4().hex}@client.example>", **kw)


class FakeHandler:
    """Stands in for the pipeline in mechanics tests: logs each Message-ID once, reports a
    re-delivery as duplicate, quarantines subjects containing POISON (raised in a savepoint,
    like the pipeline's boundary does)."""

    def __init__(self) -> None:
        self.calls = 0

    def process_in_session(self, session: Session, raw: bytes, source: str) -> Outcome:
        self.calls += 1
        msg = email.message_from_bytes(raw)
        message_id = str(msg["Message-ID"]).strip()
        if session.scalar(select(EmailLog.id).where(EmailLog.email_message_id == message_id)):
            return Outcome(source=source, message_id=message_id, action="duplicate")
        try:
            with session.begin_nested():
                if "POISON" in str(msg["Subject"]):
                    raise ValueError("poison message")
                with open_batch(session) as work:
                    row = quarantine.store_raw(work, raw, source)
                session.add(
                    EmailLog(
                        email_message_id=message_id, email_subject=str(msg["Subject"]),
                        email_from="customer@example.com", direction="in", action="logged",
                        raw_message_id=row.id,
                    )
                )
                session.flush()
        except ValueError as exc:
            entry = quarantine.quarantine_raw(session, raw, source, f"ValueError: {exc}", message_id)
            return Outcome(source=source, message_id=entry.message_id, action="quarantined")
        return Outcome(source=source, message_id=message_id, action="logged")

    def prepare(self, items: Sequence[tuple[bytes, str]]) -> list[object]:
        return [None for _ in items]  # everything is done in the transaction

    def process_batch(
        self,
        session: Session,
        items: Sequence[tuple[bytes, str]],
        *,
        prepared: Sequence[Any] | None = None,
    ) -> list[Outcome]:
        return [self.process_in_session(session, raw, source) for raw, source in items]


class BatchRecorder(FakeHandler):
    """FakeHandler that records each batch's message sizes, and whether a batch was
    prepared while one of more than `big` bytes was being stored (which it makes slow, so
    that a fetch running ahead would be seen)."""

    def __init__(self, big: int) -> None:
        super().__init__()
        self.big = big
        self.batches: list[list[int]] = []
        self.storing_big = False
        self.prepared_while_big = 0

    def prepare(self, items: Sequence[tuple[bytes, str]]) -> list[object]:
        if self.storing_big:
            self.prepared_while_big += 1
        return super().prepare(items)

    def process_batch(
        self,
        session: Session,
        items: Sequence[tuple[bytes, str]],
        *,
        prepared: Sequence[Any] | None = None,
    ) -> list[Outcome]:
        sizes = [len(raw) for raw, _ in items]
        self.batches.append(sizes)
        self.storing_big = sum(sizes) > self.big
        try:
            if self.storing_big:
                time.sleep(0.5)
            return super().process_batch(session, items, prepared=prepared)
        finally:
            self.storing_big = False


def count(session_factory: Any, model: type, *where: object) -> int:
    with session_factory() as s:
        return int(s.scalar(select(func.count()).select_from(model).where(*where)) or 0)


def counts(session_factory: Any) -> dict[str, int]:
    return {
        "email_log": count(session_factory, EmailLog),
        "distinct": _distinct(session_factory),
        "quarantine": count(session_factory, QuarantineEntry),
        "ledger": count(session_factory, ImapLedgerEntry),
        "pending": count(session_factory, ImapLedgerEntry, ImapLedgerEntry.server_done.is_(False)),
    }


def _distinct(session_factory: Any) -> int:
    with session_factory() as s:
        return int(s.scalar(select(func.count(func.distinct(EmailLog.email_message_id)))) or 0)
