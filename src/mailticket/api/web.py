"""The thread view: server-rendered pages under /ui, behind the same tokens as the API.

The login form takes an API token and keeps it in an HttpOnly, SameSite=strict cookie;
every other page needs that cookie (no cookie → redirect to the login form). Pages are
rendered by pages.py (autoescape on: mail is attacker-controlled text).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, get_args

from fastapi import APIRouter, FastAPI, Form, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.orm import Session

from mailticket.api import csrf, customer_access, emails, queries, tokens
from mailticket.api.auth import (
    COOKIE_NAME,
    LoginRequired,
    Principal,
    RuntimeDep,
    SessionDep,
    UiPrincipal,
)
from mailticket.api.auth import authenticate as check_token
from mailticket.api.pages import SECURITY_HEADERS, STYLESHEET
from mailticket.api.pages import page as _page
from mailticket.api.schemas import SettableStatus, TicketStatus
from mailticket.api.tickets import load_ticket
from mailticket.conversation import participants as people
from mailticket.conversation import split_reply
from mailticket.customers.models import Customer
from mailticket.customers.scope import badges, visible_ticket_ids
from mailticket.settings import Priority

LOGIN_PATH = "/ui/login"
COOKIE_MAX_AGE = 8 * 3600
# Mails per thread page: any real conversation fits on one; a longer thread (a mail loop)
# gets "earlier mail" / "later mail" links.
THREAD_PAGE = 100
# The most of one mail's text the page shows. A mail may carry megabytes of text (a log
# pasted in, a body of one endless line): a browser lays out a few megabytes of it for
# minutes, and the server would split its quote first. The rest is in the original .eml.
BODY_SHOWN = 20_000
# Addresses named above the reply form; the rest are counted. A customer's mail may carry
# thousands of Cc, and a reply from the page goes to all of them.
RECIPIENTS_SHOWN = 20

router = APIRouter(prefix="/ui", include_in_schema=False)


def install(app: FastAPI) -> None:
    async def to_login(request: Request, exc: Exception) -> Response:
        response = RedirectResponse(LOGIN_PATH, status_code=303)
        response.headers.update(SECURITY_HEADERS)
        return response

    app.add_exception_handler(LoginRequired, to_login)


@router.get("/style.css")
def stylesheet() -> Response:
    """The pages' stylesheet; no sign-in needed (the login page uses it too)."""
    return Response(
        STYLESHEET, media_type="text/css",
        headers={**SECURITY_HEADERS, "Cache-Control": "public, max-age=3600"},
    )


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request) -> HTMLResponse:
    return _page(request, "login.html", error=None)


@router.post("/login", response_class=HTMLResponse, response_model=None)
async def login(
    request: Request,
    token: Annotated[str, Form(max_length=200)],
    runtime: RuntimeDep,
) -> Response:
    if csrf.cross_site(request):
        # Login CSRF: another site must not sign a browser in with the attacker's token.
        return _page(request, "login.html", status_code=403, error="Cross-site sign-in refused.")
    principal = await run_in_threadpool(check_token, runtime, token.strip())
    if principal is None:
        return _page(request, "login.html", status_code=401, error="That token is not valid.")
    response = RedirectResponse("/ui/tickets", status_code=303)
    response.set_cookie(
        COOKIE_NAME, token.strip(), max_age=COOKIE_MAX_AGE, httponly=True, samesite="strict",
        secure=request.url.scheme == "https", path="/ui",
    )
    return response


@router.post("/logout")
def logout(_: UiPrincipal) -> Response:
    response = RedirectResponse(LOGIN_PATH, status_code=303)
    response.delete_cookie(COOKIE_NAME, path="/ui")
    return response


@router.get("")
def home(_: UiPrincipal) -> Response:
    return RedirectResponse("/ui/tickets", status_code=303)


def _signed_in(session: Session, principal: Principal) -> str:
    """Who the page bar says is signed in. A customer's token is named by staff (a contract
    number, an internal label): the customer reads their company's name instead."""
    if principal.customer_id is None:
        return principal.name
    customer = session.get(Customer, principal.customer_id)
    return customer.name if customer is not None else "customer"


@router.get("/tickets", response_class=HTMLResponse)
def ticket_list(
    request: Request,
    principal: UiPrincipal,
    session: SessionDep,
    status: Annotated[str, Query(max_length=20)] = "",
    priority: Annotated[str, Query(max_length=20)] = "",
    tag: Annotated[str, Query(max_length=64)] = "",
    search: Annotated[str, Query(max_length=200)] = "",
    cursor: Annotated[str, Query(max_length=200)] = "",
) -> HTMLResponse:
    statuses = list(get_args(TicketStatus))
    priorities = [p.value for p in Priority]
    # Tags are the team's (api/customer_access.py): a customer's page has no tag filter, and
    # a tag in its URL is ignored (which tickets come back would reveal their tags).
    staff = principal.customer_id is None
    tag = tag if staff else ""
    filters = queries.TicketFilters(
        status=status if status in statuses else None,
        priority=priority if priority in priorities else None,
        tag=tag or None,
        search=search or None,
    )
    try:
        rows, next_cursor = queries.list_tickets(
            session, filters, limit=50, cursor=cursor or None, scope=principal.customer_id
        )
    except queries.BadCursor:
        rows, next_cursor = queries.list_tickets(
            session, filters, limit=50, scope=principal.customer_id
        )
    return _page(
        request, "tickets.html", tickets=rows, next_cursor=next_cursor, principal=principal,
        signed_in=_signed_in(session, principal),
        staff=staff, statuses=statuses, priorities=priorities,
        filters={"status": status, "priority": priority, "tag": tag, "search": search},
    )


