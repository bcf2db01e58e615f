"""The unit of work: the messages written in one transaction (a single message is a batch
of one), passed explicitly to every service that reads or writes on their behalf.

It asks the database once per batch for everything its messages could look up, hands out
primary keys from blocks so nothing needs a flush to learn its id, and keeps new rows,
thread refs, merges and counters in memory until it is finished, when it writes them with
one statement per table (`bulkwrite`). What it caches is complete for the keys it was asked
about, and every write to those keys goes through it, so a message sees what the messages
before it in the same batch did, exactly as if they had been committed one by one.

Checkpoints (a message, a workflow, a tolerated step) are undone in memory (`journal`).
Code that bypasses the unit of work and queries or flushes the session itself (an action
from another package) still sees the batch's rows: they are written first, with the same
bulk path. Such a write cannot be undone in memory; a checkpoint asked to roll back across
one raises `CheckpointLost`, and the pipeline redoes the batch with `durable` checkpoints,
each backed by a SAVEPOINT (and flushed at its end), which is also how it isolates a
message that makes the database itself fail.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache, partial
from itertools import zip_longest
from types import TracebackType
from typing import Any, TypeVar

from sqlalchemy import (
    DateTime,
    Integer,
    Select,
    String,
    bindparam,
    cast,
    event,
    inspect,
    literal_column,
    null,
    or_,
    select,
    union_all,
)
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import ORMExecuteState, Session, SessionTransaction
from sqlalchemy.orm.attributes import instance_state

from mailticket.store import bulkwrite
from mailticket.store.db import Base
from mailticket.store.ids import IdBlocks
from mailticket.store.journal import Journal, instrument_models
from mailticket.store.models import (
    Attachment,
    Comment,
    EmailLog,
    EmailTicket,
    QuarantineEntry,
    RawMessage,
    ThreadRef,
    Ticket,
)
from mailticket.store.outbox_models import OutboxItem, as_utc

_T = TypeVar("_T")
# Bound parameters per IN list: far below SQLite's limit, big enough to be one query here.
_CHUNK = 500
# Outgoing rows the loop check counts (kept here to avoid importing the outbound package).
AUTO_REPLY_ACTION = "auto_reply"
_KIND_RANK = {"self": 0, "ref": 1}
# What a merge moves from one ticket to the other (as merging always has).
_MOVED_WITH_TICKET = (EmailLog, Comment, Attachment, EmailTicket)


class CheckpointLost(Exception):
    """A checkpoint kept in memory was asked to roll back across a write to the database."""


@dataclass(frozen=True, slots=True)
class Ref:
    message_id: str
    ticket_id: int
    kind: str


@dataclass(frozen=True, slots=True)
class LoggedMessage:
    """What a duplicate of a Message-ID reports: the first log row holding it."""

    email_log_id: int
    ticket_id: int | None
    classification: str | None


@dataclass(frozen=True, slots=True)
class MailLookup:
    """Another package's lookup, asked in the batch's prefetch query (the same round trip):
    its SELECTs in `mail_row`'s shape, their parameters (names of its own), and what takes
    the rows they return, as (what, key, log_id, kind)."""

    parts: tuple[Select[Any], ...]
    params: dict[str, Any]
    whats: frozenset[str]  # the `what` of its rows: none of the batch's own
    found: Callable[[list[tuple[str, Any, Any, Any]]], None]


@dataclass(frozen=True, slots=True)
class Mark:
    position: int
    writes: int
    savepoint: SessionTransaction | None
    session_new: frozenset[int]


def _chunks(values: Sequence[_T], size: int = _CHUNK) -> Iterator[Sequence[_T]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def _stronger(a: str | None, b: str) -> str:
    return "self" if "self" in (a, b) else b


class Batch:
    def __init__(self, session: Session, *, block: int = 16, durable: bool = False) -> None:
        instrument_models()
        self.session = session
        # Every checkpoint backed by a SAVEPOINT and written at its end (the careful retry).
        self.durable = durable
        self.ids = IdBlocks(session, block)
        self.postgres = self.ids.postgres
        self.journal = Journal()
        self.closed = False
        self._finished = False
        self._tracked: list[Base] = []  # rows written early and handed to the session
        self._quiet = 0
        self._writes = 0  # writes to the database so far (ours and anyone's)
        self.unattached: list[Base] = []
        self._logs: list[EmailLog] = []  # every log row this batch made, for participants
        # Every row this batch made that a merge moves (_MOVED_WITH_TICKET): each merge scans
        # them, and the others (raw messages, workflow runs, tickets) were over half the scan.
        self._mine: list[Base] = []
        # Message-ID -> first stored row, for the ids asked about, plus every row logged.
        self.logged: dict[str, LoggedMessage | EmailLog] = {}
        self._logged_known: set[str] = set()
        # Message-ID -> {ticket id: kind} as stored or recorded (before merges are applied).
        self.refs: dict[str, dict[int, str]] = {}
        self._refs_known: set[str] = set()
        self._refs_pending: dict[tuple[str, int], str] = {}
        # Strong references: the session's identity map holds objects only weakly.
        self.tickets: dict[int, Ticket] = {}
        self.by_number: dict[str, Ticket | None] = {}
        self._merged_into: dict[int, int] = {}
        self._merges_pending: list[int] = []
        # Recipient -> (since, times) of stored auto-replies; and those this batch queued.
        self._replies_stored: dict[str, tuple[datetime, list[datetime]]] = {}
        self._replies_new: dict[str, list[datetime]] = {}
        self.counters: dict[str, int] = {}
        self._counters_dirty: set[str] = set()
        self._outbox: dict[str, OutboxItem | None] = {}
        self._held: dict[str, QuarantineEntry | None] = {}
        # Lookups other packages cache for the batch's lifetime, by their own key (the
        # customer directory, tickets an event touched ...): reference data the batch
        # never writes, or sets where an extra entry is harmless, so no undo is kept.
        self.memo: dict[str, Any] = {}
        session.connection()  # begin now, so the transaction this batch lives in is known
        self._tx = session.get_nested_transaction() or session.get_transaction()
        _open_batches(session).append(self)

    # --- lifecycle -------------------------------------------------------------------------

    def __enter__(self) -> Batch:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if kind is None and not self.closed:
            self.finish()
        self.close()

    def finish(self) -> None:
        """Write everything the batch holds; the unit of work is over."""
        self._write(final=True)
        self._finished = True
        self.close()

    def flush(self) -> None:
        """Write everything held so far, so the database shows what the batch knows."""
        self._write(final=False)

    def close(self) -> None:
        """Stop listening to the session (closed, it does nothing)."""
        if self.closed:
            return
        self.closed = True
        self.journal.close()
        if not self._finished:
            # Abandoned: its transaction is rolled back, and the rows it wrote early with
            # it; the session must not keep them as if they were stored.
            for row in self._tracked:
                if row in self.session:
                    self.session.expunge(row)
        batches = _open_batches(self.session)
        if self in batches:
            batches.remove(self)

    @contextmanager
    def quietly(self) -> Iterator[Session]:
        """The session for the batch's own reads: no autoflush, no write-before-query."""
        self._quiet += 1
        try:
            with self.session.no_autoflush:
                yield self.session
        finally:
            self._quiet -= 1

    # --- checkpoints -----------------------------------------------------------------------

    def checkpoint(self, *, durable: bool = False) -> Mark:
        savepoint = None
        if durable or self.durable:
            self.flush()
            savepoint = self.session.begin_nested()
        new = frozenset(map(id, self.session.new)) if self.session.new else frozenset()
        return Mark(self.journal.open(), self._writes, savepoint, new)

    def release(self, mark: Mark) -> None:
        if mark.savepoint is not None:
            self.flush()  # a constraint this checkpoint breaks fails here, inside it
            mark.savepoint.commit()
        self.journal.release()

    def rollback_to(self, mark: Mark, cause: BaseException | None = None) -> None:
        """Undo everything since `mark`. `cause`: what failed; a database error inside a
        checkpoint kept in memory may have ended the transaction, which only a SAVEPOINT
        survives."""
        if mark.savepoint is not None:
            if mark.savepoint.is_active:
                mark.savepoint.rollback()
        elif self._writes != mark.writes:
            raise CheckpointLost("rows were written to the database inside a checkpoint")
        elif isinstance(cause, DBAPIError):
            raise CheckpointLost(f"the database failed inside a checkpoint: {cause}") from cause
        for obj in list(self.session.new):
            if id(obj) not in mark.session_new:
                self.session.expunge(obj)
        self.journal.undo(mark.position)

    # --- rows ------------------------------------------------------------------------------

    def add(self, obj: _T) -> _T:
        """A new row, given its id now and written when the batch is."""
        row: Any = obj
        held = row.__dict__
        # Read from and straight into the new object's dict (a new object's unset column
        # reads as None): nothing to record or undo for it, and no attribute machinery.
        # (A row keyed by the row it describes, like a log row's sender evidence, has no id.)
        if held.get("id") is None and _has_id(type(obj)):
            held["id"] = self.ids.take(row.__tablename__)
        self.unattached.append(row)
        if type(row) in _MOVED_WITH_TICKET:
            self._mine.append(row)
        if type(row) is EmailLog:
            self._logs.append(row)
        self.journal.record(lambda: self._discard(row))
        return obj

    def _discard(self, row: Any) -> None:
        for rows in (self.unattached, self._mine, self._logs):
            if rows and rows[-1] is row:
                rows.pop()
            elif row in rows:
                rows.remove(row)
        if row in self.session:
            self.session.expunge(row)

    def assign(self, row: Base, **values: Any) -> None:
        """Set columns of a row. One only this batch holds (never handed to the session: a
        new row not yet written) takes them straight into its dict with an undo step, as
        the attribute events would have recorded, without their cost; any other row is set
        through its attributes, so the session sees the change."""
        unknown = values.keys() - _columns(type(row))
        if unknown:
            raise TypeError(f"{type(row).__name__} has no column(s) {sorted(unknown)}")
        state = instance_state(row)
        if state.session_id is not None or state.key is not None:
            for key, value in values.items():
                setattr(row, key, value)
            return
        held = row.__dict__
        for key, value in values.items():
            old = held.get(key, _ABSENT)
            held[key] = value
            self.journal.record(partial(_put_back, held, key, old))

    def discard(self, row: Base) -> None:
        """Forget a row added in this batch (it is not written)."""
        self._discard(row)
        self.journal.record(lambda: self.unattached.append(row))

    # --- writing ---------------------------------------------------------------------------

    def _write(self, *, final: bool, inside_flush: bool = False) -> None:
        wrote = bool(
            self.unattached or self._merges_pending or self._refs_pending
            or self._counters_dirty or (not inside_flush and self.session.dirty)
        )
        with self.quietly():
            rows, self.unattached = self.unattached, []
            rest = bulkwrite.write_new_rows(self.session, rows, datetime.now(UTC))
            if rest:
                self.session.add_all(rest)
            if not final:
                # Written, but the batch may change them yet (a reply reopening a ticket
                # opened earlier in it): tracked from now on like rows loaded from the table.
                written = [r for r in rows if r not in rest]
                bulkwrite.track_written(self.session, written)
                self._tracked += written
            bulkwrite.align_updates(self.session)
            if not inside_flush:
                self.session.flush()
            if self._merges_pending:
                bulkwrite.move_tickets(
                    self.session, [(src, self.final(src)) for src in self._merges_pending]
                )
                self._merges_pending.clear()
            if self._refs_pending:
                values: dict[tuple[str, int], str] = {}
                for (mid, tid), kind in self._refs_pending.items():
                    key = (mid, self.final(tid))
                    values[key] = _stronger(values.get(key), kind)
                self._refs_pending.clear()
                bulkwrite.upsert_refs(self.session, values)
            for day in sorted(self._counters_dirty):
                bulkwrite.set_counter(self.session, day, self.counters[day])
            self._counters_dirty.clear()
        if wrote:
            self._writes += 1

    def _before_orm_execute(self, state: ORMExecuteState) -> None:
        # Code outside the batch queries the session: it must see the batch's rows, as
        # autoflush would have shown them.
        if self._quiet or self.closed:
            return
        self.flush()
        if not state.is_select:
            self._writes += 1
            self.ids.after_foreign_write()

    def _before_flush(self, session: Session, *_: Any) -> None:
        if not self._quiet and not self.closed:
            # Rows flushed by other code may point at the batch's rows: those go first.
            self._write(final=False, inside_flush=True)

    def _after_flush(self, session: Session, *_: Any) -> None:
        if not self._quiet:
            self._writes += 1
            self.ids.after_foreign_write()

    def _before_commit(self, session: Session) -> None:
        if not self.closed and self._ours(self._current()):
            self.finish()

    def _after_rollback(self, session: Session, previous: SessionTransaction) -> None:
        # The transaction the batch lives in is gone: so is everything it held.
        if not self.closed and self._ours(previous):
            self.close()

    def _current(self) -> SessionTransaction | None:
        return self.session.get_nested_transaction() or self.session.get_transaction()

    def _ours(self, tx: SessionTransaction | None) -> bool:
        """`tx` is the batch's transaction or one it lives inside."""
        node = self._tx
        while node is not None:
            if node is tx:
                return True
            node = node.parent
        return False

    # --- prefetch --------------------------------------------------------------------------

    def prefetch_mail(
        self,
        *,
        logged: Iterable[str] = (),
        refs: Iterable[str] = (),
        replies: Iterable[str] = (),
        since: datetime | None = None,
        outbox: Iterable[str] = (),
        also: Sequence[MailLookup] = (),
    ) -> None:
        """What the batch could ask of the mail tables, in one query (per `_CHUNK` keys of
        each kind), not one per kind: which Message-IDs are `logged` already, the stored
        thread refs of `refs`, the auto-replies sent to `replies` since `since`, which
        of the idempotency keys `outbox` are queued already, and the lookups `also` of
        other packages (in the first query). A batch of a few messages pays for round
        trips more than for rows."""
        want_logged = sorted(set(logged) - self._logged_known)
        want_refs = sorted(set(refs) - self._refs_known)
        # Not `set - dict.keys()`: that walks every key of the dict, on each call.
        stored = self._replies_stored
        want_replies = sorted({address for address in replies if address not in stored})
        queued = self._outbox
        want_outbox = sorted({key for key in outbox if key not in queued})
        if since is not None:
            since = as_utc(since)
        elif want_replies:
            raise ValueError("replies asked for without a time to count them since")
        if not (want_logged or want_refs or want_replies or want_outbox or also):
            return
        connection = self.session.connection()
        found_logged: list[tuple[int, str, int | None, str | None]] = []
        answered: list[tuple[MailLookup, list[tuple[str, Any, Any, Any]]]] = []
        chunks = list(zip_longest(
            _chunks(want_logged), _chunks(want_refs), _chunks(want_replies),
            _chunks(want_outbox), fillvalue=(),
        )) or [((), (), (), ())]
        for chunk_logged, chunk_refs, chunk_replies, chunk_outbox in chunks:
            parts = _mail_parts(
                bool(chunk_logged), bool(chunk_refs), bool(chunk_replies), bool(chunk_outbox)
            )
            params = {"logged": chunk_logged, "refs": chunk_refs, "replies": chunk_replies,
                      "since": since, "outbox": chunk_outbox}
            theirs: dict[str, list[tuple[str, Any, Any, Any]]] = {}
            for lookup in also:
                parts += lookup.parts
                params.update(lookup.params)
                rows: list[tuple[str, Any, Any, Any]] = []
                theirs.update(dict.fromkeys(lookup.whats, rows))
                answered.append((lookup, rows))
            also = ()  # asked once, in the first query
            query = _union(parts)
            times: dict[str, list[datetime]] = {address: [] for address in chunk_replies}
            absent = set(chunk_outbox)
            # Rows unpacked as tuples: reading a Row's fields by name costs more per row.
            for what, key, log_id, ticket_id, kind, at in connection.execute(query, params):
                if what == _LOGGED:
                    found_logged.append((log_id, key, ticket_id, kind))
                elif what == _REF:
                    known = self.refs.setdefault(key, {})
                    known[ticket_id] = _stronger(known.get(ticket_id), kind)
                elif what == _OUTBOX:
                    absent.discard(key)
                elif what == _REPLY:
                    times[key].append(as_utc(at))
                else:
                    theirs[what].append((what, key, log_id, kind))
            for address, at in times.items():
                assert since is not None
                self._replies_stored[address] = (since, at)
            # Known to be absent: `outbox_item` answers None without asking. A key that is
            # queued is left to it, to load the row itself (a message processed again).
            for key in absent:
                queued[key] = None
        for lookup, rows in answered:
            lookup.found(rows)
        # The first row holding a Message-ID is the one a duplicate reports.
        for log_id, key, ticket_id, kind in sorted(found_logged, key=lambda r: r[0]):
            self.logged.setdefault(key, LoggedMessage(log_id, ticket_id, kind))
        self._logged_known.update(want_logged)
        self._refs_known.update(want_refs)

    def prefetch_logged(self, message_ids: Iterable[str]) -> None:
        self.prefetch_mail(logged=message_ids)

    def prefetch_refs(self, message_ids: Iterable[str]) -> None:
        self.prefetch_mail(refs=message_ids)

    def prefetch_tickets(self, *, ids: Iterable[int] = (), numbers: Iterable[str] = ()) -> None:
        want_ids = sorted(set(ids) - self.tickets.keys())
        want_numbers = sorted({n.upper() for n in numbers} - self.by_number.keys())
        loaded: list[Ticket] = []
        with self.quietly() as session:
            # Both kinds in one query (two index lookups OR-ed): one round trip, not two.
            for numbers_chunk, ids_chunk in zip_longest(
                _chunks(want_numbers), _chunks(want_ids), fillvalue=()
            ):
                loaded += session.scalars(
                    _tickets_query(bool(numbers_chunk), bool(ids_chunk)),
                    {"numbers": list(numbers_chunk), "ids": list(ids_chunk)},
                )
                for number in numbers_chunk:
                    self.by_number.setdefault(number, None)
        for ticket in loaded:
            self.tickets[ticket.id] = ticket
            self.by_number[ticket.ticket_number.upper()] = ticket
        # Follow merge pointers so resolving a merged ticket never needs a query. The query
        # followed those it stored; this is for those the batch changed in memory.
        missing = {t.merged_into_id for t in loaded if t.merged_into_id is not None}
        missing -= self.tickets.keys()
        if missing:
            self.prefetch_tickets(ids=missing)

    def prefetch_replies(self, recipients: Iterable[str], since: datetime) -> None:
        self.prefetch_mail(replies=recipients, since=since)

    # --- lookups ---------------------------------------------------------------------------

    def final(self, ticket_id: int) -> int:
        """Where a ticket merged in this batch went (itself when it was not)."""
        hops = 0
        while ticket_id in self._merged_into and hops < 20:
            ticket_id = self._merged_into[ticket_id]
            hops += 1
        return ticket_id

    def refs_for(self, message_ids: Sequence[str]) -> dict[str, list[Ref]]:
        """Stored and recorded refs of each id, merges applied, 'self' first."""
        # Asked for every message, nearly always about ids the batch's prefetch asked
        # already: the set test is all such a call needs, not prefetch_mail's set-up.
        if not self._refs_known.issuperset(message_ids):
            self.prefetch_refs(message_ids)
        found: dict[str, list[Ref]] = {}
        merged_into = self._merged_into
        for mid in message_ids:
            raw = self.refs.get(mid)
            if not raw:
                continue
            merged = raw
            if merged_into and not merged_into.keys().isdisjoint(raw):
                merged = {}
                for tid, kind in raw.items():
                    target = self.final(tid)
                    merged[target] = _stronger(merged.get(target), kind)
            if len(merged) == 1:
                ((tid, kind),) = merged.items()
                found[mid] = [Ref(mid, tid, kind)]
                continue
            found[mid] = sorted(
                (Ref(mid, tid, kind) for tid, kind in merged.items()),
                key=lambda r: (_KIND_RANK.get(r.kind, 9), r.ticket_id),
            )
        return found

    def ticket(self, ticket_id: int) -> Ticket:
        found = self.tickets.get(ticket_id)
        if found is None:
            with self.quietly() as session:
                found = session.get_one(Ticket, ticket_id)
            self.tickets[found.id] = found
            self.by_number[found.ticket_number.upper()] = found
        return found

    def live(self, ticket: Ticket) -> Ticket:
        """The ticket a merged ticket now lives on."""
        hops = 0
        while ticket.merged_into_id is not None and hops < 20:
            ticket = self.ticket(ticket.merged_into_id)
            hops += 1
        return ticket

    def tickets_by_number(self, numbers: Iterable[str]) -> dict[str, Ticket]:
        wanted = {n.upper() for n in numbers}
        self.prefetch_tickets(numbers=wanted)
        return {n: t for n in wanted if (t := self.by_number.get(n)) is not None}

    def logged_as(self, message_id: str) -> LoggedMessage | EmailLog | None:
        if message_id not in self._logged_known:  # as in refs_for
            self.prefetch_logged([message_id])
        return self.logged.get(message_id)

    def forget_logged(self, message_id: str) -> None:
        """Ask the database again (another worker may have stored it meanwhile)."""
        self._logged_known.discard(message_id)
        if isinstance(self.logged.get(message_id), LoggedMessage):
            del self.logged[message_id]

    def recent_replies(self, address: str, since: datetime) -> int:
        """Auto-replies to `address` since `since`, stored or queued in this batch."""
        since = as_utc(since)
        stored = self._replies_stored.get(address)
        if stored is None or since < stored[0]:
            self._replies_stored.pop(address, None)
            self.prefetch_replies([address], since)
            stored = self._replies_stored[address]
        times = [*stored[1], *self._replies_new.get(address, [])]
        return sum(1 for moment in times if moment >= since)

    def is_participant(self, ticket: Ticket, address: str) -> bool:
        """Has mail from `address` been logged on `ticket` (or a ticket merged into it)?"""
        group = {ticket.id, *(src for src in self._merged_into if self.final(src) == ticket.id)}
        for entry in self._logs:
            if entry.ticket_id in group and entry.email_from == address:
                return True
        log = EmailLog.__table__.c
        hit = self.session.connection().execute(
            select(log.id).where(log.ticket_id.in_(sorted(group)), log.email_from == address)
            .limit(1)
        ).first()
        return hit is not None

    def outbox_item(self, key: str) -> OutboxItem | None:
        """The outgoing item queued under an idempotency key, in this batch or before."""
        if key not in self._outbox:
            with self.quietly() as session:
                self._outbox[key] = session.scalars(
                    select(OutboxItem).where(OutboxItem.idempotency_key == key)
                ).first()
        return self._outbox[key]

    def held_quarantine(self, sha256: str) -> QuarantineEntry | None:
        """The quarantine entry still holding these exact bytes, if any."""
        if sha256 not in self._held:
            with self.quietly() as session:
                self._held[sha256] = session.scalars(
                    select(QuarantineEntry)
                    .join(RawMessage, RawMessage.id == QuarantineEntry.raw_message_id)
                    .where(RawMessage.sha256 == sha256, QuarantineEntry.status == "held")
                    .limit(1)
                ).first()
        return self._held[sha256]

    # --- bookkeeping the services do -------------------------------------------------------

    def keep_ticket(self, ticket: Ticket) -> None:
        number = ticket.ticket_number.upper()
        had, had_number = self.tickets.get(ticket.id), self.by_number.get(number, _ABSENT)
        self.tickets[ticket.id] = ticket
        self.by_number[number] = ticket
        self.journal.record(lambda: self._unkeep(ticket.id, number, had, had_number))

    def _unkeep(self, tid: int, number: str, had: Ticket | None, had_number: Any) -> None:
        _restore(self.tickets, tid, had)
        _restore(self.by_number, number, None if had_number is _ABSENT else had_number,
                 absent=had_number is _ABSENT)

    def note_logged(self, entry: EmailLog) -> None:
        mid = entry.email_message_id
        if mid not in self.logged:
            self.logged[mid] = entry
            self.journal.record(lambda: self.logged.pop(mid, None))

    def note_reply(self, address: str, moment: datetime) -> None:
        times = self._replies_new.setdefault(address, [])
        times.append(as_utc(moment))
        self.journal.record(times.pop)

    def note_outbox(self, item: OutboxItem) -> None:
        key = item.idempotency_key
        had = self._outbox.get(key, _ABSENT)
        self._outbox[key] = item
        self.journal.record(lambda: _restore(self._outbox, key, had, absent=had is _ABSENT))

    def note_held(self, entry: QuarantineEntry, sha256: str) -> None:
        had = self._held.get(sha256, _ABSENT)
        self._held[sha256] = entry
        self.journal.record(lambda: _restore(self._held, sha256, had, absent=had is _ABSENT))

    def add_refs(self, ticket_id: int, rows: dict[str, str]) -> None:
        # Long threads carry long References lists: one undo step for the whole call, and
        # `_stronger` written out, keep this loop cheap.
        pending, refs = self._refs_pending, self.refs
        undo: list[tuple[tuple[str, int], dict[int, str], str | None, str | None]] = []
        for mid, kind in rows.items():
            key = (mid, ticket_id)
            pending_before = pending.get(key)
            known = refs.get(mid)
            if known is None:
                known = refs[mid] = {}
            known_before = known.get(ticket_id)
            pending[key] = "self" if kind == "self" or pending_before == "self" else kind
            known[ticket_id] = "self" if kind == "self" or known_before == "self" else kind
            undo.append((key, known, pending_before, known_before))
        self.journal.record(partial(self._unref, undo))

    def _unref(
        self, undo: list[tuple[tuple[str, int], dict[int, str], str | None, str | None]]
    ) -> None:
        for key, known, pending, kind in reversed(undo):
            _restore(self._refs_pending, key, pending)
            _restore(known, key[1], kind)

    def next_counter(self, day: str) -> int:
        if day not in self.counters:
            # Locks the day's row until commit: concurrent workers queue behind us.
            self.counters[day] = bulkwrite.lock_counter(self.session, day)
        before, dirty = self.counters[day], day in self._counters_dirty
        self.counters[day] = before + 1
        self._counters_dirty.add(day)
        self.journal.record(lambda: self._uncount(day, before, dirty))
        return self.counters[day]

    def _uncount(self, day: str, before: int, dirty: bool) -> None:
        self.counters[day] = before
        if not dirty:
            self._counters_dirty.discard(day)

    def merge(self, source: Ticket, target: Ticket) -> None:
        """Move `source`'s mail, comments, attachments and thread refs to `target`."""
        src, dst = source.id, target.id
        self._merged_into[src] = dst
        self._merges_pending.append(src)
        for row in self._mine:
            # The value in the object's dict when it has one (every row this batch made
            # holds its ticket there), without a trip through the attribute machinery.
            held = row.__dict__
            current = held["ticket_id"] if "ticket_id" in held else row.ticket_id  # type: ignore[attr-defined]
            if current == src:
                row.ticket_id = dst  # type: ignore[attr-defined]
        self.journal.record(lambda: self._unmerge(src))

    def _unmerge(self, src: int) -> None:
        self._merged_into.pop(src, None)
        if src in self._merges_pending:
            self._merges_pending.remove(src)


