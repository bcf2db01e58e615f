"""What a customer-scoped token may write and see (api/customer_access.py), on SQLite and
PostgreSQL, against the real app: its comments are the customer's and are never mailed
(the outbox and the outgoing log are counted), `cc` names only the customer's own people,
a change may only close or reopen, and no answer it can reach carries a staff-only field.
A staff token does all of it as before.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from mailticket.api import tokens
from mailticket.api.app import iter_routes
from mailticket.api.customer_access import customer_copy
from mailticket.backends import links
from mailticket.conversation.models import Participant
from mailticket.customers.directory import CustomersMode, create_customer
from mailticket.customers.lookup import shared_for
from mailticket.customers.schema import ContactSpec, CustomerSpec
from mailticket.sla.models import TicketSla
from mailticket.store.models import Attachment, Comment, EmailLog, RawMessage, Ticket
from mailticket.store.outbox_models import OutboxItem
from tests.api.conftest import Api
from tests.api.test_internal_notes import _fill
from tests.mailfactory import make_email

# Stated here, not imported: the test is the specification (README, "What a customer's
# token may write and see").
STAFF_FIELDS = frozenset({"assigned_to_user_id", "tags", "custom_fields", "matched_by",
                          "classification"})
# Values only the staff-only fields hold: none may reach a customer-scoped token.
SECRET_TAG = "vipsecrettag"
SECRET_FIELD = "CUSTOMFIELDSECRET"
ASSIGNEE = 1987654321
# Who wrote the team's comments, internally: a staff token's name, an agent's own address,
# and the name staff gave a customer's token. A customer sees the support address for the
# team, and no author for its own token's comment: none of these may reach it.
INTERNAL_TOKEN = "ops-bot-q7zx"
INTERNAL_AGENT = "anna.q7zx@desk.example"
INTERNAL_PORTAL = "acme portal q8zx contract-77"
# What our own mail servers write on a mail they receive: a customer's raw download has none
# of it (staff's has all of it, byte for byte).
OUR_MTA = "mx1.internal-q9zx.example"
TRACE = (
    b"Return-Path: <alice@acme.example>\n"
    b"Delivered-To: support@example.com\n"
    b"Received: from mail.acme.example (mail.acme.example [192.0.2.10])\n"
    b"\tby " + OUR_MTA.encode() + b" (Postfix) with ESMTPS id 4Q9ZX\n"
    b"\tfor <support@example.com>; Mon, 15 Dec 2025 09:00:00 +0000\n"
    b"X-Spam-Status: No, score=-1.0 scanned by spamd on " + OUR_MTA.encode() + b"\n"
    b"Authentication-Results: " + OUR_MTA.encode() + b"; dkim=pass header.d=acme.example\n"
    b"ARC-Seal: i=1; a=rsa-sha256; d=" + OUR_MTA.encode() + b"; cv=none; b=AAAA\n"
)


@dataclass
class World:
    api: Api
    ticket: int
    number: str
    reader: dict[str, str]
    writer: dict[str, str]
    values: dict[str, list[str]]


def _scoped(api: Api, scope: str, name: str = "") -> dict[str, str]:
    with api.runtime.session_factory() as s:
        _, plain = tokens.create_token(s, name=name or f"acme {scope}", scope=scope,
                                       customer="acme")
        s.commit()
    return {"Authorization": f"Bearer {plain}"}


@pytest.fixture
def world(make_api: Callable[..., Api]) -> World:
    return _world(make_api())


def _world(api: Api) -> World:
    now = datetime(2025, 12, 15, 9, 0, tzinfo=UTC)
    with api.runtime.session_factory() as s:
        create_customer(
            s, CustomerSpec(key="acme", name="ACME", domains=("acme.example",),
                            contacts=(ContactSpec(address="ceo.acme@gmail.com"),)),
            mode=CustomersMode.db, shared=shared_for(api.runtime.settings), now=now)
        s.commit()
    first = TRACE + make_email(
        sender="alice@acme.example", subject="Printer down",
        body="It is down.\nReceived: this line is the customer's text, kept.",
        message_id="<c1@acme.example>", headers={"DKIM-Signature": "v=1; d=acme.example; b=BBBB"},
        attachments=[(b"log bytes", "application/octet-stream", "log.bin")])
    reply = make_email(sender="alice@acme.example", subject="Re: Printer down",
                       body="Still down.", message_id="<c2@acme.example>",
                       in_reply_to="<c1@acme.example>")
    for raw in (first, reply):
        assert api.ingest(raw).action in ("created", "linked")
    with api.runtime.session_factory() as s:
        ticket = s.scalars(select(Ticket)).one()
        ticket.custom_fields = {SECRET_FIELD: "x"}
        s.commit()
        tid, number = ticket.id, ticket.ticket_number
    staff = api.auth("write")
    r = api.client.patch(f"/api/v1/tickets/{tid}", headers=staff,
                         json={"tags": [SECRET_TAG], "assigned_to_user_id": ASSIGNEE,
                               "status": "pending"})
    assert r.status_code == 200, r.text
    with api.runtime.session_factory() as s:
        emails = [str(i) for i in s.scalars(select(EmailLog.id))]
        attachments = [str(i) for i in s.scalars(select(Attachment.id))]
    values = {
        "ticket_id": [str(tid), number], "ticket_ref": [number], "email_id": emails,
        "attachment_id": attachments, "email_address": ["alice@acme.example"],
        "address": ["alice@acme.example"], "entry_id": ["1"], "customer": ["acme"],
        "backend": ["zammad"], "token_id": ["1"],
    }
    return World(api, tid, number, _scoped(api, "read"), _scoped(api, "write"), values)


def _counts(api: Api, tid: int) -> dict[str, Any]:
    """Everything a comment could write or send, and the ticket's own fields."""
    with api.runtime.session_factory() as s:
        ticket = s.get(Ticket, tid)
        assert ticket is not None
        return {
            "outbox": s.scalar(select(func.count()).select_from(OutboxItem)),
            "mail out": s.scalar(select(func.count()).select_from(EmailLog)
                                 .where(EmailLog.direction == "out")),
            "comments": s.scalar(select(func.count()).select_from(Comment)),
            "participants": sorted(s.scalars(select(Participant.address)
                                             .where(Participant.ticket_id == tid))),
            "ticket": (ticket.status, ticket.priority, ticket.assigned_to_user_id,
                       list(ticket.tags or []), dict(ticket.custom_fields or {})),
        }


