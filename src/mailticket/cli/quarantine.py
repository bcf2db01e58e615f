"""`mailticket quarantine list|show|retry`."""

from __future__ import annotations

import argparse
import sys

from sqlalchemy import select

from mailticket.cli.common import CliError, open_runtime, settings_or_exit
from mailticket.store.models import QuarantineEntry, RawMessage
from mailticket.ticketing import quarantine


def _list(args: argparse.Namespace) -> int:
    runtime = open_runtime(settings_or_exit())
    try:
        with runtime.session_factory() as session:
            query = select(QuarantineEntry).order_by(QuarantineEntry.id)
            if not args.all:
                query = query.where(QuarantineEntry.status == "held")
            entries = session.scalars(query).all()
            if not entries:
                print("the quarantine is empty" if args.all else
                      "no held messages (the quarantine is empty; --all shows released ones)")
                return 0
            for q in entries:
                print(f"{q.id:>6} {q.status:<8} x{q.attempts:<3} {q.source or '-'}\n       {q.reason}")
    finally:
        runtime.close()
    return 0


def _show(args: argparse.Namespace) -> int:
    runtime = open_runtime(settings_or_exit())
    try:
        with runtime.session_factory() as session:
            q = session.get(QuarantineEntry, args.id)
            if q is None:
                raise CliError(f"no quarantine entry {args.id}")
            raw = session.get_one(RawMessage, q.raw_message_id)
            if args.raw:
                sys.stdout.buffer.write(raw.raw)
                return 0
            print(f"entry {q.id} ({q.status}, {q.attempts} attempt(s)) from {q.source}")
            print(f"reason: {q.reason}\nsize: {raw.size} bytes, sha256 {raw.sha256}")
            if q.traceback:
                print("\n" + q.traceback)
    finally:
        runtime.close()
    return 0


def _retry(args: argparse.Namespace) -> int:
    runtime = open_runtime(settings_or_exit())
    try:
        outcome = quarantine.retry(runtime.pipeline, args.id)
    except (quarantine.QuarantineNotFound, quarantine.QuarantineNotRetryable) as exc:
        raise CliError(str(exc)) from None
    finally:
        runtime.close()
    print(f"{outcome.action}: {outcome.ticket_number or outcome.error or ''}".rstrip(": "))
    return 0 if outcome.action != "quarantined" else 1


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("quarantine", help="messages that could not be processed")
    s = p.add_subparsers(dest="quarantine_command", metavar="ACTION", required=True)
    ls = s.add_parser("list", help="held messages and why")
    ls.add_argument("--all", action="store_true", help="include released entries")
    ls.set_defaults(func=_list)
    show = s.add_parser("show", help="one entry with its traceback (--raw: the bytes)")
    show.add_argument("id", type=int)
    show.add_argument("--raw", action="store_true")
    show.set_defaults(func=_show)
    retry = s.add_parser("retry", help="run a held message through the pipeline again")
    retry.add_argument("id", type=int)
    retry.set_defaults(func=_retry)
