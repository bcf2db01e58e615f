"""The thread view's forms: answer the customer, add an internal note, change status,
priority and assignee, all from the ticket page.

Only a token with the `write` scope may post (a read token gets 403, and its pages show no
forms); every post carries the CSRF token of `csrf.py`. Each form runs the same service as
the JSON API and answers with a redirect back to the ticket (post/redirect/get).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email.utils import getaddresses
from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse, Response
from pydantic import ValidationError
from sqlalchemy.orm import Session

from mailticket.api import csrf, tokens
from mailticket.api.auth import COOKIE_NAME, Principal, RuntimeDep, SessionDep, UiPrincipal
from mailticket.api.conversation import _store_comment as store_comment
from mailticket.api.errors import Problem
from mailticket.api.pages import SECURITY_HEADERS
from mailticket.api.schemas import CommentIn, SettableStatus
from mailticket.api.tickets import load_ticket
from mailticket.conversation import participants as people
from mailticket.conversation.agent_reply import MailFile
from mailticket.runtime import Runtime
from mailticket.settings import Priority
from mailticket.ticketing.changes import TicketChange, apply_change

router = APIRouter(prefix="/ui", include_in_schema=False)

Body = Annotated[str, Form(min_length=1, max_length=100_000)]
Token = Annotated[str | None, Form(alias=csrf.FIELD, max_length=128)]


@dataclass(frozen=True)
class Writer:
    """A signed-in browser whose token may write, and that token (which signs its forms)."""

    principal: Principal
    session_token: str

    @property
    def author(self) -> str:
        return f"token:{self.principal.name}"


async def ui_writer(request: Request, principal: UiPrincipal) -> Writer:
    if not tokens.scope_allows(principal.scope, "write"):
        raise Problem(
            403, f"changing tickets needs a token with the 'write' scope "
            f"(this one has {principal.scope!r})",
        )
    if principal.customer_id is not None:
        # The API's comment and change routes are closed to customer-scoped tokens; the
        # forms that run the same services are too.
        raise Problem(403, "a customer-scoped token cannot change tickets from the thread view")
    return Writer(principal, request.cookies.get(COOKIE_NAME, ""))


WriterDep = Annotated[Writer, Depends(ui_writer)]


def _back(ticket_number: str, anchor: str) -> Response:
    response = RedirectResponse(f"/ui/tickets/{ticket_number}#{anchor}", status_code=303)
    response.headers.update(SECURITY_HEADERS)
    return response


def _change(session: Session, runtime: Runtime, ref: str, change: TicketChange) -> str:
    ticket = load_ticket(session, ref)
    apply_change(session, ticket, change, now=runtime.clock(), source="ui")
    session.commit()
    return ticket.ticket_number


@router.post("/tickets/{ticket_ref}/notes")
async def add_note(
    request: Request,
    ticket_ref: str,
    body: Body,
    writer: WriterDep,
    session: SessionDep,
    runtime: RuntimeDep,
    token: Token = None,
) -> Response:
    """An internal note: the API's comment service, which never mails one."""
    csrf.check(request, writer.session_token, token)
    note = CommentIn(body=body, visibility="internal")
    number = await run_in_threadpool(
        _comment, session, runtime, writer.principal, ticket_ref, note, []
    )
    return _back(number, "notes")


def _assignee(value: str) -> int | None:
    value = value.strip()
    if not value:
        return None
    if not (value.isascii() and value.isdigit()) or int(value) > 2_147_483_647:
        raise Problem(422, f"the assignee is a user id (a whole number), not {value!r}")
    return int(value)


@router.post("/tickets/{ticket_ref}/update")
async def update_ticket(
    request: Request,
    ticket_ref: str,
    status: Annotated[SettableStatus, Form()],
    priority: Annotated[Priority, Form()],
    writer: WriterDep,
    session: SessionDep,
    runtime: RuntimeDep,
    assignee: Annotated[str, Form(max_length=20)] = "",
    token: Token = None,
) -> Response:
    csrf.check(request, writer.session_token, token)
    change = TicketChange(
        status=status, priority=priority.value, assigned_to_user_id=_assignee(assignee),
        given=frozenset({"status", "priority", "assigned_to_user_id"}),
    )
    number = await run_in_threadpool(_change, session, runtime, ticket_ref, change)
    return _back(number, "ticket-title")


