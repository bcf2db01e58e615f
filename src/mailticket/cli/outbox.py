"""`mailticket outbox list|retry|deliver`: inspect and drive the durable outbox."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from mailticket.store import outbox
from mailticket.store.db import make_engine, make_session_factory


def _list(args: argparse.Namespace) -> int:
    from mailticket.cli import settings_or_exit

    engine = make_engine(settings_or_exit().database_url)
    try:
        with make_session_factory(engine)() as session:
            items = outbox.list_items(session, status=args.status, kind=args.kind, limit=args.limit)
            for item in items:
                if args.json:
                    print(
                        json.dumps(
                            {
                                "id": item.id,
                                "kind": item.kind,
                                "target": item.target,
                                "operation": item.operation,
                                "status": item.status,
                                "attempts": item.attempts,
                                "next_attempt_at": item.next_attempt_at.isoformat(),
                                "ticket_id": item.ticket_id,
                                "last_error": item.last_error,
                            }
                        )
                    )
                    continue
                when = item.next_attempt_at.strftime("%Y-%m-%d %H:%M:%S")
                print(
                    f"{item.id:>6} {item.status:<9} {item.kind}/{item.target:<10} "
                    f"{item.operation:<16} x{item.attempts:<3} next {when}"
                )
                if item.last_error:
                    print(f"       {item.last_error}")
    except outbox.OutboxError as exc:
        print(f"mailticket: {exc}", file=sys.stderr)
        return 2
    finally:
        engine.dispose()
    return 0


def _retry(args: argparse.Namespace) -> int:
    from mailticket.cli import settings_or_exit

    engine = make_engine(settings_or_exit().database_url)
    try:
        with make_session_factory(engine)() as session, session.begin():
            item = outbox.requeue(session, args.id)
            print(f"outbox item {item.id} requeued ({item.kind}/{item.target} {item.operation})")
    except outbox.OutboxError as exc:
        print(f"mailticket: {exc}", file=sys.stderr)
        return 1
    finally:
        engine.dispose()
    return 0


def _deliver(args: argparse.Namespace) -> int:
    from mailticket.cli import settings_or_exit
    from mailticket.outbound.smtp import deliver_outgoing_mail

    settings = settings_or_exit()
    engine = make_engine(settings.database_url)
    try:
        report = asyncio.run(deliver_outgoing_mail(make_session_factory(engine), settings))
    finally:
        engine.dispose()
    print(f"delivered {report.done}, retry later {report.retried}, dead {report.dead}")
    return 0 if report.dead == 0 else 1


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("outbox", help="queued outgoing mail and backend pushes")
    s = p.add_subparsers(dest="outbox_command", metavar="ACTION", required=True)
    ls = s.add_parser("list", help="outbox items, newest first")
    ls.add_argument("--status", choices=outbox.STATUSES)
    ls.add_argument("--kind", choices=("smtp", "backend"))
    ls.add_argument("--limit", type=int, default=100)
    ls.add_argument("--json", action="store_true", help="one JSON object per line")
    ls.set_defaults(func=_list)
    retry = s.add_parser("retry", help="make a dead item due again with a fresh attempt budget")
    retry.add_argument("id", type=int)
    retry.set_defaults(func=_retry)
    deliver = s.add_parser("deliver", help="send every due outgoing mail once (for cron/tests)")
    deliver.set_defaults(func=_deliver)
