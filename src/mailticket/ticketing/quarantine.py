"""Quarantine: messages that could not be processed, kept with their raw bytes and reason.

The mailbox keeps flowing past them; `retry` runs one through the pipeline again once the
cause (a bug, a workflow, a database outage) is fixed.
"""

from __future__ import annotations

import hashlib
import traceback
from typing import TYPE_CHECKING, Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from mailticket.store.batch import add_with_id
from mailticket.store.db import new_row
from mailticket.store.models import QuarantineEntry, RawMessage

if TYPE_CHECKING:
    from mailticket.types import Outcome


class Reprocessor(Protocol):
    """What `retry` needs of the pipeline (named by shape, so this module, which the
    pipeline uses, does not import it back)."""

    session_factory: sessionmaker[Session]

    def process_in_session(
        self, session: Session, raw: bytes, source: str, *, raw_message: RawMessage | None = ...
    ) -> Outcome: ...


class QuarantineNotFound(LookupError):
    pass


def store_raw(session: Session, raw: bytes, source: str | None) -> RawMessage:
    row = new_row(
        RawMessage,
        sha256=hashlib.sha256(raw).hexdigest(), size=len(raw), raw=raw, source=source
    )
    add_with_id(session, row)
    return row


def describe(exc: BaseException) -> str:
    text = str(exc).strip() or exc.__class__.__name__
    return f"{exc.__class__.__name__}: {text}"[:2000]


def quarantine(
    session: Session,
    raw_message: RawMessage,
    *,
    source: str | None,
    reason: str,
    exc: BaseException | None = None,
    message_id: str | None = None,
) -> QuarantineEntry:
    """Hold a message; the same bytes failing again bump the existing entry, not a new one."""
    existing = session.scalar(
        select(QuarantineEntry)
        .join(RawMessage, RawMessage.id == QuarantineEntry.raw_message_id)
        .where(RawMessage.sha256 == raw_message.sha256, QuarantineEntry.status == "held")
        .limit(1)
    )
    tb = "".join(traceback.format_exception(exc)) if exc is not None else None
    if existing is not None:
        existing.attempts += 1
        existing.reason = reason
        existing.traceback = tb
        if raw_message.id != existing.raw_message_id:
            session.delete(raw_message)
        session.flush()
        return existing
    entry = QuarantineEntry(
        raw_message_id=raw_message.id,
        source=source,
        message_id=message_id,
        reason=reason,
        error_type=exc.__class__.__name__ if exc is not None else None,
        traceback=tb,
        status="held",
        attempts=1,
    )
    session.add(entry)
    session.flush()
    return entry


def quarantine_raw(
    session: Session, raw: bytes, source: str | None, reason: str, message_id: str | None = None
) -> QuarantineEntry:
    """For sources that reject a message before the pipeline sees it (e.g. too large)."""
    return quarantine(
        session, store_raw(session, raw, source), source=source, reason=reason,
        message_id=message_id,
    )


def retry(pipeline: Reprocessor, entry_id: int) -> Outcome:
    """Run a held message through the pipeline again; it is released when that works."""
    with pipeline.session_factory() as session:
        entry = session.get(QuarantineEntry, entry_id)
        if entry is None:
            raise QuarantineNotFound(f"no quarantine entry {entry_id}")
        raw_row = session.get_one(RawMessage, entry.raw_message_id)
        outcome = pipeline.process_in_session(
            session, raw_row.raw, entry.source or f"quarantine:{entry_id}", raw_message=raw_row
        )
        if outcome.action != "quarantined":
            entry.status = "released"
        session.commit()
        return outcome
