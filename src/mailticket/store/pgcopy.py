"""Bulk INSERT through PostgreSQL's COPY, for the rows a batch writes.

A multi-row INSERT makes SQLAlchemy process every parameter and PostgreSQL parse and plan a
statement as long as the batch; COPY streams the rows in PostgreSQL's text format and skips
both. Values go through each column type's own bind processing first (clipping, JSON), so a
row stored by COPY is the row an INSERT would have stored.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Sequence
from datetime import date, datetime
from typing import Any

from sqlalchemy import JSON, Connection, LargeBinary, Table
from sqlalchemy.exc import DBAPIError

# COPY's text format: backslash escapes for the characters that delimit it (backslash
# first). Chained replace() is far faster than str.translate on long values.
_ESCAPES = (("\\", "\\\\"), ("\n", "\\n"), ("\r", "\\r"), ("\t", "\\t"))


def _escape(value: str) -> str:
    for char, escaped in _ESCAPES:
        if char in value:
            value = value.replace(char, escaped)
    return value


class CopyValueError(ValueError):
    """A value COPY's text format cannot carry (the caller falls back to INSERT)."""


def _text(value: Any) -> str:
    if value is None:
        return "\\N"
    if type(value) is str:  # the common case first
        if "\x00" in value:
            raise CopyValueError("text with a NUL character")
        return _escape(value)
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bytes | bytearray | memoryview):
        return "\\\\x" + bytes(value).hex()
    if isinstance(value, dict | list):
        value = json.dumps(value)
    if not isinstance(value, str):
        raise CopyValueError(f"cannot COPY a {type(value).__name__}")
    if "\x00" in value:
        raise CopyValueError("text with a NUL character")
    return _escape(value)


def _converter(connection: Connection, table: Table, key: str) -> Callable[[Any], str]:
    """value -> COPY field for one column, the type's bind processing included."""
    column_type = table.c[key].type
    if isinstance(column_type, LargeBinary):
        return _text  # psycopg2 wraps bytes in its own adapter; COPY wants the bytes
    process = column_type.bind_processor(connection.dialect)
    if process is None:
        return _text
    if isinstance(column_type, JSON):
        # A JSON column's None is JSON null, as with INSERT; other types' is SQL NULL.
        return lambda value: _text(process(value))
    return lambda value: "\\N" if value is None else _text(process(value))


def copy_rows(connection: Connection, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    """COPY rows that all name the same columns into `table`, in the caller's transaction."""
    if not rows:
        return
    keys = list(rows[0])
    converters = [(key, _converter(connection, table, key)) for key in keys]
    buffer = io.StringIO()
    write = buffer.write
    for row in rows:
        write("\t".join([convert(row[key]) for key, convert in converters]))
        write("\n")
    buffer.seek(0)
    columns = ", ".join(connection.dialect.identifier_preparer.quote(k) for k in keys)
    name = connection.dialect.identifier_preparer.format_table(table)
    statement = f"COPY {name} ({columns}) FROM STDIN"
    cursor = connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.copy_expert(statement, buffer)
    except connection.dialect.loaded_dbapi.Error as exc:
        # As SQLAlchemy's own errors (IntegrityError, OperationalError...), so callers see
        # a failed COPY exactly like a failed INSERT.
        raise DBAPIError.instance(
            statement, None, exc, connection.dialect.loaded_dbapi.Error
        ) from exc
    finally:
        cursor.close()
