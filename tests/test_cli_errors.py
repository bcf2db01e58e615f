"""Operator mistakes get a sentence, not a traceback."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from mailticket.store import migrate


def test_unmigrated_database_says_what_to_run(tmp_path: Path) -> None:
    sqlite3.connect(tmp_path / "empty.db").close()  # there, but never migrated
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path / 'empty.db'}"}
    result = subprocess.run(
        [sys.executable, "-m", "mailticket.cli", "tickets", "list"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60,
    )
    assert result.returncode == 1
    assert "no such table" in result.stderr and "mailticket db upgrade" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["tickets", "list", "--limit", "-5"], "--limit: must be 1 or more, not -5"),
        (["tickets", "list", "--limit", "0"], "--limit: must be 1 or more, not 0"),
        (["outbox", "list", "--limit", "-1"], "--limit: must be 1 or more, not -1"),
        (["ingest", "--batch-size", "0", "mail.eml"], "--batch-size: must be 1 or more, not 0"),
        (["serve", "--port", "70000"], "--port: must be a TCP port, 1-65535, not 70000"),
        (["serve", "--port", "0"], "--port: must be a TCP port, 1-65535, not 0"),
        (["tickets", "list", "--limit", "ten"], "--limit: not a whole number: 'ten'"),
    ],
)
def test_counts_and_ports_out_of_range_are_usage_errors(
    tmp_path: Path, argv: list[str], says: str
) -> None:
    # Before: --limit -5 listed every ticket on SQLite and was a "database error ... run
    # `mailticket db upgrade`" on PostgreSQL; --limit 0 said "no tickets"; --port 0 served
    # on 8000 and --port 70000 on whatever port the socket layer wrapped it to.
    db = tmp_path / "mt.db"
    migrate.upgrade(f"sqlite:///{db}")
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{db}"}
    result = subprocess.run(
        [sys.executable, "-m", "mailticket.cli", *argv],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60,
    )
    assert result.returncode == 2, result.stdout
    assert says in result.stderr and "Traceback" not in result.stderr
    assert result.stdout == ""
