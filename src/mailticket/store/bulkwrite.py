"""Writing a batch: one statement per table, without the ORM's unit of work.

The ORM would issue the same INSERTs but spends more on bookkeeping per object than the
database spends on the row. Here each new object's column values are read straight from it
(with what the database or the ORM would have filled in for the rest), grouped by table in
foreign-key order, and written with COPY on PostgreSQL or one multi-row INSERT on SQLite.
Merges, thread refs and the ticket counters are written here too, a statement each.
"""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache
from itertools import groupby
from typing import Any

from sqlalchemy import JSON, ColumnDefault, DateTime, bindparam, insert, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import InstanceState, Mapper, Session, make_transient_to_detached
from sqlalchemy.orm.attributes import flag_modified, get_history, instance_state
from sqlalchemy.sql.elements import ClauseElement

from mailticket.store.db import Base
from mailticket.store.models import Attachment, Comment, EmailLog, ThreadRef, TicketCounter
from mailticket.store.pgcopy import CopyValueError, copy_rows

__all__ = [
    "align_updates",
    "lock_counter",
    "move_tickets",
    "set_counter",
    "track_written",
    "upsert_refs",
    "write_new_rows",
]


def write_new_rows(session: Session, rows: list[Any], now: datetime) -> list[Any]:
    """INSERT new rows with one statement per table (COPY on PostgreSQL). Returns the rows
    only the ORM knows how to write (a column default computed by the ORM)."""
    by_table: dict[Any, list[tuple[object, dict[str, Any]]]] = {}
    rest: list[object] = []
    for obj in rows:
        state = instance_state(obj)
        values = _column_values(state, now)
        if values is not None:
            by_table.setdefault(state.mapper.local_table, []).append((obj, values))
        else:
            rest.append(obj)
    connection = session.connection()
    postgres = connection.dialect.name == "postgresql"
    order = _table_order()
    for table in sorted(by_table, key=order.__getitem__):  # parents before their children
        rows_of_table = _parents_first(table, by_table[table])
        # Rows of one table name the same columns in the same order (one column plan per
        # mapper) unless some left a column out; each such group is written on its own.
        for _keys, group in groupby(
            sorted(rows_of_table, key=lambda item: tuple(item[1])),
            key=lambda item: tuple(item[1]),
        ):
            batch = [row_values for _, row_values in group]
            if postgres:
                try:
                    copy_rows(connection, table, batch)
                except CopyValueError:  # raised before anything was sent
                    connection.execute(insert(table), batch)
            else:
                connection.execute(insert(table), batch)
    return rest


_order: tuple[int, dict[Any, int]] = (-1, {})


def _table_order() -> dict[Any, int]:
    """Each table's place in foreign-key order (parents first). `sorted_tables` sorts the
    whole schema again on every call; this sorts it again only when a model module
    imported since has added tables."""
    global _order
    count, order = _order
    if count != len(Base.metadata.tables):
        tables = Base.metadata.sorted_tables
        order = {table: place for place, table in enumerate(tables)}
        _order = (len(tables), order)
    return order


def _parents_first(
    table: Any, rows: list[tuple[object, dict[str, Any]]]
) -> list[tuple[object, dict[str, Any]]]:
    """A row pointing at a row of its own table (a ticket merged into a ticket opened in
    the same batch) after the row it points at: SQLite checks every row as it goes in."""
    columns = _self_references(table)
    if not columns or not rows:
        return rows
    by_id = {values.get("id"): values for _, values in rows}

    def depth(values: dict[str, Any]) -> int:
        hops = 0
        while hops < 50:
            parent = next((values.get(c) for c in columns if values.get(c) in by_id), None)
            if parent is None:
                break
            values, hops = by_id[parent], hops + 1
        return hops

    return sorted(rows, key=lambda item: depth(item[1]))


@lru_cache(maxsize=64)
def _self_references(table: Any) -> tuple[str, ...]:
    """The table's columns pointing at its own rows (looked up once, not per write)."""
    return tuple(fk.parent.key for fk in table.foreign_keys if fk.column.table is table)


