"""Run Alembic programmatically (`mailticket db upgrade`, tests, readiness checks)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.script.revision import ResolutionError
from alembic.util import CommandError
from sqlalchemy import Engine
from sqlalchemy.pool import NullPool

from mailticket.bundled import data_path
from mailticket.store.db import make_engine


class MigrationsNotFound(RuntimeError):
    pass


class UpgradeRefused(RuntimeError):
    """An upgrade Alembic will not start (an unknown revision, a target behind the database):
    nothing was changed, and the message says why."""


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


def upgrade(database_url: str, revision: str = "heads") -> set[str]:
    """Migrate to `revision`; the database's revisions afterwards (a target the database is
    already past leaves it where it was)."""
    config = alembic_config(database_url)
    script = ScriptDirectory.from_config(config)
    try:
        script.get_revisions(revision)
    except (CommandError, ResolutionError):
        known = ", ".join(reversed([s.revision for s in script.walk_revisions()]))
        raise UpgradeRefused(f"no migration {revision!r} (known: {known})") from None
    try:
        command.upgrade(config, revision)
    except CommandError as exc:
        cause = exc.__cause__
        if isinstance(cause, ResolutionError) and cause.argument != revision:
            # The target is one of ours, so the unknown revision is the database's own.
            raise UpgradeRefused(
                f"the database is at revision {cause.argument!r}, which this version of"
                " mailticket does not know: a newer version migrated it. Run that version"
                " (or restore the backup taken before its upgrade); nothing was changed"
            ) from exc
        raise UpgradeRefused(f"{exc}; nothing was changed") from exc
    return current_revisions(database_url)


def current_revisions(database_url: str) -> set[str]:
    engine = make_engine(database_url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            return set(MigrationContext.configure(conn).get_current_heads())
    finally:
        engine.dispose()


def head_revisions(database_url: str) -> set[str]:
    return set(ScriptDirectory.from_config(alembic_config(database_url)).get_heads())


def is_at_head(engine: Engine) -> bool:
    with engine.connect() as conn:
        current = set(MigrationContext.configure(conn).get_current_heads())
    return current == head_revisions(str(engine.url.render_as_string(hide_password=False)))
