"""Alembic environment: the schema is only ever changed from here."""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import Connection, engine_from_config, pool

from mailticket.model_registry import metadata
from mailticket.store.db import Liveness, make_engine, transactional_migrations

config = context.config


def _url() -> str:
    url = config.attributes.get("database_url") or config.get_main_option("sqlalchemy.url")
    return url or os.environ.get("DATABASE_URL", "sqlite:///mailticket.db")


def _configure(connection: Connection) -> None:
    sqlite = connection.dialect.name == "sqlite"
    context.configure(
        connection=connection,
        target_metadata=metadata,
        # SQLite cannot ALTER most things in place; batch mode rebuilds the table.
        render_as_batch=sqlite,
        # All of an upgrade commits, or none of it: on SQLite too (transactional_migrations),
        # so an interrupted upgrade leaves the database as it was and a rerun starts clean.
        transactional_ddl=True if sqlite else None,
        compare_type=True,
    )


def run_migrations_offline() -> None:
    context.configure(url=_url(), target_metadata=metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    url = _url()
    if url.startswith("sqlite"):
        section = config.get_section(config.config_ini_section, {})
        section["sqlalchemy.url"] = url
        engine = engine_from_config(section, prefix="sqlalchemy.", poolclass=pool.NullPool)
        transactional_migrations(engine)
    else:
        # The service's own engine: its connect timeout and TCP keepalives, so `mailticket
        # db upgrade` against an address that stopped answering fails in seconds, not hangs.
        # No bound on an answer, though: a migration's DDL may rightly run for minutes.
        engine = make_engine(
            url, poolclass=pool.NullPool, liveness=Liveness(answer_timeout=0)
        )
    with engine.connect() as conn:
        _configure(conn)
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
