"""The `mailticket` command. Each command group lives in its own module with `register()`."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from sqlalchemy.exc import DBAPIError

from mailticket.settings import ConfigError, Settings, load_settings
from mailticket.workflows.loader import WorkflowLoadError
from mailticket.yamlconfig import ConfigFileError

COMMAND_MODULES: list[str] = [
    "mailticket.cli.db",
    "mailticket.cli.ingest",
    "mailticket.cli.tickets",
    "mailticket.cli.quarantine",
    "mailticket.cli.outbox",
    "mailticket.cli.run",
    "mailticket.cli.workflows",
    "mailticket.cli.tokens",
    "mailticket.cli.serve",
    "mailticket.cli.backends",
    "mailticket.cli.customers",
    "mailticket.cli.sla",
]


def settings_or_exit() -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:
        print(f"mailticket: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mailticket", description="Turn a support mailbox into a ticket system."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
    except KeyboardInterrupt:
        return 130
    except (ConfigFileError, WorkflowLoadError) as exc:
        # A configuration file with mistakes: each as file:line: reason, no traceback.
        print(f"mailticket: configuration problems:\n{exc}", file=sys.stderr)
        return 2
    except DBAPIError as exc:
        # A missing table or an unreachable server is an operator's problem to fix, not a
        # traceback to read: say which database and what to try.
        print(f"mailticket: database error: {exc.orig}", file=sys.stderr)
        print(
            "  (is DATABASE_URL right, the server up, and the schema migrated?"
            " run `mailticket db upgrade`)",
            file=sys.stderr,
        )
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
