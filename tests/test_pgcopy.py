"""COPY stores exactly what INSERT stores (PostgreSQL only: SQLite batches use INSERT)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError

from mailticket.store import migrate
from mailticket.store.db import make_engine
from mailticket.store.models import EmailLog, RawMessage, Ticket
from mailticket.store.pgcopy import CopyValueError, copy_rows

AWKWARD = "tab\there\nnew line\r\ncr \\ backslash \\N not null, ünïcödé ☃ \\x00 text"


def _log_row(n: int, **extra: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": n,
        "ticket_id": None,
        "email_message_id": f"<m{n}@x>",
        "email_subject": AWKWARD,
        "email_from": "x" * 400 + "\x00@y",  # VARCHAR(320), NUL: clipped like INSERT does
        "email_received_at": datetime(2025, 12, 15, 9, 30, tzinfo=timezone(timedelta(hours=2))),
        "is_reply": True,
        "thread_data": {"in_reply_to": None, "text": AWKWARD, "n": [1.5, True]},
        "direction": "in",
        "confidence": 0.25,
        "body_text": AWKWARD * 3,
        "raw_message_id": None,
    }
    row.update(extra)
    return row


def _read(conn: Any, ids: list[int]) -> list[tuple[Any, ...]]:
    cols = [c for c in EmailLog.__table__.c if c.key != "id"]
    rows = conn.execute(select(*cols).where(EmailLog.id.in_(ids)).order_by(EmailLog.id)).all()
    return [tuple(r) for r in rows]


def test_copy_matches_insert(pg_url: str) -> None:
    migrate.upgrade(pg_url)
    engine = make_engine(pg_url)
    try:
        with engine.begin() as conn:
            raw = bytes(range(256)) * 3
            copy_rows(conn, RawMessage.__table__, [  # type: ignore[arg-type]
                {"id": 1, "sha256": "a" * 64, "size": len(raw), "raw": raw, "source": AWKWARD}])
            conn.execute(insert(EmailLog), [_log_row(1, raw_message_id=1), _log_row(3)])
            copy_rows(conn, EmailLog.__table__, [  # type: ignore[arg-type]
                _log_row(2, raw_message_id=1), _log_row(4)])
            inserted, copied = _read(conn, [1, 3]), _read(conn, [2, 4])
            stored_raw = conn.execute(select(RawMessage.raw, RawMessage.source)).one()
        strip = lambda rows: [r[:1] + r[2:] for r in rows]  # noqa: E731 - Message-ID differs
        assert strip(copied) == strip(inserted)
        assert copied[0][list(EmailLog.__table__.c.keys()).index("email_from") - 1].endswith("x")
        assert stored_raw == (raw, AWKWARD)
    finally:
        engine.dispose()


def test_json_none_and_unset_are_kept_apart(pg_url: str) -> None:
    migrate.upgrade(pg_url)
    engine = make_engine(pg_url)
    try:
        with engine.begin() as conn:
            copy_rows(conn, EmailLog.__table__, [_log_row(1, thread_data=None)])  # type: ignore[arg-type]
            copy_rows(conn, EmailLog.__table__, [  # type: ignore[arg-type]
                {k: v for k, v in _log_row(2).items() if k != "thread_data"}])
            kinds = conn.exec_driver_sql(
                "SELECT id, thread_data IS NULL, jsonb_typeof(thread_data) "
                "FROM tticket_email_log ORDER BY id"
            ).all()
        assert [tuple(k) for k in kinds] == [(1, False, "null"), (2, True, None)]
    finally:
        engine.dispose()


def test_nul_in_text_is_refused_before_sending_and_errors_are_sqlalchemy_errors(
    pg_url: str,
) -> None:
    migrate.upgrade(pg_url)
    engine = make_engine(pg_url)
    now = datetime.now(UTC)
    ticket = {"id": 1, "ticket_number": "TKT-20251215-001", "subject": "a\x00b", "description": "",
              "status": "open", "priority": "normal", "tags": [], "custom_fields": {},
              "created_at": now, "updated_at": now}
    try:
        with engine.begin() as conn:
            with pytest.raises(CopyValueError):
                copy_rows(conn, Ticket.__table__, [ticket])  # type: ignore[arg-type]
            ticket["subject"] = "ok"
            copy_rows(conn, Ticket.__table__, [ticket])  # type: ignore[arg-type]
            with pytest.raises(IntegrityError):
                copy_rows(conn, Ticket.__table__, [ticket])  # type: ignore[arg-type]
    finally:
        engine.dispose()


def test_bytes_of_every_size_survive_copy(pg_url: str) -> None:
    """Rows with bytes go in COPY's binary format, big values in slices: each value comes
    back whole, empty and over the slice size included."""
    migrate.upgrade(pg_url)
    engine = make_engine(pg_url)
    values = [b"", b"\x00", bytes(range(256)), b"\xff" * ((1 << 20) + 3), b"x" * 70_000]
    try:
        with engine.begin() as conn:
            copy_rows(conn, RawMessage.__table__, [  # type: ignore[arg-type]
                {"id": n, "sha256": "a" * 64, "size": len(v), "raw": v, "source": None,
                 "created_at": datetime(2026, 1, 5, 8, tzinfo=UTC)}
                for n, v in enumerate(values, 1)])
            stored = conn.execute(
                select(RawMessage.raw, RawMessage.source, RawMessage.created_at)
                .order_by(RawMessage.id)).all()
        assert [r.raw for r in stored] == values
        assert {(r.source, r.created_at) for r in stored} == {
            (None, datetime(2026, 1, 5, 8, tzinfo=UTC))}
    finally:
        engine.dispose()
