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

from mailticket.store.batch import Batch, open_batch
from mailticket.store.db import new_row
from mailticket.store.gate import engine_of, write_gate
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


class QuarantineNotRetryable(ValueError):
    """The entry holds less than the message: running it again would lose the rest."""


# How the reason of an entry holding only the header block of a message too large to take
# whole begins (the Maildir, IMAP and LMTP workers and `ingest` write it).
TOO_LARGE = "too large: "


def too_large_reason(size: int, where: str = "") -> str:
    return f"{TOO_LARGE}{size} bytes{where}"


def store_raw(
    work: Batch, raw: bytes, source: str | None, *, sha256: str | None = None
) -> RawMessage:
    """The bytes as received; `sha256`: their digest, when it was computed already."""
    return work.add(
        new_row(
            RawMessage,
            sha256=sha256 or hashlib.sha256(raw).hexdigest(), size=len(raw), raw=raw,
            source=source,
        )
    )


def describe(exc: BaseException) -> str:
    text = str(exc).strip() or exc.__class__.__name__
    return f"{exc.__class__.__name__}: {text}"[:2000]


def quarantine(
    work: Batch,
    raw_message: RawMessage,
    *,
    source: str | None,
    reason: str,
    exc: BaseException | None = None,
    message_id: str | None = None,
) -> QuarantineEntry:
    """Hold a message; the same bytes failing again bump the existing entry, not a new one."""
    existing = work.held_quarantine(raw_message.sha256)
    tb = "".join(traceback.format_exception(exc)) if exc is not None else None
    if existing is not None:
        existing.attempts += 1
        existing.reason = reason
        existing.traceback = tb
        if raw_message.id != existing.raw_message_id:
            work.discard(raw_message)
        return existing
    entry = work.add(
        new_row(
            QuarantineEntry,
            raw_message_id=raw_message.id,
            source=source,
            message_id=message_id,
            reason=reason,
            error_type=exc.__class__.__name__ if exc is not None else None,
            traceback=tb,
            status="held",
            attempts=1,
        )
    )
    work.note_held(entry, raw_message.sha256)
    return entry


def quarantine_raw(
    session: Session, raw: bytes, source: str | None, reason: str, message_id: str | None = None
) -> QuarantineEntry:
    """For sources that reject a message before the pipeline sees it (e.g. too large):
    written in the caller's transaction, in a unit of work of its own."""
    with open_batch(session) as work:
        return quarantine(
            work, store_raw(work, raw, source), source=source, reason=reason,
            message_id=message_id,
        )


def quarantine_refused(
    session: Session, headers: bytes, source: str, reason: str, message_id: str | None
) -> QuarantineEntry:
    """The headers of a message a receiver refused as too large (552), in the caller's
    transaction.

    A sender that sends the same message again (same Message-ID: by hand, or an MTA that
    treats the 552 as temporary) bumps the entry still held for it instead of adding one,
    though the headers differ (each attempt has Received lines of its own, so the bytes'
    digest does not match): staff see the message once, with how many times it came. A new
    Message-ID is a new message and gets an entry of its own; without one, identical headers
    are still one entry (`quarantine`)."""
    if message_id is not None:
        existing = session.scalars(
            select(QuarantineEntry)
            .where(
                QuarantineEntry.message_id == message_id,
                QuarantineEntry.status == "held",
                QuarantineEntry.reason.startswith(TOO_LARGE),
            )
            .order_by(QuarantineEntry.id)
            .limit(1)
        ).first()
        if existing is not None:
            existing.attempts += 1
            existing.reason = reason
            return existing
    return quarantine_raw(session, headers, source, reason, message_id)


def retry(pipeline: Reprocessor, entry_id: int) -> Outcome:
    """Run a held message through the pipeline again; it is released when that works.

    In the database's write turn (store.gate): on SQLite a retry that read first and wrote
    later failed with "database is locked" whenever another process (the worker, a second
    retry) committed in between."""
    with write_gate(engine_of(pipeline.session_factory)), pipeline.session_factory() as session:
        entry = session.get(QuarantineEntry, entry_id)
        if entry is None:
            raise QuarantineNotFound(f"no quarantine entry {entry_id}")
        if entry.reason.startswith(TOO_LARGE):
            # The headers alone would open a ticket without the customer's text (and send
            # the auto-reply), and their Message-ID would make the whole message a
            # duplicate when it is taken later: its text and attachments never stored.
            raise QuarantineNotRetryable(
                f"quarantine entry {entry_id} holds only the headers of a message too large "
                f"to take whole ({entry.reason}); take the whole message instead: "
                "`mailticket ingest --no-size-limit FILE`, or a larger MAX_MESSAGE_SIZE"
            )
        raw_row = session.get_one(RawMessage, entry.raw_message_id)
        outcome = pipeline.process_in_session(
            session, raw_row.raw, entry.source or f"quarantine:{entry_id}", raw_message=raw_row
        )
        if outcome.action != "quarantined":
            entry.status = "released"
        session.commit()
        return outcome