def _staff_keys(body: Any) -> Iterator[str]:
    if isinstance(body, dict):
        for key, value in body.items():
            if key in STAFF_FIELDS:
                yield key
            yield from _staff_keys(value)
    elif isinstance(body, list):
        for item in body:
            yield from _staff_keys(item)


def _secrets(text: str) -> list[str]:
    return [s for s in (SECRET_TAG, SECRET_FIELD, str(ASSIGNEE), INTERNAL_TOKEN,
                        INTERNAL_AGENT, INTERNAL_PORTAL, OUR_MTA) if s in text]


def test_a_customer_comment_is_the_customers_own_and_is_not_mailed(world: World) -> None:
    api = world.api
    before = _counts(api, world.ticket)
    r = api.client.post(f"/api/v1/tickets/{world.ticket}/comments", headers=world.writer,
                        json={"body": "Thanks, it works again.",
                              "author_email": "Alice@acme.example"})
    assert r.status_code == 201, r.text
    comment = r.json()
    assert comment["source"] == "customer" and not comment["is_internal"]
    assert comment["author_email"] == "alice@acme.example" and comment["email_log_id"] is None
    after = _counts(api, world.ticket)
    # Nothing sent: no outbox item, no outgoing log row.
    assert (after["outbox"], after["mail out"]) == (before["outbox"], before["mail out"])
    assert after["comments"] == before["comments"] + 1
    # The customer is back: the pending ticket is open again, as after a reply by mail; and
    # their word is not the team's first response.
    assert after["ticket"][0] == "open"
    with api.runtime.session_factory() as s:
        sla = s.get(TicketSla, world.ticket)
        assert sla is None or sla.first_response_at is None
    # The control: a staff token's public comment is an agent reply, mailed.
    r = api.client.post(f"/api/v1/tickets/{world.ticket}/comments", headers=api.auth("write"),
                        json={"body": "Glad to hear it."})
    assert r.status_code == 201 and r.json()["source"] == "api" and r.json()["email_log_id"]
    staff = _counts(api, world.ticket)
    assert staff["outbox"] == after["outbox"] + 1 and staff["mail out"] == after["mail out"] + 1