def track_written(session: Session, rows: list[Any]) -> None:
    """Rows just written behind the ORM's back become persistent session objects, so a
    later change to one is written like a change to any loaded row."""
    for obj in rows:
        make_transient_to_detached(obj)
    session.add_all(rows)


def align_updates(session: Session) -> None:
    """Changed rows of a table all set the same columns, so the flush sends them as one
    UPDATE. The ORM groups rows into one executemany only while consecutive rows (in key
    order) change the same columns: a batch where one ticket got a new tag and two others
    only a new updated_at went out as three UPDATEs, three round trips in the turn every
    message of the group waits on. Each row is given the columns changed in any row of its
    table, written with the value it already holds (unchanged for the database). Not done
    when a changed value is an SQL expression (rendered into the statement, so the rows
    could not share it anyway) or a column is not loaded (its value is unknown here)."""
    by_mapper: dict[Mapper[Any], list[tuple[InstanceState[Any], set[str]]]] = {}
    for obj in session.dirty:
        state = instance_state(obj)
        columns = _column_keys(state.mapper)
        changed = {
            key for key in state.committed_state
            if key in columns and get_history(obj, key).has_changes()
        }
        if changed:
            by_mapper.setdefault(state.mapper, []).append((state, changed))
    for rows in by_mapper.values():
        union = set().union(*(changed for _, changed in rows))
        if len(rows) < 2 or all(changed == union for _, changed in rows):
            continue
        if any(
            key not in state.dict or isinstance(state.dict[key], ClauseElement)
            for state, _ in rows for key in union
        ):
            continue
        for state, changed in rows:
            for key in union - changed:
                flag_modified(state.obj(), key)


@lru_cache(maxsize=64)
def _column_keys(mapper: Mapper[Any]) -> frozenset[str]:
    return frozenset(attr.key for attr in mapper.column_attrs)


def move_tickets(session: Session, moves: list[tuple[int, int]]) -> None:
    """Merges: mail, comments, attachments and thread refs of each source ticket go to its
    target (a ref both had keeps the stronger kind)."""
    params = [{"m_src": src, "m_dst": dst} for src, dst in moves]
    connection = session.connection()
    for statement in _MOVE_ROWS:
        connection.execute(statement, params)
    connection.execute(_MOVE_REFS, params)
    connection.execute(_DROP_REFS, params)
    connection.execute(_MOVE_LINKS, params)
    connection.execute(_DROP_LINKS, params)


_MOVE_ROWS = tuple(
    update(table)  # type: ignore[arg-type]
    .where(table.c.ticket_id == bindparam("m_src"))
    .values(ticket_id=bindparam("m_dst"))
    for table in (EmailLog.__table__, Comment.__table__, Attachment.__table__)
)

# The SELECT's WHERE also settles SQLite's parsing of INSERT ... SELECT ... ON CONFLICT.
_MOVE_REFS = text(
    "INSERT INTO tticket_thread_refs (message_id, ticket_id, kind) "
    "SELECT message_id, :m_dst, kind FROM tticket_thread_refs WHERE ticket_id = :m_src "
    "ON CONFLICT (message_id, ticket_id) DO UPDATE SET kind = excluded.kind "
    "WHERE excluded.kind = 'self'"
)
_DROP_REFS = text("DELETE FROM tticket_thread_refs WHERE ticket_id = :m_src")
# A message's further tickets (multi-ticket threading) follow the merge, once each.
_MOVE_LINKS = text(
    "UPDATE mailticket_email_tickets SET ticket_id = :m_dst WHERE ticket_id = :m_src "
    "AND email_log_id NOT IN "
    "(SELECT email_log_id FROM mailticket_email_tickets WHERE ticket_id = :m_dst)"
)
_DROP_LINKS = text("DELETE FROM mailticket_email_tickets WHERE ticket_id = :m_src")

# A ref that turns out to be a message we hold upgrades to "self" (both forms below).
_UNNEST_REFS = text(
    "INSERT INTO tticket_thread_refs (message_id, ticket_id, kind) "
    "SELECT * FROM unnest(CAST(:m AS text[]), CAST(:t AS integer[]), CAST(:k AS text[])) "
    "ON CONFLICT (message_id, ticket_id) DO UPDATE SET kind = excluded.kind "
    "WHERE excluded.kind = 'self'"
)


