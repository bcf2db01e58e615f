"""`mailticket outbox list|show|retry|deliver`: inspect and drive the durable outbox."""

from __future__ import annotations

import argparse
import asyncio
import email
import email.message
import email.policy
import json
import sys

from mailticket.cli.common import CliError, open_engine, positive_int, settings_or_exit
from mailticket.store import outbox
from mailticket.store.db import make_session_factory
from mailticket.store.outbox_models import OutboxItem


def _list(args: argparse.Namespace) -> int:
    engine = open_engine(settings_or_exit())
    try:
        with make_session_factory(engine)() as session:
            items = outbox.list_items(session, status=args.status, kind=args.kind, limit=args.limit)
            if not items and not args.json:
                print("the outbox is empty" if not (args.status or args.kind)
                      else "no outbox items match")
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
    engine = open_engine(settings_or_exit())
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


def _show(args: argparse.Namespace) -> int:
    engine = open_engine(settings_or_exit())
    try:
        with make_session_factory(engine)() as session:
            item = session.get(OutboxItem, args.id)
            if item is None:
                raise CliError(f"no outbox item {args.id}")
            raw = _message_bytes(item)
            if args.raw:
                if raw is None:
                    raise CliError(f"outbox item {item.id} is a {item.kind} operation, not a mail")
                sys.stdout.buffer.write(raw)
                return 0
            when = item.next_attempt_at.strftime("%Y-%m-%d %H:%M:%S")
            print(f"outbox item {item.id}: {item.kind}/{item.target} {item.operation}")
            print(f"status: {item.status}, {item.attempts} attempt(s), next {when}")
            if item.ticket_id is not None:
                print(f"ticket id: {item.ticket_id}")
            if item.last_error:
                print(f"last error: {item.last_error}")
            if raw is None:
                print("\npayload:\n" + json.dumps(item.payload, indent=2, ensure_ascii=False))
                return 0
            rcpt = item.payload.get("rcpt_to") or []
            print(f"envelope: from {item.payload.get('mail_from')} to {', '.join(rcpt)}")
            print(_describe_mail(raw))
    finally:
        engine.dispose()
    return 0


def _message_bytes(item: OutboxItem) -> bytes | None:
    return item.message


def _describe_mail(raw: bytes) -> str:
    """The headers as sent, then the text a recipient reads (the text/plain part)."""
    message = email.message_from_bytes(raw, policy=email.policy.default)
    lines = ["", *(f"{name}: {value}" for name, value in message.items()), ""]
    assert isinstance(message, email.message.EmailMessage)
    body = message.get_body(preferencelist=("plain", "html"))
    if body is None:
        lines.append("(no text part)")
    else:
        lines.append(str(body.get_content()).rstrip("\n"))
    return "\n".join(lines)


def _deliver(args: argparse.Namespace) -> int:
    from mailticket.outbound.smtp import deliver_outgoing_mail

    settings = settings_or_exit()
    engine = open_engine(settings)
    try:
        report = asyncio.run(deliver_outgoing_mail(make_session_factory(engine), settings))
    finally:
        engine.dispose()
    print(f"delivered {report.done}, retry later {report.retried}, dead {report.dead}")
    return 0 if report.dead == 0 else 1


def _prune(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from mailticket.settings import parse_duration
    from mailticket.store.gate import write

    settings = settings_or_exit()
    try:
        retention = parse_duration(args.older_than) if args.older_than else settings.outbox_retention
    except ValueError as exc:
        raise CliError(f"--older-than: {exc}", code=2) from None
    if not retention:
        print("OUTBOX_RETENTION=0 keeps delivered items; give --older-than to prune anyway")
        return 0
    before = datetime.now(UTC) - retention
    engine = open_engine(settings)
    removed = 0
    try:
        factory = make_session_factory(engine)
        while True:  # in pages: each transaction stays short for the writers waiting on it
            page = write(factory, lambda s: outbox.prune(s, before=before, limit=1000))
            removed += page
            if page < 1000:
                break
    finally:
        engine.dispose()
    print(f"pruned {removed} delivered outbox items older than {before:%Y-%m-%d %H:%M:%S} UTC")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("outbox", help="queued outgoing mail and backend pushes")
    s = p.add_subparsers(dest="outbox_command", metavar="ACTION", required=True)
    ls = s.add_parser("list", help="outbox items, newest first")
    ls.add_argument("--status", choices=outbox.STATUSES)
    ls.add_argument("--kind", choices=("smtp", "backend"))
    ls.add_argument("--limit", type=positive_int, default=100)
    ls.add_argument("--json", action="store_true", help="one JSON object per line")
    ls.set_defaults(func=_list)
    retry = s.add_parser("retry", help="make a dead item due again with a fresh attempt budget")
    retry.add_argument("id", type=int)
    retry.set_defaults(func=_retry)
    show = s.add_parser("show", help="one item: recipient, subject, headers and text")
    show.add_argument("id", type=int)
    show.add_argument("--raw", action="store_true", help="the exact bytes that will be sent")
    show.set_defaults(func=_show)
    deliver = s.add_parser("deliver", help="send every due outgoing mail once (for cron/tests)")
    deliver.set_defaults(func=_deliver)
    prune = s.add_parser(
        "prune", help="delete delivered items older than OUTBOX_RETENTION (dead ones stay)"
    )
    prune.add_argument(
        "--older-than", metavar="DURATION", help="e.g. 7d or 12h instead of OUTBOX_RETENTION"
    )
    prune.set_defaults(func=_prune)