def test_a_customer_comment_reaches_the_backends_saying_which_customer_wrote_it(
    world: World,
) -> None:
    """The backend's agents read who wrote it: the customer's address when the comment names
    one, else the customer's name; never the token's name, which only staff know."""
    api = world.api
    with api.runtime.session_factory() as s:
        links.open_pending(s, world.ticket, "zammad")
        s.commit()
    url = f"/api/v1/tickets/{world.ticket}/comments"
    for body in ({"body": "Works again."},
                 {"body": "Confirmed.", "author_email": "alice@acme.example"}):
        r = api.client.post(url, headers=world.writer, json=body)
        assert r.status_code == 201, r.text
    with api.runtime.session_factory() as s:
        texts = [item.payload["text"] for item in s.scalars(
            select(OutboxItem).where(OutboxItem.operation == "create_comment")
            .order_by(OutboxItem.id))]
    assert texts == ["ACME (customer) wrote:\n\nWorks again.\n",
                     "alice@acme.example wrote:\n\nConfirmed.\n"]


@pytest.mark.parametrize("body,files,named", [
    ({"body": "spam", "cc": ["Victim@Elsewhere.example"]}, None,
     "cc: victim@elsewhere.example"),
    ({"body": "spam", "cc": ["bob@acme.example", "victim@gmail.com"]}, None,
     "cc: victim@gmail.com"),
    # A look-alike of the customer's domain is someone else's.
    ({"body": "spam", "cc": ["bob@acme.example.evil.example"]}, None,
     "cc: bob@acme.example.evil.example"),
    ({"body": "spam", "author_email": "ceo@bank.example"}, None,
     "author_email: ceo@bank.example"),
    ({"body": "spam", "author_name": "Support Team"}, None, "author_name"),
    ({"body": "invoice attached"}, [("files", ("invoice.pdf.exe", b"MZ...", "x/y"))], "files"),
])
def test_what_a_customer_comment_may_not_carry_is_refused_and_nothing_happens(
    world: World, body: dict[str, Any], files: Any, named: str,
) -> None:
    api = world.api
    before = _counts(api, world.ticket)
    url = f"/api/v1/tickets/{world.ticket}/comments"
    if files:
        r = api.client.post(url, headers=world.writer, data=body, files=files)
    else:
        r = api.client.post(url, headers=world.writer, json=body)
    assert r.status_code == 403, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert named in r.json()["detail"], r.text
    assert _counts(api, world.ticket) == before
    # The same body from staff is an agent reply (with its cc, its files): nothing refused.
    if files:
        r = api.client.post(url, headers=api.auth("write"), data=body, files=files)
    else:
        r = api.client.post(url, headers=api.auth("write"), json=body)
    assert r.status_code == 201, r.text