def upsert_refs(session: Session, refs: dict[tuple[str, int], str]) -> None:
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        # Three arrays, one statement: one round trip and one plan for the whole batch,
        # and a statement text that never changes (no compiling per row count).
        connection.execute(
            _UNNEST_REFS,
            {"m": [m for m, _ in refs], "t": [t for _, t in refs], "k": list(refs.values())},
        )
        return
    connection.execute(
        _sqlite_upsert_refs(),
        [{"message_id": m, "ticket_id": t, "kind": k} for (m, t), k in refs.items()],
    )


# The statements below are built once, not per batch: building one and working out its
# cache key cost more CPU than the database spent running it, in a batch of one message.
@lru_cache(maxsize=1)
def _sqlite_upsert_refs() -> Any:
    stmt = sqlite_insert(ThreadRef)
    return stmt.on_conflict_do_update(
        index_elements=[ThreadRef.message_id, ThreadRef.ticket_id],
        set_={"kind": stmt.excluded.kind},
        where=stmt.excluded.kind == "self",
    )


@lru_cache(maxsize=4)
def _counter_upsert(dialect: str) -> Any:
    upsert = pg_insert if dialect == "postgresql" else sqlite_insert
    return (
        upsert(TicketCounter)
        .values(day=bindparam("c_day"), last_value=0)
        .on_conflict_do_update(
            index_elements=[TicketCounter.day],
            set_={"last_value": TicketCounter.last_value + 0},
        )
        .returning(TicketCounter.last_value)
    )


def lock_counter(session: Session, day: str) -> int:
    """The day's ticket counter (created at 0), its row locked until commit: concurrent
    workers queue behind us and numbers stay gap-free."""
    connection = session.connection()
    return int(
        connection.execute(_counter_upsert(connection.dialect.name), {"c_day": day}).scalar_one()
    )


_SET_COUNTER = (
    update(TicketCounter.__table__)  # type: ignore[arg-type]
    .where(TicketCounter.__table__.c.day == bindparam("c_day"))
    .values(last_value=bindparam("c_value"))
)


def set_counter(session: Session, day: str, value: int) -> None:
    session.connection().execute(_SET_COUNTER, {"c_day": day, "c_value": value})


# How each column of a new row gets its INSERT value when the object does not hold one.
_DB_ASSIGNS, _OMIT, _NULL, _NOW, _DEFAULT, _ORM_ONLY = range(6)


@lru_cache(maxsize=64)
def _column_plan(mapper: Mapper[Any]) -> tuple[tuple[str, str, int, Any], ...]:
    plan = []
    for attr in mapper.column_attrs:
        column = attr.columns[0]
        default = column.default
        if column.primary_key:
            how, arg = _DB_ASSIGNS, None
        elif default is not None:
            if isinstance(default, ColumnDefault):
                how, arg = _DEFAULT, default
            else:
                how, arg = _ORM_ONLY, None
        elif isinstance(column.type, JSON):
            how, arg = _OMIT, None  # None here would be stored as JSON null, not SQL NULL
        elif column.server_default is None:
            how, arg = _NULL, None
        elif isinstance(column.type, DateTime):
            how, arg = _NOW, None  # what CURRENT_TIMESTAMP would have given
        else:
            how, arg = _ORM_ONLY, None
        plan.append((attr.key, column.key, how, arg))
    return tuple(plan)


def _column_values(state: InstanceState[Any], now: datetime) -> dict[str, Any] | None:
    """Every column's value as the INSERT needs it; None when only the ORM knows how."""
    values: dict[str, Any] = {}
    held = state.dict
    for attr_key, column_key, how, default in _column_plan(state.mapper):
        if attr_key in held:
            values[column_key] = held[attr_key]
        elif how == _NULL:
            values[column_key] = None
        elif how == _NOW:
            values[column_key] = now
        elif how == _DEFAULT:
            values[column_key] = default.arg(None) if default.is_callable else default.arg
        elif how == _ORM_ONLY:
            return None
    return values
