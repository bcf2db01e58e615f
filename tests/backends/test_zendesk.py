from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import SecretStr

from mailticket.backends.base import (
    AttachmentDraft,
    CommentDraft,
    Normalized,
    TicketDraft,
    TicketPatch,
    op_key,
)
from mailticket.backends.errors import (
    AmbiguousResult,
    AuthError,
    Conflict,
    NotFound,
    RateLimited,
    ValidationError,
    WebhookSignatureError,
)
from mailticket.backends.zendesk import ZendeskBackend, ZendeskConfig
from tests.backends.fakes._server import serve
from tests.backends.fakes.zendesk import FakeZendesk

SECRET = "whsec-zd"


@pytest.fixture
def fake() -> FakeZendesk:
    return FakeZendesk()


@pytest.fixture
def url(fake: FakeZendesk) -> Iterator[str]:
    with serve(fake.app) as base:
        yield base


def make(url: str, token: str = "tok") -> ZendeskBackend:
    cfg = ZendeskConfig(base_url=url, email="agent@example.org", api_token=SecretStr(token),
                        webhook_secret=SecretStr(SECRET), custom_field_mappings={"site": "360"})
    return ZendeskBackend("zd", cfg)


@pytest.fixture
async def backend(url: str) -> AsyncIterator[ZendeskBackend]:
    b = make(url)
    yield b
    await b.aclose()


DRAFT = TicketDraft(subject="VPN down", text="Since 9am.", requester_email="c@example.org",
                    priority="critical", tags=("vpn",),
                    custom_fields={"site": "HQ", "361": "gold", "group_id": 5})


async def test_full_cycle(backend: ZendeskBackend, fake: FakeZendesk) -> None:
    key = op_key("zd", "<m1@example.org>", "create")
    ref = await backend.create_ticket(DRAFT, op_key=key)
    t = fake.tickets[int(ref.id)]
    assert t["external_id"] == key and t["priority"] == "urgent" and t["tags"] == ["vpn"]
    assert t["custom_fields"] == [{"id": 360, "value": "HQ"}, {"id": 361, "value": "gold"}]
    assert t["requester"]["email"] == "c@example.org"
    assert fake.calls("POST", "/api/v2/tickets.json")[0].headers["idempotency-key"] == key
    assert ref.url and ref.url.endswith(f"/agent/tickets/{ref.id}")

    pub = await backend.create_comment(ref, CommentDraft("we are on it"), op_key="c1")
    priv = await backend.create_comment(ref, CommentDraft("ask the ISP", public=False),
                                        op_key="c2")
    att = await backend.create_attachment(
        ref, AttachmentDraft("trace.txt", "text/plain", b"hop 1"), public=False, op_key="a1"
    )
    by_id = {str(c["id"]): c for c in fake.comments[int(ref.id)]}
    assert (by_id[pub]["body"], by_id[pub]["public"]) == ("we are on it", True)
    assert (by_id[priv]["body"], by_id[priv]["public"]) == ("ask the ISP", False)
    (upload,) = by_id[att]["attachments"]
    assert upload["file_name"] == "trace.txt" and upload["content_type"] == "text/plain"
    assert base64.b64decode(upload["data"]) == b"hop 1" and by_id[att]["public"] is False

    agent = fake.agent_comment(int(ref.id), "ISP confirmed an outage")
    listed = await backend.list_comments(ref)
    # Ours (the description too) carry the op key we stored in the audit's metadata.
    assert [(c.id, c.public, c.op_key) for c in listed][1:] == [
        (pub, True, "c1"), (priv, False, "c2"), (att, False, "a1"),
        (str(agent["id"]), False, None)]
    assert listed[0].op_key == key and key[:20] in listed[0].text
    assert await backend.find_comment_by_op_key(ref, "c2") == priv
    assert await backend.find_comment_by_op_key(ref, "c9") is None
    assert listed[-1].text == "ISP confirmed an outage" and listed[-1].author == "99"

    assert (await backend.get_ticket(ref)).status is Normalized.open
    fake.set_status(int(ref.id), "hold")
    got = await backend.get_ticket(ref)
    assert (got.status_raw, got.status) == ("hold", Normalized.pending)


async def test_idempotency_key_replay_returns_same_ticket(
    backend: ZendeskBackend, fake: FakeZendesk
) -> None:
    first = await backend.create_ticket(DRAFT, op_key="same-key")
    again = await backend.create_ticket(DRAFT, op_key="same-key")
    assert again == first and len(fake.tickets) == 1
    other = await backend.create_ticket(DRAFT, op_key="other-key")
    assert other.id != first.id and len(fake.tickets) == 2


async def test_find_by_op_key(backend: ZendeskBackend, fake: FakeZendesk) -> None:
    ref = await backend.create_ticket(DRAFT, op_key="k-1")
    fake.idempotency.clear()  # keys expire after a while; external_id stays
    found = await backend.find_by_op_key("k-1")
    assert found == ref
    assert await backend.find_by_op_key("k-404") is None