def test_a_customer_copies_its_own_people_who_join_the_ticket_unmailed(world: World) -> None:
    api = world.api
    before = _counts(api, world.ticket)
    r = api.client.post(f"/api/v1/tickets/{world.ticket}/comments", headers=world.writer,
                        json={"body": "Adding my boss.",
                              "cc": ["Bob@Sales.Acme.example", "ceo.acme@gmail.com"]})
    assert r.status_code == 201, r.text
    after = _counts(api, world.ticket)
    assert (after["outbox"], after["mail out"]) == (before["outbox"], before["mail out"])
    assert set(after["participants"]) - set(before["participants"]) == {
        "bob@sales.acme.example", "ceo.acme@gmail.com"}
    # The team's next reply reaches them.
    listed = api.get(f"/api/v1/tickets/{world.ticket}/participants").json()["participants"]
    assert {"bob@sales.acme.example", "ceo.acme@gmail.com"} <= {p["address"] for p in listed}


@pytest.mark.parametrize("change,named", [
    ({"priority": "critical"}, "priority"),
    ({"assigned_to_user_id": 1}, "assigned_to_user_id"),
    ({"assigned_to_user_id": None}, "assigned_to_user_id"),
    ({"tags": []}, "tags"),
    ({"status": "closed", "tags": ["mine"]}, "tags"),
    ({"status": "pending"}, "pending"),
])
def test_a_customer_change_is_only_closing_or_reopening(
    world: World, change: dict[str, Any], named: str
) -> None:
    api = world.api
    before = _counts(api, world.ticket)
    for ref in (str(world.ticket), "999999"):  # the same answer whoever's ticket it names
        r = api.client.patch(f"/api/v1/tickets/{ref}", headers=world.writer, json=change)
        assert r.status_code == 403, r.text
        assert repr(named) in r.json()["detail"], r.text
    assert _counts(api, world.ticket) == before
    staff = api.client.patch(f"/api/v1/tickets/{world.ticket}", headers=api.auth("write"),
                             json=change)
    assert staff.status_code == 200, staff.text


def test_a_customer_closes_and_reopens_and_staff_changes_everything(world: World) -> None:
    api = world.api
    for status in ("resolved", "open", "closed", "open"):
        r = api.client.patch(f"/api/v1/tickets/{world.ticket}", headers=world.writer,
                             json={"status": status})
        assert r.status_code == 200, r.text
        assert r.json()["status"] == status and not list(_staff_keys(r.json()))
        assert _counts(api, world.ticket)["ticket"][0] == status
    r = api.client.patch(f"/api/v1/tickets/{world.ticket}", headers=api.auth("write"),
                         json={"priority": "critical", "tags": ["b", "a"],
                               "assigned_to_user_id": 7})
    assert r.status_code == 200, r.text
    assert (r.json()["priority"], r.json()["tags"], r.json()["assigned_to_user_id"]) == (
        "critical", ["b", "a"], 7)
    assert r.json()["custom_fields"] == {SECRET_FIELD: "x"}


def test_tag_and_assignee_filters_are_staff_only(world: World) -> None:
    api = world.api
    for query in ({"tag": SECRET_TAG}, {"tag": "nothing"}, {"assignee": str(ASSIGNEE)}):
        r = api.client.get("/api/v1/tickets", headers=world.reader, params=query)
        assert r.status_code == 403, r.text
        assert repr(next(iter(query))) in r.json()["detail"]
        assert [t["id"] for t in api.get("/api/v1/tickets", params=query).json()["tickets"]] \
            == ([world.ticket] if query != {"tag": "nothing"} else [])
    # The thread view ignores a tag in a customer's URL (its page has no tag box).
    browser = _browser(api, world.reader)
    page = browser.get("/ui/tickets", params={"tag": "nothing"}).text
    assert world.number in page and 'name="tag"' not in page
    browser.close()


def test_the_page_bar_names_the_customer_not_the_token(world: World) -> None:
    """Staff name a customer's token (here a contract number): the customer's page bar says
    who is signed in as they know it, their company; staff see their token's name."""
    api = world.api
    browser = _browser(api, _scoped(api, "read", INTERNAL_PORTAL))
    for url in ("/ui/tickets", f"/ui/tickets/{world.number}"):
        page = browser.get(url).text
        assert "ACME (read)" in page and INTERNAL_PORTAL not in page, page[:1500]
    browser.close()
    staff = _browser(api, {"Authorization": f"Bearer {api.token('read', INTERNAL_TOKEN)}"})
    assert f"{INTERNAL_TOKEN} (read)" in staff.get("/ui/tickets").text
    staff.close()


