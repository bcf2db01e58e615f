"""/api/v1/tickets: list, show, change, thread, lookup by address (comments and
participants: conversation.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel
from sqlalchemy.orm import Session

from mailticket.api import queries
from mailticket.api.auth import Principal, RuntimeDep, ScopedReader, ScopedWriter, SessionDep
from mailticket.api.customer_access import (
    STAFF_EMAIL_FIELDS,
    STAFF_TICKET_FIELDS,
    check_change,
    check_reopen,
    comment_out,
    refuse_staff_filters,
    scoped_json,
)
from mailticket.api.errors import Problem
from mailticket.api.schemas import (
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
from mailticket.customers.scope import visible_ticket_ids
from mailticket.settings import Priority, Settings
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

T = TypeVar("T")

Cursor = Annotated[
    str | None,
    Query(pattern=queries.CURSOR, description="The previous page's `next_cursor`."),
]
# The thread and by-email: without `limit` the whole list, as the seed promises and clients
# written against it read it (they know of no next page); an operator may bound it with
# API_MAX_UNPAGED, and a longer list is then a 422 asking for pages, never a silently cut one.
ListLimit = Annotated[
    int | None,
    Query(
        ge=1, le=1000,
        description="Page size, at most API_MAX_PAGE_SIZE. Without it: the whole list (a 422 "
        "if API_MAX_UNPAGED is set and the list is longer).",
    ),
]
NEXT_LINK = {
    "Link": {
        "description": 'RFC 8288 `<…>; rel="next"`: the next page, when there is one.',
        "schema": {"type": "string"},
    }
}
UNPAGED_422 = (
    "The request is not valid (a NUL character, a value out of range, a malformed cursor), "
    "or it gave no `limit` and the list is longer than API_MAX_UNPAGED (when set)."
)


def _check_limit(settings: Settings, limit: int | None) -> None:
    cap = settings.api_max_page_size
    if limit is not None and limit > cap:
        raise Problem(422, f"limit is at most {cap} (API_MAX_PAGE_SIZE)")


def _next_link(request: Request, limit: int | None, next_cursor: str | None) -> dict[str, str]:
    """The Link header of a page with a next one (RFC 8288): this request's URL with the
    next cursor, so a client that follows links pages without reading the body."""
    if next_cursor is None or limit is None:
        return {}
    url = request.url.include_query_params(limit=limit, cursor=next_cursor)
    return {"Link": f'<{url.path}?{url.query}>; rel="next"'}


def _unpaged(settings: Settings) -> int | None:
    """How many rows an answer without `limit` may hold (None: all of them)."""
    return settings.api_max_unpaged or None


def _listed(
    fetch: Callable[[int | None, str | None], tuple[list[T], str | None]],
    settings: Settings, limit: int | None, cursor: str | None, what: str,
) -> tuple[list[T], str | None]:
    """One page of a list (with `limit`), or the whole of it (without): a malformed or
    foreign cursor and an unpaged list past API_MAX_UNPAGED are 422s."""
    _check_limit(settings, limit)
    try:
        rows, next_cursor = fetch(limit if limit is not None else _unpaged(settings), cursor)
    except queries.BadCursor as exc:
        raise Problem(422, str(exc)) from None
    if limit is None and next_cursor is not None:
        raise _too_long(what, settings)
    return rows, next_cursor


def _page_json(
    request: Request, principal: Principal, body: BaseModel, exclude: dict[str, Any] | set[str],
    limit: int | None, cursor: str | None, next_cursor: str | None,
) -> Response:
    """A list answer: paged, with `next_cursor` and the `Link` header; unpaged, the seed's
    exact shape (no `next_cursor`)."""
    paged = limit is not None or cursor is not None
    return scoped_json(
        principal, body, exclude, omit=() if paged else ("next_cursor",),
        headers=_next_link(request, limit, next_cursor),
    )


def _too_long(what: str, settings: Settings) -> Problem:
    return Problem(
        422,
        f"{what} holds more than {settings.api_max_unpaged} entries (API_MAX_UNPAGED): ask "
        f"for it in pages, with `limit` (at most {settings.api_max_page_size}) and then each "
        "page's `next_cursor` as `cursor`",
    )

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


def ticket_detail(
    session: Session, settings: Settings, ticket: Ticket, scope: int | None = None
) -> TicketDetail:
    base = TicketSummary.model_validate(ticket).model_dump()
    merged_into = ticket.merged_into_id
    if merged_into not in visible_ticket_ids(session, [merged_into], scope):
        merged_into = None
    before, after = queries.followup_links(session, ticket)
    # A follow-up link to another customer's ticket is hidden from a customer scope.
    visible = visible_ticket_ids(session, [t.id for t in (before, *after) if t is not None], scope)
    if before is not None and before.id not in visible:
        before = None
    after = [t for t in after if t.id in visible]
    return TicketDetail(
        **base,
        description=ticket.description,
        custom_fields=ticket.custom_fields or {},
        merged_into_id=merged_into,
        resolved_at=ticket.resolved_at,
        closed_at=ticket.closed_at,
        followup_of=TicketBrief.model_validate(before) if before is not None else None,
        followups=[TicketBrief.model_validate(t) for t in after],
        comments=[
            comment_out(settings, c, scope)
            for c in queries.comments_for(session, ticket.id, scope)
        ],
    )


@router.get("/by-email", include_in_schema=False)
@router.get("/by-email/", include_in_schema=False)
def by_email_without_an_address(principal: ScopedReader) -> None:
    """The address left out is the documented 422 for a blank one. Without these routes
    `by-email/` was redirected to `by-email`, which read as the ticket "by-email" (404)."""
    raise Problem(422, "no address: ask for /api/v1/tickets/by-email/{address}")


@router.get(
    "/by-email/{email_address}",
    response_model=TicketsByEmail,
    responses={200: {"headers": NEXT_LINK}, 422: {"description": UNPAGED_422}},
)
def by_email(
    email_address: Annotated[
        str,
        Path(
            min_length=1, max_length=320, pattern=ADDRESS,
            description="An address; a value without an @ (a blank one, say) is a 422.",
        ),
    ],
    request: Request,
    runtime: RuntimeDep,
    session: SessionDep,
    principal: ScopedReader,
    limit: ListLimit = None,
    cursor: Cursor = None,
) -> Response:
    """Tickets opened by the address or with mail from it (case-insensitive), oldest first.
    With `limit`, one page and its `next_cursor` (and a `Link` header while there is a next
    page); tickets opened meanwhile never shift a page."""
    address = email_address.strip().lower()
    found, next_cursor = _listed(
        lambda rows, after: queries.tickets_by_email(
            session, email_address, scope=principal.customer_id, limit=rows, cursor=after
        ),
        runtime.settings, limit, cursor, f"the ticket list of {address}",
    )
    body = TicketsByEmail(
        email_address=address,
        tickets=[TicketBrief.model_validate(t) for t in found],
        next_cursor=next_cursor,
    )
    return _page_json(request, principal, body, set(), limit, cursor, next_cursor)


@router.get(
    "",
    response_model=TicketPage,
    responses={403: {"description": "A customer-scoped token filtered by `tag` or `assignee` "
                                    "(staff only)."}},
)
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
) -> Response:
    """Newest first. `next_cursor` fetches the next page; new tickets never shift pages.
    A customer-scoped token gets no `assigned_to_user_id` or `tags`, and cannot filter by
    them (403)."""
    refuse_staff_filters(principal, tag=tag, assignee=assignee)
    cap = runtime.settings.api_max_page_size
    _check_limit(runtime.settings, limit)
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
    page = TicketPage(
        tickets=[TicketSummary.model_validate(t) for t in rows], next_cursor=next_cursor
    )
    return scoped_json(principal, page, {"tickets": {"__all__": set(STAFF_TICKET_FIELDS)}})


@router.get("/{ticket_id}", response_model=TicketDetail)
def get_ticket(
    ticket_id: TicketRef, session: SessionDep, runtime: RuntimeDep, principal: ScopedReader
) -> Response:
    """The ticket and its comments. A customer-scoped token gets the public comments only,
    and no `assigned_to_user_id`, `tags` or `custom_fields`; a comment the team wrote shows
    the support address as its `author_email`."""
    scope = principal.customer_id
    detail = ticket_detail(session, runtime.settings, load_ticket(session, ticket_id, scope), scope)
    return scoped_json(principal, detail, set(STAFF_TICKET_FIELDS))


@router.patch(
    "/{ticket_id}",
    response_model=TicketDetail,
    responses={
        403: {"description": "The token cannot write, or a customer-scoped token changed "
                             "more than `status` (open, resolved, closed)."},
        409: {"description": "A customer-scoped token reopened a ticket closed for longer "
                             "than TICKET_REOPEN_WINDOW."},
    },
)
def patch_ticket(
    ticket_id: TicketRef,
    change: TicketPatch,
    session: SessionDep,
    runtime: RuntimeDep,
    principal: ScopedWriter,
) -> Response:
    """Change status, priority, assignee or tags (tags replace the list). A
    customer-scoped token may only close or reopen its ticket (`status`: open, resolved,
    closed); any other field is a 403 naming it, and nothing changes."""
    # Before the lookup: the same refusal whoever's ticket it names.
    check_change(principal, change.model_fields_set, change.status)
    scope = principal.customer_id
    ticket = load_ticket(session, ticket_id, scope)
    if scope is not None and change.status == "open":
        check_reopen(runtime, ticket)
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
    return scoped_json(
        principal, ticket_detail(session, runtime.settings, ticket, scope),
        set(STAFF_TICKET_FIELDS),
    )


@router.get(
    "/{ticket_id}/emails",
    response_model=TicketEmails,
    responses={200: {"headers": NEXT_LINK}, 422: {"description": UNPAGED_422}},
)
def ticket_emails(
    ticket_id: TicketRef,
    request: Request,
    runtime: RuntimeDep,
    session: SessionDep,
    principal: ScopedReader,
    limit: ListLimit = None,
    cursor: Cursor = None,
) -> Response:
    """The ticket's mail in chronological order (the seed's shape, plus direction,
    matched_by and classification; a customer-scoped token gets neither of the last two).
    With `limit`, one page and its `next_cursor` (and a `Link` header while there is a next
    page); mail arriving meanwhile never shifts a page."""
    ticket = load_ticket(session, ticket_id, principal.customer_id)
    rows, next_cursor = _listed(
        lambda size, after: queries.thread(session, ticket.id, limit=size, cursor=after),
        runtime.settings, limit, cursor, f"the thread of {ticket.ticket_number}",
    )
    body = TicketEmails(
        ticket_id=ticket.id,
        ticket_number=ticket.ticket_number,
        emails=[EmailOut.model_validate(e) for e in rows],
        next_cursor=next_cursor,
    )
    # Serialised here, in the worker thread: returning the model would make FastAPI
    # re-validate it in a second thread-pool trip on the busiest endpoint.
    return _page_json(
        request, principal, body, {"emails": {"__all__": set(STAFF_EMAIL_FIELDS)}},
        limit, cursor, next_cursor,
    )
