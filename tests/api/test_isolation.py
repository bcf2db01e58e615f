"""Customer isolation: a token scoped to ACME walks every route of /openapi.json and every
thread-view page, against the tickets, mail, attachments, raw messages and comments of ACME,
of Globex and of no customer, and nothing but ACME's comes back (SQLite and PostgreSQL).

The routes are read from the document (and the app's /ui routes), not listed by hand: a
route that is not classified below fails the test, so a new route cannot skip the walk.
Every probe is also sent with a staff token, which must find the other customers' data
through the same URLs: the walk proves it reached real data, not only 404s.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
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
from mailticket.customers.models import Customer
from mailticket.customers.schema import CustomerSpec
from mailticket.customers.scope import email_clause
from mailticket.store.models import Attachment, Comment, EmailLog, Ticket
from tests.api.conftest import Api
from tests.mailfactory import make_email

# What a customer-scoped token may do with each operation of the document.
#   scoped: serves the token's customer only (own data 2xx as for staff, anything else 404)
#   listing: answers a list; for the scoped token, only its customer's entries
#   staff: every customer's data or the service's configuration: 403 for a scoped token
#   public: no token, no customer data (health); signed: webhooks, signature not token
OPERATIONS = {
    ("get", "/api/v1/tickets"): "listing",
    ("get", "/api/v1/tickets/by-email/{email_address}"): "listing",
    ("get", "/api/v1/tickets/{ticket_id}"): "scoped",
    ("patch", "/api/v1/tickets/{ticket_id}"): "scoped",
    ("post", "/api/v1/tickets/{ticket_id}/comments"): "scoped",
    ("get", "/api/v1/tickets/{ticket_id}/participants"): "staff",
    ("post", "/api/v1/tickets/{ticket_id}/participants"): "staff",
    ("delete", "/api/v1/tickets/{ticket_id}/participants/{address}"): "staff",
    ("get", "/api/v1/tickets/{ticket_id}/emails"): "scoped",
    ("get", "/api/v1/emails/{email_id}/raw"): "scoped",
    ("get", "/api/v1/emails/{email_id}/attachments"): "scoped",
    ("get", "/api/v1/emails/{email_id}/attachments/{attachment_id}"): "scoped",
    ("get", "/api/v1/quarantine"): "staff",
    ("get", "/api/v1/quarantine/{entry_id}"): "staff",
    ("post", "/api/v1/quarantine/{entry_id}/retry"): "staff",
    ("get", "/api/v1/workflows"): "staff",
    ("post", "/api/v1/workflows/validate"): "staff",
    ("post", "/api/v1/workflows/reload"): "staff",
    ("post", "/api/v1/test/email-to-ticket"): "staff",
    ("get", "/api/v1/customers"): "staff",
    ("post", "/api/v1/customers"): "staff",
    ("get", "/api/v1/customers/{customer}"): "staff",
    ("put", "/api/v1/customers/{customer}"): "staff",
    ("delete", "/api/v1/customers/{customer}"): "staff",
    ("get", "/api/v1/tokens"): "staff",
    ("post", "/api/v1/tokens"): "staff",
    ("post", "/api/v1/tokens/{token_id}/revoke"): "staff",
    ("post", "/api/v1/webhooks/{backend}"): "signed",
    ("get", "/healthz"): "public",
    ("get", "/readyz"): "public",
    ("get", "/metrics"): "public",
}
# The thread view (not in the document: include_in_schema=False), same classes.
PAGES = {
    ("GET", "/ui"): "listing",  # a redirect to /ui/tickets, which the client follows
    ("GET", "/ui/login"): "public",
    ("GET", "/ui/style.css"): "public",
    ("POST", "/ui/login"): "login",
    ("POST", "/ui/logout"): "logout",
    ("GET", "/ui/tickets"): "listing",
    ("GET", "/ui/tickets/{ticket_ref}"): "scoped",
    # The forms: a customer-scoped token may not use them, on any ticket (403, the same
    # answer whoever's ticket it names).
    ("POST", "/ui/tickets/{ticket_ref}/reply"): "form",
    ("POST", "/ui/tickets/{ticket_ref}/notes"): "form",
    ("POST", "/ui/tickets/{ticket_ref}/update"): "form",
    ("GET", "/ui/emails/{email_id}/raw"): "scoped",
    ("GET", "/ui/emails/{email_id}/attachments/{attachment_id}"): "scoped",
}
BODIES: dict[tuple[str, str], Any] = {
    ("post", "/api/v1/tickets/{ticket_id}/participants"): {"address": "probe@example.org"},
    # What a customer-scoped token may change: the status (close or reopen); other fields
    # are refused whoever's ticket it names (tests/api/test_customer_tokens.py).
    ("patch", "/api/v1/tickets/{ticket_id}"): {"status": "resolved"},
    ("post", "/api/v1/tickets/{ticket_id}/comments"): {
        # public: a customer-scoped token may not write internal notes (403, whoever's
        # ticket); its public ones are the customer's and never mailed, a staff token's are
        # (their outgoing rows: see _check_clean)
        "body": "ACME-PROBE-COMMENT", "visibility": "public",
    },
    ("post", "/api/v1/workflows/validate"): {"yaml": "workflows: []\n"},
    ("post", "/api/v1/test/email-to-ticket"): {
        "email_data": {"from_address": "x@acme.example", "subject": "Re: [TKT-20251215-001]"}},
    ("post", "/api/v1/customers"): {"key": "probe", "name": "Probe"},
    ("put", "/api/v1/customers/{customer}"): {"key": "probe", "name": "Probe"},
    ("post", "/api/v1/tokens"): {"name": "probe", "scope": "read", "customer": "globex"},
}
# Text only the other customers' data holds; none of it may reach the scoped token.
FOREIGN_MARKERS = ("GLOBEX-SECRET", "NOCUST-SECRET", "bob@globex.example",
                   "nobody@unknown.example")
# One ticket per customer a message is addressed to (multi-ticket threading): a message to
# both customers is both customers' mail, filed first under Globex's ticket.
SPLIT = """
workflows:
  - name: one ticket per customer
    classification_trigger: support_request
    workflow_steps:
      - action: create_ticket
        params: {split_by: customer}
