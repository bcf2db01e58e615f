"""Writing a batch's new rows: one statement per table, without the unit of work.

The unit of work would issue the same INSERTs but spends more on bookkeeping per object than
the database spends on the row. Here each new object's column values are read straight from
it (with what the database or the ORM would have filled in for the rest), grouped by table in
foreign-key order, and written with COPY on PostgreSQL or one multi-row INSERT on SQLite.
"""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache
from itertools import groupby
from typing import Any

from sqlalchemy import JSON, ColumnDefault, DateTime, insert
from sqlalchemy.orm import InstanceState, Mapper, Session
from sqlalchemy.orm.attributes import instance_state

from mailticket.store.db import Base
from mailticket.store.pgcopy import CopyValueError, copy_rows


def write_new_rows(session: Session, unattached: list[object], now: datetime) -> list[object]:
    """INSERT the batch's new rows with one statement per table (COPY on PostgreSQL), then
    let go of them: the unit of work does the same but spends more on bookkeeping per object
    than the database spends on the row, and nothing reads these objects afterwards.
    Returns the unattached rows only the ORM knows how to write."""
    by_table: dict[Any, list[tuple[object, dict[str, Any]]]] = {}
    rest: list[object] = []
    attached = list(session.new)
    for obj in [*attached, *unattached]:
        state = instance_state(obj)
        values = _column_values(state, now)
        if values is not None:
            by_table.setdefault(state.mapper.local_table, []).append((obj, values))
        elif state.session_id is None:
            rest.append(obj)
    in_session = set(map(id, attached))
    connection = session.connection()
    postgres = connection.dialect.name == "postgresql"
    for table in Base.metadata.sorted_tables:  # parents before the rows pointing at them
        # Rows of one table name the same columns in the same order (one column plan per
        # mapper) unless some left a column out; each such group is written on its own.
        for _keys, group in groupby(
            sorted(by_table.get(table, []), key=lambda item: tuple(item[1])),
            key=lambda item: tuple(item[1]),
        ):
            rows = list(group)
            if postgres:
                try:
                    copy_rows(connection, table, [values for _, values in rows])
                except CopyValueError:  # raised before anything was sent
                    connection.execute(insert(table), [values for _, values in rows])
            else:
                connection.execute(insert(table), [values for _, values in rows])
            for obj, _ in rows:
                if id(obj) in in_session:
                    session.expunge(obj)
    return rest


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
