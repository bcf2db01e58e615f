"""Header threading, in the issue's order, with JWZ-style ghost parents.

Order: In-Reply-To, then References newest first, then (for bounces and auto-replies) the
headers of the original message they carry, then "some ticket's mail pointed at this very
message" (it arrived after its reply), then the subject. For each id two signals count: a
Message-ID stored for a ticket (ours or the customer's, in any message's own id, In-Reply-To
or References: the last gives ghost parents) and a TKT number inside the id.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailticket.reading.ticketnumbers import canonical_ticket_number
from mailticket.settings import Settings, SubjectMatchPolicy
from mailticket.store.batch import Ref, current, get_ticket
from mailticket.store.models import EmailLog, ThreadRef, Ticket
from mailticket.threading.subject import subject_ticket_number
from mailticket.types import Classification, ParsedEmail, ThreadMatch

# Signals that come from the message's own headers: only these may merge two tickets.
_MERGING_SIGNALS = frozenset({"in_reply_to", "references", "referenced_by"})
_KIND_RANK = {"self": 0, "ref": 1}


@dataclass
class Resolution:
    match: ThreadMatch | None
    # Other live tickets the message's own headers tie to the same conversation.
    also: list[int] = field(default_factory=list)
    # The matched ticket itself. The session's identity map only holds objects weakly: kept
    # here, the actions that link the mail find it there instead of loading it again.
    ticket: Ticket | None = field(default=None, repr=False, compare=False)


def candidates(email: ParsedEmail, classification: Classification) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = [("in_reply_to", mid) for mid in email.in_reply_to]
    out += [("references", mid) for mid in reversed(email.references)]
    if classification.is_automated:
        for inner in email.embedded:
            ids = [inner.message_id, *inner.in_reply_to, *reversed(inner.references)]
            out += [("embedded", mid) for mid in ids if mid]
    out.append(("referenced_by", email.message_id))
    seen: set[str] = set()
    unique = []
    for signal, mid in out:
        if mid not in seen:
            seen.add(mid)
            unique.append((signal, mid))
    return unique


def _live(session: Session, ticket: Ticket) -> Ticket:
    hops = 0
    while ticket.merged_into_id is not None and hops < 20:
        ticket = get_ticket(session, ticket.merged_into_id)
        hops += 1
    return ticket


def _tickets_by_number(session: Session, numbers: set[str]) -> dict[str, Ticket]:
    if not numbers:
        return {}
    batch = current(session)
    rows: Iterable[Ticket]
    if batch is not None:
        rows = batch.tickets_by_number(numbers).values()
    else:
        rows = session.scalars(select(Ticket).where(Ticket.ticket_number.in_(numbers)))
    return {t.ticket_number.upper(): _live(session, t) for t in rows}


def _refs_by_id(session: Session, ids: list[str]) -> dict[str, list[Ref]]:
    if not ids:
        return {}
    batch = current(session)
    if batch is not None:
        found = batch.refs_for(ids)
    else:
        found = {}
        for ref in session.scalars(select(ThreadRef).where(ThreadRef.message_id.in_(ids))):
            found.setdefault(ref.message_id, []).append(Ref(ref.message_id, ref.ticket_id, ref.kind))
    for refs in found.values():
        refs.sort(key=lambda r: (_KIND_RANK.get(r.kind, 9), r.ticket_id))
    return found


def _is_participant(session: Session, ticket: Ticket, address: str) -> bool:
    if not address:
        return False
    if (ticket.requester_email or "").lower() == address:
        return True
    hit = session.scalar(
        select(EmailLog.id)
        .where(EmailLog.ticket_id == ticket.id, EmailLog.email_from == address)
        .limit(1)
    )
    return hit is not None


def resolve(
    session: Session, settings: Settings, email: ParsedEmail, classification: Classification
) -> Resolution:
    pairs = candidates(email, classification)
    refs = _refs_by_id(session, [mid for _, mid in pairs])
    numbers = {n for _, mid in pairs if (n := canonical_ticket_number(mid))}
    by_number = _tickets_by_number(session, {n.upper() for n in numbers})

    first: ThreadMatch | None = None
    first_ticket: Ticket | None = None
    related: dict[int, Ticket] = {}
    for signal, mid in pairs:
        # For "referenced_by" only mail that pointed at this id counts, not a copy of it.
        hits = [
            _live(session, get_ticket(session, r.ticket_id))
            for r in refs.get(mid, [])
            if signal != "referenced_by" or r.kind == "ref"
        ]
        number = canonical_ticket_number(mid)
        if number and number.upper() in by_number:
            hits.append(by_number[number.upper()])
        for ticket in hits:
            if first is None:
                first = ThreadMatch(ticket.id, ticket.ticket_number, signal, mid)
                first_ticket = ticket
            if signal in _MERGING_SIGNALS:
                related.setdefault(ticket.id, ticket)

    if first is not None:
        also = [tid for tid in related if tid != first.ticket_id]
        return Resolution(first, also, first_ticket)

    number = subject_ticket_number(email.subject)
    if number:
        found = _tickets_by_number(session, {number.upper()}).get(number.upper())
        if found is not None and (
            settings.ticket_subject_match is SubjectMatchPolicy.any
            or _is_participant(session, found, email.from_address)
        ):
            return Resolution(
                ThreadMatch(found.id, found.ticket_number, "subject", number), ticket=found
            )
    return Resolution(None)
