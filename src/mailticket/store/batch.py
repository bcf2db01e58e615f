"""Batch mode: many messages through the pipeline with a fixed number of round trips.

One message at a time costs about twenty round trips (lookups, flushes, savepoints, the
counter, the rate-limit count). In batch mode the pipeline instead asks the database once
per batch for everything the batch's messages could look up, hands out primary keys from
blocks so nothing needs a flush to learn its id, and writes the batch's new rows at the end
with one statement per table (`bulkwrite`), keeping them out of the session until then.

The state lives in `session.info` while a batch runs, so the services deep down (numbering,
thread refs, the loop check) find it without every signature growing a parameter; outside
a batch they behave exactly as before. What the batch caches is kept complete for the keys
it was asked about: every write the batch makes to those keys goes through here too, so a
message sees what the messages before it in the same batch did. A key it was not asked
about is looked up live, after a flush.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import (
    Connection,
    event,
    func,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import ORMExecuteState, Session

from mailticket.store.bulkwrite import write_new_rows
from mailticket.store.db import Base
from mailticket.store.models import EmailLog, ThreadRef, Ticket, TicketCounter
from mailticket.store.outbox_models import as_utc

_KEY = "mailticket.store.batch"
_T = TypeVar("_T")
# Bound parameters per IN list: far below SQLite's limit, big enough to be one query here.
_CHUNK = 500
# Outgoing rows the loop check counts (kept here to avoid importing the outbound package).
AUTO_REPLY_ACTION = "auto_reply"


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


def _chunks(values: Sequence[_T], size: int = _CHUNK) -> Iterator[Sequence[_T]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


class IdBlocks:
    """Primary keys handed out before the INSERT, so rows can point at each other unflushed.

    PostgreSQL: reserved from the table's sequence a block at a time (an unused rest is a
    harmless gap). SQLite has no sequences: the batch counts on from max(id). SQLite admits
    one writer at a time, and a row another process committed first makes our INSERT fail,
    which sends the batch down the careful path instead of doing anything wrong.
    """

    def __init__(self, session: Session, block: int) -> None:
        self.session = session
        self.block = max(block, 16)
        self.postgres = session.get_bind().dialect.name == "postgresql"
        self._free: dict[str, list[int]] = {}
        self._next: dict[str, int] = {}

    def take(self, model: type[Base]) -> int:
        table = model.__tablename__
        # On the connection, not the session: an ORM execute would hand the batch's rows
        # to the session (see Batch._before_orm_execute).
        connection = self.session.connection()
        if not self.postgres:
            if table not in self._next:
                top = connection.execute(text(f'SELECT max(id) FROM "{table}"')).scalar()
                self._next[table] = int(top or 0) + 1
            value = self._next[table]
            self._next[table] = value + 1
            return value
        free = self._free.setdefault(table, [])
        if not free:
            rows = connection.execute(
                text("SELECT nextval(CAST(:s AS regclass)) FROM generate_series(1, :n)"),
                {"s": _sequence(connection, table), "n": self.block},
            ).scalars()
            free.extend(sorted((int(v) for v in rows), reverse=True))
        return free.pop()


_SEQUENCES: dict[tuple[str, str], str] = {}


def _sequence(connection: Connection, table: str) -> str:
    key = (str(connection.engine.url), table)
    if key not in _SEQUENCES:
        name = connection.execute(
            text("SELECT pg_get_serial_sequence(:t, 'id')"), {"t": table}
        ).scalar_one()
        _SEQUENCES[key] = str(name)
    return _SEQUENCES[key]


@dataclass
class Batch:
    session: Session
    ids: IdBlocks
    # Message-ID -> first stored row, for the ids asked about, plus every row the batch logs.
    logged: dict[str, LoggedMessage | EmailLog] = field(default_factory=dict)
    _logged_known: set[str] = field(default_factory=set)
    # Message-ID -> {ticket id: kind}; complete for every id in `_refs_known`.
    refs: dict[str, dict[int, str]] = field(default_factory=dict)
    _refs_known: set[str] = field(default_factory=set)
    _refs_pending: dict[tuple[str, int], str] = field(default_factory=dict)
    # Strong references: the session's identity map holds objects only weakly.
    tickets: dict[int, Ticket] = field(default_factory=dict)
    by_number: dict[str, Ticket | None] = field(default_factory=dict)
    # Recipient -> times of the auto-replies sent to it since `_replies_since`.
    replies: dict[str, list[datetime]] = field(default_factory=dict)
    _replies_since: datetime | None = None
    counters: dict[str, int] = field(default_factory=dict)
    # New rows kept out of the session: adding thousands of objects to it and taking them
    # out again after the bulk INSERT costs more than writing them.
    unattached: list[object] = field(default_factory=list)
    _counters_dirty: set[str] = field(default_factory=set)

    # --- lifecycle -------------------------------------------------------------------------

    def close(self) -> None:
        self.session.info.pop(_KEY, None)
        if event.contains(self.session, "do_orm_execute", self._before_orm_execute):
            event.remove(self.session, "do_orm_execute", self._before_orm_execute)

    def add(self, obj: object) -> None:
        self.unattached.append(obj)

    def attach(self) -> None:
        """Hand the rows kept out of the session to it, so a flush writes them."""
        if self.unattached:
            self.session.add_all(self.unattached)
            self.unattached.clear()

    def flush(self) -> None:
        self.attach()
        self.session.flush()

    def _before_orm_execute(self, _state: ORMExecuteState) -> None:
        # Any ORM query in the middle of a batch must see the batch's rows, as autoflush
        # would have shown them: in the session they go, and autoflush runs right after.
        self.attach()

    def finish(self) -> None:
        """Write what the batch kept back: the ORM rows, thread refs and counters."""
        rest = write_new_rows(self.session, self.unattached, datetime.now(UTC))
        self.unattached.clear()
        self.session.add_all(rest)
        self.session.flush()  # what is left: changes to rows that existed before the batch
        self.write_refs()
        for day in sorted(self._counters_dirty):
            self.session.execute(
                update(TicketCounter)
                .where(TicketCounter.day == day)
                .values(last_value=self.counters[day])
            )
        self._counters_dirty.clear()

    # --- prefetch --------------------------------------------------------------------------

    def prefetch_logged(self, message_ids: Iterable[str]) -> None:
        wanted = sorted(set(message_ids) - self._logged_known)
        if not wanted:
            return
        self.flush()  # rows the batch logged count too
        for chunk in _chunks(wanted):
            rows = self.session.execute(
                select(EmailLog.id, EmailLog.email_message_id, EmailLog.ticket_id,
                       EmailLog.classification)
                .where(EmailLog.email_message_id.in_(chunk))
            ).all()
            for row in sorted(rows, key=lambda r: r.id):
                self.logged.setdefault(
                    row.email_message_id,
                    LoggedMessage(row.id, row.ticket_id, row.classification),
                )
        self._logged_known.update(wanted)

    def prefetch_refs(self, message_ids: Iterable[str]) -> None:
        wanted = sorted(set(message_ids) - self._refs_known)
        if not wanted:
            return
        self.write_refs()  # what the batch recorded must be in the table we read
        for chunk in _chunks(wanted):
            rows = self.session.execute(
                select(ThreadRef.message_id, ThreadRef.ticket_id, ThreadRef.kind)
                .where(ThreadRef.message_id.in_(chunk))
            ).all()
            for row in rows:
                self.refs.setdefault(row.message_id, {})[row.ticket_id] = row.kind
        self._refs_known.update(wanted)

    def prefetch_tickets(self, *, ids: Iterable[int] = (), numbers: Iterable[str] = ()) -> None:
        want_ids = sorted(set(ids) - self.tickets.keys())
        want_numbers = sorted({n.upper() for n in numbers} - self.by_number.keys())
        loaded: list[Ticket] = []
        for chunk in _chunks(want_numbers):
            found = list(self.session.scalars(select(Ticket).where(Ticket.ticket_number.in_(chunk))))
            loaded += found
            for number in chunk:
                self.by_number.setdefault(number, None)
        for id_chunk in _chunks(want_ids):
            loaded += self.session.scalars(select(Ticket).where(Ticket.id.in_(id_chunk)))
        for ticket in loaded:
            self.keep_ticket(ticket)
        # Follow merge pointers so resolving a merged ticket never needs a query.
        missing = {t.merged_into_id for t in loaded if t.merged_into_id is not None}
        missing -= self.tickets.keys()
        if missing:
            self.prefetch_tickets(ids=missing)

    def prefetch_replies(self, recipients: Iterable[str], since: datetime) -> None:
        wanted = sorted(set(recipients))
        self._replies_since = since
        for chunk in _chunks(wanted):
            rows = self.session.execute(
                select(EmailLog.email_to, EmailLog.created_at).where(
                    EmailLog.direction == "out",
                    EmailLog.action == AUTO_REPLY_ACTION,
                    EmailLog.email_to.in_(chunk),
                    EmailLog.created_at >= since,
                )
            ).all()
            for address in chunk:
                self.replies.setdefault(address, [])
            for row in rows:
                self.replies[row.email_to].append(as_utc(row.created_at))

    # --- lookups the services make ---------------------------------------------------------

    def refs_for(self, message_ids: Sequence[str]) -> dict[str, list[Ref]]:
        self.prefetch_refs(message_ids)
        return {
            mid: [Ref(mid, tid, kind) for tid, kind in self.refs[mid].items()]
            for mid in message_ids
            if self.refs.get(mid)
        }

    def ticket(self, ticket_id: int) -> Ticket:
        found = self.tickets.get(ticket_id)
        if found is None:
            found = self.session.get_one(Ticket, ticket_id)
            self.keep_ticket(found)
        return found

    def tickets_by_number(self, numbers: Iterable[str]) -> dict[str, Ticket]:
        wanted = {n.upper() for n in numbers}
        self.prefetch_tickets(numbers=wanted)
        return {n: t for n in wanted if (t := self.by_number.get(n)) is not None}

    def logged_as(self, message_id: str) -> LoggedMessage | EmailLog | None:
        self.prefetch_logged([message_id])
        return self.logged.get(message_id)

    def recent_replies(self, address: str, since: datetime) -> int | None:
        """Auto-replies to `address` since `since`; None when the batch cannot tell."""
        times = self.replies.get(address)
        if times is None or self._replies_since is None or as_utc(since) < self._replies_since:
            return None
        since = as_utc(since)
        return sum(1 for moment in times if moment >= since)

    # --- writes the services make ----------------------------------------------------------

    def keep_ticket(self, ticket: Ticket) -> None:
        self.tickets[ticket.id] = ticket
        self.by_number[ticket.ticket_number.upper()] = ticket

    def note_logged(self, entry: EmailLog) -> None:
        if entry.email_message_id not in self.logged:
            self.logged[entry.email_message_id] = entry

    def note_reply(self, address: str, moment: datetime) -> None:
        if address in self.replies:
            self.replies[address].append(as_utc(moment))

    def add_refs(self, ticket_id: int, rows: dict[str, str]) -> None:
        for mid, kind in rows.items():
            key = (mid, ticket_id)
            if self._refs_pending.get(key) != "self":
                self._refs_pending[key] = kind
            known = self.refs.setdefault(mid, {})
            if known.get(ticket_id) != "self":
                known[ticket_id] = kind

    def write_refs(self) -> None:
        if not self._refs_pending:
            return
        values = [
            {"message_id": mid, "ticket_id": tid, "kind": kind}
            for (mid, tid), kind in self._refs_pending.items()
        ]
        self._refs_pending.clear()
        self.flush()  # the tickets they point at first
        if self.ids.postgres:
            # Three arrays, one statement: one round trip and one plan for the whole batch,
            # and a statement text that never changes (no compiling per row count).
            self.session.connection().execute(
                _UNNEST_REFS,
                {
                    "m": [v["message_id"] for v in values],
                    "t": [v["ticket_id"] for v in values],
                    "k": [v["kind"] for v in values],
                },
            )
        else:
            upsert_refs(self.session, values)

    def next_counter(self, day: str) -> int:
        if day not in self.counters:
            self.counters[day] = current_counter(self.session, day)
        self.counters[day] += 1
        self._counters_dirty.add(day)
        return self.counters[day]


# A ref that later turns out to be a message we hold upgrades to "self" (both forms below).
_UNNEST_REFS = text(
    "INSERT INTO tticket_thread_refs (message_id, ticket_id, kind) "
    "SELECT * FROM unnest(CAST(:m AS text[]), CAST(:t AS integer[]), CAST(:k AS text[])) "
    "ON CONFLICT (message_id, ticket_id) DO UPDATE SET kind = excluded.kind "
    "WHERE excluded.kind = 'self'"
)


def upsert_refs(session: Session, values: list[dict[str, Any]]) -> None:
    dialect = session.get_bind().dialect.name
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    stmt = insert(ThreadRef)
    stmt = stmt.on_conflict_do_update(
        index_elements=[ThreadRef.message_id, ThreadRef.ticket_id],
        set_={"kind": stmt.excluded.kind},
        where=stmt.excluded.kind == "self",
    )
    # Parameters apart from the statement: one cached compiled form, whatever the row count.
    session.execute(stmt, values)


def counter_upsert(session: Session, day: str, step: int) -> Any:
    """Add `step` to the day's ticket counter (creating it), returning the new value. The
    row stays locked until commit, so concurrent workers queue behind the caller."""
    dialect = session.get_bind().dialect.name
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    return (
        insert(TicketCounter)
        .values(day=day, last_value=step)
        .on_conflict_do_update(
            index_elements=[TicketCounter.day],
            set_={"last_value": TicketCounter.last_value + step},
        )
        .returning(TicketCounter.last_value)
    )


def current_counter(session: Session, day: str) -> int:
    """Today's counter, its row locked until commit (concurrent workers queue behind us)."""
    # On the connection: an ORM execute would autoflush the batch half-way.
    return int(session.connection().execute(counter_upsert(session, day, 0)).scalar_one())