_ABSENT: Any = object()


# The batches open on a session, oldest first, each told of the session's events by the
# listeners below. They are registered once per session, not by every batch: listening
# and removing the listeners again cost more than a small batch's own bookkeeping.
_BATCHES = "mailticket.batches"


def _open_batches(session: Session) -> list[Batch]:
    batches: list[Batch] | None = session.info.get(_BATCHES)
    if batches is None:
        batches = session.info[_BATCHES] = []
        event.listen(session, "do_orm_execute", _on_orm_execute)
        event.listen(session, "before_flush", _on_before_flush)
        event.listen(session, "after_flush", _on_after_flush)
        event.listen(session, "before_commit", _on_before_commit)
        event.listen(session, "after_soft_rollback", _on_after_rollback)
    return batches


# Each goes through a copy of the list: a batch may close (leave it) while it is told.
def _on_orm_execute(state: ORMExecuteState) -> None:
    for batch in tuple(state.session.info[_BATCHES]):
        batch._before_orm_execute(state)


def _on_before_flush(session: Session, context: Any, instances: Any) -> None:
    for batch in tuple(session.info[_BATCHES]):
        batch._before_flush(session)


def _on_after_flush(session: Session, context: Any) -> None:
    for batch in tuple(session.info[_BATCHES]):
        batch._after_flush(session)


