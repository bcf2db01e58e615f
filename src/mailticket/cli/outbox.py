"""`mailticket outbox list|show|retry|deliver`: inspect and drive the durable outbox."""

from __future__ import annotations

import argparse
import asyncio
import base64
import email
import email.message
import email.policy
import json
import sys

from mailticket.cli.common import CliError, open_engine, settings_or_exit
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
    encoded = item.payload.get("message_b64")
    return base64.b64decode(encoded) if isinstance(encoded, str) else None


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
    show = s.add_parser("show", help="one item: recipient, subject, headers and text")
    show.add_argument("id", type=int)
    show.add_argument("--raw", action="store_true", help="the exact bytes that will be sent")
    show.set_defaults(func=_show)
    deliver = s.add_parser("deliver", help="send every due outgoing mail once (for cron/tests)")
    deliver.set_defaults(func=_deliver)
