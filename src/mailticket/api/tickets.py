"""/api/v1/tickets: list, show, change, comment, thread, lookup by address."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Path, Query
from fastapi.responses import Response
from sqlalchemy.orm import Session

from mailticket.api import queries
from mailticket.api.auth import RuntimeDep, ScopedReader, ScopedWriter, SessionDep
from mailticket.api.errors import Problem
from mailticket.api.schemas import (
    CommentIn,
    CommentOut,
    EmailOut,
    InputDatetime,
    TicketBrief,
    TicketDetail,
    TicketEmails,
    TicketPage,
    TicketPatch,
    TicketsByEmail,
    TicketStatus,
    TicketSummary,
)
from mailticket.backends.actions import queue_comment, queue_ticket_update
from mailticket.customers.scope import visible_ticket_ids
from mailticket.settings import Priority
from mailticket.sla import service as sla_service
from mailticket.store.models import Ticket
from mailticket.ticketing import tickets as ticket_service

router = APIRouter(prefix="/api/v1/tickets", tags=["tickets"])

# What by-email accepts: a value with an @ in it. A blank value (or any other text that is no
# address) is a 422: it must not find the tickets of mail whose From was empty or unreadable.
# Anything with an @ is looked up as it is (trimmed, lower-case), since a stored From holds
# whatever the mail said.
ADDRESS = r"^[^\x00]*@[^\x00]*$"
DEFAULT_PAGE = 50

TicketRef = Annotated[
    str,
    Path(
        min_length=1, max_length=64,
        description="The ticket's numeric id or its number (TKT-YYYYMMDD-XXX).",
    ),
]


def load_ticket(session: Session, ref: str, scope: int | None = None) -> Ticket:
    """The ticket `ref` names, or 404. For a customer scope, a ticket of another customer is
    the same 404 as one that does not exist, and so is a ticket of theirs that was merged
    into another customer's (or the other way round)."""
    ticket = ticket_service.find_ticket(session, ref.strip())
    if ticket is not None and scope is not None:
        asked = ticket_service.find_ticket(session, ref.strip(), follow_merges=False)
        if ticket.customer_id != scope or asked is None or asked.customer_id != scope:
            ticket = None
    if ticket is None:
        raise Problem(404, f"no ticket {ref}")
    return ticket


def ticket_detail(session: Session, ticket: Ticket, scope: int | None = None) -> TicketDetail:
    base = TicketSummary.model_validate(ticket).model_dump()
    merged_into = ticket.merged_into_id
    if merged_into not in visible_ticket_ids(session, [merged_into], scope):
        merged_into = None
    return TicketDetail(
        **base,
        description=ticket.description,
        custom_fields=ticket.custom_fields or {},
        merged_into_id=merged_into,
        resolved_at=ticket.resolved_at,
        comments=[CommentOut.model_validate(c) for c in ticket.comments],
    )


@router.get("/by-email/{email_address}", response_model=TicketsByEmail)
def by_email(
    email_address: Annotated[
        str,
        Path(
            min_length=1, max_length=320, pattern=ADDRESS,
            description="An address; a value without an @ (a blank one, say) is a 422.",
        ),
    ],
    session: SessionDep,
    principal: ScopedReader,
) -> TicketsByEmail:
    """Tickets opened by the address or with mail from it (case-insensitive)."""
    found = queries.tickets_by_email(session, email_address, scope=principal.customer_id)
    return TicketsByEmail(
        email_address=email_address.strip().lower(),
        tickets=[TicketBrief.model_validate(t) for t in found],
    )


