"""An installation holding mail goes back to each older revision (Alembic downgrade) and up
again with `mailticket db upgrade`, on SQLite and PostgreSQL: every row the older schema
holds comes back unchanged, and the upgraded database then works (a reply threads into an
old ticket, the API lists the old mail)."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.script import ScriptDirectory
from fastapi.testclient import TestClient
from sqlalchemy import Engine, MetaData

from mailticket.api.app import create_app
from mailticket.api.tokens import create_token
from mailticket.cli import main
from mailticket.runtime import build_runtime
from mailticket.settings import load_settings
from mailticket.store import migrate
from mailticket.store.db import make_engine
from tests.mailfactory import make_email

_SCRIPTS = ScriptDirectory.from_config(migrate.alembic_config("sqlite://"))
OLDER = [s.revision for s in _SCRIPTS.walk_revisions() if s.revision not in _SCRIPTS.get_heads()]
PDF = b"%PDF-1.4\n\xe2\xe3\xcf\xd3 Rechnung\n%%EOF\n"


def _outbox_mail(row: dict[str, Any]) -> dict[str, Any]:
    """Before 0006 a queued mail sits base64 in the payload, after it in its own column: the
    same mail either way, which is what is compared."""
    payload = dict(row["payload"] or {})
    encoded = payload.pop("message_b64", None)
    mail = base64.b64decode(encoded) if encoded is not None else row.pop("message", None)
    row.pop("message", None)
    return {**row, "payload": payload, "mail": mail}


def _rows(engine: Engine) -> dict[str, tuple[list[str], list[tuple[Any, ...]]]]:
    tables = MetaData()
    tables.reflect(engine)
    out = {}
    with engine.connect() as conn:
        for table in tables.sorted_tables:
            if table.name == "alembic_version":
                continue
            rows = [
                {k: bytes(v) if isinstance(v, memoryview) else v for k, v in row.items()}
                for row in conn.execute(table.select()).mappings()
            ]
            if table.name == "mailticket_outbox":
                rows = [_outbox_mail(r) for r in rows]
            columns = sorted({c.name for c in table.columns} - {"message"} | (
                {"mail"} if table.name == "mailticket_outbox" else set()
            )) if table.name == "mailticket_outbox" else [c.name for c in table.columns]
            out[table.name] = (
                columns, sorted((tuple(r[c] for c in columns) for r in rows), key=repr)
            )
    return out


def _as_before(after: dict[str, Any], before: dict[str, Any]) -> dict[str, Any]:
    """`after` cut to the tables and columns `before` had."""
    cut = {}
    for name, (columns, _) in before.items():
        now_columns, now_rows = after[name]
        index = [now_columns.index(c) for c in columns]
        cut[name] = (columns, sorted((tuple(r[i] for i in index) for r in now_rows), key=repr))
    return cut


@pytest.mark.parametrize("revision", OLDER)
def test_mail_survives_going_back_to_a_revision_and_upgrading(
    empty_url: str, revision: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    migrate.upgrade(empty_url)
    settings = load_settings(database_url=empty_url, _env_file=None)
    runtime = build_runtime(settings)
    try:
        first = make_email(
            subject="Drucker druckt nicht — 打印机", sender="Jörg Müller <joerg@example.de>",
            body="Grüße aus Köln: das Gerät zeigt «Fehler 42».",
            attachments=[(PDF, "application/pdf", "Rechnung-März.pdf")],
        )
        opened = runtime.pipeline.process(first, "import:1")
        mid = opened.message_id
        reply = make_email(subject="Re: Drucker", sender="joerg@example.de", in_reply_to=mid,
                           references=mid, body="Immer noch kaputt.")
        assert runtime.pipeline.process(reply, "import:2").action == "linked"
        assert runtime.pipeline.process(make_email(sender="ana@example.org"), "import:3").action \
            == "created"
    finally:
        runtime.close()

    engine = make_engine(empty_url)
    try:
        command.downgrade(migrate.alembic_config(empty_url), revision)
        before = _rows(engine)
        assert before["tticket_tickets"][1] and before["tticket_email_log"][1]

        monkeypatch.setenv("DATABASE_URL", empty_url)
        monkeypatch.chdir(tmp_path)
        assert main(["db", "upgrade"]) == 0

        assert _as_before(_rows(engine), before) == before
    finally:
        engine.dispose()

    runtime = build_runtime(settings)
    try:
        later = make_email(subject="Re: Drucker", sender="joerg@example.de", in_reply_to=mid)
        linked = runtime.pipeline.process(later, "import:4")
        assert linked.action == "linked" and linked.ticket_number == opened.ticket_number
        with runtime.session_factory() as session:
            _, token = create_token(session, name="after-upgrade", scope="read")
            session.commit()
        with TestClient(create_app(runtime)) as client:
            thread = client.get(
                f"/api/v1/tickets/{opened.ticket_number}/emails",
                headers={"Authorization": f"Bearer {token}"},
            )
            ready = client.get("/readyz")
        assert thread.status_code == 200, thread.text
        emails = thread.json()["emails"]
        assert [e["email_subject"] for e in emails if e["direction"] == "in"] == [
            "Drucker druckt nicht — 打印机", "Re: Drucker", "Re: Drucker"
        ]
        assert ready.status_code == 200
    finally:
        runtime.close()