async def test_close_and_closed_ticket_conflict(backend: ZendeskBackend, fake: FakeZendesk) -> None:
    ref = await backend.create_ticket(DRAFT, op_key="k")
    got = await backend.close_ticket(ref, "fixed upstream")
    assert got.status is Normalized.resolved
    assert fake.comments[int(ref.id)][-1]["public"] is False
    fake.set_status(int(ref.id), "closed")
    with pytest.raises(Conflict, match="closed prevents ticket update"):
        await backend.create_comment(ref, CommentDraft("late"), op_key="c")


async def test_patch_and_validation(backend: ZendeskBackend, fake: FakeZendesk) -> None:
    ref = await backend.create_ticket(DRAFT, op_key="k")
    got = await backend.patch_ticket(ref, TicketPatch(status="pending", priority="low",
                                                      fields={"site": "Branch"}))
    assert got.status is Normalized.pending
    assert fake.tickets[int(ref.id)]["custom_fields"] == [{"id": 360, "value": "Branch"}]
    with pytest.raises(ValidationError, match="Subject: cannot be blank"):
        await backend.create_ticket(TicketDraft(subject="", text="x"), op_key="k2")
    with pytest.raises(NotFound):
        await backend.get_ticket(type(ref)("zd", "999999"))


async def test_polling(backend: ZendeskBackend, fake: FakeZendesk) -> None:
    refs = [await backend.create_ticket(DRAFT, op_key=f"k{i}") for i in range(3)]
    mark = fake.clock
    fake.set_status(int(refs[1].id), "solved")
    fake.set_status(int(refs[0].id), "pending")
    page = await backend.query_tickets(updated_since=mark, limit=1)
    assert [t.ref.id for t in page.items] == [refs[1].id] and page.cursor == "2"
    assert page.items[0].status is Normalized.resolved
    page2 = await backend.query_tickets(updated_since=mark, cursor=page.cursor, limit=1)
    assert [t.ref.id for t in page2.items] == [refs[0].id] and page2.cursor is None
    search = fake.calls("GET", "/api/v2/search.json")[0]
    assert "updated%3E2026-01-01T08%3A00%3A" in search.query


async def test_webhook_status_change(backend: ZendeskBackend, fake: FakeZendesk) -> None:
    ref = await backend.create_ticket(DRAFT, op_key="k")
    fake.set_status(int(ref.id), "solved")
    payload = {"type": "zen:event-type:ticket.status_changed", "id": "evt-1",
               "detail": {"id": ref.id, "status": "SOLVED"},
               "event": {"current": "SOLVED", "previous": "OPEN"}}
    headers, body = fake.webhook(SECRET, payload, invocation="inv-1")
    event = backend.parse_webhook(headers, body)
    assert (event.delivery_id, event.ticket_id, event.status_raw) == ("inv-1", ref.id, "solved")
    assert backend.normalize_status(event.status_raw or "", {"solved": Normalized.resolved})
    assert (await backend.get_ticket(ref)).status is Normalized.resolved


def test_forged_and_stale_webhooks(backend: ZendeskBackend, fake: FakeZendesk) -> None:
    payload = {"ticket_id": "1", "status": "open"}
    headers, body = fake.webhook("not-the-secret", payload, invocation="i")
    with pytest.raises(WebhookSignatureError):
        backend.parse_webhook(headers, body)
    headers, body = fake.webhook(SECRET, payload, invocation="i")
    with pytest.raises(WebhookSignatureError):
        backend.parse_webhook(headers, body.replace(b"open", b"solved"))
    stale = datetime.now(UTC) - timedelta(hours=1)
    headers, body = fake.webhook(SECRET, payload, invocation="i", when=stale)
    with pytest.raises(WebhookSignatureError, match="stale"):
        backend.parse_webhook(headers, body)
    headers, body = fake.webhook(SECRET, payload, invocation="i")
    assert backend.parse_webhook(headers, body).status_raw == "open"


async def test_bad_credentials(url: str) -> None:
    b = make(url, token="nope")
    try:
        with pytest.raises(AuthError, match="rejected agent@example.org.*Couldn't authenticate"):
            await b.test_connection()
    finally:
        await b.aclose()


async def test_connection_ok(backend: ZendeskBackend) -> None:
    assert "agent@example.org" in await backend.test_connection()


async def test_rate_limited(backend: ZendeskBackend, fake: FakeZendesk) -> None:
    fake.fail_rate_limited(retry_after=30, body={"error": "TooManyRequests"})
    with pytest.raises(RateLimited, match="TooManyRequests") as info:
        await backend.create_ticket(DRAFT, op_key="k")
    assert info.value.retry_after == 30 and fake.tickets == {}


async def test_dropped_create_replayed_with_same_key(
    backend: ZendeskBackend, fake: FakeZendesk
) -> None:
    fake.drop_after("POST", "/api/v2/tickets.json")
    with pytest.raises(AmbiguousResult):
        await backend.create_ticket(DRAFT, op_key="lost-answer")
    (first,) = fake.tickets.values()
    again = await backend.create_ticket(DRAFT, op_key="lost-answer")
    assert again.id == str(first["id"]) and len(fake.tickets) == 1
    replay = fake.calls("POST", "/api/v2/tickets.json")[-1]
    assert replay.headers["idempotency-key"] == "lost-answer"
