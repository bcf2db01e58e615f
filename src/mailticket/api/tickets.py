"""/api/v1/tickets: list, show, change, thread, lookup by address (comments and
participants: conversation.py)."""

from __future__ import annotations

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
from mailticket.settings import Priority
from mailticket.store.models import Ticket
from mailticket.ticketing import tickets as ticket_service
from mailticket.ticketing.changes import TicketChange, apply_change

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


def ticket_detail(session: Session, ticket: Ticket) -> TicketDetail:
    base = TicketSummary.model_validate(ticket).model_dump()
    before, after = queries.followup_links(session, ticket)
    return TicketDetail(
        **base,
        description=ticket.description,
        custom_fields=ticket.custom_fields or {},
        merged_into_id=ticket.merged_into_id,
        resolved_at=ticket.resolved_at,
        closed_at=ticket.closed_at,
        followup_of=TicketBrief.model_validate(before) if before is not None else None,
        followups=[TicketBrief.model_validate(t) for t in after],
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
    return ticket_detail(session, load_ticket(session, ticket_id))


@router.patch(
    "/{ticket_id}", response_model=TicketDetail, dependencies=[Depends(require("write"))]
)
def patch_ticket(
    ticket_id: TicketRef, change: TicketPatch, session: SessionDep, runtime: RuntimeDep
) -> TicketDetail:
    """Change status, priority, assignee or tags (tags replace the list)."""
    ticket = load_ticket(session, ticket_id)
    apply_change(
        session, ticket,
        TicketChange(
            status=change.status,
            priority=change.priority.value if change.priority is not None else None,
            assigned_to_user_id=change.assigned_to_user_id,
            tags=change.tags,
            given=frozenset(change.model_fields_set),
        ),
        now=runtime.clock(), source="api",
    )
    session.commit()
    session.refresh(ticket)
    return ticket_detail(session, ticket)


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
