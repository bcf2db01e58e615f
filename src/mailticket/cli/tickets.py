"""`mailticket tickets list|show`."""

from __future__ import annotations

import argparse

from sqlalchemy import select

from mailticket.store.db import make_engine, make_session_factory
from mailticket.store.models import Comment, EmailLog, Ticket
from mailticket.ticketing.tickets import find_ticket


def _list(args: argparse.Namespace) -> int:
    from mailticket.cli import settings_or_exit

    settings = settings_or_exit()
    engine = make_engine(settings.database_url)
    with make_session_factory(engine)() as session:
        query = select(Ticket).where(Ticket.merged_into_id.is_(None))
        if args.status:
            query = query.where(Ticket.status == args.status)
        rows = session.scalars(query.order_by(Ticket.id.desc()).limit(args.limit)).all()
        for t in rows:
            tags = ",".join(t.tags or [])
            print(
                f"{t.ticket_number:<18} {t.status:<8} {t.priority:<8} "
                f"{(t.requester_email or '-'):<30.30} {t.subject[:60]}"
                + (f"  #{tags}" if tags else "")
            )
    engine.dispose()
    return 0


def _show(args: argparse.Namespace) -> int:
    from mailticket.cli import settings_or_exit

    settings = settings_or_exit()
    engine = make_engine(settings.database_url)
    try:
        with make_session_factory(engine)() as session:
            ticket = find_ticket(session, args.number)
            if ticket is None:
                print(f"mailticket: no ticket {args.number}")
                return 1
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
                how = f" via {e.matched_by}" if e.matched_by else ""
                when = e.email_received_at.isoformat() if e.email_received_at else "?"
                print(f"{arrow} {when}  {e.email_from}  [{e.classification}{how}]")
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
    ls.add_argument("--status")
    ls.add_argument("--limit", type=int, default=50)
    ls.set_defaults(func=_list)
    show = s.add_parser("show", help="a ticket and its email thread")
    show.add_argument("number", help="TKT-YYYYMMDD-XXX or the ticket id")
    show.set_defaults(func=_show)
