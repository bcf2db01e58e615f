"""Internal notes never reach a customer-scoped token (SQLite and PostgreSQL).

A customer portal shows the customer their tickets, their mail and the public answers; the
support team's internal notes on those same tickets are not theirs to read. The walk below
takes every GET route of the app (API, thread view, documents) from the app's own route
table, fills each path parameter with the customer's own ids, and checks that no internal
note's text comes back, in the body or a header. A route whose path parameter has no probe
fails the test: a route added later is walked too, or the test says what to add.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from mailticket.api import tokens
from mailticket.api.app import iter_routes
from mailticket.customers.directory import CustomersMode, create_customer
from mailticket.customers.lookup import shared_for
from mailticket.customers.schema import CustomerSpec
from mailticket.store.models import Attachment, EmailLog, Ticket
from mailticket.ticketing import tickets as ticket_service
from tests.api.conftest import Api
from tests.mailfactory import make_email

# Text only internal notes hold. The searches below ask for a part of it (NOTE_PART), so an
# answer that repeats the query (the thread view's search box) does not count as a leak.
NOTE = "ZQX-INTERNAL-NOTE-7731"
NOTE_PART = "INTERNAL-NOTE-7731"
PUBLIC = "PUBLIC-ANSWER-4410"


PARAM = re.compile(r"\{([^}:]+)(?::[^}]*)?\}")


def _fill(path: str, values: dict[str, list[str]]) -> Iterator[str]:
    names = PARAM.findall(path)
    for name in names:
        assert name in values, f"path parameter {name!r} of {path} has no probe values: add them"
    combos: list[dict[str, str]] = [{}]
    for name in names:
        combos = [{**c, name: v} for c in combos for v in values[name]]
    for combo in combos:
        yield PARAM.sub(lambda m: combo[m.group(1)], path)  # noqa: B023 - used at once


def _leaked(response: Any) -> list[str]:
    found = []
    if NOTE in response.text:
        found.append("body")
    found += [name for name, value in response.headers.items() if NOTE in value]
    return found


@pytest.fixture
def world(make_api: Callable[..., Api], tmp_path: Path) -> tuple[Api, dict[str, list[str]]]:
    api = make_api()
    now = datetime(2025, 12, 15, 9, 0, tzinfo=UTC)
    with api.runtime.session_factory() as s:
        create_customer(s, CustomerSpec(key="acme", name="ACME", domains=("acme.example",)),
                        mode=CustomersMode.db, shared=shared_for(api.runtime.settings), now=now)
        s.commit()
    first = make_email(sender="alice@acme.example", subject="Printer down", body="It is down.",
                       message_id="<n1@acme.example>",
                       attachments=[(b"log bytes", "application/octet-stream", "log.bin")])
    reply = make_email(sender="alice@acme.example", subject="Re: Printer down",
                       body="Still down.", message_id="<n2@acme.example>",
                       in_reply_to="<n1@acme.example>")
    other = make_email(sender="carol@acme.example", subject="VPN", body="No VPN.",
                       message_id="<n3@acme.example>")
    for raw in (first, reply, other):
        assert api.ingest(raw).action in ("created", "linked")
    staff = api.auth("write")
    with api.runtime.session_factory() as s:
        ticket_ids = list(s.scalars(select(Ticket.id).order_by(Ticket.id)))
    for tid in ticket_ids:
        # An agent's note through the API, and a public answer the customer must see.
        for body, visibility in ((f"{NOTE} api {tid}", "internal"), (f"{PUBLIC} {tid}", "public")):
            r = api.client.post(f"/api/v1/tickets/{tid}/comments", headers=staff,
                                json={"body": body, "visibility": visibility})
            assert r.status_code == 201, r.text
    with api.runtime.session_factory() as s:
        for ticket in s.scalars(select(Ticket)):
            # The service's own internal comment (as backend sync and merges write them).
            ticket_service.add_comment(s, ticket, f"{NOTE} service", internal=True,
                                       author_email=None, source="system")
        s.commit()
        tickets = list(s.scalars(select(Ticket).order_by(Ticket.id)))
        emails = [str(i) for i in s.scalars(select(EmailLog.id).order_by(EmailLog.id))]
        attachments = [str(i) for i in s.scalars(select(Attachment.id))]
        assert all(t.customer_id is not None for t in tickets)
        values = {
            "ticket_id": [str(t.id) for t in tickets] + [t.ticket_number for t in tickets],
            "ticket_ref": [t.ticket_number for t in tickets],
            "email_id": emails,
            "attachment_id": attachments,
            "email_address": ["alice@acme.example"],
            "address": ["alice@acme.example"],
            "entry_id": ["1"],
            "customer": ["acme"],
            "backend": ["zammad"],
        }
    assert len(emails) >= 4 and attachments  # the agent replies were mailed and logged
    return api, values


def _scoped(api: Api, scope: str) -> str:
    with api.runtime.session_factory() as s:
        _, plain = tokens.create_token(s, name=f"acme {scope}", scope=scope, customer="acme")
        s.commit()
    return plain


def _browser(api: Api, token: str) -> TestClient:
    client = TestClient(api.app)
    r = client.post("/ui/login", data={"token": token}, follow_redirects=False)
    assert r.status_code == 303, r.text
    return client


def test_no_get_route_shows_a_customer_token_an_internal_note(
    world: tuple[Api, dict[str, list[str]]],
) -> None:
    api, values = world
    routes = sorted({p for p, methods, _ in iter_routes(api.app) if "GET" in methods})
    assert "/api/v1/tickets/{ticket_id}" in routes and "/ui/tickets/{ticket_ref}" in routes
    searches = [{}, {"search": NOTE_PART}]
    walked: dict[str, int] = dict.fromkeys(routes, 0)
    for scope in ("read", "write"):
        plain = _scoped(api, scope)
        bearer = {"Authorization": f"Bearer {plain}"}
        browser = _browser(api, plain)
        for path in routes:
            for url in _fill(path, values):
                for query in searches if path in ("/api/v1/tickets", "/ui/tickets") else [{}]:
                    if path.startswith("/ui"):
                        r = browser.get(url, params=query)
                    else:
                        r = api.client.get(url, headers=bearer, params=query)
                    assert r.status_code < 500, (url, r.status_code, r.text[:500])
                    assert not _leaked(r), (scope, url, query, _leaked(r), r.text[:2000])
                    walked[path] += 1
                    if query and path == "/api/v1/tickets":
                        # Searching for a note's words must not find its ticket either.
                        assert r.json()["tickets"] == [], (scope, r.text)
        browser.close()
    assert all(walked.values()), [p for p, n in walked.items() if not n]


def test_the_customer_sees_the_public_answers_and_staff_the_notes(
    world: tuple[Api, dict[str, list[str]]],
) -> None:
    """The walk above proves something: the same pages carry the notes for staff, and the
    public answers for the customer."""
    api, values = world
    plain = _scoped(api, "read")
    staff_browser = _browser(api, api.tokens["read"])
    browser = _browser(api, plain)
    for tid, number in zip(values["ticket_id"], values["ticket_ref"], strict=False):
        mine = api.client.get(f"/api/v1/tickets/{tid}",
                              headers={"Authorization": f"Bearer {plain}"}).json()
        assert PUBLIC in str(mine["comments"]) and not any(c["is_internal"] for c in mine["comments"])
        staff = api.get(f"/api/v1/tickets/{tid}").json()
        assert sum(NOTE in c["body"] for c in staff["comments"]) == 2
        assert all(c["is_internal"] for c in staff["comments"] if NOTE in c["body"])
        page = browser.get(f"/ui/tickets/{number}").text
        assert PUBLIC in page and "internal note" not in page
        staff_page = staff_browser.get(f"/ui/tickets/{number}").text
        assert staff_page.count(NOTE) == 2 and "internal note" in staff_page
    browser.close()
    staff_browser.close()


def test_a_customer_token_cannot_write_an_internal_note(
    world: tuple[Api, dict[str, list[str]]],
) -> None:
    api, values = world
    writer = {"Authorization": f"Bearer {_scoped(api, 'write')}"}
    own = values["ticket_id"][0]
    for ref in (own, "999999"):
        r = api.client.post(f"/api/v1/tickets/{ref}/comments", headers=writer,
                            json={"body": "posing as staff", "visibility": "internal"})
        assert r.status_code == 403, r.text
        assert r.headers["content-type"] == "application/problem+json"
        assert "internal notes" in r.json()["detail"]
    staff = api.get(f"/api/v1/tickets/{own}").json()
    assert "posing as staff" not in str(staff)
    # Its changes and public comments still work, and their answers carry no note either.
    changed = api.client.patch(f"/api/v1/tickets/{own}", headers=writer, json={"status": "closed"})
    assert changed.status_code == 200 and not _leaked(changed)
    answered = api.client.post(f"/api/v1/tickets/{own}/comments", headers=writer,
                               json={"body": "thanks", "visibility": "public"})
    assert answered.status_code == 201 and not _leaked(answered)