@router.post("/tickets/{ticket_ref}/reply")
async def reply(
    request: Request,
    ticket_ref: str,
    body: Body,
    writer: WriterDep,
    session: SessionDep,
    runtime: RuntimeDep,
    cc: Annotated[str, Form(max_length=4000)] = "",
    files: Annotated[list[UploadFile], File()] = [],  # noqa: B006 - FastAPI copies defaults
    token: Token = None,
) -> Response:
    """A public reply: the API's comment service mails it to the participants (and Cc)."""
    csrf.check(request, writer.session_token, token)
    try:
        comment = CommentIn(body=body, visibility="public", cc=cc_addresses(cc))
    except people.ParticipantError as exc:
        raise Problem(422, f"cc: {exc}") from None
    except ValidationError as exc:
        raise Problem(422, "cc: " + "; ".join(e["msg"] for e in exc.errors())) from None
    # A file input left empty still posts one part, with no name and no bytes.
    chosen = [
        MailFile(
            filename=f.filename.replace("\x00", ""),
            content_type=f.content_type or "application/octet-stream",
            data=await f.read(),
        )
        for f in files if f.filename
    ]
    number = await run_in_threadpool(
        _comment, session, runtime, writer.principal, ticket_ref, comment, chosen
    )
    return _back(number, "thread")


def _top_level(value: str) -> str:
    """`value` with the `;` that separate addresses turned into `,` (mail clients such as
    Outlook separate with `;`), leaving those inside a quoted name, a comment or angle
    brackets alone; ParticipantError when a quote, parenthesis or angle bracket is left open
    or closed without opening (the stdlib parser would guess, and a guess may mail the wrong
    person)."""
    out: list[str] = []
    quoted = escaped = False
    depth = {"(": 0, "<": 0}
    closers = {")": "(", ">": "<"}
    for char in value:
        if escaped:
            escaped = False
        elif char == "\\" and (quoted or depth["("]):
            escaped = True
        elif char == '"' and not depth["("]:
            quoted = not quoted
        elif not quoted and char in depth:
            depth[char] += 1
        elif not quoted and char in closers:
            depth[closers[char]] -= 1
            if depth[closers[char]] < 0:
                raise people.ParticipantError(f"an unmatched {char!r} in {value!r}")
        elif char == ";" and not quoted and not any(depth.values()):
            char = ","
        out.append(char)
    if quoted or any(depth.values()):
        raise people.ParticipantError(f"a quote or bracket is left open in {value!r}")
    return "".join(out)


def _outside_quotes(value: str) -> str:
    return re.sub(r'"(?:[^"\\]|\\.)*"|\((?:[^()\\]|\\.)*\)', " ", value)


def cc_addresses(value: str) -> list[str]:
    """The bare addresses of the reply form's Cc field, read as a mail header's address
    list (email.utils.getaddresses): `"Doe, Jane" <jane@example.com>, bob@example.com` is
    two people, not three pieces. Each must be an address we can mail (ParticipantError,
    naming it, otherwise); a repeated one counts once."""
    text = _top_level(value.replace("\r", " ").replace("\n", " "))
    found = [(name, addr) for name, addr in getaddresses([text]) if name or addr]
    # Every "@" outside quoted names and comments is one address: getaddresses drops or
    # merges what it cannot read, and a dropped Cc must be an error, not a silent loss.
    if _outside_quotes(text).count("@") > len(found):
        raise people.ParticipantError(f"cannot read every address in {value.strip()!r}")
    out: list[str] = []
    for name, addr in found:
        try:
            bare = people.bare_address(addr or name)
        except people.ParticipantError:
            # What the parser kept may be a piece ("not" of "not an address"): show both.
            raise people.ParticipantError(
                f"{addr or name!r} is not an e-mail address (in {value.strip()!r})"
            ) from None
        if bare not in out:
            out.append(bare)
    return out


def _comment(
    session: Session, runtime: Runtime, principal: Principal, ref: str, comment: CommentIn,
    files: list[MailFile],
) -> str:
    """The same code path as POST /api/v1/tickets/{id}/comments (limits, recipients, the
    agent_reply mail for a public one, the backends' mirror), with the same refusals."""
    number = load_ticket(session, ref).ticket_number
    store_comment(session, runtime, principal, ref, comment, files)
    return number