def _browser(api: Api, headers: dict[str, str]) -> TestClient:
    client = TestClient(api.app)
    token = headers["Authorization"].removeprefix("Bearer ")
    r = client.post("/ui/login", data={"token": token}, follow_redirects=False)
    assert r.status_code == 303, r.text
    return client


# What the thread view shows staff and not a customer: the assignee, the tags, why the
# ticket is the customer's, how each mail was threaded and what the classifier said.
UI_STAFF_MARKS = ('id="ticket-assignee"', f"#<bdi>{SECRET_TAG}</bdi>", "matched by",
                  'class="matched-by"', "threaded by", "support_request")


def test_no_answer_a_customer_token_can_reach_carries_a_staff_only_field(world: World) -> None:
    api = world.api
    # A comment and a change first, so their answers are walked too.
    writes = [
        api.client.post(f"/api/v1/tickets/{world.ticket}/comments", headers=world.writer,
                        json={"body": "hello"}),
        api.client.patch(f"/api/v1/tickets/{world.ticket}", headers=world.writer,
                         json={"status": "open"}),
        api.client.post(f"/api/v1/tickets/{world.ticket}/comments",
                        headers=_scoped(api, "write", INTERNAL_PORTAL),
                        json={"body": "via the portal"}),
    ]
    # The team's comments, written under internal names (the planted ones).
    ops = {"Authorization": f"Bearer {api.token('write', INTERNAL_TOKEN)}"}
    url = f"/api/v1/tickets/{world.ticket}/comments"
    for body in ({"body": "We are on it."},
                 {"body": "Driver updated.", "author_email": INTERNAL_AGENT}):
        r = api.client.post(url, headers=ops, json=body)
        assert r.status_code == 201, r.text
    routes = sorted({p for p, methods, _ in iter_routes(api.app) if "GET" in methods})
    walked: dict[str, int] = dict.fromkeys(routes, 0)
    staff_saw: set[str] = set()
    staff_browser = _browser(api, api.auth("read"))
    for headers in (world.reader, world.writer):
        browser = _browser(api, headers)
        for path in routes:
            for url in _fill(path, world.values):
                if path.startswith("/ui"):
                    r, control = browser.get(url), staff_browser.get(url)
                else:
                    r, control = api.client.get(url, headers=headers), api.get(url)
                assert r.status_code < 500, (url, r.status_code, r.text[:500])
                walked[path] += 1
                shown = path != "/openapi.json" and control.headers.get(
                    "content-type", "").startswith("application/json")
                if control.status_code == 200 and (
                    _secrets(control.text) or any(m in control.text for m in UI_STAFF_MARKS)
                    or (shown and list(_staff_keys(control.json())))
                ):
                    staff_saw.add(path)
                assert not _secrets(r.text), (url, _secrets(r.text), r.text[:2000])
                # (The OpenAPI document names the fields: it describes, it holds no data.)
                if r.headers.get("content-type", "").startswith("application/json") and \
                        path != "/openapi.json":
                    assert not list(_staff_keys(r.json())), (url, r.text[:2000])
                if path.startswith("/ui"):
                    assert not [m for m in UI_STAFF_MARKS if m in r.text], (url, r.text[:3000])
        browser.close()
    # The customer's comment reads as theirs on their page.
    browser = _browser(api, world.reader)
    page = browser.get(f"/ui/tickets/{world.number}").text
    assert "from the customer" in page and "hello" in page
    browser.close()
    staff_browser.close()
    for r in writes:
        assert r.status_code in (200, 201), r.text
        assert not list(_staff_keys(r.json())) and not _secrets(r.text), r.text
    assert all(walked.values()), [p for p, n in walked.items() if not n]
    # The same walk found the staff-only data where staff looks: the checks above mean
    # something (the ticket, its list, its thread, the thread view's pages).
    assert {"/api/v1/tickets", "/api/v1/tickets/{ticket_id}", "/api/v1/tickets/{ticket_id}/emails",
            "/ui/tickets/{ticket_ref}", "/api/v1/emails/{email_id}/raw",
            "/ui/emails/{email_id}/raw"} <= staff_saw, staff_saw
    staff = api.get(f"/api/v1/tickets/{world.ticket}/emails").json()["emails"]
    assert all({"matched_by", "classification"} <= e.keys() for e in staff)
    # Staff read the authors as stored; the customer reads the team as the support address.
    authors = {c["body"]: c["author_email"] for c in
               api.get(f"/api/v1/tickets/{world.ticket}").json()["comments"]}
    assert authors["We are on it."] == f"token:{INTERNAL_TOKEN}"
    assert authors["Driver updated."] == INTERNAL_AGENT
    assert authors["via the portal"] == f"token:{INTERNAL_PORTAL}"
    shown = {c["body"]: c["author_email"] for c in api.client.get(
        f"/api/v1/tickets/{world.ticket}", headers=world.reader).json()["comments"]}
    support = api.runtime.settings.mail_from_address
    assert shown == {"Still down.": "alice@acme.example", "hello": None, "via the portal": None, "We are on it.": support,
                     "Driver updated.": support}, shown