"""


@dataclass
class Side:
    """One customer's (or no customer's) data, as ids."""

    tickets: list[int] = field(default_factory=list)
    numbers: list[str] = field(default_factory=list)
    emails: list[int] = field(default_factory=list)
    attachments: list[int] = field(default_factory=list)
    comments: list[int] = field(default_factory=list)


@dataclass
class World:
    acme_id: int
    globex_id: int
    mine: Side
    theirs: Side  # Globex's and no customer's
    acme_address: str = "alice@acme.example"


def _mail(sender: str, subject: str, body: str, mid: str, reply_to: str | None = None,
          attachment: tuple[bytes, str] | None = None, to: str = "support@example.com"
          ) -> bytes:
    return make_email(
        sender=sender, subject=subject, body=body, message_id=mid, in_reply_to=reply_to, to=to,
        attachments=[(attachment[0], "application/octet-stream", attachment[1])] if attachment else None,
    )


def _build(api: Api) -> World:
    now = datetime(2025, 12, 15, 9, 0, tzinfo=UTC)
    shared = shared_for(api.runtime.settings)
    with api.runtime.session_factory() as s:
        acme = create_customer(s, CustomerSpec(key="acme", name="ACME", domains=("acme.example",)),
                               mode=CustomersMode.db, shared=shared, now=now)
        globex = create_customer(
            s, CustomerSpec(key="globex", name="Globex", domains=("globex.example",)),
            mode=CustomersMode.db, shared=shared, now=now)
        s.commit()
    mails = [
        _mail("alice@acme.example", "ACME-SUBJ one", "ACME-BODY one", "<a1@acme.example>",
              attachment=(b"ACME-ATT-ONE", "acme-one.bin")),
        _mail("alice@acme.example", "Re: ACME-SUBJ one", "ACME-BODY reply", "<a2@acme.example>",
              reply_to="<a1@acme.example>", attachment=(b"ACME-ATT-TWO", "acme-two.bin")),
        _mail("carol@acme.example", "ACME-SUBJ two", "ACME-BODY two", "<a3@acme.example>"),
        _mail("bob@globex.example", "GLOBEX-SECRET subj", "GLOBEX-SECRET body",
              "<GLOBEX-SECRET-1@globex.example>", attachment=(b"GLOBEX-SECRET-BYTES", "GLOBEX-SECRET.bin")),
        _mail("bob@globex.example", "Re: GLOBEX-SECRET subj", "GLOBEX-SECRET reply",
              "<GLOBEX-SECRET-2@globex.example>", reply_to="<GLOBEX-SECRET-1@globex.example>",
              attachment=(b"GLOBEX-SECRET-MORE", "GLOBEX-SECRET-2.bin")),
        _mail("bob@globex.example", "GLOBEX-SECRET other", "GLOBEX-SECRET body 2",
              "<GLOBEX-SECRET-3@globex.example>"),
        _mail("nobody@unknown.example", "NOCUST-SECRET subj", "NOCUST-SECRET body",
              "<NOCUST-SECRET-1@unknown.example>", attachment=(b"NOCUST-SECRET-BYTES", "NOCUST-SECRET.bin")),
        _mail("noc@carrier.example", "Fibre cut", "Both of you are affected.",
              "<cut@carrier.example>", to="dave@globex.example, ann@acme.example",
              attachment=(b"outage map", "map.bin")),
    ]
    for raw in mails:
        assert api.ingest(raw).action in ("created", "linked")
    staff = api.auth("write")
    with api.runtime.session_factory() as s:
        by_customer = {t.id: t.customer_id for t in s.scalars(select(Ticket))}
    for tid, cid in by_customer.items():
        mark = "ACME-COMMENT" if cid == acme.id else "GLOBEX-SECRET-COMMENT"
        for visibility in ("public", "internal"):
            r = api.client.post(f"/api/v1/tickets/{tid}/comments", headers=staff,
                                json={"body": f"{mark} {visibility}", "visibility": visibility})
            assert r.status_code == 201, r.text
    mine, theirs = Side(), Side()
    with api.runtime.session_factory() as s:
        for t in s.scalars(select(Ticket).order_by(Ticket.id)):
            side = mine if t.customer_id == acme.id else theirs
            side.tickets.append(t.id)
            side.numbers.append(t.ticket_number)
        visible = set(s.scalars(select(EmailLog.id).where(email_clause(acme.id))))
        for e in s.scalars(select(EmailLog).order_by(EmailLog.id)):
            (mine if e.id in visible else theirs).emails.append(e.id)
        shared = s.scalars(select(EmailLog).where(EmailLog.email_message_id == "<cut@carrier.example>")).one()
        # Filed under Globex's ticket first, and ACME's through the link.
        assert shared.ticket_id in theirs.tickets and shared.id in mine.emails
        for a in s.scalars(select(Attachment).order_by(Attachment.id)):
            (mine if a.email_log_id in mine.emails else theirs).attachments.append(a.id)
        for c in s.scalars(select(Comment).order_by(Comment.id)):
            (mine if c.ticket_id in mine.tickets else theirs).comments.append(c.id)
        assert s.scalar(select(Customer.id).where(Customer.key == "globex")) == globex.id
    # Three ACME tickets (pages), four of the others (Globex thrice, one of no customer).
    assert len(mine.tickets) == 3 and len(theirs.tickets) == 4, (mine, theirs)
    assert len(mine.attachments) == 3 and len(theirs.attachments) == 3
    return World(acme.id, globex.id, mine, theirs)


def _values(world: World) -> dict[str, list[tuple[str, bool]]]:
    """Each path parameter's probes: (value, is it the scoped customer's)."""
    m, t = world.mine, world.theirs
    tickets = ([(str(i), True) for i in m.tickets] + [(n, True) for n in m.numbers]
               + [(str(i), False) for i in t.tickets] + [(n, False) for n in t.numbers]
               + [("999999", False), ("TKT-20991231-999", False)])
    return {
        "ticket_id": tickets,
        "ticket_ref": tickets,
        "email_id": [(str(i), True) for i in m.emails] + [(str(i), False) for i in t.emails]
        + [("999999", False)],
        "attachment_id": [(str(i), True) for i in m.attachments]
        + [(str(i), False) for i in t.attachments] + [("999999", False)],
        "email_address": [(world.acme_address, True), ("bob@globex.example", False),
                          ("nobody@unknown.example", False), ("carol@acme.example", True)],
    }


def _queries(world: World, path: str) -> list[dict[str, str]]:
    if path not in ("/api/v1/tickets", "/ui/tickets"):
        return [{}]
    own, other = world.mine.tickets, world.theirs.tickets
    variants: list[dict[str, str]] = [
        {}, {"search": "SECRET"}, {"search": "GLOBEX"}, {"search": "ACME"},
        {"cursor": "999999"}, *({"cursor": str(i)} for i in other),
    ]
    if path == "/api/v1/tickets":
        variants += [{"customer_id": str(world.globex_id)}, {"customer_id": str(world.acme_id)},
                     {"limit": "1"}, {"limit": "1", "cursor": str(own[-1])}]
    return variants


def _expand(path: str, params: dict[str, str]) -> str:
    return re.sub(r"\{([^}]+)\}", lambda m: params[m.group(1)], path)


def _combinations(path: str, values: dict[str, list[tuple[str, bool]]]
                  ) -> Iterator[tuple[dict[str, str], bool]]:
    names = re.findall(r"\{([^}]+)\}", path)
    for name in names:
        assert name in values, f"path parameter {name!r} of {path} has no probes: classify it"
    for combo in itertools.product(*(values[n] for n in names)):
        yield {n: v for n, (v, _) in zip(names, combo, strict=True)}, all(o for _, o in combo)


def _leaks(text: str, given: Iterable[str] = ()) -> list[str]:
    """Foreign markers in an answer, apart from the request's own values echoed back (an
    address asked for by-email is repeated in the answer: that tells the caller nothing)."""
    text = text.lower()
    for value in given:
        text = text.replace(value.lower(), "")
    return [m for m in FOREIGN_MARKERS if m.lower() in text]


def _ids_named(body: Any, kind: str | None = None) -> Iterator[tuple[str, int]]:
    """(kind, id) for every id a JSON answer names: ticket, email, attachment, comment."""
    lists = {"tickets": "ticket", "emails": "email", "attachments": "attachment",
             "comments": "comment"}
    if isinstance(body, list):
        for item in body:
            yield from _ids_named(item, kind)
    elif isinstance(body, dict):
        here = kind or ("ticket" if "ticket_number" in body and "subject" in body else None)
        for key, value in body.items():
            if key in lists:
                yield from _ids_named(value, lists[key])
            elif isinstance(value, int) and not isinstance(value, bool):
                if key == "id" and here:
                    yield here, value
                elif key in ("ticket_id", "merged_into_id"):
                    yield "ticket", value
                elif key in ("email_log_id", "email_id"):
                    yield "email", value
            elif isinstance(value, str) and key == "next_cursor":
                yield "ticket", int(value)
            elif isinstance(value, dict | list):
                yield from _ids_named(value, None)


def _foreign_ids(world: World) -> dict[str, set[int]]:
    t = world.theirs
    return {"ticket": set(t.tickets), "email": set(t.emails),
            "attachment": set(t.attachments), "comment": set(t.comments)}


def _own_ids(world: World) -> dict[str, set[int]]:
    m = world.mine
    return {"ticket": set(m.tickets), "email": set(m.emails),
            "attachment": set(m.attachments), "comment": set(m.comments) | {-1}}


def _check_clean(world: World, label: str, r: Any, given: Iterable[str] = ()) -> None:
    assert r.status_code < 500, (label, r.status_code, r.text)
    assert not _leaks(r.text, given), (label, _leaks(r.text, given), r.text[:2000])
    for name, value in r.headers.items():
        assert not _leaks(value), (label, name, value)
    if r.headers.get("content-type", "").startswith("application/json"):
        own = _own_ids(world)
        for kind, value in _ids_named(r.json()):
            # Comments added by the probes are ACME's too (ids after the seeded ones).
            if kind == "comment" and value > max(world.theirs.comments):
                continue
            # So are the outgoing rows their public replies logged.
            if kind == "email" and value > max(world.theirs.emails + world.mine.emails):
                continue
            assert value in own[kind], (label, kind, value, r.text[:2000])
    if r.status_code == 200 and "html" in r.headers.get("content-type", ""):
        for number in world.theirs.numbers:
            assert number not in r.text, (label, number)


def _same_404(label: str, foreign: Any, missing: Any) -> None:
    """Another customer's ids answer exactly as ids that exist nowhere (apart from the ids
    themselves, which the answer repeats)."""
    assert foreign.status_code == missing.status_code == 404, (label, foreign.text, missing.text)

    def shape(body: dict[str, Any]) -> dict[str, Any]:
        return {k: re.sub(r"TKT-\d{8}-\d+|\d+", "<id>", v) if isinstance(v, str) else v
                for k, v in body.items()}

    assert shape(foreign.json()) == shape(missing.json()), (label, foreign.text, missing.text)


def _snapshot(api: Api, world: World) -> dict[int, Any]:
    with api.runtime.session_factory() as s:
        return {
            t.id: (t.status, t.priority, list(t.tags or []), len(t.comments), t.updated_at)
            for t in s.scalars(select(Ticket).where(Ticket.id.in_(world.theirs.tickets)))
        }


@pytest.fixture
def api(make_api: Callable[..., Api], tmp_path: Path) -> Api:
    workflows = tmp_path / "workflows.yaml"
    workflows.write_text(SPLIT, encoding="utf-8")
    return make_api(workflows_path=workflows)


@pytest.fixture
def world(api: Api) -> World:
    return _build(api)


def _scoped_token(api: Api, world: World, scope: str) -> dict[str, str]:
    with api.runtime.session_factory() as s:
        _, plain = tokens.create_token(s, name=f"acme-{scope}", scope=scope, customer="acme")
        s.commit()
    return {"Authorization": f"Bearer {plain}"}


def test_a_customer_token_sees_only_its_customer_through_every_route(
    api: Api, world: World
) -> None:
    doc = api.client.get("/openapi.json").json()
    operations = {(m, p) for p, item in doc["paths"].items() for m in item}
    assert operations == set(OPERATIONS), (
        "classify every operation of /openapi.json in OPERATIONS: "
        f"{sorted(operations ^ set(OPERATIONS))}")
    reader, writer = _scoped_token(api, world, "read"), _scoped_token(api, world, "write")
    staff = api.auth("admin")
    values = _values(world)
    before = _snapshot(api, world)
    counts = {"scoped": 0, "listing": 0, "staff": 0, "public": 0, "signed": 0}
    staff_saw_foreign = set()
    for (method, path), kind in sorted(OPERATIONS.items()):
        op = doc["paths"][path][method]
        body = BODIES.get((method, path))
        if "requestBody" in op:
            assert body is not None, f"{method} {path}: give a body in BODIES"
        label = f"{method.upper()} {path}"
        if kind in ("public", "signed"):
            for headers in (reader, writer):
                r = api.client.request(method, _expand(path, {"backend": "zammad"}),
                                       headers=headers, json=body)
                _check_clean(world, label, r)
                if kind == "signed":
                    assert r.status_code in (401, 404), (label, r.status_code)
                counts[kind] += 1
            continue
        if kind == "staff":
            probes = [
                {"entry_id": "1", "customer": str(world.globex_id),
                 "ticket_id": str(world.theirs.tickets[0]), "address": "x@example.org",
                 "token_id": "1"},
                {"entry_id": "1", "customer": "acme",
                 "ticket_id": str(world.mine.tickets[0]), "address": "x@example.org",
                 "token_id": "1"},
            ]
            for params, headers in itertools.product(probes, (reader, writer)):
                r = api.client.request(method, _expand(path, params), headers=headers, json=body)
                assert r.status_code == 403, (label, r.status_code, r.text)
                assert "customer-scoped" in r.json()["detail"], (label, r.text)
                _check_clean(world, label, r)
                counts[kind] += 1
            continue
        writes = method != "get"
        tokens_used = (writer,) if writes else (reader, writer)
        for params, owned in _combinations(path, values):
            for query in _queries(world, path):
                url = _expand(path, params)
                given = [*params.values(), *query.values()]
                if not writes:
                    control = api.client.get(url, headers=staff, params=query)
                    if _leaks(control.text, given):
                        staff_saw_foreign.add(label)
                for headers in tokens_used:
                    r = api.client.request(method, url, headers=headers, params=query, json=body)
                    _check_clean(world, f"{label} {params} {query}", r, given)
                    counts[kind] += 1
                    if kind == "listing":
                        assert r.status_code == 200, (label, params, query, r.text)
                        if not {"cursor", "limit"} & query.keys():
                            # Exactly the customer's part of what staff sees, nothing less.
                            mine = {t["id"] for t in r.json()["tickets"]}
                            everyone = {t["id"] for t in control.json()["tickets"]}
                            assert mine == everyone & set(world.mine.tickets), (label, query)
                    elif owned:
                        if not writes:
                            assert r.status_code == control.status_code, (label, params, r.text)
                        else:
                            assert r.status_code in (200, 201), (label, params, r.text)
                    else:
                        assert r.status_code == 404, (label, params, r.status_code, r.text)
                        absent = api.client.request(
                            method, _expand(path, dict.fromkeys(params, "999999")),
                            headers=headers, params=query, json=body)
                        _same_404(f"{label} {params}", r, absent)
    # The staff token met the other customers' data through the same probes of every
    # readable route: the 404s above hid something real.
    readable = {f"GET {p}" for (m, p), k in OPERATIONS.items()
                if m == "get" and k in ("scoped", "listing")}
    assert staff_saw_foreign == readable, readable - staff_saw_foreign
    assert _snapshot(api, world) == before, "a scoped write reached another customer's ticket"
    assert counts["scoped"] >= 250 and counts["listing"] > 20 and counts["staff"] >= 48, counts


def test_cursors_walk_only_the_customers_tickets(api: Api, world: World) -> None:
    reader = _scoped_token(api, world, "read")
    seen: list[int] = []
    cursor: str | None = None
    for _ in range(10):
        params = {"limit": "1", **({"cursor": cursor} if cursor else {})}
        page = api.client.get("/api/v1/tickets", headers=reader, params=params).json()
        seen += [t["id"] for t in page["tickets"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
        assert int(cursor) in world.mine.tickets
    assert sorted(seen) == sorted(world.mine.tickets)
    # Another customer's ticket as cursor: the same empty last page as a ticket that never
    # existed (staff, from that position, would get older tickets).
    for other in world.theirs.tickets:
        page = api.client.get("/api/v1/tickets", headers=reader, params={"cursor": str(other)})
        assert page.json() == {"tickets": [], "next_cursor": None}
    staff = api.client.get("/api/v1/tickets", headers=api.auth("read"),
                           params={"cursor": str(max(world.theirs.tickets))}).json()
    assert staff["tickets"], "the staff control found nothing older: the probe proves nothing"


def test_the_thread_view_shows_only_the_customers_pages(api: Api, world: World) -> None:
    routes = {(m, p) for p, methods, _ in iter_routes(api.app) if p.startswith("/ui")
              for m in methods - {"HEAD"}}
    assert routes == set(PAGES), f"classify every page in PAGES: {sorted(routes ^ set(PAGES))}"
    with api.runtime.session_factory() as s:
        _, plain = tokens.create_token(s, name="acme-ui", scope="read", customer="acme")
        s.commit()
    user, staff = TestClient(api.app), TestClient(api.app)
    for client, token in ((user, plain), (staff, api.tokens["read"])):
        r = client.post("/ui/login", data={"token": token}, follow_redirects=False)
        assert r.status_code == 303, r.text
    values = _values(world)
    walked = 0
    staff_saw: set[str] = set()
    for (method, path), kind in sorted(PAGES.items()):
        if kind in ("login", "logout"):
            continue  # the sign-in above, the sign-out below
        if kind == "form":
            for params, _owned in _combinations(path, values):
                r = user.request(method, _expand(path, params), data={"body": "PROBE"})
                assert r.status_code == 403, (path, r.status_code)
                _check_clean(world, path, r, list(params.values()))
                walked += 1
            continue
        for params, owned in _combinations(path, values):
            for query in _queries(world, path):
                url = _expand(path, params)
                r = user.request(method, url, params=query)
                control = staff.request(method, url, params=query)
                given = [*params.values(), *query.values()]
                if _leaks(control.text, given):
                    staff_saw.add(path)
                _check_clean(world, f"{url} {query}", r, given)
                walked += 1
                if kind == "scoped" and not owned:
                    assert r.status_code == 404, (url, r.status_code)
                    assert "text/html" in r.headers["content-type"]
                elif kind == "scoped":
                    assert r.status_code == control.status_code, (url, r.status_code)
    own_page = user.get(f"/ui/tickets/{world.mine.numbers[0]}")
    assert own_page.status_code == 200 and "ACME-SUBJ one" in own_page.text
    # The thread view names the ticket's customer (issue 11).
    assert 'id="ticket-customer"' in own_page.text and "<bdi>ACME</bdi>" in own_page.text
    listing = user.get("/ui/tickets").text
    assert all(n in listing for n in world.mine.numbers)
    assert staff_saw == {p for (_, p), k in PAGES.items() if k in ("scoped", "listing")}
    assert walked >= 90
    out = user.post("/ui/logout", follow_redirects=False)
    assert out.status_code == 303
    assert user.get("/ui/tickets", follow_redirects=False).status_code == 303
    user.close()
    staff.close()


def test_scoped_tokens_are_never_admin_and_name_a_live_customer(api: Api, world: World) -> None:
    with api.runtime.session_factory() as s:
        for scope, customer, reason in (("admin", "acme", "never admin"),
                                        ("read", "nobody", "no customer"),
                                        ("read", "99999999999", "no customer")):
            with pytest.raises(tokens.TokenError, match=reason):
                tokens.create_token(s, name="x", scope=scope, customer=customer)
        row, _ = tokens.create_token(s, name="by id", scope="read", customer=str(world.globex_id))
        assert row.customer_id == world.globex_id
        s.rollback()
    listed = json.dumps(api.client.get("/api/v1/tickets", headers=api.auth("read")).json())
    assert "GLOBEX-SECRET" in listed  # an unscoped token still sees every customer
