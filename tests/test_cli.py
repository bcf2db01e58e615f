"""The command line as a person runs it (a real subprocess, real database)."""

from __future__ import annotations

import json
import mailbox
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import FIXTURES
from tests.mailfactory import make_email

SEED = FIXTURES / "emails" / "seed"


def run(db_url: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": db_url,
           "WORKFLOWS_PATH": str(FIXTURES / "workflows" / "seed.yaml")}
    return subprocess.run(
        [sys.executable, "-m", "mailticket.cli", *args],
        capture_output=True, text=True, env=env, cwd=cwd, timeout=120,
    )


def test_ingest_json_and_rerun_creates_nothing(db_url: str) -> None:
    # The seed's reply quotes TKT-20251215-001: numbers must follow the mails' own dates.
    first = run(db_url, "ingest", "--backdate", "--json", str(SEED))
    assert first.returncode == 0, first.stderr
    rows = [json.loads(line) for line in first.stdout.splitlines()]
    assert [r["action"] for r in rows] == ["created", "linked", "created"]
    assert set(rows[0]) == {"source", "message_id", "action", "ticket_number", "matched_by",
                            "classification", "confidence", "error", "tickets", "suspect"}
    assert rows[0]["tickets"] == [rows[0]["ticket_number"]] and rows[0]["suspect"] is False
    assert rows[1]["matched_by"] == "in_reply_to"
    again = run(db_url, "ingest", "--json", str(SEED))
    assert [json.loads(x)["action"] for x in again.stdout.splitlines()] == ["duplicate"] * 3

    shown = run(db_url, "tickets", "show", rows[0]["ticket_number"])
    assert shown.returncode == 0, shown.stderr
    assert "Help with network issue" in shown.stdout
    assert "<def456@example.com>" in shown.stdout and "in_reply_to" in shown.stdout
    listed = run(db_url, "tickets", "list")
    assert rows[2]["ticket_number"] in listed.stdout and "critical" in listed.stdout


def test_ingest_mbox_and_maildir(db_url: str, tmp_path: Path) -> None:
    box = mailbox.mbox(str(tmp_path / "support.mbox"))
    for i in range(3):
        box.add(make_email(subject=f"mbox problem {i}"))
    box.close()
    md = mailbox.Maildir(str(tmp_path / "Maildir"))
    md.add(make_email(subject="maildir problem"))
    md.close()
    out = run(db_url, "ingest", "--json", str(tmp_path / "support.mbox"), str(tmp_path / "Maildir"))
    assert out.returncode == 0, out.stderr
    assert [json.loads(x)["action"] for x in out.stdout.splitlines()] == ["created"] * 4


def test_garbage_is_quarantined_and_run_goes_on(db_url: str, tmp_path: Path) -> None:
    (tmp_path / "a_empty.eml").write_bytes(b"")
    (tmp_path / "b_good.eml").write_bytes(make_email())
    out = run(db_url, "ingest", "--json", str(tmp_path))
    assert out.returncode == 0, out.stderr
    rows = [json.loads(x) for x in out.stdout.splitlines()]
    assert [r["action"] for r in rows] == ["quarantined", "created"]
    assert rows[0]["error"]
    listed = run(db_url, "quarantine", "list")
    assert "a_empty.eml" in listed.stdout


def test_ingest_of_a_folder_skips_what_holds_no_message(db_url: str, tmp_path: Path) -> None:
    """A link to nothing stopped the whole import (exit 2, nothing after it stored), and
    a FIFO made it wait for ever; both are skipped with a warning, the mail is imported."""
    (tmp_path / "a_gone.eml").symlink_to(tmp_path / "nowhere.eml")
    os.mkfifo(tmp_path / "b_pipe.eml")
    (tmp_path / "c_good.eml").write_bytes(make_email())
    md = mailbox.Maildir(str(tmp_path / "Maildir"))
    md.add(make_email(subject="maildir problem"))
    md.close()
    (tmp_path / "Maildir" / "new" / "gone").symlink_to(tmp_path / "nowhere")
    out = run(db_url, "ingest", "--json", str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert [json.loads(x)["action"] for x in out.stdout.splitlines()] == ["created"] * 2
    assert "a_gone.eml" in out.stderr and "b_pipe.eml: not a regular file" in out.stderr
    assert f"{tmp_path / 'Maildir' / 'new' / 'gone'}" in out.stderr


def test_bad_setting_names_the_variable(db_url: str) -> None:
    env = {**os.environ, "DATABASE_URL": db_url, "TICKET_DEFAULT_PRIORITY": "whenever"}
    out = subprocess.run([sys.executable, "-m", "mailticket.cli", "tickets", "list"],
                         capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 2
    assert "TICKET_DEFAULT_PRIORITY" in out.stderr
    assert "Traceback" not in out.stderr


def test_missing_path_is_a_clear_error(db_url: str, tmp_path: Path) -> None:
    out = run(db_url, "ingest", str(tmp_path / "nope"))
    assert out.returncode == 2 and "no such file" in out.stderr
