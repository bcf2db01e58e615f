"""docker-compose.yml stays consistent with the CLI and the settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from mailticket.cli import build_parser
from mailticket.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return data


def test_commands_exist_in_the_cli(compose: dict[str, Any]) -> None:
    parser = build_parser()
    commands = {
        name: svc["command"] for name, svc in compose["services"].items() if "command" in svc
    }
    assert commands["migrate"] == ["mailticket", "db", "upgrade"]
    assert commands["worker"][:2] == ["mailticket", "run"]
    for argv in commands.values():
        assert argv[0] == "mailticket"
        args = parser.parse_args(argv[1:])
        assert callable(args.func)


def test_every_environment_variable_is_a_setting(compose: dict[str, Any]) -> None:
    fields = set(Settings.model_fields)
    for name in ("migrate", "worker"):
        env = compose["services"][name]["environment"]
        unknown = sorted(k for k in env if k.lower() not in fields)
        assert not unknown, f"{name}: not settings: {unknown}"
    # The whole worker configuration must also validate.
    worker_env = {k.lower(): v for k, v in compose["services"]["worker"]["environment"].items()}
    Settings(_env_file=None, **worker_env)


def test_worker_waits_for_migrations(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["worker"]["depends_on"]["migrate"]["condition"] == (
        "service_completed_successfully"
    )
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    db = services["worker"]["environment"]["DATABASE_URL"]
    assert db.startswith("postgresql") and "@postgres:" in db
    assert services["worker"]["environment"]["IMAP_HOST"] in services
    assert (ROOT / services["migrate"]["build"] / "Dockerfile").exists()
