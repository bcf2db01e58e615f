"""Run Alembic programmatically (`mailticket db upgrade`, tests, readiness checks)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

from mailticket.bundled import data_path


class MigrationsNotFound(RuntimeError):
    pass


def migrations_dir() -> Path:
    return data_path("migrations")


def alembic_config(database_url: str) -> Config:
    """The configuration alembic.ini gives the `alembic` command in a checkout, built in
    code: an installed package has no alembic.ini, only its migrations."""
    folder = migrations_dir()
    if not (folder / "env.py").is_file():
        raise MigrationsNotFound(f"no Alembic migrations at {folder}")
    cfg = Config()
    cfg.set_main_option("script_location", str(folder))
    cfg.set_main_option("path_separator", "os")
    cfg.attributes["database_url"] = database_url
    return cfg


def upgrade(database_url: str, revision: str = "heads") -> None:
    command.upgrade(alembic_config(database_url), revision)


def head_revisions(database_url: str) -> set[str]:
    return set(ScriptDirectory.from_config(alembic_config(database_url)).get_heads())


def is_at_head(engine: Engine) -> bool:
    with engine.connect() as conn:
        current = set(MigrationContext.configure(conn).get_current_heads())
    return current == head_revisions(str(engine.url.render_as_string(hide_password=False)))