def start(session: Session, block: int) -> Batch:
    if _KEY in session.info:
        raise RuntimeError("a batch is already running in this session")
    batch = Batch(session=session, ids=IdBlocks(session, block))
    session.info[_KEY] = batch
    event.listen(session, "do_orm_execute", batch._before_orm_execute)
    return batch


def current(session: Session) -> Batch | None:
    batch = session.info.get(_KEY)
    return batch if isinstance(batch, Batch) else None


def get_ticket(session: Session, ticket_id: int) -> Ticket:
    """A ticket by id; in a batch, also one the batch opened and has not written yet."""
    batch = current(session)
    return batch.ticket(ticket_id) if batch is not None else session.get_one(Ticket, ticket_id)


def add_row(session: Session, obj: Base) -> None:
    """session.add, except in a batch, which writes the row itself."""
    batch = current(session)
    if batch is not None:
        batch.add(obj)
    else:
        session.add(obj)


def add_with_id(session: Session, obj: Base) -> None:
    """Add a new row and make sure it has its id: from the batch's block, else by a flush."""
    batch = current(session)
    if batch is not None:
        obj.id = batch.ids.take(type(obj))  # type: ignore[attr-defined]
        batch.add(obj)
    else:
        session.add(obj)
        session.flush()


def count_recent_replies(session: Session, address: str, since: datetime) -> int:
    return (
        session.scalar(
            select(func.count())
            .select_from(EmailLog)
            .where(
                EmailLog.direction == "out",
                EmailLog.email_to == address,
                EmailLog.created_at >= since,
                EmailLog.action == AUTO_REPLY_ACTION,
            )
        )
        or 0
    )
