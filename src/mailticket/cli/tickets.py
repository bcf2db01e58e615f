"""`mailticket tickets list|show`."""

from __future__ import annotations

import argparse
from datetime import datetime
from typing import get_args

from sqlalchemy import or_, select

from mailticket.api.schemas import SettableStatus
from mailticket.cli.common import CliError, open_engine, positive_int, settings_or_exit
from mailticket.customers.models import Customer
from mailticket.customers.scope import CustomerBadge, badges
from mailticket.sla.models import TicketSla
from mailticket.sla.service import states_of
from mailticket.store.db import make_session_factory
from mailticket.store.models import Comment, EmailLog, EmailTicket, Ticket
from mailticket.store.senderauth_models import sender_auth_of
from mailticket.ticketing.tickets import find_ticket

# Merged tickets are pointers to the ticket they joined; the list never shows them.
LISTED_STATUSES: tuple[str, ...] = get_args(SettableStatus)
_ROW = (
    "{number:<18} {status:<8} {priority:<8} {customer:<12.12} {sla:<36.36} "
    "{requester:<30.30} {subject}"
)


def _when(moment: datetime | None) -> str:
    """Stored times are UTC (SQLite hands them back without their zone)."""
    return f"{moment:%Y-%m-%d %H:%M} UTC" if moment is not None else "-"


def _sla_brief(row: TicketSla | None) -> str:
    """The badge and the next due time: `warning due 2025-12-15 13:00 UTC`."""
    if row is None or row.state is None:
        return "-"
    dues = [d for d in (row.first_response_due_at, row.resolution_due_at) if d is not None]
    due = f" due {_when(min(dues))}" if dues and row.state != "breached" else ""
    return f"{row.state}{' (paused)' if row.paused else ''}{due}"


def _list(args: argparse.Namespace) -> int:
    engine = open_engine(settings_or_exit())
    try:
        with make_session_factory(engine)() as session:
            query = select(Ticket).where(Ticket.merged_into_id.is_(None))
            if args.status:
                query = query.where(Ticket.status == args.status)
            if args.customer:
                owner = session.scalar(select(Customer.id).where(Customer.key == args.customer))
                if owner is None:
                    # A mistyped key would otherwise read as "this customer has no tickets".
                    raise CliError(
                        f"no customer {args.customer!r} (`mailticket customers list --all`"
                        " shows the keys)"
                    )
                query = query.where(Ticket.customer_id == owner)
            rows = session.scalars(query.order_by(Ticket.id.desc()).limit(args.limit)).all()
            if not rows:
                what = " ".join(x for x in (args.status, args.customer) if x)
                print(f"no {what} tickets" if what else "no tickets")
                return 0
            ids = [t.id for t in rows]
            customers, slas = badges(session, ids), states_of(session, ids)
            print(_ROW.format(number="TICKET", status="STATUS", priority="PRIORITY",
                              customer="CUSTOMER", sla="SLA", requester="REQUESTER",
                              subject="SUBJECT  #TAGS"))
            for t in rows:
                tags = ",".join(t.tags or [])
                badge = customers.get(t.id)
                print(
                    _ROW.format(number=t.ticket_number, status=t.status, priority=t.priority,
                                customer=badge.key if badge else "-",
                                sla=_sla_brief(slas.get(t.id)),
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


def _customer(badge: CustomerBadge | None) -> str:
    if badge is None:
        return "-"
    out = f"{badge.key} ({badge.name}, id {badge.customer_id})"
    if badge.matched_by:
        out += f" by {badge.matched_by}" + (f" {badge.matched_value}" if badge.matched_value else "")
    return out


def _show_sla(row: TicketSla | None) -> None:
    if row is None or row.state is None:
        print("sla: -")
        return
    print(f"sla: {row.state}{' (paused)' if row.paused else ''}  policy {row.policy!r}, "
          f"calendar {row.calendar!r}")
    print(f"  first response: {row.first_response_state or '-'}, due "
          f"{_when(row.first_response_due_at)}, answered {_when(row.first_response_at)}")
    print(f"  resolution: {row.resolution_state or '-'}, due {_when(row.resolution_due_at)}")


def _show(args: argparse.Namespace) -> int:
    engine = open_engine(settings_or_exit())
    try:
        with make_session_factory(engine)() as session:
            ticket = find_ticket(session, args.number)
            if ticket is None:
                raise CliError(f"no ticket {args.number}")
            print(f"{ticket.ticket_number}  [{ticket.status}, {ticket.priority}]  {ticket.subject}")
            print(f"requester: {ticket.requester_email or '-'}  tags: {', '.join(ticket.tags or []) or '-'}")
            badge = badges(session, [ticket.id]).get(ticket.id)
            print(f"assignee: {ticket.assigned_to_user_id or '-'}  customer: {_customer(badge)}")
            _show_sla(states_of(session, [ticket.id]).get(ticket.id))
            print()
            # Its own mail and mail it shares with other tickets (multi-ticket threading).
            linked = select(EmailTicket.email_log_id).where(EmailTicket.ticket_id == ticket.id)
            emails = session.scalars(
                select(EmailLog)
                .where(or_(EmailLog.ticket_id == ticket.id, EmailLog.id.in_(linked)))
                .order_by(EmailLog.email_received_at, EmailLog.id)
            ).all()
            auth = sender_auth_of(session, [e.id for e in emails])
            for e in emails:
                arrow = "<-" if e.direction == "in" else "->"
                when = e.email_received_at.isoformat() if e.email_received_at else "?"
                spoofed = "  spoofed?" if e.id in auth and auth[e.id].suspect else ""
                print(f"{arrow} {when}  {e.email_from}  [{_how(e)}]{spoofed}")
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
    ls = s.add_parser("list", help="newest tickets first, with customer and SLA state")
    ls.add_argument("--status", choices=LISTED_STATUSES)
    ls.add_argument("--customer", metavar="KEY", help="only this customer's tickets")
    ls.add_argument("--limit", type=positive_int, default=50)
    ls.set_defaults(func=_list)
    show = s.add_parser("show", help="a ticket, its customer, SLA state and email thread")
    show.add_argument("number", help="TKT-YYYYMMDD-XXX or the ticket id")
    show.set_defaults(func=_show)