def test_a_ticket_closed_beyond_the_reopen_window_stays_closed_for_the_customer(
    world: World,
) -> None:
    """As mail: within TICKET_REOPEN_WINDOW the customer reopens; later the conversation is
    over (their mail would open a follow-up ticket), so a comment or a reopen is a 409."""
    api = world.api
    r = api.client.patch(f"/api/v1/tickets/{world.ticket}", headers=world.writer,
                         json={"status": "resolved"})
    assert r.status_code == 200, r.text
    r = api.client.post(f"/api/v1/tickets/{world.ticket}/comments", headers=world.writer,
                        json={"body": "Broken again."})
    assert r.status_code == 201 and _counts(api, world.ticket)["ticket"][0] == "open"
    with api.runtime.session_factory() as s:
        ticket = s.get(Ticket, world.ticket)
        assert ticket is not None
        ticket.status = "closed"
        ticket.closed_at = api.runtime.clock() - api.runtime.settings.ticket_reopen_window \
            - timedelta(hours=1)
        s.commit()
    before = _counts(api, world.ticket)
    for method, body in (("post", {"body": "Hello again?", "cc": ["bob@acme.example"]}),
                         ("patch", {"status": "open"})):
        url = f"/api/v1/tickets/{world.ticket}" + ("/comments" if method == "post" else "")
        r = api.client.request(method, url, headers=world.writer, json=body)
        assert r.status_code == 409, r.text
        assert "TICKET_REOPEN_WINDOW" in r.json()["detail"]
    assert _counts(api, world.ticket) == before
    # Between resolved and closed is no reopening; staff may still reopen it.
    assert api.client.patch(f"/api/v1/tickets/{world.ticket}", headers=world.writer,
                            json={"status": "resolved"}).status_code == 200
    assert api.client.patch(f"/api/v1/tickets/{world.ticket}", headers=api.auth("write"),
                            json={"status": "open"}).status_code == 200


def test_a_cc_that_is_one_of_our_own_addresses_is_refused(make_api: Callable[..., Api]) -> None:
    """At the customer's domain, but ours (OWN_ADDRESSES): never a participant, nothing kept."""
    world = _world(make_api(own_addresses="desk@acme.example"))
    api = world.api
    before = _counts(api, world.ticket)
    r = api.client.post(f"/api/v1/tickets/{world.ticket}/comments", headers=world.writer,
                        json={"body": "cc the desk", "cc": ["bob@acme.example", "desk@acme.example"]})
    assert r.status_code == 422, r.text
    assert "desk@acme.example" in r.json()["detail"]
    assert _counts(api, world.ticket) == before


