"""The `mailticket` command. Each command group lives in its own module with `register()`."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback
from collections.abc import Sequence

from sqlalchemy.exc import ArgumentError, DBAPIError

from mailticket.cli.common import (
    CliError,
    cli_logging,
    mask_secrets,
    safe_url,
    settings_or_exit,
)
from mailticket.reading.classification import RuleFileError
from mailticket.settings import ConfigError
from mailticket.store.migrate import MigrationsNotFound, UpgradeRefused
from mailticket.workflows.loader import WorkflowLoadError
from mailticket.yamlconfig import ConfigFileError

__all__ = ["CliError", "build_parser", "main", "settings_or_exit"]

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

# 128 + SIGPIPE: what a command killed by a closed pipe exits with (`... | head`).
EXIT_BROKEN_PIPE = 141


def _add_verbose(parser: argparse.ArgumentParser, *, top: bool) -> None:
    # Accepted before or after the command; SUPPRESS keeps a later parser from resetting it.
    parser.add_argument(
        "-v", "--verbose", action="store_true", default=False if top else argparse.SUPPRESS,
        help="show the traceback of a failure",
    )
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _add_verbose(child, top=False)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mailticket", description="Turn a support mailbox into a ticket system."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    _add_verbose(parser, top=True)
    return parser


def _database_url() -> str | None:
    # For masking only: the password may sit in the environment even when the settings
    # themselves failed to load.
    try:
        return settings_or_exit().database_url
    except Exception:  # noqa: BLE001 - whatever broke the settings, the raw value is masked
        return os.environ.get("DATABASE_URL")


def _fail(message: str, *, verbose: bool) -> None:
    url = _database_url()
    if verbose:
        sys.stderr.write(mask_secrets(traceback.format_exc(), url))
    print(mask_secrets(message, url), file=sys.stderr)


def _silence_stdout() -> None:
    # The reader went away: anything still buffered (and the flush at exit) goes nowhere
    # instead of raising a second BrokenPipeError while Python shuts down.
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass  # stdout is not a real file (e.g. captured by a test): nothing to protect
    finally:
        os.close(devnull)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    verbose = bool(getattr(args, "verbose", False))
    cli_logging(verbose)
    try:
        code: int = args.func(args)
        sys.stdout.flush()
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    except CliError as exc:
        _fail(f"mailticket: {exc}", verbose=verbose)
        return exc.code
    except ConfigError as exc:
        _fail(f"mailticket: {exc}", verbose=verbose)
        return 2
    except WorkflowLoadError as exc:
        # The same `file:line: reason` lines as `workflows validate` and `workflows list`.
        _fail(f"mailticket: WORKFLOWS_PATH does not load:\n{exc}", verbose=verbose)
        return 2
    except RuleFileError as exc:
        # A CLASSIFICATION_RULES_PATH file with mistakes: its file:line lines, no traceback.
        _fail(f"mailticket: CLASSIFICATION_RULES_PATH does not load:\n{exc}", verbose=verbose)
        return 2
    except ConfigFileError as exc:
        # CUSTOMERS_PATH / SLA_PATH, or customers they name that do not exist: file:line.
        _fail(f"mailticket: configuration problems:\n{exc}", verbose=verbose)
        return 2
    except ArgumentError as exc:
        _fail(f"mailticket: DATABASE_URL is not a database URL: {exc}", verbose=verbose)
        return 2
    except UpgradeRefused as exc:
        _fail(f"mailticket: cannot upgrade: {exc}", verbose=verbose)
        return 1
    except MigrationsNotFound as exc:
        _fail(f"mailticket: this installation is incomplete: {exc}", verbose=verbose)
        return 1
    except DBAPIError as exc:
        # A missing table or an unreachable server is an operator's problem to fix, not a
        # traceback to read: say which database and what to try.
        url = _database_url()
        where = f" ({safe_url(url)})" if url else ""
        _fail(
            f"mailticket: database error{where}: {str(exc.orig).strip()}\n"
            "  (is DATABASE_URL right, the server up, and the schema migrated?"
            " run `mailticket db upgrade`)",
            verbose=verbose,
        )
        return 1
    except Exception:  # noqa: BLE001 - a bug: the traceback is for the report, secrets masked
        sys.stderr.write(mask_secrets(traceback.format_exc(), _database_url()))
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
