"""`mailticket db upgrade` as an operator runs it on an installation that holds mail: the real
command in its own process, on SQLite and PostgreSQL.

An upgrade stopped halfway (kill -9) leaves the database as it was and a rerun finishes it;
a database migrated by a newer mailticket, or a revision that does not exist, is refused in
one line that says so, with nothing changed."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

from sqlalchemy import inspect, text

from mailticket.store import migrate
from mailticket.store.db import make_engine

MESSAGE = "From: Zoë Ærø <zoe@example.org>\r\nSubject: Grüße aus Köln\r\n\r\nHallo — 你好\r\n"

# Runs `mailticket db upgrade` and kills the process (SIGKILL, nothing runs after it) the
# moment migration 0006 writes its first converted outbox row: its new column is there, the
# data step has begun, its version is not yet stamped.
KILL_IN_0006 = """
import os, signal, sys
from sqlalchemy import Engine, event

def kill(conn, cursor, statement, *args):
    if statement.lstrip().upper().startswith("UPDATE MAILTICKET_OUTBOX"):
        os.kill(os.getpid(), signal.SIGKILL)

event.listen(Engine, "after_cursor_execute", kill)
from mailticket.cli import main
sys.exit(main(["db", "upgrade"]))
"""


def _mailticket(url: str, *args: str, cwd: Path, code: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": url}
    argv = [sys.executable, "-c", code] if code else [sys.executable, "-m", "mailticket.cli", *args]
    return subprocess.run(argv, capture_output=True, text=True, env=env, cwd=cwd, timeout=300)


def _revision(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return {r[0] for r in conn.execute(text("SELECT version_num FROM alembic_version"))}
    finally:
        engine.dispose()


def test_upgrade_killed_halfway_changes_nothing_and_a_rerun_finishes_it(
    empty_url: str, tmp_path: Path
) -> None:
    migrate.upgrade(empty_url, "0005_backends")
    engine = make_engine(empty_url)
    try:
        with engine.begin() as conn:
            for n in range(3):
                conn.execute(
                    text(
                        "INSERT INTO mailticket_outbox (kind, target, operation, idempotency_key,"
                        " payload, status, attempts, next_attempt_at) VALUES ('smtp', 'smtp',"
                        " 'send_mail', :k, :p, 'pending', 0, CURRENT_TIMESTAMP)"
                    ),
                    {"k": f"reply-{n}", "p": json.dumps({
                        "rcpt_to": [f"kunde{n}@example.org"],
                        "message_b64": base64.b64encode(f"{MESSAGE}{n}".encode()).decode(),
                    })},
                )

        killed = _mailticket(empty_url, cwd=tmp_path, code=KILL_IN_0006)
        assert killed.returncode == -9, killed.stderr

        # Nothing of the stopped upgrade stayed: not even 0006's new column.
        assert _revision(empty_url) == {"0005_backends"}
        columns = {c["name"] for c in inspect(engine).get_columns("mailticket_outbox")}
        assert "message" not in columns

        rerun = _mailticket(empty_url, "db", "upgrade", cwd=tmp_path)
        assert rerun.returncode == 0, rerun.stderr
        assert _revision(empty_url) == migrate.head_revisions(empty_url)
        with engine.connect() as conn:
            rows = conn.execute(
                text("SELECT idempotency_key, message FROM mailticket_outbox ORDER BY id")
            ).all()
        assert [(k, bytes(m).decode()) for k, m in rows] == [
            (f"reply-{n}", f"{MESSAGE}{n}") for n in range(3)
        ]
    finally:
        engine.dispose()


def test_database_of_a_newer_version_is_refused_in_one_line(
    empty_url: str, tmp_path: Path
) -> None:
    migrate.upgrade(empty_url)
    engine = make_engine(empty_url)
    try:
        with engine.begin() as conn:
            conn.execute(text("UPDATE alembic_version SET version_num = '0099_future'"))
    finally:
        engine.dispose()

    result = _mailticket(empty_url, "db", "upgrade", cwd=tmp_path)

    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert "'0099_future'" in result.stderr and "newer version" in result.stderr
    assert _revision(empty_url) == {"0099_future"}


def test_unknown_target_is_refused_and_names_the_known_ones(
    empty_url: str, tmp_path: Path
) -> None:
    migrate.upgrade(empty_url, "0003_live")

    result = _mailticket(empty_url, "db", "upgrade", "0008_nothing", cwd=tmp_path)

    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "no migration '0008_nothing'" in result.stderr
    assert all(head in result.stderr for head in migrate.head_revisions(empty_url))
    assert _revision(empty_url) == {"0003_live"}


def test_upgrade_prints_where_the_database_is_not_what_was_asked(
    empty_url: str, tmp_path: Path
) -> None:
    migrate.upgrade(empty_url)

    # A target the database is already past changes nothing: the answer says so.
    behind = _mailticket(empty_url, "db", "upgrade", "0003_live", cwd=tmp_path)
    again = _mailticket(empty_url, "db", "upgrade", cwd=tmp_path)

    head = migrate.head_revisions(empty_url)
    assert behind.returncode == 0 and again.returncode == 0
    assert behind.stdout.startswith(f"database at {', '.join(sorted(head))}: ")
    assert again.stdout.startswith(f"database at {', '.join(sorted(head))}: ")
    assert _revision(empty_url) == head
