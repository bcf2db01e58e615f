"""Migration 0006: outbox messages move from base64 inside the JSON payload to a bytes
column, existing rows included, and back on downgrade; on both databases."""

from __future__ import annotations

import base64
import json

from alembic import command
from sqlalchemy import inspect, text

from mailticket.store import migrate
from mailticket.store.db import make_engine

BEFORE = "0005_backends"
MESSAGE = b"From: support@example.com\r\nSubject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n\r\nbody \xff\x00\r\n"


def _insert(conn, key: str, payload: dict[str, object]) -> None:  # type: ignore[no-untyped-def]
    conn.execute(
        text(
            "INSERT INTO mailticket_outbox (kind, target, operation, idempotency_key, payload,"
            " status, attempts, next_attempt_at) VALUES ('smtp', 'smtp', 'send_mail', :k,"
            " :p, 'pending', 0, CURRENT_TIMESTAMP)"
        ),
        {"k": key, "p": json.dumps(payload)},
    )


def test_existing_rows_are_converted_both_ways(empty_url: str) -> None:
    migrate.upgrade(empty_url, BEFORE)
    engine = make_engine(empty_url)
    try:
        with engine.begin() as conn:
            for n in range(1203):  # more than one page of the conversion
                _insert(conn, f"k{n}", {
                    "mail_from": "support@example.com", "rcpt_to": [f"c{n}@example.org"],
                    "message_id": f"<{n}@example.com>",
                    "message_b64": base64.b64encode(MESSAGE + str(n).encode()).decode(),
                })
            _insert(conn, "backend", {"op_key": "x"})  # not a message: left alone
            _insert(conn, "broken", {"rcpt_to": ["a@b"], "message_b64": "!!"})
        migrate.upgrade(empty_url)
        with engine.connect() as conn:
            rows = {
                key: (json.loads(p) if isinstance(p, str) else p, m)
                for key, p, m in conn.execute(
                    text("SELECT idempotency_key, payload, message FROM mailticket_outbox")
                )
            }
        for n in (0, 600, 1202):
            payload, message = rows[f"k{n}"]
            assert bytes(message) == MESSAGE + str(n).encode()
            assert "message_b64" not in payload and payload["rcpt_to"] == [f"c{n}@example.org"]
        assert rows["backend"] == ({"op_key": "x"}, None)
        assert rows["broken"][1] is None and rows["broken"][0]["message_b64"] == "!!"

        command.downgrade(migrate.alembic_config(empty_url), BEFORE)
        with engine.connect() as conn:
            back = {
                key: json.loads(p) if isinstance(p, str) else p
                for key, p in conn.execute(
                    text("SELECT idempotency_key, payload FROM mailticket_outbox")
                )
            }
            columns = {
                c["name"] for c in
                inspect(conn).get_columns("mailticket_outbox")
            }
        assert "message" not in columns
        assert base64.b64decode(back["k600"]["message_b64"]) == MESSAGE + b"600"
        assert back["backend"] == {"op_key": "x"}
    finally:
        engine.dispose()
