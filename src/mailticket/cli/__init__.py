"""The `mailticket` command. Each command group lives in its own module with `register()`."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from mailticket.settings import ConfigError, Settings, load_settings

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
    return code


if __name__ == "__main__":
    sys.exit(main())
