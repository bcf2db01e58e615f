"""Bulk INSERT through PostgreSQL's COPY, for the rows a batch writes.

A multi-row INSERT makes SQLAlchemy process every parameter and PostgreSQL parse and plan a
statement as long as the batch; COPY streams the rows in PostgreSQL's text format and skips
both. Values go through each column type's own bind processing first (clipping, JSON), so a
row stored by COPY is the row an INSERT would have stored.

Rows that carry bytes (the raw messages, the outbox's composed mail) go in COPY's binary
format when every column they name has a binary form here: the text format would double the
bytes as hex and make the server decode them again, which cost more than the rest of the
batch's writing together; in binary the bytes are sent as they are, without a copy.
"""

from __future__ import annotations

import io
import json
import struct
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Connection,
    DateTime,
    Dialect,
    Integer,
    LargeBinary,
    SmallInteger,
    String,
    Table,
)
from sqlalchemy.dialects.postgresql import JSONB
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
    # Most values are plain str, int, None, datetime (a batch of eight messages formats
    # some two thousand): those are told apart by their exact type, without walking the
    # isinstance chain below, and a str without a delimiter in it is its own field.
    kind = type(value)
    if kind is str:
        text: str = value
        if "\x00" in text:
            raise CopyValueError("text with a NUL character")
        if "\\" in text or "\n" in text or "\r" in text or "\t" in text:
            return _escape(text)
        return text
    if value is None:
        return "\\N"
    field = _FIELDS.get(kind)
    if field is not None:
        return field(value)
    return _other_text(value)


def _other_text(value: Any) -> str:
    """The field of a value of any other type (subclasses included)."""
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


# The field of a value of exactly these types: what `_other_text` gives it.
_FIELDS: dict[type, Callable[[Any], str]] = {
    bool: lambda value: "t" if value else "f",
    int: int.__repr__,
    float: float.__repr__,
    datetime: datetime.isoformat,
    date: date.isoformat,
}


def _converter(dialect: Dialect, table: Table, key: str) -> Callable[[Any], str]:
    """value -> COPY field for one column, the type's bind processing included."""
    column_type = table.c[key].type
    if isinstance(column_type, LargeBinary):
        return _text  # psycopg2 wraps bytes in its own adapter; COPY wants the bytes
    process = column_type.bind_processor(dialect)
    if process is None:
        return _text
    if isinstance(column_type, JSON):
        # A JSON column's None is JSON null, as with INSERT; other types' is SQL NULL.
        return lambda value: _text(process(value))
    return lambda value: "\\N" if value is None else _text(process(value))


# --- binary format ----------------------------------------------------------------------

_BINARY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack("!ii", 0, 0)
_NULL = struct.pack("!i", -1)
_BINARY_TRAILER = struct.pack("!h", -1)
_PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
_int4, _int8, _length = struct.Struct("!ii").pack, struct.Struct("!iq").pack, struct.Struct("!i").pack


def _b_bytes(value: Any) -> list[bytes]:
    data = value if type(value) is bytes else bytes(value)
    return [_length(len(data)), data] if data else [_length(0)]


def _b_text(value: Any) -> list[bytes]:
    if type(value) is not str:
        raise CopyValueError(f"expected text, got a {type(value).__name__}")
    if "\x00" in value:
        raise CopyValueError("text with a NUL character")
    data = value.encode()
    return [_length(len(data)), data] if data else [_length(0)]


def _b_int(value: Any) -> list[bytes]:
    if type(value) is not int or not -(2**31) <= value < 2**31:
        raise CopyValueError(f"not a 4-byte integer: {value!r}")
    return [_int4(4, value)]


def _b_bool(value: Any) -> list[bytes]:
    return [b"\x00\x00\x00\x01\x01" if value else b"\x00\x00\x00\x01\x00"]


