"""Paging of a ticket's thread (`…/emails`) and of an address's tickets (`by-email`), on
SQLite and PostgreSQL: `limit` + `cursor` → `next_cursor` and a `Link: rel="next"` header,
keyset-stable while mail and tickets arrive, 422 for a bad limit or cursor, the same pages
for a customer-scoped token as the list it sees unpaged, and without `limit` the seed's
whole list (its exact shape) up to API_MAX_UNPAGED, a 422 beyond it."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select

from mailticket.api import tokens
from mailticket.customers.directory import CustomersMode, create_customer
from mailticket.customers.lookup import shared_for
from mailticket.customers.schema import CustomerSpec
from mailticket.store.models import EmailLog, EmailTicket
from tests.api.conftest import Api
from tests.mailfactory import make_email

T0 = datetime(2025, 12, 15, 8, 0, tzinfo=UTC)
LINK = re.compile(r'^<(/[^>]*)>; rel="next"$')


def _ticket(api: Api, sender: str = "customer@example.com", subject: str = "Long thread") -> int:
    outcome = api.ingest(make_email(sender=sender, subject=subject), received_at=T0)
    assert outcome.action == "created" and outcome.ticket_id is not None
    return outcome.ticket_id


def _add_mail(api: Api, ticket_id: int, stamps: list[datetime], tag: str) -> list[int]:
    """Rows as the pipeline leaves them, written directly: 250 ingests would only be slow."""
    with api.runtime.session_factory() as s:
        rows = [
            EmailLog(ticket_id=ticket_id, email_message_id=f"<{tag}{i}@bulk.example>",
                     email_from="customer@example.com", email_subject=f"{tag} {i}",
                     email_received_at=at, direction="in", is_reply=True)
            for i, at in enumerate(stamps)
        ]
        s.add_all(rows)
        s.commit()
        return [r.id for r in rows]


def _count(api: Api, ticket_id: int) -> int:
    """The ticket's mail so far: the first one and what the pipeline sent (an auto-reply)."""
    with api.runtime.session_factory() as s:
        return len(s.scalars(select(EmailLog.id).where(EmailLog.ticket_id == ticket_id)).all())


