"""Run Alembic programmatically (`mailticket db upgrade`, tests, readiness checks)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine


class MigrationsNotFound(RuntimeError):
    pass


def _project_root() -> Path:
    # src/mailticket/store/migrate.py -> project root holding alembic.ini and migrations/
    return Path(__file__).resolve().parents[3]


def alembic_config(database_url: str) -> Config:
    root = _project_root()
    ini = root / "alembic.ini"
    if not (root / "migrations" / "env.py").exists():
        raise MigrationsNotFound(f"migrations/ not found under {root}")
    cfg = Config(str(ini))
    cfg.set_main_option("script_location", str(root / "migrations"))
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