def _on_before_commit(session: Session) -> None:
    for batch in tuple(session.info[_BATCHES]):
        batch._before_commit(session)


def _on_after_rollback(session: Session, previous: SessionTransaction) -> None:
    for batch in tuple(session.info[_BATCHES]):
        batch._after_rollback(session, previous)


_COLUMNS: dict[type[Any], frozenset[str]] = {}


def _columns(cls: type[Any]) -> frozenset[str]:
    found = _COLUMNS.get(cls)
    if found is None:
        found = _COLUMNS[cls] = frozenset(attr.key for attr in inspect(cls).column_attrs)
    return found


def _has_id(cls: type[Any]) -> bool:
    """The model has an `id` column (the batch hands it out)."""
    return "id" in _columns(cls)


@lru_cache(maxsize=4)
def _tickets_query(numbers: bool, ids: bool) -> Select[Any]:
    """Tickets by number, by id or both (two index lookups OR-ed), and the tickets they were
    merged into, hop after hop, in the same query (a recursive CTE): following each hop with
    a query of its own took a round trip per hop, and mail that arrives before its parent
    makes chains of several (the support mix: 86 ticket queries in 50 groups of eight, 35 of
    them hops). UNION, not UNION ALL: a pair seen again ends the walk. Built once: its IN
    lists are expanding parameters, so the statement and its compiled form are reused."""
    table = Ticket.__table__
    wanted = [
        *([table.c.ticket_number.in_(bindparam("numbers", expanding=True))] if numbers else []),
        *([table.c.id.in_(bindparam("ids", expanding=True))] if ids else []),
    ]
    chain = (
        select(table.c.id, table.c.merged_into_id)
        .where(or_(*wanted))
        .cte("ticket_chain", recursive=True)
    )
    into = table.alias("merged_into")
    chain = chain.union(
        select(into.c.id, into.c.merged_into_id).join(chain, into.c.id == chain.c.merged_into_id)
    )
    return select(Ticket).where(Ticket.id.in_(select(chain.c.id)))


