"""The ticket endpoints against the seed's examples, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy import select

from mailticket.store.models import Ticket
from tests.api.conftest import Api
from tests.mailfactory import make_email

SEED_EMAIL_KEYS = {
    "id", "email_message_id", "email_from", "email_subject", "email_received_at", "is_reply",
    "created_at",
}
EXTRA_EMAIL_KEYS = {"direction", "matched_by", "classification"}
AT_10 = datetime(2025, 12, 15, 10, 0, tzinfo=UTC)
AT_11 = datetime(2025, 12, 15, 11, 0, tzinfo=UTC)


def _seed_thread(api: Api) -> tuple[int, str]:
    first = api.ingest(
        make_email(subject="Help with issue", message_id="<abc123@example.com>",
                   body="Our internet is down. Can you help?"),
        received_at=AT_10,
    )
    assert first.action == "created" and first.ticket_number == "TKT-20251215-001"
    reply = api.ingest(
        make_email(subject="Re: TKT-20251215-001", message_id="<def456@example.com>",
                   in_reply_to="<TKT-20251215-001@bmcnetworks.dk>",
                   body="Thanks, issue is resolved now"),
        received_at=AT_11,
    )
    assert reply.action == "linked" and reply.ticket_number == "TKT-20251215-001"
    assert first.ticket_id is not None
    return first.ticket_id, "TKT-20251215-001"


def test_thread_has_the_seed_shape_by_id_and_by_number(api: Api) -> None:
    ticket_id, number = _seed_thread(api)
    by_id = api.get(f"/api/v1/tickets/{ticket_id}/emails")
    by_number = api.get(f"/api/v1/tickets/{number.lower()}/emails")
    assert by_id.status_code == 200 and by_number.status_code == 200
    body = by_id.json()
    assert body == by_number.json()
    assert set(body) == {"ticket_id", "ticket_number", "emails"}
    assert body["ticket_id"] == ticket_id and body["ticket_number"] == number
    for mail in body["emails"]:
        assert set(mail) == SEED_EMAIL_KEYS | EXTRA_EMAIL_KEYS
        assert mail["created_at"].endswith("Z")
    inbound = [m for m in body["emails"] if m["direction"] == "in"]
    assert [
        (m["email_message_id"], m["email_from"], m["email_subject"], m["email_received_at"],
         m["is_reply"])
        for m in inbound
    ] == [
        ("<abc123@example.com>", "customer@example.com", "Help with issue",
         "2025-12-15T10:00:00Z", False),
        ("<def456@example.com>", "customer@example.com", "Re: TKT-20251215-001",
         "2025-12-15T11:00:00Z", True),
    ]
    assert inbound[0]["matched_by"] is None
    assert inbound[1]["matched_by"] in {"in_reply_to", "subject"}
    assert inbound[0]["classification"] == "support_request"
    stamps = [m["email_received_at"] for m in body["emails"]]
    assert stamps == sorted(stamps), "the thread is chronological"


def test_thread_of_unknown_ticket_is_a_problem_404(api: Api) -> None:
    for ref in ("999999", "TKT-20991231-001", "nonsense"):
        r = api.get(f"/api/v1/tickets/{ref}/emails")
        assert r.status_code == 404
        assert r.headers["content-type"] == "application/problem+json"
        problem = r.json()
        assert problem["status"] == 404 and problem["title"] == "Not Found"
        assert "Traceback" not in r.text


def test_by_email_mixed_case_and_several_tickets(api: Api) -> None:
    a = api.ingest(make_email(subject="First problem", sender="Customer@Example.COM"))
    b = api.ingest(make_email(subject="Second problem", sender="customer@example.com"))
    other = api.ingest(make_email(subject="Not theirs", sender="someone@else.example"))
    # A colleague of the customer answers on someone else's ticket: the log counts too.
    colleague = api.ingest(
        make_email(subject="Re: Not theirs", sender="CUSTOMER@example.com",
                   in_reply_to=other.message_id)
    )
    assert {a.action, b.action, other.action} == {"created"}
    assert colleague.action == "linked" and colleague.ticket_id == other.ticket_id

    r = api.get("/api/v1/tickets/by-email/cUsToMeR@eXaMpLe.CoM")
    assert r.status_code == 200
    body = r.json()
    assert body["email_address"] == "customer@example.com"
    assert set(body) == {"email_address", "tickets"}
    assert [t["id"] for t in body["tickets"]] == [a.ticket_id, b.ticket_id, other.ticket_id]
    for t in body["tickets"]:
        assert set(t) == {"id", "ticket_number", "subject", "status", "created_at"}
        assert t["status"] == "open"
    assert [t["subject"] for t in body["tickets"]] == ["First problem", "Second problem",
                                                      "Not theirs"]
    none = api.get("/api/v1/tickets/by-email/nobody@example.com").json()
    assert none == {"email_address": "nobody@example.com", "tickets": []}


def test_get_patch_and_comment(api: Api) -> None:
    ticket_id, number = _seed_thread(api)
    r = api.get(f"/api/v1/tickets/{number}")
    assert r.status_code == 200
    detail = r.json()
    assert detail["id"] == ticket_id and detail["ticket_number"] == number
    assert "Our internet is down" in detail["description"]
    assert [c["body"] for c in detail["comments"]] == ["Thanks, issue is resolved now"]

    denied = api.client.patch(f"/api/v1/tickets/{ticket_id}", json={"status": "resolved"},
                              headers=api.auth("read"))
    assert denied.status_code == 403

    r = api.client.patch(
        f"/api/v1/tickets/{ticket_id}",
        json={"status": "resolved", "priority": "high", "assigned_to_user_id": 7,
              "tags": ["Billing", "vip"]},
        headers=api.auth("write"),
    )
    assert r.status_code == 200, r.text
    changed = r.json()
    assert (changed["status"], changed["priority"], changed["assigned_to_user_id"]) == (
        "resolved", "high", 7)
    assert changed["tags"] == ["billing", "vip"]
    assert changed["resolved_at"] is not None

    bad = api.client.patch(f"/api/v1/tickets/{ticket_id}", json={"status": "exploded"},
                           headers=api.auth("write"))
    assert bad.status_code == 422 and bad.headers["content-type"] == "application/problem+json"
    assert bad.json()["errors"][0]["loc"][-1] == "status"

    for visibility in ("internal", "public"):
        r = api.client.post(
            f"/api/v1/tickets/{number}/comments",
            json={"body": f"a {visibility} note", "visibility": visibility},
            headers=api.auth("write"),
        )
        assert r.status_code == 201, r.text
        assert r.json()["is_internal"] is (visibility == "internal")
        assert r.json()["author_email"] == "token:test-write"
    comments = api.get(f"/api/v1/tickets/{ticket_id}").json()["comments"]
    assert [(c["body"], c["is_internal"], c["source"]) for c in comments[1:]] == [
        ("a internal note", True, "api"), ("a public note", False, "api")]


def test_list_filters(api: Api) -> None:
    urgent = api.ingest(make_email(subject="URGENT: server down", body="help #server"))
    plain = api.ingest(make_email(subject="A question about invoices", sender="b@example.com",
                                  body="where is my invoice? #billing"))
    api.client.patch(f"/api/v1/tickets/{plain.ticket_id}", json={"assigned_to_user_id": 5,
                     "status": "pending"}, headers=api.auth("write"))
    with api.runtime.session_factory() as s:
        s.get_one(Ticket, urgent.ticket_id).customer_id = 42
        s.commit()

    def ids(**params: str | int) -> list[int]:
        r = api.get("/api/v1/tickets", params=params)
        assert r.status_code == 200, r.text
        return [t["id"] for t in r.json()["tickets"]]

    assert ids() == [plain.ticket_id, urgent.ticket_id]
    assert ids(priority="critical") == [urgent.ticket_id]
    assert ids(status="pending") == [plain.ticket_id]
    assert ids(tag="billing") == [plain.ticket_id]
    assert ids(tag="server") == [urgent.ticket_id]
    assert ids(customer_id=42) == [urgent.ticket_id]
    assert ids(assignee=5) == [plain.ticket_id]
    assert ids(search="INVOICE") == [plain.ticket_id]
    assert ids(search="server down") == [urgent.ticket_id]
    assert ids(search="100%_") == []
    assert ids(created_after="2000-01-01T00:00:00Z") == [plain.ticket_id, urgent.ticket_id]
    assert ids(created_before="2000-01-01T00:00:00Z") == []
    bad = api.get("/api/v1/tickets", params={"cursor": "not-a-cursor"})
    assert bad.status_code == 422 and bad.json()["status"] == 422


def test_pagination_is_stable_under_inserts(api: Api) -> None:
    created = [api.ingest(make_email(subject=f"ticket {i}")).ticket_id for i in range(7)]
    seen: list[int] = []
    cursor: str | None = None
    pages = 0
    while True:
        params: dict[str, str | int] = {"limit": 3}
        if cursor:
            params["cursor"] = cursor
        r = api.get("/api/v1/tickets", params=params)
        assert r.status_code == 200, r.text
        page = r.json()
        seen += [t["id"] for t in page["tickets"]]
        pages += 1
        # New tickets arrive between every two pages; none of them may shift a page.
        for i in range(2):
            api.ingest(make_email(subject=f"late arrival {pages}.{i}"))
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted(created, reverse=True)
    assert len(seen) == len(set(seen)) == 7
    assert pages == 3
    with api.runtime.session_factory() as s:
        assert len(s.scalars(select(Ticket.id)).all()) == 7 + 2 * pages


def test_test_endpoint_matches_the_seed_examples(api: Api) -> None:
    created = api.client.post("/api/v1/test/email-to-ticket", headers=api.auth("write"), json={
        "email_data": {
            "message_id": "<test123@example.com>", "subject": "Test ticket",
            "from_address": "test@example.com", "body": "This is a test #testing",
            "received_at": "2025-12-15T10:00:00Z",
        }
    })
    assert created.status_code == 200, created.text
    body = created.json()
    assert body["ticket_number"] == "TKT-20251215-001"
    assert (body["created"], body["linked"]) == (True, False)
    reply = api.client.post("/api/v1/test/email-to-ticket", headers=api.auth("write"), json={
        "email_data": {
            "message_id": "<reply456@example.com>", "subject": "Re: TKT-20251215-001",
            "from_address": "test@example.com", "body": "Reply to existing ticket",
            "received_at": "2025-12-15T11:00:00Z",
            "in_reply_to": "<TKT-20251215-001@bmcnetworks.dk>",
        }
    })
    assert reply.status_code == 200, reply.text
    linked = reply.json()
    assert (linked["created"], linked["linked"]) == (False, True)
    assert linked["ticket_id"] == body["ticket_id"]
    detail = api.get(f"/api/v1/tickets/{body['ticket_id']}").json()
    assert detail["tags"] == ["testing"]
    again = api.client.post("/api/v1/test/email-to-ticket", headers=api.auth("write"), json={
        "email_data": {"message_id": "<test123@example.com>", "subject": "Test ticket",
                       "from_address": "test@example.com"}})
    assert again.json()["action"] == "duplicate"
    injected = api.client.post("/api/v1/test/email-to-ticket", headers=api.auth("write"), json={
        "email_data": {"subject": "x\r\nBcc: victim@example.com", "from_address": "a@b.c"}})
    assert injected.status_code == 422


def test_test_endpoint_is_off_by_default(make_api: Callable[..., Api]) -> None:
    api = make_api(api_test_endpoint_enabled=False)
    r = api.client.post("/api/v1/test/email-to-ticket", headers=api.auth("admin"),
                        json={"email_data": {"from_address": "a@b.c"}})
    assert r.status_code == 404
    assert r.headers["content-type"] == "application/problem+json"