@dataclass(frozen=True)
class ShownBody:
    """What the page shows of a mail's text, and how many characters it leaves out."""

    text: str
    hidden: int


def shown_body(excerpt: queries.Excerpt) -> ShownBody:
    """The excerpt as shown: a text longer than BODY_SHOWN is cut at its last line break in
    the excerpt's second half (else at BODY_SHOWN), so no line is shown half."""
    text = excerpt.text[:BODY_SHOWN]
    if excerpt.length > len(text):
        end = text.rfind("\n", BODY_SHOWN // 2)
        text = text[:end] if end > 0 else text
    return ShownBody(text, max(0, excerpt.length - len(text)))


@router.get("/tickets/{ticket_ref}", response_class=HTMLResponse)
def ticket_page(
    request: Request,
    ticket_ref: str,
    principal: UiPrincipal,
    session: SessionDep,
    runtime: RuntimeDep,
    before: Annotated[str, Query(max_length=20)] = "",
    after: Annotated[str, Query(max_length=20)] = "",
) -> HTMLResponse:
    ticket = load_ticket(session, ticket_ref, principal.customer_id)
    # A page of the thread, not all of it: each mail is rendered with its body, and a
    # thread of thousands (a mail loop) would be one enormous page. As in the ticket list,
    # a link that fits nothing (a mail moved away, a hand-edited URL) shows the newest page.
    try:
        window = queries.mail_window(
            session, ticket.id, limit=THREAD_PAGE, body_chars=BODY_SHOWN,
            before=before or None, after=after or None,
        )
    except queries.BadCursor:
        window = queries.mail_window(session, ticket.id, limit=THREAD_PAGE, body_chars=BODY_SHOWN)
    if not window.mails and (before or after):
        window = queries.mail_window(session, ticket.id, limit=THREAD_PAGE, body_chars=BODY_SHOWN)
    mails = window.mails
    bodies = {m.id: shown_body(window.bodies[m.id]) for m in mails}
    files = queries.attachments_of(session, [m.id for m in mails])
    # Read through the API's helper: a customer-scoped token never sees internal notes.
    notes = [
        c for c in queries.comments_for(session, ticket.id, principal.customer_id)
        if c.email_log_id is None
    ]
    # As in the API: the customer sees the support address for what the team wrote.
    authors = {c.id: customer_access.shown_author(runtime.settings, c, principal.customer_id)
               for c in notes}
    followup_of, followups = queries.followup_links(session, ticket)
    # As in the API: a follow-up link to another customer's ticket is hidden from a scope.
    visible = visible_ticket_ids(
        session, [t.id for t in (followup_of, *followups) if t is not None], principal.customer_id
    )
    if followup_of is not None and followup_of.id not in visible:
        followup_of = None
    followups = [t for t in followups if t.id in visible]
    customer = badges(session, [ticket.id]).get(ticket.id)
    # A customer's mail shows what they wrote now; the quoted history is folded away.
    split = {m.id: split_reply(bodies[m.id].text, None) for m in mails if m.direction == "in"}
    # The forms only for a token that may use them (read scope sees the thread alone).
    staff = principal.customer_id is None
    can_write = tokens.scope_allows(principal.scope, "write") and staff
    # Whom a reply from the page goes to, beside the form that sends it.
    recipients = people.participants(session, runtime.settings, ticket) if can_write else []
    plain = request.cookies.get(COOKIE_NAME, "")
    return _page(
        request, "ticket.html", ticket=ticket, mails=mails, bodies=bodies, files=files,
        notes=notes,
        earlier=window.earlier, later=window.later,
        authors=authors,
        principal=principal, signed_in=_signed_in(session, principal),
        followup_of=followup_of, followups=followups, split=split,
        customer=customer,
        # The assignee, tags, why the ticket is the customer's and how each mail was
        # threaded and classified are the team's (api/customer_access.py).
        staff=staff,
        can_write=can_write, csrf_field=csrf.FIELD,
        recipients=recipients, recipients_shown=RECIPIENTS_SHOWN,
        csrf_token=csrf.form_token(plain) if can_write else "",
        statuses=list(get_args(SettableStatus)), priorities=[p.value for p in Priority],
    )


@router.get("/emails/{email_id}/raw")
def raw_download(
    email_id: emails.EmailId, principal: UiPrincipal, session: SessionDep
) -> Response:
    return emails.raw_email(email_id, session, principal)


@router.get("/emails/{email_id}/attachments/{attachment_id}")
def attachment_download(
    email_id: emails.EmailId,
    attachment_id: emails.AttachmentId,
    principal: UiPrincipal,
    session: SessionDep,
) -> Response:
    return emails.download_attachment(email_id, attachment_id, session, principal)