def _put_back(held: dict[str, Any], key: str, old: Any) -> None:
    if old is _ABSENT:
        held.pop(key, None)
    else:
        held[key] = old


def _restore(mapping: dict[Any, Any], key: Any, value: Any, *, absent: bool = False) -> None:
    if absent or value is None:
        mapping.pop(key, None)
    else:
        mapping[key] = value


# What `Batch.prefetch_mail` asks, as one UNION ALL of rows of the same shape: what the row
# answers, its key (a Message-ID or an address), and the columns that answer needs. Other
# packages' lookups (`MailLookup`) build their SELECTs with `mail_row` too.
_LOGGED, _REF, _REPLY, _OUTBOX = "logged", "ref", "reply", "outbox"


def mail_row(
    what: str,
    key: Any,
    *,
    log_id: Any = None,
    ticket_id: Any = None,
    kind: Any = None,
    at: Any = None,
) -> list[Any]:
    # Typed NULLs: PostgreSQL matches a UNION's column types part by part (an untyped NULL
    # is taken for text), and SQLAlchemy reads the results by the first part's types.
    def typed(value: Any, type_: Any) -> Any:
        return cast(null(), type_) if value is None else value

    return [
        literal_column(f"'{what}'", String).label("what"),
        key.label("key"),
        typed(log_id, Integer).label("log_id"),
        typed(ticket_id, Integer).label("ticket_id"),
        typed(kind, String).label("kind"),
        typed(at, DateTime(timezone=True)).label("at"),
    ]


