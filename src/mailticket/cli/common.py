"""What every command shares: settings, the database it opens, and how it fails.

Expected failures (a bad setting, a workflow file with a mistake, a database that is not
there or not migrated) end in one line on stderr and a non-zero exit; the traceback is shown
only with `--verbose`. Nothing printed may carry the password of DATABASE_URL.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from mailticket.settings import ConfigError, Settings, load_settings

if TYPE_CHECKING:
    from mailticket.runtime import Runtime

# user:password@ in any URL-like text (also in a URL too broken for SQLAlchemy to parse).
_URL_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^:/@\s]*:)(?P<pw>[^@\s]+)(?=@)", re.I)
# libpq's keyword form, as in a psycopg2 DSN: password=secret
_DSN_PASSWORD = re.compile(r"(?P<head>\bpassword\s*=\s*)(?P<pw>'[^']*'|\S+)", re.I)


class CliError(Exception):
    """An expected failure: the message is the whole story (no traceback needed)."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def mask_secrets(text: str, url: str | None = None) -> str:
    """Hide passwords in text that may quote a database URL or DSN."""
    if url:
        try:
            password = make_url(url).password
        except (ArgumentError, ValueError):
            password = None
        if password:
            text = text.replace(str(password), "***")
    text = _URL_PASSWORD.sub(lambda m: m.group("head") + "***", text)
    return _DSN_PASSWORD.sub(lambda m: m.group("head") + "***", text)


def safe_url(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return mask_secrets(url)


def _int_within(text: str, low: int, high: int | None, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < low or (high is not None and value > high):
        raise argparse.ArgumentTypeError(f"{what}, not {value}")
    return value


def positive_int(text: str) -> int:
    """An argparse type for counts (`--limit`, `--batch-size`): 0 or a negative number would
    list nothing, or everything (SQLite's LIMIT -1), or fail in PostgreSQL as if the database
    were broken; argparse's own one-line error and exit 2 instead."""
    return _int_within(text, 1, None, "must be 1 or more")


def tcp_port(text: str) -> int:
    """An argparse type for `--port`: 1-65535 (0 would fall back to the default port, and a
    larger number wraps around in the socket layer to another port)."""
    return _int_within(text, 1, 65535, "must be a TCP port, 1-65535")


def settings_or_exit() -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:
        raise CliError(str(exc), code=2) from None


def sqlite_file(database_url: str) -> Path | None:
    """The file behind a sqlite URL (None: not SQLite, or an in-memory database)."""
    try:
        url = make_url(database_url)
    except (ArgumentError, ValueError):
        return None
    if not url.drivername.startswith("sqlite") or url.database in (None, "", ":memory:"):
        return None
    if url.database.startswith("file:"):
        return None  # a SQLite URI: its own mode= decides whether to create
    return Path(url.database)


def require_database(settings: Settings) -> None:
    """Refuse to run on a SQLite file that is not there: opening it would create an empty
    database wherever the command happens to run (and then fail on the missing tables)."""
    path = sqlite_file(settings.database_url)
    if path is not None and not path.exists():
        raise CliError(
            f"no database at {path.resolve()} (DATABASE_URL={safe_url(settings.database_url)},"
            f" looked for from {Path.cwd()}): run `mailticket db upgrade` to create it, or set"
            " DATABASE_URL to the database you mean"
        )


def open_engine(settings: Settings) -> Engine:
    from mailticket.store.db import Liveness, make_engine

    require_database(settings)
    return make_engine(settings.database_url, liveness=Liveness.of(settings))


def open_runtime(settings: Settings) -> Runtime:
    from mailticket.runtime import build_runtime

    require_database(settings)
    return build_runtime(settings)


class _WarningsInOneLine(logging.Formatter):
    """Warnings are expected failures (a message quarantined, a server that went away): one
    line each. Errors keep their traceback: those are the ones worth reading. Wraps the
    handler's own formatter and works on a copy, since other handlers share the record."""

    def __init__(self, inner: logging.Formatter | None) -> None:
        super().__init__()
        self.inner = inner or logging.Formatter()

    def format(self, record: logging.LogRecord) -> str:
        if record.levelno < logging.ERROR and (record.exc_info or record.exc_text):
            record = logging.makeLogRecord({**record.__dict__, "exc_info": None, "exc_text": None})
        return self.inner.format(record)


def cli_logging(verbose: bool) -> None:
    """Log errors to stderr (with --verbose also warnings, with their tracebacks), unless
    something (pytest, an embedding program) already listens: then leave its handlers alone.
    A command reports its own expected failures (`quarantined FILE: reason`), so the
    pipeline's warning about the same message would only say it twice."""
    root = logging.getLogger()
    if root.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.WARNING if verbose else logging.ERROR)
    root.addHandler(handler)


def one_line_warnings(*handlers: logging.Handler) -> None:
    """Drop the traceback of warnings on these handlers (default: the root logger's)."""
    for handler in handlers or tuple(logging.getLogger().handlers):
        if not isinstance(handler.formatter, _WarningsInOneLine):
            handler.setFormatter(_WarningsInOneLine(handler.formatter))