def _b_timestamptz(value: Any) -> list[bytes]:
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise CopyValueError(f"not an aware datetime: {value!r}")  # naive: the session's zone
    delta = value - _PG_EPOCH
    return [_int8(8, (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds)]


def _binary_encoder(
    dialect: Dialect, table: Table, key: str
) -> Callable[[Any], list[bytes]] | None:
    """value -> the field's pieces in COPY's binary format; None: this column has none."""
    column_type = table.c[key].type
    impl = column_type.dialect_impl(dialect)
    encode: Callable[[Any], list[bytes]]
    if isinstance(impl, LargeBinary):
        encode = _b_bytes
    elif isinstance(impl, JSON):
        process = impl.bind_processor(dialect)  # type: ignore[no-untyped-call]
        prefix = b"\x01" if isinstance(impl, JSONB) else b""  # jsonb's format version

        def encode(value: Any) -> list[bytes]:
            data = prefix + _b_text(process(value) if process else json.dumps(value))[-1]
            return [_length(len(data)), data]

        return encode  # a JSON column's None is JSON null, as with INSERT
    elif impl.bind_processor(dialect) is not None:
        return None  # clipping and the like: the text format runs it
    elif isinstance(impl, String):
        encode = _b_text
    elif type(impl) is Integer and not isinstance(impl, BigInteger | SmallInteger):
        encode = _b_int
    elif isinstance(impl, Boolean):
        encode = _b_bool
    elif isinstance(impl, DateTime) and impl.timezone:
        encode = _b_timestamptz
    else:
        return None
    return lambda value: [_NULL] if value is None else encode(value)


def _binary_pieces(
    encoders: Sequence[tuple[str, Callable[[Any], list[bytes]]]],
    rows: Sequence[dict[str, Any]],
) -> list[bytes]:
    """The whole COPY in binary format as a list of pieces (the bytes values themselves,
    not copies). Built before anything is sent, so a value COPY cannot carry fails before
    the COPY starts."""
    count = struct.pack("!h", len(encoders))
    pieces = [_BINARY_HEADER]
    extend = pieces.extend
    for row in rows:
        pieces.append(count)
        for key, encode in encoders:
            extend(encode(row[key]))
    pieces.append(_BINARY_TRAILER)
    return pieces


class _Pieces:
    """A file for copy_expert that hands over the pieces one read at a time: small ones
    joined, big ones in slices (libpq copies what it is given into its own buffer, which
    would otherwise grow to the biggest value). Never an empty read before the end:
    psycopg2 takes one as the end of the data."""

    _SLICE = 1 << 20

    def __init__(self, pieces: list[bytes]) -> None:
        self._next: Iterator[bytes] = iter(self._sliced(pieces))

    @classmethod
    def _sliced(cls, pieces: list[bytes]) -> Iterator[bytes]:
        small: list[bytes] = []
        held = 0
        for piece in pieces:
            if len(piece) < cls._SLICE:
                small.append(piece)
                held += len(piece)
                if held < cls._SLICE:
                    continue
                piece = b""
            if small:
                yield b"".join(small)
                small, held = [], 0
            view = memoryview(piece)
            for start in range(0, len(piece), cls._SLICE):
                yield bytes(view[start : start + cls._SLICE])
        if small:
            yield b"".join(small)

    def read(self, _size: int = -1) -> bytes:
        return next(self._next, b"")


def _text_buffer(
    converters: Sequence[tuple[str, Callable[[Any], str]]], rows: Sequence[dict[str, Any]]
) -> io.StringIO:
    lines = ["\t".join([convert(row[key]) for key, convert in converters]) for row in rows]
    lines.append("")  # the last row ends with a newline too
    return io.StringIO("\n".join(lines))


@dataclass(frozen=True, slots=True)
class _Plan:
    """How rows naming these columns are copied into this table: the statements and each
    column's conversion, worked out once per shape (a batch of one message makes four or
    five COPYs, and working them out again each time cost more than building the data)."""

    text_statement: str
    converters: tuple[tuple[str, Callable[[Any], str]], ...]
    # Rows that carry bytes, when every column has a binary form here: the statement and
    # each column's encoder (else None).
    binary: tuple[str, tuple[tuple[str, Callable[[Any], list[bytes]]], ...]] | None


@lru_cache(maxsize=256)
def _plan(dialect: Dialect, table: Table, keys: tuple[str, ...]) -> _Plan:
    preparer = dialect.identifier_preparer
    columns = ", ".join(preparer.quote(k) for k in keys)
    name = preparer.format_table(table)
    statement = f"COPY {name} ({columns}) FROM STDIN"
    converters = tuple((key, _converter(dialect, table, key)) for key in keys)
    if not any(isinstance(table.c[k].type, LargeBinary) for k in keys):
        return _Plan(statement, converters, None)
    encoders = [(key, _binary_encoder(dialect, table, key)) for key in keys]
    if any(encode is None for _, encode in encoders):
        return _Plan(statement, converters, None)
    binary = tuple((key, encode) for key, encode in encoders if encode is not None)
    return _Plan(statement, converters, (f"{statement} WITH (FORMAT binary)", binary))


def copy_rows(connection: Connection, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    """COPY rows that all name the same columns into `table`, in the caller's transaction."""
    if not rows:
        return
    plan = _plan(connection.dialect, table, tuple(rows[0]))
    source: io.StringIO | _Pieces | None = None
    statement = plan.text_statement
    if plan.binary is not None:
        try:
            source = _Pieces(_binary_pieces(plan.binary[1], rows))
            statement = plan.binary[0]
        except CopyValueError:
            pass  # the text format may still carry it (or says why not)
    if source is None:
        source = _text_buffer(plan.converters, rows)
    cursor = connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.copy_expert(statement, source)
    except connection.dialect.loaded_dbapi.Error as exc:
        # As SQLAlchemy's own errors (IntegrityError, OperationalError...), so callers see
        # a failed COPY exactly like a failed INSERT.
        raise DBAPIError.instance(
            statement, None, exc, connection.dialect.loaded_dbapi.Error
        ) from exc
    finally:
        cursor.close()
