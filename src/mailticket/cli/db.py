"""`mailticket db upgrade`."""

from __future__ import annotations

import argparse

from mailticket.cli.common import safe_url, settings_or_exit
from mailticket.store import migrate


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    db = sub.add_parser("db", help="database schema (Alembic migrations)")
    db_sub = db.add_subparsers(dest="db_command", metavar="ACTION", required=True)

    def _upgrade(args: argparse.Namespace) -> int:
        settings = settings_or_exit()
        now = migrate.upgrade(settings.database_url, args.revision)
        print(f"database at {', '.join(sorted(now))}: {safe_url(settings.database_url)}")
        return 0

    up = db_sub.add_parser("upgrade", help="apply migrations (default: to the newest)")
    up.add_argument("revision", nargs="?", default="heads")
    up.set_defaults(func=_upgrade)
