"""Operator mistakes get a sentence, not a traceback."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path


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