@router.get("", response_model=TicketPage)
def list_tickets(
    runtime: RuntimeDep,
    session: SessionDep,
    principal: ScopedReader,
    status: TicketStatus | None = None,
    priority: Priority | None = None,
    tag: Annotated[str | None, Query(max_length=64)] = None,
    customer_id: Annotated[int | None, Query(ge=0, le=2_147_483_647)] = None,
    assignee: Annotated[int | None, Query(ge=0, le=2_147_483_647)] = None,
    created_after: InputDatetime | None = None,
    created_before: InputDatetime | None = None,
    search: Annotated[str | None, Query(max_length=200)] = None,
    cursor: Annotated[
        str | None,
        Query(pattern=queries.CURSOR, description="The previous page's `next_cursor`."),
    ] = None,
    limit: Annotated[
        int | None,
        Query(ge=1, le=1000, description="Page size: 50 (or API_MAX_PAGE_SIZE if lower) by default."),
    ] = None,
) -> TicketPage:
    """Newest first. `next_cursor` fetches the next page; new tickets never shift pages."""
    cap = runtime.settings.api_max_page_size
    if limit is not None and limit > cap:
        raise Problem(422, f"limit is at most {cap} (API_MAX_PAGE_SIZE)")
    filters = queries.TicketFilters(
        status=status, priority=priority.value if priority else None, tag=tag,
        customer_id=customer_id, assignee=assignee,
        created_after=created_after, created_before=created_before,
        search=search,
    )
    try:
        rows, next_cursor = queries.list_tickets(
            session, filters, limit=limit or min(DEFAULT_PAGE, cap), cursor=cursor,
            scope=principal.customer_id,
        )
    except queries.BadCursor as exc:
        raise Problem(422, str(exc)) from None
    return TicketPage(
        tickets=[TicketSummary.model_validate(t) for t in rows], next_cursor=next_cursor
    )


@router.get("/{ticket_id}", response_model=TicketDetail)
def get_ticket(ticket_id: TicketRef, session: SessionDep, principal: ScopedReader) -> TicketDetail:
    scope = principal.customer_id
    return ticket_detail(session, load_ticket(session, ticket_id, scope), scope)


@router.patch("/{ticket_id}", response_model=TicketDetail)
def patch_ticket(
    ticket_id: TicketRef,
    change: TicketPatch,
    session: SessionDep,
    runtime: RuntimeDep,
    principal: ScopedWriter,
) -> TicketDetail:
    """Change status, priority, assignee or tags (tags replace the list)."""
    scope = principal.customer_id
    ticket = load_ticket(session, ticket_id, scope)
    fields = change.model_fields_set
    new_status = new_priority = None
    if "status" in fields and change.status is not None and change.status != ticket.status:
        ticket.status = new_status = change.status
        ticket.resolved_at = datetime.now(UTC) if change.status == "resolved" else None
    if "priority" in fields and change.priority is not None:
        if change.priority.value != ticket.priority:
            new_priority = change.priority.value
        ticket.priority = change.priority.value
    if "assigned_to_user_id" in fields:
        ticket.assigned_to_user_id = change.assigned_to_user_id
    if "tags" in fields:
        ticket.tags = []
        ticket_service.add_tags(ticket, change.tags or [])
    ticket.updated_at = datetime.now(UTC)
    # The SLA clock follows (history row; a new priority may mean another policy).
    if new_status is not None:
        sla_service.record_status(session, ticket.id, new_status, runtime.clock(), source="api")
    if new_priority is not None:
        sla_service.mark_stale(session, [ticket.id])
    # Mirrored to external backends in the same transaction (the outbox delivers it).
    queue_ticket_update(session, ticket, status=new_status, priority=new_priority)
    session.commit()
    session.refresh(ticket)
    return ticket_detail(session, ticket, scope)


@router.post(
    "/{ticket_id}/comments",
    response_model=CommentOut,
    status_code=201,
)
def add_comment(
    ticket_id: TicketRef,
    comment: CommentIn,
    session: SessionDep,
    principal: ScopedWriter,
    runtime: RuntimeDep,
) -> CommentOut:
    """A public comment or an internal note; the author defaults to the token's name."""
    ticket = load_ticket(session, ticket_id, principal.customer_id)
    row = ticket_service.add_comment(
        session, ticket, comment.body, internal=comment.visibility == "internal",
        author_email=comment.author_email or f"token:{principal.name}", source="api",
        now=runtime.clock(),  # a public comment may be the SLA's first response
    )
    session.flush()
    queue_comment(session, ticket, row)
    session.commit()
    return CommentOut.model_validate(row)


@router.get("/{ticket_id}/emails", response_model=TicketEmails)
def ticket_emails(ticket_id: TicketRef, session: SessionDep, principal: ScopedReader) -> Response:
    """The ticket's mail in chronological order (the seed's shape, plus direction,
    matched_by and classification)."""
    ticket = load_ticket(session, ticket_id, principal.customer_id)
    body = TicketEmails(
        ticket_id=ticket.id,
        ticket_number=ticket.ticket_number,
        emails=[EmailOut.model_validate(e) for e in queries.thread(session, ticket.id)],
    )
    # Serialised here, in the worker thread: returning the model would make FastAPI
    # re-validate it in a second thread-pool trip on the busiest endpoint.
    return Response(body.model_dump_json(), media_type="application/json")
