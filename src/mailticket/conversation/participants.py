"""Who a ticket's answers go to: the requester, everyone on the customer mail of the thread
(From, To, Cc), and whoever an agent added; minus anyone removed and minus our own addresses.

Only the changes people make are stored (`models.Participant`); the rest is read from the
thread when it is needed, so ingesting mail writes nothing extra.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from email.utils import getaddresses, parseaddr
from typing import Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailticket.conversation.models import Participant
from mailticket.outbound.compose import clean_header
from mailticket.outbound.loop import own_addresses
from mailticket.settings import Settings
from mailticket.store.models import EmailLog, Ticket
from mailticket.types import AUTOMATED_LABELS

Source = Literal["requester", "mail", "added"]


class ParticipantError(ValueError):
    """An address that cannot be a participant (not an address, or one of ours)."""


@dataclass(frozen=True)
class Person:
    address: str
    name: str
    source: Source


def our_addresses(settings: Settings) -> frozenset[str]:
    """Every address that is us: the support address, OWN_ADDRESSES, the agents'
    ASSIGNEE_ADDRESSES and the mailbox login (when it is an address)."""
    extra = [*settings.assignee_addresses.values()]
    if settings.imap_user and "@" in settings.imap_user:
        extra.append(settings.imap_user.strip().lower())
    return own_addresses(settings) | frozenset(extra)


# What we mail to: an ASCII dot-atom local part and a domain with at least one dot (the API
# documents the same pattern, so whatever its schema allows is taken here). "/", "%", "?"
# and "#" are left out, legal as they are: an address is a path segment of
# DELETE .../participants/{address}, where they would be read as URL syntax.
ADDRESS_PATTERN = r"^[A-Za-z0-9!$&'*+=^_`{|}~.-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$"
_ADDRESS = re.compile(ADDRESS_PATTERN.strip("^$"))


def bare_address(value: str) -> str:
    """`value` (bare, or "Name <address>") as a bare, lower-cased address; ParticipantError
    when it holds none we can mail."""
    address = value.strip()
    if not _ADDRESS.fullmatch(address):
        address = parseaddr(clean_header(value))[1].strip()
    if len(address) > 320 or not _ADDRESS.fullmatch(address):
        raise ParticipantError(f"{value!r} is not an e-mail address")
    return address.lower()


def _split(value: str | None) -> list[tuple[str, str]]:
    return [(n, a.strip().lower()) for n, a in getaddresses([value or ""]) if "@" in a]


@dataclass(frozen=True)
class _Thread:
    # (name, address) from every human customer message of the ticket, oldest first.
    people: list[tuple[str, str]]
    # Sender -> the Reply-To their mail named (RFC 5322 §3.6.2: where answers go instead).
    answer_to: dict[str, list[tuple[str, str]]]


def _from_thread(session: Session, ticket: Ticket) -> _Thread:
    log = EmailLog
    rows = session.execute(
        select(log.email_from, log.email_from_name, log.email_to, log.thread_data)
        .where(
            log.ticket_id == ticket.id, log.direction == "in",
            log.classification.is_(None) | log.classification.not_in(AUTOMATED_LABELS),
        )
        .order_by(log.id)
    ).all()
    out: list[tuple[str, str]] = []
    answer_to: dict[str, list[tuple[str, str]]] = {}
    for sender, sender_name, to, thread in rows:
        data = thread or {}
        if sender:
            out.append((sender_name or "", sender))
            for target in _split(data.get("reply_to")):
                if target[1] != sender.lower() and target not in answer_to.get(sender.lower(), []):
                    answer_to.setdefault(sender.lower(), []).append(target)
        out += _split(to)
        out += _split(data.get("cc"))
    return _Thread(out, answer_to)


def _changes(session: Session, ticket: Ticket) -> dict[str, Participant]:
    rows = session.scalars(select(Participant).where(Participant.ticket_id == ticket.id))
    return {row.address: row for row in rows}


def requester_address(session: Session, settings: Settings, ticket: Ticket) -> str | None:
    """Where a mail to the requester alone goes (a notice): the Reply-To their mail named,
    when it names one we can mail, else their own address; None without a requester."""
    requester = (ticket.requester_email or "").lower()
    if not requester:
        return None
    ours = our_addresses(settings)
    named = _from_thread(session, ticket).answer_to.get(requester, [])
    usable = [a for _, a in named if a not in ours and a.isascii() and "@" in a]
    return usable[0] if usable else requester


def participants(session: Session, settings: Settings, ticket: Ticket) -> list[Person]:
    """The ticket's current participants, requester first, each address once."""
    ours = our_addresses(settings)
    changes = _changes(session, ticket)
    thread = _from_thread(session, ticket)
    found: dict[str, Person] = {}

    def usable(address: str) -> bool:
        # A non-ASCII address needs SMTPUTF8, which our mail does not use.
        if address in ours or "@" not in address or not address.isascii():
            return False
        change = changes.get(address)
        return change is None or change.state != "removed"

    def offer(name: str, address: str, source: Source) -> None:
        # Mail that named a Reply-To (a web form's, a shared mailbox's) is answered there,
        # the sender's own address left out, unless nothing usable is named.
        targets = [t for t in thread.answer_to.get(address, []) if usable(t[1])]
        for target_name, target in targets or [(name, address)]:
            if target not in found and usable(target):
                found[target] = Person(target, clean_header(target_name), source)

    if ticket.requester_email:
        offer("", ticket.requester_email.lower(), "requester")
    for name, address in thread.people:
        offer(name, address, "mail")
    for row in sorted(changes.values(), key=lambda r: r.id):
        if row.state == "added" and row.address not in found and usable(row.address):
            found[row.address] = Person(row.address, clean_header(row.name or ""), "added")
    # The requester's display name, when their mail gave one.
    requester = next((p for p in found.values() if p.source == "requester"), None)
    if requester is not None and not requester.name:
        name = next((n for n, a in thread.people if a == requester.address and n), "")
        found[requester.address] = Person(requester.address, clean_header(name), "requester")
    return list(found.values())


