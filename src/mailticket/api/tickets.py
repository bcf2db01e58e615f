"""/api/v1/tickets: list, show, change, thread, lookup by address (comments and
participants: conversation.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query
from fastapi.responses import Response
from sqlalchemy.orm import Session

from mailticket.api import queries
from mailticket.api.auth import RuntimeDep, SessionDep, require
from mailticket.api.errors import Problem
from mailticket.api.schemas import (
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
from mailticket.backends.actions import queue_ticket_update
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


def load_ticket(session: Session, ref: str) -> Ticket:
    ticket = ticket_service.find_ticket(session, ref.strip())
    if ticket is None:
        raise Problem(404, f"no ticket {ref}")
    return ticket


def ticket_detail(ticket: Ticket) -> TicketDetail:
    base = TicketSummary.model_validate(ticket).model_dump()
    return TicketDetail(
        **base,
        description=ticket.description,
        custom_fields=ticket.custom_fields or {},
        merged_into_id=ticket.merged_into_id,
        resolved_at=ticket.resolved_at,
        comments=[CommentOut.model_validate(c) for c in ticket.comments],
    )


@router.get(
    "/by-email/{email_address}",
    response_model=TicketsByEmail,
    dependencies=[Depends(require("read"))],
)
def by_email(
    email_address: Annotated[
        str,
        Path(
            min_length=1, max_length=320, pattern=ADDRESS,
            description="An address; a value without an @ (a blank one, say) is a 422.",
        ),
    ],
    session: SessionDep,
) -> TicketsByEmail:
    """Tickets opened by the address or with mail from it (case-insensitive)."""
    found = queries.tickets_by_email(session, email_address)
    return TicketsByEmail(
        email_address=email_address.strip().lower(),
        tickets=[TicketBrief.model_validate(t) for t in found],
    )


@router.get("", response_model=TicketPage, dependencies=[Depends(require("read"))])
def list_tickets(
    runtime: RuntimeDep,
    session: SessionDep,
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
            session, filters, limit=limit or min(DEFAULT_PAGE, cap), cursor=cursor
        )
    except queries.BadCursor as exc:
        raise Problem(422, str(exc)) from None
    return TicketPage(
        tickets=[TicketSummary.model_validate(t) for t in rows], next_cursor=next_cursor
    )


@router.get("/{ticket_id}", response_model=TicketDetail, dependencies=[Depends(require("read"))])
def get_ticket(ticket_id: TicketRef, session: SessionDep) -> TicketDetail:
    return ticket_detail(load_ticket(session, ticket_id))


@router.patch(
    "/{ticket_id}", response_model=TicketDetail, dependencies=[Depends(require("write"))]
)
def patch_ticket(
    ticket_id: TicketRef, change: TicketPatch, session: SessionDep, runtime: RuntimeDep
) -> TicketDetail:
    """Change status, priority, assignee or tags (tags replace the list)."""
    ticket = load_ticket(session, ticket_id)
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
    return ticket_detail(ticket)


@router.get(
    "/{ticket_id}/emails", response_model=TicketEmails, dependencies=[Depends(require("read"))]
)
def ticket_emails(ticket_id: TicketRef, session: SessionDep) -> Response:
    """The ticket's mail in chronological order (the seed's shape, plus direction,
    matched_by and classification)."""
    ticket = load_ticket(session, ticket_id)
    body = TicketEmails(
        ticket_id=ticket.id,
        ticket_number=ticket.ticket_number,
        emails=[EmailOut.model_validate(e) for e in queries.thread(session, ticket.id)],
    )
    # Serialised here, in the worker thread: returning the model would make FastAPI
    # re-validate it in a second thread-pool trip on the busiest endpoint.
    return Response(body.model_dump_json(), media_type="application/json")
