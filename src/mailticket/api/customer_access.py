"""What a customer-scoped token may write and see, beyond which tickets are its customer's.

Such a token is the customer's own door into their requests (a portal, a partner's
integration), and the rules follow what end users get in Zendesk or Freshdesk:

- A comment is the customer's own words: a public comment recorded as the customer's
  (`source` "customer"), which reopens a waiting or solved ticket as a mail from them
  does. It is never mailed: the support address only ever sends what an agent wrote, so a
  token cannot make it send anything, to anyone. `cc` may name only the customer's own
  addresses (its contacts, or an address at one of its domains, the directory's rule for
  "this mail is theirs"); they become participants of the ticket, so the agents' next
  replies reach them too. An address an agent removed from the ticket is the team's
  decision: only staff bring it back (403 naming it). Files and `author_name` (an agent reply's attachments and From
  name) are refused: the comment is not a mail, and files reach the ticket through mail,
  where the inbound checks run on them.
- A change may only close or reopen the request: `status` to open, resolved or closed.
  Any other field (priority, assignee, tags) is the team's: 403 naming it.
- A resolved or closed ticket is reopened (by a comment or a change) only within
  TICKET_REOPEN_WINDOW of its closing, as a mail would reopen it; later it is a 409 (mail
  would open a follow-up ticket instead).
- A comment shows who wrote it as the customer knows them: their own people's addresses as
  they are, and for everything the team wrote (an agent, an integration, a backend, the
  system) the support address, the From of every mail the team sends them. Never a token's
  name (`token:ops-bot`, which a staff member chose) or an agent's own address: the customer's
  comment written without `author_email` shows no author (null).
- A mail's raw download (any mail of the customer's tickets: what they sent and what we sent
  them) comes without the trace our side adds on receipt: `Received`, `Return-Path`,
  `Delivered-To`, `X-Original-To`, `Envelope-To`, `Authentication-Results`, `Received-SPF`,
  `ARC-*` and every `X-` header (our filters' verdicts; the sender's own X- headers cannot be
  told from ours, so they go too). The rest, body and attachments included, is byte for
  byte as stored; staff download the stored bytes unchanged.
- Answers leave out what only the team works with: the assignee, the tags, the custom
  fields, and for each mail how it was threaded (`matched_by`) and what the classifier
  made of it (`classification`). `tag` and `assignee` as list filters would reveal the
  same through which tickets come back, so they are refused too.

Each refusal happens before anything is written (403 naming the field or address, or a
removed participant; 409
for a ticket past its reopen window; 422 for a `cc` that is one of our own addresses).
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterable, Sequence
from typing import Any

from fastapi.responses import Response
from pydantic import BaseModel
from sqlalchemy.orm import Session

from mailticket.api.auth import Principal
from mailticket.api.errors import Problem
from mailticket.api.schemas import CommentIn, CommentOut
from mailticket.backends.actions import queue_comment
from mailticket.conversation import participants as people
from mailticket.conversation.agent_reply import MailFile
from mailticket.customers.lookup import shared_for
from mailticket.customers.matcher import detect
from mailticket.customers.models import Customer
from mailticket.followups.routing import within_window
from mailticket.runtime import Runtime
from mailticket.settings import Settings
from mailticket.store.models import Comment, Ticket
from mailticket.ticketing import tickets as ticket_service
from mailticket.ticketing.changes import TicketChange, apply_change

SOURCE = "customer"
# The fields of a ticket and of a mail only the support team sees.
STAFF_TICKET_FIELDS = frozenset({"assigned_to_user_id", "tags", "custom_fields"})
STAFF_EMAIL_FIELDS = frozenset({"matched_by", "classification"})
# Close (resolved: "my problem is solved"; closed) or reopen; `pending` means the team is
# waiting for the customer, which is the team's call.
CUSTOMER_STATUSES = ("open", "resolved", "closed")
CUSTOMER_PATCH_FIELDS = frozenset({"status"})
# The statuses a customer's comment moves back to `open`, as a mail from them does.
REOPENED_BY_COMMENT = frozenset({"pending", *ticket_service.REOPENABLE_STATUSES})

# The comment sources that are the customer's own words (their mail, their token's comment).
CUSTOMER_SOURCES = frozenset({"email", SOURCE})
# How a comment written through a token without `author_email` names its author.
TOKEN_AUTHOR = "token:"

# Header fields a customer's copy of a mail leaves out (see above): the name at the start of
# a line of the header block, before its colon.
_TRACE_FIELD = re.compile(
    rb"(?:received|return-path|delivered-to|x-original-to|envelope-to|authentication-results"
    rb"|received-spf|arc-[!-9;-~]*|x-[!-9;-~]*)[ \t]*:",
    re.IGNORECASE,
)

_FORBIDDEN = {"WWW-Authenticate": 'Bearer error="insufficient_scope"'}


def refused(detail: str) -> Problem:
    return Problem(403, detail, headers=_FORBIDDEN)


# --- answers ---------------------------------------------------------------------------------


def scoped_json(
    principal: Principal, body: BaseModel, exclude: dict[str, Any] | set[str],
    status_code: int = 200, *, omit: Iterable[str] = (), headers: dict[str, str] | None = None,
) -> Response:
    """`body` as JSON, without the staff-only fields `exclude` names when the token is
    customer-scoped (a staff token gets everything), and without the top-level fields `omit`
    names for anyone (an unpaged list keeps the seed's exact shape: no `next_cursor`)."""
    dropped: dict[str, Any] = {}
    if principal.customer_id is not None:
        dropped = dict(exclude) if isinstance(exclude, dict) else dict.fromkeys(exclude, True)
    dropped.update(dict.fromkeys(omit, True))
    return Response(
        body.model_dump_json(exclude=dropped or None), media_type="application/json",
        status_code=status_code, headers=headers,
    )


def shown_author(settings: Settings, comment: Comment, scope: int | None) -> str | None:
    """Who wrote `comment`, as the caller may read it: staff get `author_email` as stored;
    a customer scope sees its own people's addresses, and the support address for all the
    team wrote (token names and agents' own addresses are internal)."""
    author = comment.author_email
    if scope is None:
        return author
    if comment.source in CUSTOMER_SOURCES:
        return author if author and "@" in author and not author.startswith(TOKEN_AUTHOR) \
            else None
    return settings.mail_from_address


def comment_out(settings: Settings, comment: Comment, scope: int | None) -> CommentOut:
    """`comment` as the API answers it to the caller (see shown_author)."""
    out = CommentOut.model_validate(comment)
    if scope is None:
        return out
    return out.model_copy(update={"author_email": shown_author(settings, comment, scope)})


def customer_copy(raw: bytes) -> bytes:
    """`raw` without the trace header fields (each with its folded continuation lines); the
    other header lines and everything from the blank line that ends the header on are kept
    byte for byte. Parsing and re-serialising would rewrite what it keeps, so the header
    block is cut line by line."""
    kept: list[bytes] = []
    dropping = False
    stream = io.BytesIO(raw)
    for line in stream:
        if line in (b"\n", b"\r\n"):  # the header ends: the rest goes as it is
            kept.append(line)
            kept.append(stream.read())
            break
        if line[:1] not in (b" ", b"\t"):  # a new field; a continuation follows its field
            dropping = _TRACE_FIELD.match(line) is not None
        if not dropping:
            kept.append(line)
    return b"".join(kept)


def refuse_staff_filters(principal: Principal, **given: object) -> None:
    """`tag=` or `assignee=` from a customer-scoped token: which of its tickets come back
    would tell it their tags or assignees."""
    if principal.customer_id is None:
        return
    for name, value in given.items():
        if value is not None:
            raise refused(f"a customer-scoped token cannot filter by {name!r} (staff only)")


# --- changes ---------------------------------------------------------------------------------


def check_reopen(runtime: Runtime, ticket: Ticket) -> None:
    """A resolved or closed ticket takes the customer back within TICKET_REOPEN_WINDOW, as
    their mail would; later that conversation is over (their mail would open a follow-up
    ticket), so reopening it or commenting on it is a 409 that says so."""
    if ticket.status in ticket_service.REOPENABLE_STATUSES and not within_window(
        runtime.settings, ticket, runtime.clock()
    ):
        raise Problem(
            409, f"{ticket.ticket_number} is {ticket.status} for longer than "
            "TICKET_REOPEN_WINDOW: write to the support address for a new request (it opens "
            "a follow-up ticket)",
        )


def check_change(principal: Principal, given: Iterable[str], status: str | None) -> None:
    """403 naming the first field a customer-scoped token may not change."""
    if principal.customer_id is None:
        return
    for name in sorted(given):
        if name not in CUSTOMER_PATCH_FIELDS:
            raise refused(
                f"a customer-scoped token cannot change {name!r}: it may only close or "
                f"reopen the ticket (status {', '.join(CUSTOMER_STATUSES)})"
            )
    if status is not None and status not in CUSTOMER_STATUSES:
        raise refused(
            f"a customer-scoped token cannot set status {status!r}: only "
            f"{', '.join(CUSTOMER_STATUSES)}"
        )


# --- comments --------------------------------------------------------------------------------


def foreign_addresses(
    session: Session, runtime: Runtime, customer_id: int, addresses: Sequence[str]
) -> list[str]:
    """The addresses among `addresses` the directory does not give to the customer (its
    contacts, and addresses at its domains: the rule that files their mail under it)."""
    detections = detect(session, addresses, shared_for(runtime.settings))
    return [
        address for address, found in zip(addresses, detections, strict=True)
        if found.match is None or found.match.customer_id != customer_id
    ]


def _customer_name(session: Session, customer_id: int) -> str:
    customer = session.get(Customer, customer_id)
    return f"{customer.name} (customer)" if customer is not None else "The customer"


def store_customer_comment(
    session: Session, runtime: Runtime, principal: Principal, ticket: Ticket,
    comment: CommentIn, files: list[MailFile],
) -> CommentOut:
    """The customer's own comment on their ticket: recorded, never mailed (see above).
    Every refusal comes before anything is written."""
    assert principal.customer_id is not None
    if files:
        raise refused(
            "a customer-scoped token cannot attach files: its comment is not mailed; "
            "send the files by mail, in reply to the ticket"
        )
    if comment.author_name:
        raise refused(
            "a customer-scoped token cannot set 'author_name' (the From name of an "
            "agent's mail): its comment is not mailed"
        )
    cc = list(dict.fromkeys(a.lower() for a in comment.cc))
    author = comment.author_email.strip().lower() if comment.author_email else None
    for field, addresses in (("cc", cc), ("author_email", [author] if author else [])):
        strangers = foreign_addresses(session, runtime, principal.customer_id, addresses)
        if strangers:
            raise refused(
                f"{field}: {strangers[0]} is not an address of this customer (its contacts or "
                "domains); a customer-scoped token names only its own people"
            )
    ours = people.our_addresses(runtime.settings)
    for address in cc:
        if address in ours:  # a customer domain that holds one of ours: never a participant
            raise Problem(422, f"cc: {address} is one of our own addresses")
    gone = set(people.removed(session, ticket))
    for address in cc:
        if address in gone:
            # An agent stopped mailing them on purpose (left the company, asked to be
            # taken off); the customer asks the team, who may add them back.
            raise refused(
                f"cc: {address} was removed from {ticket.ticket_number} by the support team; "
                "only the team can add them back"
            )
    check_reopen(runtime, ticket)
    now = runtime.clock()
    for address in cc:
        # Their colleague is on the request from now on: the team's replies copy them.
        people.add_participant(session, runtime.settings, ticket, address, now=now)
    row = ticket_service.add_customer_comment(
        session, ticket, comment.body, author_email=author or f"{TOKEN_AUTHOR}{principal.name}",
        source=SOURCE,
    )
    if ticket.status in REOPENED_BY_COMMENT:
        # As a reply by mail: the customer is back, the team has work again.
        apply_change(
            session, ticket, TicketChange(status="open", given=frozenset({"status"})),
            now=now, source=SOURCE,
        )
    session.flush()
    # The backends' agents see it as they see the customer's mail: public, and saying who
    # wrote it (the integration's account posts it, which would read as the team's answer).
    # Without an address the comment's author is the token (its name is staff vocabulary,
    # meaningless to the backend's agents): they read the customer's name instead.
    who = author or _customer_name(session, principal.customer_id)
    queue_comment(session, ticket, row, text=f"{who} wrote:\n\n{row.body.strip()}\n")
    session.commit()
    return comment_out(runtime.settings, row, principal.customer_id)
