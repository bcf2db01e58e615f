"""`mailticket sla sweep`: the scheduler's job once (cron, tests)."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

from mailticket.cli.common import open_runtime, settings_or_exit
from mailticket.escalation.job import run_sweep
from mailticket.runtime import prepare_worker


def _at(value: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{value!r}: an ISO time like 2025-12-15T10:00:00+01:00"
        ) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _sweep(args: argparse.Namespace) -> int:
    runtime = open_runtime(settings_or_exit())
    try:
        prepare_worker(runtime)
        at: datetime | None = args.at
        result = run_sweep(
            runtime.session_factory, runtime.settings, runtime.sla, runtime.workflows,
            clock=(lambda: at) if at is not None else runtime.clock,
        )
        if not result.locked:
            print("another node is sweeping; nothing done")
            return 0
        print(f"evaluated {result.evaluated} tickets; {len(result.events)} events, "
              f"{result.breaches} new breaches")
        for event in result.events:
            print(f"  {event.trigger:<28} ticket {event.ticket_id}  at {event.at.isoformat()}")
        for workflow, trigger, status in result.runs:
            print(f"  ran {workflow!r} for {trigger}: {status}")
    finally:
        runtime.close()
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("sla", help="SLA clocks and time-triggered workflows")
    s = p.add_subparsers(dest="sla_command", metavar="ACTION", required=True)
    sweep = s.add_parser(
        "sweep", help="recompute SLA state, raise due events and run their workflows, once"
    )
    sweep.add_argument(
        "--at", type=_at, default=None,
        help="sweep as if it were this time (ISO 8601; testing and catching up)",
    )
    sweep.set_defaults(func=_sweep)
