"""`mailticket tickets list|show`."""

from __future__ import annotations

import argparse
from typing import get_args

from sqlalchemy import select

from mailticket.api.schemas import SettableStatus
from mailticket.cli.common import CliError, open_engine, settings_or_exit
from mailticket.store.db import make_session_factory
from mailticket.store.models import Comment, EmailLog, Ticket
from mailticket.ticketing.tickets import find_ticket

# Merged tickets are pointers to the ticket they joined; the list never shows them.
LISTED_STATUSES: tuple[str, ...] = get_args(SettableStatus)
_ROW = "{number:<18} {status:<8} {priority:<8} {requester:<30.30} {subject}"


def _list(args: argparse.Namespace) -> int:
    engine = open_engine(settings_or_exit())
    try:
        with make_session_factory(engine)() as session:
            query = select(Ticket).where(Ticket.merged_into_id.is_(None))
            if args.status:
                query = query.where(Ticket.status == args.status)
            rows = session.scalars(query.order_by(Ticket.id.desc()).limit(args.limit)).all()
            if not rows:
                print(f"no {args.status} tickets" if args.status else "no tickets")
                return 0
            print(_ROW.format(number="TICKET", status="STATUS", priority="PRIORITY",
                              requester="REQUESTER", subject="SUBJECT  #TAGS"))
            for t in rows:
                tags = ",".join(t.tags or [])
                print(
                    _ROW.format(number=t.ticket_number, status=t.status, priority=t.priority,
                                requester=t.requester_email or "-", subject=t.subject[:60])
                    + (f"  #{tags}" if tags else "")
                )
    finally:
        engine.dispose()
    return 0


def _how(e: EmailLog) -> str:
    """What the log row says about a message: its label (in) or what sent it (out)."""
    if e.direction == "out":
        what = (e.action or "sent").replace("_", " ")
        return f"outgoing {what}, to {e.email_to or '?'}"
    how = f" via {e.matched_by}" if e.matched_by else ""
    return f"{e.classification or 'unclassified'}{how}"


def _show(args: argparse.Namespace) -> int:
    engine = open_engine(settings_or_exit())
    try:
        with make_session_factory(engine)() as session:
            ticket = find_ticket(session, args.number)
            if ticket is None:
                raise CliError(f"no ticket {args.number}")
            print(f"{ticket.ticket_number}  [{ticket.status}, {ticket.priority}]  {ticket.subject}")
            print(f"requester: {ticket.requester_email or '-'}  tags: {', '.join(ticket.tags or []) or '-'}")
            print(f"assignee: {ticket.assigned_to_user_id or '-'}  customer: {ticket.customer_id or '-'}")
            print()
            emails = session.scalars(
                select(EmailLog)
                .where(EmailLog.ticket_id == ticket.id)
                .order_by(EmailLog.email_received_at, EmailLog.id)
            ).all()
            for e in emails:
                arrow = "<-" if e.direction == "in" else "->"
                when = e.email_received_at.isoformat() if e.email_received_at else "?"
                print(f"{arrow} {when}  {e.email_from}  [{_how(e)}]")
                print(f"   {e.email_subject or ''}")
                print(f"   {e.email_message_id}")
            comments = session.scalars(
                select(Comment).where(Comment.ticket_id == ticket.id).order_by(Comment.id)
            ).all()
            if comments:
                print("\ncomments:")
                for c in comments:
                    kind = "internal" if c.is_internal else "public"
                    print(f"-- {c.author_email or c.source} ({kind}, {c.created_at:%Y-%m-%d %H:%M})")
                    print("   " + c.body.strip().replace("\n", "\n   ")[:2000])
    finally:
        engine.dispose()
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("tickets", help="list tickets and show their threads")
    s = p.add_subparsers(dest="tickets_command", metavar="ACTION", required=True)
    ls = s.add_parser("list", help="newest tickets first")
    ls.add_argument("--status", choices=LISTED_STATUSES)
    ls.add_argument("--limit", type=int, default=50)
    ls.set_defaults(func=_list)
    show = s.add_parser("show", help="a ticket and its email thread")
    show.add_argument("number", help="TKT-YYYYMMDD-XXX or the ticket id")
    show.set_defaults(func=_show)
