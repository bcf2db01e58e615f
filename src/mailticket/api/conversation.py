"""/api/v1/tickets/{id}/comments and /participants: answering customers by email.

A comment is JSON (`CommentIn`) or multipart/form-data with the same fields plus `files`:
a public one is mailed to the ticket's participants (conversation/agent_reply.py), an
internal note never is. Participants can be listed, added and removed.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from sqlalchemy.orm import Session
from starlette.datastructures import UploadFile

from mailticket.api import customer_access
from mailticket.api.auth import Principal, RuntimeDep, ScopedWriter, SessionDep, require
from mailticket.api.errors import Problem
from mailticket.api.schemas import (
    CommentIn,
    CommentOut,
    ParticipantIn,
    ParticipantList,
    ParticipantOut,
)
from mailticket.api.tickets import ADDRESS, TicketRef, load_ticket
from mailticket.backends.actions import queue_comment
from mailticket.conversation import participants as people
from mailticket.conversation.agent_reply import (
    AttachmentLimit,
    MailFile,
    NoRecipients,
    check_attachments,
    post_public_reply,
)
from mailticket.outbound.templates import TemplateRenderError
from mailticket.runtime import Runtime
from mailticket.store.models import Ticket
from mailticket.ticketing import tickets as ticket_service

router = APIRouter(prefix="/api/v1/tickets", tags=["tickets"])

FILES_FIELD = "files"
_TEXT_FIELDS = ("body", "visibility", "author_email", "author_name")
# Parts a form may have at all; REPLY_MAX_ATTACHMENTS is checked (422) after parsing.
_MAX_PARTS = 200
_MULTIPART_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["body"],
    "additionalProperties": False,
    "properties": {
        "body": {"type": "string", "minLength": 1, "maxLength": 100_000},
        "visibility": {"type": "string", "enum": ["public", "internal"], "default": "public"},
        "author_email": {"type": "string", "maxLength": 320},
        "author_name": {"type": "string", "maxLength": 200},
        "cc": {
            "type": "array", "maxItems": 50,
            "items": {"type": "string", "minLength": 3, "maxLength": 320,
                      "pattern": people.ADDRESS_PATTERN},
        },
        FILES_FIELD: {
            "type": "array",
            "description": "Attachments (REPLY_MAX_ATTACHMENTS, REPLY_MAX_ATTACHMENT_BYTES).",
            "items": {"type": "string", "format": "binary"},
        },
    },
}
_COMMENT_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": CommentIn.model_json_schema()},
            "multipart/form-data": {
                "schema": _MULTIPART_SCHEMA,
                "encoding": {FILES_FIELD: {"contentType": "application/octet-stream"}},
            },
        },
    }
}

AddressPath = Annotated[
    str, Path(min_length=1, max_length=320, pattern=ADDRESS, description="An address.")
]


def _invalid(loc: list[str | int], msg: str, kind: str = "value_error") -> RequestValidationError:
    return RequestValidationError([{"loc": ["body", *loc], "msg": msg, "type": kind}])


def _validated(data: Any) -> CommentIn:
    try:
        if isinstance(data, bytes):
            return CommentIn.model_validate_json(data)
        return CommentIn.model_validate(data)
    except ValidationError as exc:
        raise RequestValidationError(
            [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
        ) from None


async def read_comment(request: Request) -> tuple[CommentIn, list[MailFile]]:
    """The comment and its files, from JSON or multipart/form-data."""
    kind = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    if kind == "application/json" or kind.endswith("+json"):
        return _validated(await request.body()), []
    if kind != "multipart/form-data":
        raise Problem(415, f"send application/json or multipart/form-data, not {kind or '?'}")
    fields: dict[str, Any] = {}
    files: list[MailFile] = []
    # Closing the form removes the temporary files the uploads were spooled to.
    async with request.form(max_files=_MAX_PARTS, max_fields=_MAX_PARTS) as form:
        await _read_form(form.multi_items(), fields, files)
    return _validated(fields), files


async def _read_form(
    items: list[tuple[str, UploadFile | str]], fields: dict[str, Any], files: list[MailFile]
) -> None:
    for name, value in items:
        if name == FILES_FIELD:
            if not isinstance(value, UploadFile):
                raise _invalid([FILES_FIELD], "expected a file, got a text field")
            files.append(MailFile(
                filename=(value.filename or "").replace("\x00", ""),
                content_type=value.content_type or "application/octet-stream",
                data=await value.read(),
            ))
        elif isinstance(value, UploadFile):
            raise _invalid([name], "a file is only accepted in the `files` field")
        elif name == "cc":
            fields.setdefault("cc", []).append(value)
        elif name in _TEXT_FIELDS and name not in fields:
            fields[name] = value
        else:
            raise _invalid([name], "unexpected or repeated field", "extra_forbidden")


def _store_comment(
    session: Session, runtime: Runtime, principal: Principal, ref: str,
    comment: CommentIn, files: list[MailFile],
) -> CommentOut:
    settings = runtime.settings
    if comment.visibility == "internal" and principal.customer_id is not None:
        # Internal notes are the support team's, never shown to a customer-scoped token; one
        # written through such a token would pose as the team's own note. Refused before the
        # ticket is looked up: the same answer whoever's ticket it names.
        raise Problem(
            403, "a customer-scoped token cannot write internal notes (only public comments)",
            headers={"WWW-Authenticate": 'Bearer error="insufficient_scope"'},
        )
    ticket = load_ticket(session, ref, principal.customer_id)
    if principal.customer_id is not None:
        # The customer's own words: recorded as theirs, never mailed (customer_access.py).
        return customer_access.store_customer_comment(
            session, runtime, principal, ticket, comment, files
        )
    author = comment.author_email or f"token:{principal.name}"
    now = runtime.clock()
    if comment.visibility == "internal":
        if comment.cc or files:
            raise Problem(422, "an internal note is never mailed: cc and files belong to"
                          " public replies")
        row = ticket_service.add_comment(
            session, ticket, comment.body, internal=True, author_email=author, source="api",
            now=now,
        )
    else:
        try:
            check_attachments(settings, files)
            row = post_public_reply(
                session, settings, ticket, body=comment.body, author_email=author,
                author_name=comment.author_name or "", cc=comment.cc, attachments=files,
                now=now, source="api",
            )
        except AttachmentLimit as exc:
            raise Problem(413 if exc.too_large else 422, str(exc)) from None
        except people.ParticipantError as exc:
            raise Problem(422, f"cc: {exc}") from None
        except NoRecipients as exc:
            raise Problem(409, f"{exc}; add one with POST .../participants") from None
        except TemplateRenderError as exc:
            raise Problem(500, f"the agent_reply mail template failed: {exc}") from None
    session.flush()
    # Mirrored to external backends in the same transaction (the outbox delivers it).
    queue_comment(session, ticket, row)
    session.commit()
    return CommentOut.model_validate(row)


@router.post(
    "/{ticket_id}/comments",
    response_model=CommentOut,
    status_code=201,
    openapi_extra=_COMMENT_BODY,
    responses={
        400: {"description": "The body could not be decoded."},
        403: {"description": "The token cannot write, or a customer-scoped token sent what "
                           "only staff may (an internal note, files, `author_name`, an "
                           "address that is not the customer's, a `cc` the team removed "
                           "from the ticket)."},
        409: {"description": "A public reply, but the ticket has nobody to mail; or a "
                           "customer-scoped token's comment on a ticket closed for longer "
                           "than TICKET_REOPEN_WINDOW."},
        413: {"description": "The body is larger than API_MAX_BODY_BYTES, or the files "
                           "than REPLY_MAX_ATTACHMENT_BYTES."},
        415: {"description": "Neither application/json nor multipart/form-data."},
    },
)
async def add_comment(
    ticket_id: TicketRef,
    principal: ScopedWriter,
    request: Request,
    session: SessionDep,
    runtime: RuntimeDep,
) -> CommentOut:
    """A public comment (mailed to the participants, plus `cc`, with the files attached)
    or an internal note (never mailed); the author defaults to the token's name.

    Through a customer-scoped token the comment is the customer's own (`source`
    "customer"): public, never mailed, and it reopens a pending, resolved or closed ticket
    (a 409 once it is closed for longer than TICKET_REOPEN_WINDOW).
    Its `cc` and `author_email` must be the customer's own addresses (its contacts or
    domains; each `cc` becomes a participant of the ticket, unless the team removed it:
    only staff add a removed participant back); files, `author_name` and internal notes
    are refused (403, naming what)."""
    comment, files = await read_comment(request)
    return await run_in_threadpool(
        _store_comment, session, runtime, principal, ticket_id, comment, files
    )


def _listing(session: Session, runtime: Runtime, ticket: Ticket) -> ParticipantList:
    return ParticipantList(
        ticket_id=ticket.id,
        ticket_number=ticket.ticket_number,
        participants=[
            ParticipantOut(address=p.address, name=p.name, source=p.source)
            for p in people.participants(session, runtime.settings, ticket)
        ],
        removed=people.removed(session, ticket),
    )


@router.get(
    "/{ticket_id}/participants",
    response_model=ParticipantList,
    dependencies=[Depends(require("read"))],
)
def list_participants(
    ticket_id: TicketRef, session: SessionDep, runtime: RuntimeDep
) -> ParticipantList:
    """Who a public reply goes to: the requester, the people on the customer mail of the
    thread (From, To, Cc) and those added here; never our own addresses nor removed ones."""
    return _listing(session, runtime, load_ticket(session, ticket_id))


@router.post(
    "/{ticket_id}/participants",
    response_model=ParticipantList,
    status_code=201,
    dependencies=[Depends(require("write"))],
)
def add_participant(
    ticket_id: TicketRef, person: ParticipantIn, session: SessionDep, runtime: RuntimeDep
) -> ParticipantList:
    """Add an address (or bring back a removed one); our own addresses are refused."""
    ticket = load_ticket(session, ticket_id)
    try:
        people.add_participant(
            session, runtime.settings, ticket, person.address, name=person.name or "",
            now=runtime.clock(),
        )
    except people.ParticipantError as exc:
        raise Problem(422, str(exc)) from None
    session.commit()
    return _listing(session, runtime, ticket)


@router.delete(
    "/{ticket_id}/participants/{address}",
    response_model=ParticipantList,
    dependencies=[Depends(require("write"))],
)
def remove_participant(
    ticket_id: TicketRef, address: AddressPath, session: SessionDep, runtime: RuntimeDep
) -> ParticipantList:
    """Stop mailing an address on this ticket (the requester too); 404 if it is none."""
    ticket = load_ticket(session, ticket_id)
    try:
        found = people.remove_participant(
            session, runtime.settings, ticket, address, now=runtime.clock()
        )
    except people.ParticipantError:
        found = False  # no address at all: certainly nobody on the ticket
    if not found:
        raise Problem(404, f"{address} is no participant of {ticket.ticket_number}")
    session.commit()
    return _listing(session, runtime, ticket)
