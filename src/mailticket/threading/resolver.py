"""Header threading, in the issue's order, with JWZ-style ghost parents.

Order: In-Reply-To, then References newest first, then (for bounces and auto-replies) the
headers of the original message they carry, then "some ticket's mail pointed at this very
message" (it arrived after its reply), then the subject, then Outlook's conversation
(Thread-Index, `threadindex.py`). For each id two signals count: a
Message-ID stored for a ticket (ours or the customer's, in any message's own id, In-Reply-To
or References: the last gives ghost parents) and a TKT number inside the id.

Multi-ticket threading: one message can belong to several tickets (a `split_by: customer`
create, or two workflows that each opened one). Its id is then stored as "self" for each of
them: a reply to it joins every one (`joined`), and tickets that share a message are never
merged with each other (they are parallel conversations on purpose, not one split by
accident). A message whose sender failed validation (`suspect`) never threads by its
subject alone: a forged From must not be able to write into someone's ticket by naming it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mailticket.reading.ticketnumbers import canonical_ticket_number
from mailticket.settings import Settings, SubjectMatchPolicy
from mailticket.store.batch import Batch, Ref
from mailticket.store.models import Ticket
from mailticket.threading.subject import subject_ticket_number
from mailticket.threading.threadindex import conversation_ref
from mailticket.types import Classification, ParsedEmail, ThreadMatch

# Signals that come from the message's own headers: only these may merge two tickets.
_MERGING_SIGNALS = frozenset({"in_reply_to", "references", "referenced_by"})


@dataclass
class Resolution:
    match: ThreadMatch | None
    # Other live tickets the message's own headers tie to the same conversation.
    also: list[int] = field(default_factory=list)
    # The matched ticket itself. The session's identity map only holds objects weakly: kept
    # here, the actions that link the mail find it there instead of loading it again.
    ticket: Ticket | None = field(default=None, repr=False, compare=False)
    # Further tickets the matched original belongs to (multi-ticket): the message joins
    # them too, in id order.
    joined: list[int] = field(default_factory=list)

    @property
    def ticket_ids(self) -> list[int]:
        """Every ticket the message threads into, the matched one first."""
        return [] if self.match is None else [self.match.ticket_id, *self.joined]


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


def _tickets_by_number(work: Batch, numbers: set[str]) -> dict[str, Ticket]:
    if not numbers:
        return {}
    found = work.tickets_by_number(numbers)
    return {t.ticket_number.upper(): work.live(t) for t in found.values()}


def _is_participant(work: Batch, ticket: Ticket, address: str) -> bool:
    if not address:
        return False
    if (ticket.requester_email or "").lower() == address:
        return True
    return work.is_participant(ticket, address)


def _siblings(refs: dict[str, list[Ref]], work: Batch, start: int) -> set[int]:
    """Tickets linked to `start` by messages they share (each holds the id as "self"),
    directly or through one another."""
    groups = [
        {work.live(work.ticket(r.ticket_id)).id for r in found if r.kind == "self"}
        for found in refs.values()
    ]
    family = {start}
    grew = True
    while grew:
        grew = False
        for group in groups:
            if len(group) > 1 and group & family and not group <= family:
                family |= group
                grew = True
    return family


def _followup_root(work: Batch, ticket: Ticket) -> int:
    """The first ticket of the follow-up chain `ticket` belongs to."""
    hops = 0
    while ticket.followup_of_id is not None and hops < 20:
        ticket = work.ticket(ticket.followup_of_id)
        hops += 1
    return ticket.id


def _same_followup_chain(work: Batch, a: Ticket, b: Ticket) -> bool:
    # A follow-up continues a closed ticket as a conversation of its own (see
    # mailticket.followups): its mail carries the old thread's ids, yet the two never merge.
    if a.followup_of_id is None and b.followup_of_id is None:
        return False
    return _followup_root(work, a) == _followup_root(work, b)


def resolve(
    work: Batch,
    settings: Settings,
    email: ParsedEmail,
    classification: Classification,
    *,
    suspect: bool = False,
) -> Resolution:
    pairs = candidates(email, classification)
    ids = [mid for _, mid in pairs]
    refs = work.refs_for(ids) if ids else {}
    number_in = {mid: canonical_ticket_number(mid) for mid in ids}  # read once per id
    numbers = {n for n in number_in.values() if n}
    by_number = _tickets_by_number(work, {n.upper() for n in numbers})

    first: ThreadMatch | None = None
    first_ticket: Ticket | None = None
    joined: list[int] = []
    related: dict[int, Ticket] = {}
    for signal, mid in pairs:
        # For "referenced_by" only mail that pointed at this id counts, not a copy of it.
        pointed = [r for r in refs.get(mid, []) if signal != "referenced_by" or r.kind == "ref"]
        hits = [work.live(work.ticket(r.ticket_id)) for r in pointed]
        number = number_in[mid]
        if number and number.upper() in by_number:
            hits.append(by_number[number.upper()])
        for ticket in hits:
            if first is None:
                first = ThreadMatch(ticket.id, ticket.ticket_number, signal, mid)
                first_ticket = ticket
                # The original is a message of several tickets: the reply joins them all.
                own = {work.live(work.ticket(r.ticket_id)).id for r in pointed if r.kind == "self"}
                if ticket.id in own:
                    joined = sorted(own - {ticket.id})
            if signal in _MERGING_SIGNALS:
                related.setdefault(ticket.id, ticket)

    if first is not None:
        family = _siblings(refs, work, first.ticket_id) if len(related) > 1 else set()
        also = [
            tid for tid, ticket in related.items()
            if tid != first.ticket_id and tid not in family
            and not (first_ticket and _same_followup_chain(work, first_ticket, ticket))
        ]
        return Resolution(first, also, first_ticket, joined)

    number = subject_ticket_number(email.subject)
    if number and not suspect:
        found = _tickets_by_number(work, {number.upper()}).get(number.upper())
        if found is not None and (
            settings.ticket_subject_match is SubjectMatchPolicy.any
            or _is_participant(work, found, email.from_address)
        ):
            return Resolution(
                ThreadMatch(found.id, found.ticket_number, "subject", number), ticket=found
            )
    return _by_conversation(work, settings, email, suspect=suspect)


def _by_conversation(
    work: Batch, settings: Settings, email: ParsedEmail, *, suspect: bool
) -> Resolution:
    """Last: Outlook's conversation (Thread-Index), for an answer that lost In-Reply-To,
    References and the ticket number. As weak as the subject: never for a suspect sender,
    under TICKET_SUBJECT_MATCH, and only when the conversation belongs to one ticket (a
    closed one and its follow-ups count as one: the follow-up rules then pick where it goes)."""
    key = conversation_ref(email.header("thread-index"))
    if key is None or suspect:
        return Resolution(None)
    found = {work.live(work.ticket(r.ticket_id)) for r in work.refs_for([key]).get(key, [])}
    roots = {_followup_root(work, ticket) for ticket in found}
    if len(roots) != 1:
        return Resolution(None)
    ticket = work.live(work.ticket(roots.pop()))
    if settings.ticket_subject_match is SubjectMatchPolicy.any or _is_participant(
        work, ticket, email.from_address
    ):
        return Resolution(
            ThreadMatch(ticket.id, ticket.ticket_number, "thread_index", key), ticket=ticket
        )
    return Resolution(None)