def test_a_participant_the_team_removed_comes_back_only_through_staff(world: World) -> None:
    """A `cc` naming an address an agent removed is a 403 naming it, and nothing changes
    (no comment, the address stays removed); a staff token may add it back."""
    api = world.api
    url = f"/api/v1/tickets/{world.ticket}/participants"
    staff = api.auth("write")
    assert api.client.post(url, headers=staff, json={"address": "bob@acme.example"}
                           ).status_code == 201
    r = api.client.delete(f"{url}/bob@acme.example", headers=staff)
    assert r.status_code == 200 and r.json()["removed"] == ["bob@acme.example"], r.text
    before = _counts(api, world.ticket), api.get(url).json()
    r = api.client.post(f"/api/v1/tickets/{world.ticket}/comments", headers=world.writer,
                        json={"body": "Bob again", "cc": ["ceo.acme@gmail.com", "Bob@acme.example"]})
    assert r.status_code == 403, r.text
    assert "bob@acme.example" in r.json()["detail"] and "removed" in r.json()["detail"]
    assert (_counts(api, world.ticket), api.get(url).json()) == before
    # Another colleague is still welcome, and the team may bring Bob back.
    r = api.client.post(f"/api/v1/tickets/{world.ticket}/comments", headers=world.writer,
                        json={"body": "Adding Carol", "cc": ["carol@acme.example"]})
    assert r.status_code == 201, r.text
    r = api.client.post(url, headers=staff, json={"address": "bob@acme.example"})
    assert r.status_code == 201 and r.json()["removed"] == [], r.text
    assert "bob@acme.example" in {p["address"] for p in r.json()["participants"]}


def test_a_customer_downloads_its_mail_without_our_trace_and_staff_get_the_bytes(
    world: World,
) -> None:
    """The raw download: staff get the stored bytes; a customer-scoped token (API and /ui)
    gets them less the header fields our side adds on receipt, everything else unchanged."""
    api = world.api
    with api.runtime.session_factory() as s:
        first = s.scalars(select(EmailLog).order_by(EmailLog.id)).first()
        assert first is not None and first.raw_message_id is not None
        stored = s.scalar(select(RawMessage.raw).where(RawMessage.id == first.raw_message_id))
    assert stored is not None and bytes(stored).startswith(TRACE)
    url = f"/api/v1/emails/{first.id}/raw"
    assert api.get(url).content == bytes(stored)
    browser = _browser(api, world.reader)
    for got in (api.client.get(url, headers=world.reader).content,
                browser.get(f"/ui/emails/{first.id}/raw").content):
        assert got == bytes(stored).removeprefix(TRACE)
        assert b"\nDKIM-Signature: v=1; d=acme.example" in got
        assert b"\nReceived: this line is the customer's text, kept." in got
    browser.close()


@pytest.mark.parametrize("raw,copy", [
    # CRLF, a folded trace field with its continuations, a field merely starting alike.
    (b"Received: by mx\r\n\tfor <a@b.example>\r\nFrom: a@b.example\r\n"
     b"X-Spam-Score:\r\n 5.0\r\nReceived-By-Hand: no\r\n\r\nX-Body: kept\r\n",
     b"From: a@b.example\r\nReceived-By-Hand: no\r\n\r\nX-Body: kept\r\n"),
    # No body at all; no line end at the very end.
    (b"Subject: hi\nreturn-path: <>\nx-a:1", b"Subject: hi\n"),
    # A line before the first field stays where it is (it is no field of ours).
    (b" stray\nDelivered-To: us@x.example\n\nbody", b" stray\n\nbody"),
])
def test_customer_copy_cuts_whole_trace_fields_and_keeps_every_other_byte(
    raw: bytes, copy: bytes
) -> None:
    assert customer_copy(raw) == copy
