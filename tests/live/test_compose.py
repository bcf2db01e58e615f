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


def test_every_service_of_our_image_can_build_it(compose: dict[str, Any]) -> None:
    """`docker compose up` without --build must not try to pull mailticket:local."""
    ours = {name: svc for name, svc in compose["services"].items()
            if svc.get("image") == "mailticket:local"}
    assert set(ours) >= {"migrate", "worker"}
    for name, svc in ours.items():
        assert "build" in svc or svc.get("pull_policy") == "build", name
        if "build" in svc:
            context = svc["build"] if isinstance(svc["build"], str) else svc["build"]["context"]
            assert (ROOT / context / "Dockerfile").is_file(), name


def test_the_image_installs_the_wheel_with_what_it_needs() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    copied = {source for line in dockerfile.splitlines() if line.startswith("COPY ")
              for source in line.split()[1:-1]}
    # what the build reads: pyproject (+ its readme), the package, and what _data/ links to
    needed = {"pyproject.toml", "README.md", "src"} | {
        link.readlink().name for link in (ROOT / "src" / "mailticket" / "_data").iterdir()
    }
    assert needed <= copied
    assert "pip wheel" in dockerfile and "pip install -e" not in dockerfile
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert not {"src", "migrations", "templates", "README.md"} & set(ignored)


def test_readme_says_how_to_get_an_api_token_in_compose() -> None:
    readme = (ROOT / "README.md").read_text()
    line = next(x for x in readme.splitlines() if "docker compose exec" in x and "tokens" in x)
    argv = line.split("docker compose exec", 1)[1].split(")")[0].split()
    argv = [a for a in argv if not a.startswith("-T")]
    assert argv[0] == "worker" and argv[1] == "mailticket"
    args = build_parser().parse_args(argv[2:])
    assert args.tokens_command == "create" and args.scope == "read"
