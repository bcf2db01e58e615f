"""`mailticket run [--once]`: the worker (IMAP, Maildir, LMTP, outgoing mail, optional API)."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import sys
from collections.abc import Callable
from typing import Any

from mailticket import metrics
from mailticket.cli.common import one_line_warnings, require_database, settings_or_exit
from mailticket.escalation.job import run_sweep
from mailticket.live.logs import configure_logging
from mailticket.live.worker import Worker, api_available, install_signal_handlers
from mailticket.pipeline import short_gil_switches
from mailticket.runtime import Runtime, build_runtime, prepare_worker, settle_heap
from mailticket.settings import ConfigError


def _app_factory(runtime: Runtime) -> Callable[[], Any] | None:
    if not runtime.settings.api_listen:
        return None
    if not api_available():
        raise ConfigError("API_LISTEN is set but this installation has no HTTP API")
    # Optional component: imported by name so installations without it still run.
    create_app = importlib.import_module("mailticket.api.app").create_app
    return lambda: create_app(runtime)


def _sweeper(runtime: Runtime) -> Callable[[], object] | None:
    """The SLA / escalation sweep the worker schedules (None: nothing to sweep for)."""
    if runtime.sla is None and not runtime.workflows.has_events:
        return None
    return lambda: run_sweep(
        runtime.session_factory, runtime.settings, runtime.sla, runtime.workflows,
        clock=runtime.clock,
    )


async def _forever(worker: Worker) -> None:
    stop = asyncio.Event()
    install_signal_handlers(stop)
    await worker.run(stop)


def _run(args: argparse.Namespace) -> int:
    settings = settings_or_exit()
    configure_logging(settings.log_format)
    if not getattr(args, "verbose", False):
        one_line_warnings()
    # Nothing opens the database before the worker runs: the configuration is checked first.
    runtime = build_runtime(settings)
    try:
        worker = Worker(
            settings, runtime.engine, runtime.session_factory, runtime.pipeline,
            # --once serves nothing: the API would only be torn down again.
            app_factory=None if args.once else _app_factory(runtime),
            sweep=_sweeper(runtime),
        )
        if not worker.describe():
            print(
                "mailticket run: no source configured; set MAILDIR_PATH, IMAP_HOST,"
                " MAILBOXES_FILE or LMTP_LISTEN",
                file=sys.stderr,
            )
            return 2
        require_database(settings)
        # Customers synced, every customer the SLA file and the workflows name checked.
        prepare_worker(runtime)
        settle_heap()
        # The event loop and the thread storing mail share the GIL: hand it over quickly.
        with short_gil_switches():
            if args.once:
                asyncio.run(worker.run_once())
                return 1 if worker.failures else 0
            else:
                asyncio.run(_forever(worker))
    except ConfigError as exc:
        print(f"mailticket run: {exc}", file=sys.stderr)
        return 2
    finally:
        runtime.close()
        metrics.process_exiting()
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("run", help="run the worker: fetch mail from every source, send replies")
    p.add_argument(
        "--once", action="store_true", help="drain every source once and exit (cron, tests)"
    )
    p.set_defaults(func=_run)
