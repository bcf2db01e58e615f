"""Where a customer's reply to a resolved or closed ticket goes.

Within TICKET_REOPEN_WINDOW of the ticket's closing the reply reopens it (the ticket
services do that when they link a human reply). Later, the old conversation is over: the
reply opens a new ticket that names the old one as the ticket it follows up
(`followup_of_id`). A reply that reaches the old ticket again after that continues on its
newest follow-up instead of opening yet another one. Mail that is no customer's word
(auto-replies, bounces, and our own mail: `types.AUTOMATED_LABELS`) never reopens anything
and never opens a follow-up: it stays logged on the ticket it threads to.

Tickets linked by follow-up are separate conversations on purpose: threading never merges
them with each other (`threading.resolver`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select

from mailticket.settings import Settings
from mailticket.store.batch import Batch
from mailticket.store.models import Ticket
from mailticket.threading import Resolution
from mailticket.ticketing.tickets import REOPENABLE_STATUSES
from mailticket.types import Classification, ThreadMatch

# How many follow-ups of follow-ups are walked before giving up (a loop in bad data).
_MAX_HOPS = 20
# What the log row says threaded a follow-up's mail, with the old ticket's number.
FOLLOWUP = "followup"


@dataclass(frozen=True)
class Routed:
    resolution: Resolution
    # The closed ticket a new ticket from this mail must follow up (None: no follow-up).
    followup_of: Ticket | None = None
    # The ticket the reply reopens (its status is still closed: linking reopens it).
    reopens: Ticket | None = None


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def closed_since(ticket: Ticket) -> datetime:
    """When the ticket was closed; for rows closed before `closed_at` was kept, the best
    guess the row allows."""
    return _aware(ticket.closed_at or ticket.resolved_at or ticket.updated_at or ticket.created_at)


def within_window(settings: Settings, ticket: Ticket, now: datetime) -> bool:
    return _aware(now) - closed_since(ticket) <= settings.ticket_reopen_window


def newest_followup(work: Batch, ticket: Ticket) -> Ticket | None:
    """The newest live follow-up of `ticket`: one opened earlier in this batch (not yet
    written), else a stored one."""
    made = [
        t for t in work.tickets.values()
        if t.followup_of_id == ticket.id and t.merged_into_id is None
    ]
    if made:
        return max(made, key=lambda t: t.id)
    with work.quietly() as session:
        found = session.scalar(
            select(Ticket)
            .where(Ticket.followup_of_id == ticket.id, Ticket.merged_into_id.is_(None))
            .order_by(Ticket.id.desc())
            .limit(1)
        )
    if found is None:
        return None
    kept = work.tickets.get(found.id)
    if kept is None:
        work.keep_ticket(found)
        kept = found
    return kept


def route(
    work: Batch,
    settings: Settings,
    resolution: Resolution,
    classification: Classification,
    now: datetime,
) -> Routed:
    """The resolution threading found, adjusted for closed tickets."""
    match = resolution.match
    if match is None or classification.is_automated:
        return Routed(resolution)
    original = work.live(resolution.ticket or work.ticket(match.ticket_id))
    ticket = original
    for _ in range(_MAX_HOPS):
        if ticket.status not in REOPENABLE_STATUSES or within_window(settings, ticket, now):
            reopens = ticket if ticket.status in REOPENABLE_STATUSES else None
            if ticket is original:
                return Routed(resolution, reopens=reopens)
            moved = ThreadMatch(ticket.id, ticket.ticket_number, FOLLOWUP, original.ticket_number)
            return Routed(Resolution(moved, ticket=ticket), reopens=reopens)
        newer = newest_followup(work, ticket)
        if newer is None:
            return Routed(Resolution(None), followup_of=ticket)
        ticket = newer
    return Routed(Resolution(None), followup_of=ticket)

