"""`mailticket tickets list|show`."""

from __future__ import annotations

import argparse
from datetime import datetime

from sqlalchemy import or_, select

from mailticket.customers.models import Customer
from mailticket.customers.scope import badges
from mailticket.sla.models import TicketSla
from mailticket.sla.service import states_of
from mailticket.store.db import make_engine, make_session_factory
from mailticket.store.models import Comment, EmailLog, EmailTicket, Ticket
from mailticket.store.senderauth_models import sender_auth_of
from mailticket.ticketing.tickets import find_ticket


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M") if moment is not None else "-"


def _sla_brief(row: TicketSla | None) -> str:
    if row is None or row.state is None:
        return "-"
    dues = [d for d in (row.first_response_due_at, row.resolution_due_at) if d is not None]
    due = f" due {_when(min(dues))}" if dues and row.state != "breached" else ""
    return f"{row.state}{' (paused)' if row.paused else ''}{due}"


def _list(args: argparse.Namespace) -> int:
    from mailticket.cli import settings_or_exit

    settings = settings_or_exit()
    engine = make_engine(settings.database_url)
    with make_session_factory(engine)() as session:
        query = select(Ticket).where(Ticket.merged_into_id.is_(None))
        if args.status:
            query = query.where(Ticket.status == args.status)
        if args.customer:
            owner = select(Customer.id).where(Customer.key == args.customer)
            query = query.where(Ticket.customer_id.in_(owner))
        rows = session.scalars(query.order_by(Ticket.id.desc()).limit(args.limit)).all()
        ids = [t.id for t in rows]
        customers, slas = badges(session, ids), states_of(session, ids)
        for t in rows:
            tags = ",".join(t.tags or [])
            badge = customers.get(t.id)
            print(
                f"{t.ticket_number:<18} {t.status:<8} {t.priority:<8} "
                f"{(badge.key if badge else '-'):<12.12} {_sla_brief(slas.get(t.id)):<28} "
                f"{(t.requester_email or '-'):<30.30} {t.subject[:60]}"
                + (f"  #{tags}" if tags else "")
            )
    engine.dispose()
    return 0


def _show_sla(row: TicketSla | None) -> None:
    if row is None or row.policy is None:
        print("sla: -")
        return
    print(f"sla: {row.state}{' (paused)' if row.paused else ''}  policy {row.policy!r}, "
          f"calendar {row.calendar!r}")
    print(f"  first response: {row.first_response_state or '-'}, due "
          f"{_when(row.first_response_due_at)}, answered {_when(row.first_response_at)}")
    print(f"  resolution: {row.resolution_state or '-'}, due {_when(row.resolution_due_at)}")


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
            badge = badges(session, [ticket.id]).get(ticket.id)
            customer = "-"
            if badge is not None:
                customer = f"{badge.key} ({badge.name}, id {badge.customer_id})"
                if badge.matched_by:
                    customer += f" by {badge.matched_by}" + (
                        f" {badge.matched_value}" if badge.matched_value else ""
                    )
            print(f"assignee: {ticket.assigned_to_user_id or '-'}  customer: {customer}")
            _show_sla(states_of(session, [ticket.id]).get(ticket.id))
            print()
            linked = select(EmailTicket.email_log_id).where(EmailTicket.ticket_id == ticket.id)
            emails = session.scalars(
                select(EmailLog)
                .where(or_(EmailLog.ticket_id == ticket.id, EmailLog.id.in_(linked)))
                .order_by(EmailLog.email_received_at, EmailLog.id)
            ).all()
            auth = sender_auth_of(session, [e.id for e in emails])
            for e in emails:
                arrow = "<-" if e.direction == "in" else "->"
                how = f" via {e.matched_by}" if e.matched_by else ""
                when = e.email_received_at.isoformat() if e.email_received_at else "?"
                spoofed = "  spoofed?" if e.id in auth and auth[e.id].suspect else ""
                print(f"{arrow} {when}  {e.email_from}  [{e.classification}{how}]{spoofed}")
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
    ls = s.add_parser("list", help="newest tickets first (customer and SLA state shown)")
    ls.add_argument("--status")
    ls.add_argument("--customer", help="only this customer's tickets (its key)")
    ls.add_argument("--limit", type=int, default=50)
    ls.set_defaults(func=_list)
    show = s.add_parser("show", help="a ticket, its customer, SLA state and email thread")
    show.add_argument("number", help="TKT-YYYYMMDD-XXX or the ticket id")
    show.set_defaults(func=_show)
