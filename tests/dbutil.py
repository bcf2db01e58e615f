"""Throw-away databases for tests: one migrated template per run, a fresh copy per test.

PostgreSQL copies the template with CREATE DATABASE ... TEMPLATE (procrastinate's trick);
SQLite copies the migrated file. Names carry the pid so concurrent test runs never collide.
"""

from __future__ import annotations

import itertools
import os
import shutil
from pathlib import Path

import psycopg2
from psycopg2 import sql

from mailticket.store import migrate

PG_ADMIN_DSN = os.environ.get("MAILTICKET_TEST_PG", "host=127.0.0.1 port=5432 user=postgres dbname=test")
PG_URL_BASE = os.environ.get("MAILTICKET_TEST_PG_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432")

_counter = itertools.count()


def _admin() -> psycopg2.extensions.connection:
    conn = psycopg2.connect(PG_ADMIN_DSN)
    conn.autocommit = True
    return conn


def pg_available() -> bool:
    try:
        _admin().close()
    except psycopg2.OperationalError:
        return False
    return True


def drop_pg(name: str) -> None:
    conn = _admin()
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            )
            cur.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
    finally:
        conn.close()


def create_pg(name: str, template: str | None = None) -> str:
    conn = _admin()
    try:
        with conn.cursor() as cur:
            cur.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
            if template:
                cur.execute(
                    sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                        sql.Identifier(name), sql.Identifier(template)
                    )
                )
            else:
                cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    finally:
        conn.close()
    return f"{PG_URL_BASE}/{name}"


class TemplateDatabases:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.pid = os.getpid()
        self._pg_template: str | None = None
        self._sqlite_template: Path | None = None

    def pg_template(self) -> str:
        if self._pg_template is None:
            name = f"mt_tmpl_{self.pid}"
            url = create_pg(name)
            migrate.upgrade(url)
            self._pg_template = name
        return self._pg_template

    def sqlite_template(self) -> Path:
        if self._sqlite_template is None:
            path = self.workdir / "template.sqlite3"
            migrate.upgrade(f"sqlite:///{path}")
            self._sqlite_template = path
        return self._sqlite_template

    def fresh(self, kind: str) -> tuple[str, str | None]:
        """Return (url, pg database name or None)."""
        n = next(_counter)
        if kind == "postgresql":
            name = f"mt_{self.pid}_{n}"
            return create_pg(name, self.pg_template()), name
        path = self.workdir / f"db_{n}.sqlite3"
        shutil.copyfile(self.sqlite_template(), path)
        return f"sqlite:///{path}", None

    def close(self) -> None:
        if self._pg_template:
            drop_pg(self._pg_template)