@lru_cache(maxsize=16)
def _mail_parts(logged: bool, refs: bool, replies: bool, outbox: bool) -> tuple[Select[Any], ...]:
    """The SELECTs for the kinds asked, built once: their IN lists are expanding parameters."""
    log, ref = EmailLog.__table__.c, ThreadRef.__table__.c
    queued = OutboxItem.__table__.c
    parts: list[Select[Any]] = []
    if logged:
        parts.append(select(
            *mail_row(_LOGGED, log.email_message_id, log_id=log.id, ticket_id=log.ticket_id,
                       kind=log.classification)
        ).where(log.email_message_id.in_(bindparam("logged", expanding=True))))
    if refs:
        parts.append(select(
            *mail_row(_REF, ref.message_id, ticket_id=ref.ticket_id, kind=ref.kind)
        ).where(ref.message_id.in_(bindparam("refs", expanding=True))))
    if replies:
        parts.append(select(*mail_row(_REPLY, log.email_to, at=log.created_at)).where(
            log.direction == "out",
            log.action == AUTO_REPLY_ACTION,
            log.email_to.in_(bindparam("replies", expanding=True)),
            log.created_at >= bindparam("since", type_=DateTime(timezone=True)),
        ))
    if outbox:
        parts.append(select(*mail_row(_OUTBOX, queued.idempotency_key, log_id=queued.id)).where(
            queued.idempotency_key.in_(bindparam("outbox", expanding=True))
        ))
    return tuple(parts)


@lru_cache(maxsize=64)
def _union(parts: tuple[Select[Any], ...]) -> Any:
    """The SELECTs as one statement, built once per combination: a new UNION each call
    had SQLAlchemy walk the whole statement again for its cache key."""
    return parts[0] if len(parts) == 1 else union_all(*parts)


def open_batch(session: Session, *, block: int = 16, durable: bool = False) -> Batch:
    """Start a unit of work over the session's transaction. Use it as a context manager,
    or finish it (a commit of the session finishes it too, as autoflush would)."""
    return Batch(session, block=block, durable=durable)
