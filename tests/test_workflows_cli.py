"""`mailticket workflows validate|list`."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from mailticket.cli import workflows as workflows_cli

GOOD = """\
workflows:
  - name: Support Email → Ticket
    classification_trigger: support_request
    confidence_threshold: 0.7
    workflow_steps:
      - action: ignore
  - name: Paused
    enabled: false
    classification_trigger: any
    workflow_steps:
      - action: ignore
"""

BAD = """\
workflows:
  - name: Broken
    classification_trigger: support_request
    workflow_steps:
      - action: make_coffee
"""


def run(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="mailticket")
    workflows_cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    code: int = args.func(args)
    return code


def test_validate_good_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(GOOD, encoding="utf-8")
    assert run("workflows", "validate", str(good)) == 0
    out = capsys.readouterr().out
    assert f"{good}: OK, 1 enabled, 1 disabled workflow(s)" in out
    assert "Support Email → Ticket  (order 1, trigger support_request, confidence >= 0.7" in out
    assert "Paused" in out and "DISABLED" in out


def test_validate_reports_file_line_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(GOOD, encoding="utf-8")
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD, encoding="utf-8")
    assert run("workflows", "validate", str(bad), str(good)) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"{bad}:5: unknown action 'make_coffee' (known: ")
    assert out[1].startswith(f"{good}: OK")


def test_list_shows_the_configured_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(GOOD, encoding="utf-8")
    monkeypatch.chdir(tmp_path)  # no stray .env
    monkeypatch.setenv("WORKFLOWS_PATH", str(good))
    monkeypatch.setenv("EMAIL_WORKFLOWS_ENABLED", "false")
    assert run("workflows", "list") == 0
    out = capsys.readouterr().out
    assert f"workflows from {good}" in out
    assert "EMAIL_WORKFLOWS_ENABLED=false" in out
    assert "Support Email → Ticket" in out


def test_list_default_and_broken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("WORKFLOWS_PATH", raising=False)
    assert run("workflows", "list") == 0
    assert "the shipped default" in capsys.readouterr().out

    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD, encoding="utf-8")
    monkeypatch.setenv("WORKFLOWS_PATH", str(bad))
    assert run("workflows", "list") == 1
    assert f"{bad}:5: unknown action 'make_coffee'" in capsys.readouterr().err