def _long_thread(api: Api) -> tuple[int, list[int]]:
    """A ticket with 250 mails: three share each minute (the id breaks the tie), and one is
    another ticket's mail linked into this thread (multi-ticket threading). Returns the
    ticket and its mail ids in thread order, as the database orders them."""
    ticket = _ticket(api)
    stamps = [T0 + timedelta(minutes=1 + i // 3) for i in range(249 - _count(api, ticket))]
    _add_mail(api, ticket, stamps, "m")
    other = _ticket(api, sender="other@example.net", subject="Another ticket")
    (linked,) = _add_mail(api, other, [T0 + timedelta(minutes=40, seconds=30)], "linked")
    with api.runtime.session_factory() as s:
        s.add(EmailTicket(email_log_id=linked, ticket_id=ticket))
        s.commit()
        own = s.execute(
            select(EmailLog.id, EmailLog.email_received_at).where(EmailLog.ticket_id == ticket)
        ).all()
    at = {i: stamp for i, stamp in own}
    at[linked] = T0 + timedelta(minutes=40, seconds=30)
    order = sorted(at, key=lambda i: (_utc(at[i]), i))
    assert len(order) == 250
    return ticket, order


def _utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)


def _walk(
    api: Api, first: str, key: str, headers: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    """Every page from `first` on, following `next_cursor`; checks the Link header agrees."""
    pages: list[dict[str, Any]] = []
    url: str | None = first
    while url is not None:
        r = api.client.get(url, headers=headers or api.auth())
        assert r.status_code == 200, r.text
        body = r.json()
        pages.append(body)
        link = r.headers.get("link")
        if body["next_cursor"] is None:
            assert link is None
            url = None
        else:
            assert link is not None
            match = LINK.match(link)
            assert match is not None, link
            url = match.group(1)
            assert f"cursor={body['next_cursor']}" in url
        assert len(pages) < 50, "the walk does not end"
    assert all(key in p for p in pages)
    return pages


def test_thread_pages_hold_every_mail_once_in_thread_order(api: Api) -> None:
    ticket, order = _long_thread(api)
    pages = _walk(api, f"/api/v1/tickets/{ticket}/emails?limit=100", "emails")
    assert [len(p["emails"]) for p in pages] == [100, 100, 50]
    walked = [m["id"] for p in pages for m in p["emails"]]
    assert walked == order
    # Unpaged (250 is within API_MAX_UNPAGED): the same mail in the same order, in the
    # seed's shape exactly, with no paging field and no Link header.
    whole = api.get(f"/api/v1/tickets/{ticket}/emails")
    assert whole.status_code == 200 and "link" not in whole.headers
    assert set(whole.json()) == {"ticket_id", "ticket_number", "emails"}
    assert [m["id"] for m in whole.json()["emails"]] == order
    assert [m for p in pages for m in p["emails"]] == whole.json()["emails"]


def test_mail_arriving_between_pages_shifts_and_repeats_nothing(api: Api) -> None:
    ticket, order = _long_thread(api)
    first = api.get(f"/api/v1/tickets/{ticket}/emails?limit=100").json()
    assert [m["id"] for m in first["emails"]] == order[:100]
    # New mail: one arriving now (newest), one backdated before the page just read, and one
    # stamped with the very time of the cursor's mail (a later id: it sorts after it).
    with api.runtime.session_factory() as s:
        cursor_at = s.scalar(
            select(EmailLog.email_received_at).where(EmailLog.id == int(first["next_cursor"]))
        )
    assert cursor_at is not None
    newest = _add_mail(api, ticket, [T0 + timedelta(days=1)], "new")[0]
    backdated = _add_mail(api, ticket, [T0 - timedelta(hours=1)], "old")[0]
    same_time = _add_mail(api, ticket, [_utc(cursor_at)], "tie")[0]
    rest = _walk(
        api, f"/api/v1/tickets/{ticket}/emails?limit=100&cursor={first['next_cursor']}", "emails"
    )
    walked = [m["id"] for m in first["emails"]] + [m["id"] for p in rest for m in p["emails"]]
    assert len(walked) == len(set(walked)), "a mail came twice"
    # The first page's 100 and then the thread as it is now, less the mail stamped before
    # the place the walk had passed.
    now = [m["id"] for m in api.get(f"/api/v1/tickets/{ticket}/emails").json()["emails"]]
    assert now[0] == backdated and now[-1] == newest and same_time in now
    assert walked == now[1:]
    assert walked[:100] == order[:100] and [len(p["emails"]) for p in rest] == [100, 52]


def test_bad_limit_or_cursor_is_a_problem_422(make_api: Callable[..., Api]) -> None:
    api = make_api(api_max_page_size=120)
    ticket, order = _long_thread(api)
    other = _ticket(api, sender="third@example.org", subject="Third")
    (foreign,) = _add_mail(api, other, [T0 + timedelta(minutes=5)], "foreign")
    thread = f"/api/v1/tickets/{ticket}/emails"
    by_email = "/api/v1/tickets/by-email/customer@example.com"
    for base in (thread, by_email):
        for query in ("limit=0", "limit=-1", "limit=abc", "limit=121", "limit=1.5",
                      "cursor=abc", "cursor=-1", "cursor=12345678901", "cursor=",
                      "limit=10&cursor=%00"):
            r = api.get(f"{base}?{query}")
            assert r.status_code == 422, (base, query, r.text)
            assert r.headers["content-type"] == "application/problem+json"
            assert r.json()["status"] == 422 and "Traceback" not in r.text
    # Well formed, but naming nothing of this list (another ticket's mail, an unknown id): a
    # position, as the OpenAPI document's cursor format promises, and past it nothing.
    for cursor in (foreign, 999_999):
        r = api.get(f"{thread}?limit=10&cursor={cursor}")
        assert r.status_code == 200 and r.json()["emails"] == [], r.text
        assert r.json()["next_cursor"] is None and "link" not in r.headers
        r = api.get(f"{by_email}?limit=10&cursor={cursor}")
        assert r.status_code == 200 and r.json()["tickets"] == [], r.text
    # A real cursor at the very end is an empty last page, not an error.
    r = api.get(f"{thread}?limit=10&cursor={order[-1]}")
    assert r.status_code == 200 and r.json()["emails"] == [] and r.json()["next_cursor"] is None


def test_without_limit_the_whole_list_up_to_api_max_unpaged(
    make_api: Callable[..., Api],
) -> None:
    api = make_api(api_max_unpaged=100)
    ticket = _ticket(api)
    _add_mail(api, ticket, [T0 + timedelta(minutes=i + 1)
                            for i in range(100 - _count(api, ticket))], "m")
    whole = api.get(f"/api/v1/tickets/{ticket}/emails")
    assert whole.status_code == 200 and len(whole.json()["emails"]) == 100
    assert set(whole.json()) == {"ticket_id", "ticket_number", "emails"}
    _add_mail(api, ticket, [T0 + timedelta(days=1)], "one-more")
    r = api.get(f"/api/v1/tickets/{ticket}/emails")
    assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json"
    assert "API_MAX_UNPAGED" in r.json()["detail"] and "limit" in r.json()["detail"]
    pages = _walk(api, f"/api/v1/tickets/{ticket}/emails?limit=60", "emails")
    assert [len(p["emails"]) for p in pages] == [60, 41]
    # The same bound for an address's tickets: 101 tickets of one requester.
    for i in range(100):
        assert api.ingest(make_email(sender="customer@example.com", subject=f"T{i}")).ticket_id
    r = api.get("/api/v1/tickets/by-email/customer@example.com")
    assert r.status_code == 422 and "API_MAX_UNPAGED" in r.json()["detail"]
    pages = _walk(api, "/api/v1/tickets/by-email/customer@example.com?limit=50", "tickets")
    assert [len(p["tickets"]) for p in pages] == [50, 50, 1]


def test_by_email_pages_are_stable_while_tickets_arrive(api: Api) -> None:
    opened = [
        api.ingest(make_email(sender="Customer@Example.com", subject=f"Problem {i}")).ticket_id
        for i in range(25)
    ]
    whole = api.get("/api/v1/tickets/by-email/customer@example.com").json()
    assert set(whole) == {"email_address", "tickets"}
    assert [t["id"] for t in whole["tickets"]] == opened
    first = api.get("/api/v1/tickets/by-email/customer@example.com?limit=10").json()
    assert first["email_address"] == "customer@example.com"
    later = api.ingest(make_email(sender="customer@example.com", subject="Opened meanwhile"))
    rest = _walk(
        api, f"/api/v1/tickets/by-email/customer@example.com?limit=10&cursor={first['next_cursor']}",
        "tickets",
    )
    walked = [t["id"] for t in first["tickets"]] + [t["id"] for p in rest for t in p["tickets"]]
    assert walked == [*opened, later.ticket_id]
    assert [len(p["tickets"]) for p in [first, *rest]] == [10, 10, 6]


def _customer(api: Api, key: str, domain: str) -> dict[str, str]:
    with api.runtime.session_factory() as s:
        create_customer(
            s, CustomerSpec(key=key, name=key.upper(), domains=(domain,)),
            mode=CustomersMode.db, shared=shared_for(api.runtime.settings), now=T0)
        _, plain = tokens.create_token(s, name=f"{key} portal", scope="read", customer=key)
        s.commit()
    return {"Authorization": f"Bearer {plain}"}


def test_a_customer_scoped_token_pages_through_what_it_sees(api: Api) -> None:
    acme = _customer(api, "acme", "acme.example")
    _customer(api, "globex", "globex.example")
    theirs = [
        api.ingest(make_email(sender="alice@acme.example", subject=f"Acme {i}")).ticket_id
        for i in range(7)
    ]
    globex = api.ingest(make_email(sender="bob@globex.example", subject="Globex"))
    # Alice writes on Globex's ticket too: staff find it by her address, Acme's token not.
    assert api.ingest(make_email(sender="alice@acme.example", subject="Re: Globex",
                                 in_reply_to=globex.message_id)).ticket_id == globex.ticket_id
    address = "/api/v1/tickets/by-email/alice@acme.example"
    staff = [t["id"] for t in api.get(address).json()["tickets"]]
    assert globex.ticket_id in staff
    unpaged = api.client.get(address, headers=acme).json()
    assert [t["id"] for t in unpaged["tickets"]] == theirs
    pages = _walk(api, f"{address}?limit=3", "tickets", headers=acme)
    assert [t["id"] for p in pages for t in p["tickets"]] == theirs
    # Another customer's ticket as the cursor: the same answer as an id that names nothing.
    other = api.client.get(f"{address}?limit=3&cursor={globex.ticket_id}", headers=acme)
    unknown = api.client.get(f"{address}?limit=3&cursor=999999", headers=acme)
    assert other.status_code == unknown.status_code == 200
    assert other.json() == unknown.json() == {
        "email_address": "alice@acme.example", "tickets": [], "next_cursor": None}
    # After Acme's last ticket staff find Globex's, Acme's token nothing.
    after_last = f"{address}?limit=3&cursor={theirs[-1]}"
    assert [t["id"] for t in api.get(after_last).json()["tickets"]] == [globex.ticket_id]
    assert api.client.get(after_last, headers=acme).json()["tickets"] == []

    # The thread: the same mail, page by page, without the staff-only fields.
    ticket = theirs[0]
    _add_mail(api, ticket, [T0 + timedelta(days=400, minutes=i)
                            for i in range(12 - _count(api, ticket))], "acme")
    seen = api.client.get(f"/api/v1/tickets/{ticket}/emails", headers=acme).json()["emails"]
    pages = _walk(api, f"/api/v1/tickets/{ticket}/emails?limit=5", "emails", headers=acme)
    assert [len(p["emails"]) for p in pages] == [5, 5, 2]
    assert [m for p in pages for m in p["emails"]] == seen
    assert all("matched_by" not in m and "classification" not in m for m in seen)
    globex_mail = api.get(f"/api/v1/tickets/{globex.ticket_id}/emails").json()["emails"][0]["id"]
    other = api.client.get(f"/api/v1/tickets/{ticket}/emails?limit=5&cursor={globex_mail}",
                           headers=acme)
    unknown = api.client.get(f"/api/v1/tickets/{ticket}/emails?limit=5&cursor=999999",
                             headers=acme)
    assert other.status_code == unknown.status_code == 200
    assert other.json()["emails"] == unknown.json()["emails"] == []
    # And Globex's thread stays a 404 to Acme's token, paged or not.
    r = api.client.get(f"/api/v1/tickets/{globex.ticket_id}/emails?limit=5", headers=acme)
    assert r.status_code == 404


def test_openapi_states_the_paging(make_api: Callable[..., Api]) -> None:
    api = make_api(api_max_page_size=120)
    doc = api.client.get("/openapi.json").json()
    for path, model in (("/api/v1/tickets/{ticket_id}/emails", "TicketEmails"),
                        ("/api/v1/tickets/by-email/{email_address}", "TicketsByEmail")):
        op = doc["paths"][path]["get"]
        params = {p["name"]: p for p in op["parameters"]}
        assert not params["limit"]["required"] and not params["cursor"]["required"]
        limit = [b for b in params["limit"]["schema"]["anyOf"] if b.get("type") == "integer"]
        assert limit == [{"type": "integer", "minimum": 1, "maximum": 120}]
        cursor = [b for b in params["cursor"]["schema"]["anyOf"] if b.get("type") == "string"]
        assert cursor[0]["pattern"] == "^[0-9]{1,10}$"
        assert "Link" in op["responses"]["200"]["headers"]
        assert "API_MAX_UNPAGED" in op["responses"]["422"]["description"]
        schema = doc["components"]["schemas"][model]
        # Additive: an unpaged answer has no next_cursor, so the schema must not require it.
        assert "next_cursor" in schema["properties"]
        assert "next_cursor" not in schema.get("required", [])


MAIL_ID = re.compile(r'<article class="mail (?:in|out)" id="mail-(\d+)"')
EARLIER = re.compile(r'id="earlier-mail" href="\?before=(\d+)"')
LATER = re.compile(r'id="later-mail" href="\?after=(\d+)"')


def test_the_thread_view_shows_a_page_with_earlier_and_later_links(api: Api) -> None:
    ticket, order = _long_thread(api)
    with api.runtime.session_factory() as s:  # the view shows the ticket's own mail
        own = set(s.scalars(select(EmailLog.id).where(EmailLog.ticket_id == ticket)))
    order = [i for i in order if i in own]
    r = api.client.post("/ui/login", data={"token": api.tokens["read"]}, follow_redirects=False)
    assert r.status_code == 303
    page = api.client.get(f"/ui/tickets/{ticket}").text
    # Opened: the newest mail, next to the answer form, and a link to what came before.
    assert [int(i) for i in MAIL_ID.findall(page)] == order[-100:]
    assert LATER.search(page) is None
    seen: list[list[int]] = [order[-100:]]
    while (earlier := EARLIER.search(page)) is not None:
        page = api.client.get(f"/ui/tickets/{ticket}?before={earlier.group(1)}").text
        seen.insert(0, [int(i) for i in MAIL_ID.findall(page)])
        assert LATER.search(page) is not None
        assert len(seen) < 10
    assert [len(p) for p in seen] == [len(order) - 200, 100, 100]
    assert [i for p in seen for i in p] == order
    # Forward from the oldest page, with mail arriving meanwhile: nothing shifts.
    newest = _add_mail(api, ticket, [T0 + timedelta(days=2)], "late")[0]
    forward: list[int] = [int(i) for i in MAIL_ID.findall(page)]
    while (later := LATER.search(page)) is not None:
        page = api.client.get(f"/ui/tickets/{ticket}?after={later.group(1)}").text
        forward += [int(i) for i in MAIL_ID.findall(page)]
        assert len(forward) < 1000
    assert forward == [*order, newest]
    # A link that fits nothing (not a number, another ticket's mail) shows the newest page.
    for bad in ("before=abc", "after=999999", f"before={order[0]}&after={order[1]}"):
        r = api.client.get(f"/ui/tickets/{ticket}?{bad}")
        assert r.status_code == 200
        assert [int(i) for i in MAIL_ID.findall(r.text)] == [*order, newest][-100:]