def removed(session: Session, ticket: Ticket) -> list[str]:
    return sorted(a for a, row in _changes(session, ticket).items() if row.state == "removed")


def add_participant(
    session: Session, settings: Settings, ticket: Ticket, address: str, *,
    name: str = "", now: datetime,
) -> Person:
    """Add (or bring back) an address. ParticipantError for a non-address or one of ours."""
    bare = bare_address(address)
    if bare in our_addresses(settings):
        raise ParticipantError(f"{bare} is one of our own addresses")
    row = _changes(session, ticket).get(bare)
    if row is None:
        row = Participant(ticket_id=ticket.id, address=bare, created_at=now)
        session.add(row)
    row.state, row.updated_at = "added", now
    row.name = clean_header(name)[:200] or row.name
    session.flush()
    return next(p for p in participants(session, settings, ticket) if p.address == bare)


def remove_participant(
    session: Session, settings: Settings, ticket: Ticket, address: str, *, now: datetime
) -> bool:
    """Stop mailing `address` on this ticket; False when it is no participant."""
    bare = bare_address(address)
    if bare not in {p.address for p in participants(session, settings, ticket)}:
        return False
    row = _changes(session, ticket).get(bare)
    if row is None:
        row = Participant(ticket_id=ticket.id, address=bare, created_at=now)
        session.add(row)
    row.state, row.updated_at = "removed", now
    session.flush()
    return True


def recipients(
    session: Session, settings: Settings, ticket: Ticket, cc: list[str]
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(To, Cc) of an answer as (name, address): the requester (else the first participant)
    in To, the other participants and this answer's own `cc` in Cc, each address once."""
    people = participants(session, settings, ticket)
    ours = our_addresses(settings)
    to = [(p.name, p.address) for p in people[:1]]
    copied = [(p.name, p.address) for p in people[1:]]
    seen = {a for _, a in [*to, *copied]}
    for value in cc:
        bare = bare_address(value)
        if bare not in seen and bare not in ours:
            seen.add(bare)
            copied.append(("", bare))
    return to, copied
