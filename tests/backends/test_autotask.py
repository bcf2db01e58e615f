from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import AsyncIterator, Iterator

import pytest
from pydantic import SecretStr

from mailticket.backends.autotask import AutotaskBackend, AutotaskConfig
from mailticket.backends.base import (
    AttachmentDraft,
    CommentDraft,
    Normalized,
    RemoteRef,
    TicketDraft,
    TicketPatch,
    op_key,
)
from mailticket.backends.errors import (
    AmbiguousResult,
    AuthError,
    NotFound,
    RateLimited,
    Transient,
    ValidationError,
    WebhookSignatureError,
)
from tests.backends.fakes._server import serve
from tests.backends.fakes.autotask import FakeAutotask, errors

HOOK_SECRET = "hook-secret"


@pytest.fixture
def fake() -> FakeAutotask:
    return FakeAutotask()


@pytest.fixture
def url(fake: FakeAutotask) -> Iterator[str]:
    AutotaskBackend.zone_cache.clear()
    with serve(fake.app) as base:
        yield base
    AutotaskBackend.zone_cache.clear()


def config(url: str, **over: object) -> AutotaskConfig:
    values: dict[str, object] = {
        "username": "api@example.org", "secret": SecretStr("s3cret"),
        "integration_code": SecretStr("INTEGRATION"),
        "zone_lookup_url": f"{url}/atservicesrest/v1.0/",
        "company_id": 0, "queue_id": 29683354, "source": 4,
        "webhook_secret": SecretStr(HOOK_SECRET),
    }
    values.update(over)
    return AutotaskConfig.model_validate(values)


@pytest.fixture
async def backend(url: str) -> AsyncIterator[AutotaskBackend]:
    b = AutotaskBackend("at", config(url))
    yield b
    await b.aclose()


DRAFT = TicketDraft(subject="Backup failed", text="Job X failed twice.", priority="high")


async def test_full_cycle(backend: AutotaskBackend, fake: FakeAutotask) -> None:
    key = op_key("at", "<m1@example.org>", "create")
    ref = await backend.create_ticket(DRAFT, op_key=key)
    t = fake.tickets[int(ref.id)]
    assert ref.key == t["ticketNumber"] and ref.url and "ticketId=" + ref.id in ref.url
    assert (t["queueID"], t["source"], t["status"], t["priority"]) == (29683354, 4, 1, 1)
    assert t["externalID"] == key[:50] and len(t["externalID"]) == 50
    sent = fake.calls("POST", "/ATServicesRest/V1.0/Tickets")[0].headers
    assert (sent["apiintegrationcode"], sent["username"], sent["secret"]) == (
        "INTEGRATION", "api@example.org", "s3cret")

    pub = await backend.create_comment(ref, CommentDraft("Customer says hi\nmore"), op_key="c")
    priv = await backend.create_comment(ref, CommentDraft("internal", public=False), op_key="d")
    notes = {str(n["id"]): n for n in fake.notes}
    assert (notes[pub]["publish"], notes[pub]["title"]) == (1, "Customer says hi")
    assert (notes[priv]["publish"], notes[priv]["description"]) == (
        2, "internal\n\n[mailticket ref m2t-d]")
    # A note whose answer was lost is found by its marker; a technician's is not ours.
    assert await backend.find_comment_by_op_key(ref, "d") == priv
    assert await backend.find_comment_by_op_key(ref, "e") is None
    tech = fake.technician_note(int(ref.id), "Called the customer back.")
    listed = {c.id: c for c in await backend.list_comments(ref)}
    assert (listed[pub].op_key, listed[priv].public) == ("m2t-c", False)
    assert listed[str(tech["id"])].op_key is None

    att = await backend.create_attachment(
        ref, AttachmentDraft("job.log", "text/plain", b"ERR 42"), public=False, op_key="a")
    (a,) = fake.attachments
    assert str(a["id"]) == att and a["parentID"] == int(ref.id)
    assert base64.b64decode(a["data"]) == b"ERR 42" and a["attachmentType"] == "FILE_ATTACHMENT"
    assert a["publish"] == 2

    assert (await backend.get_ticket(ref)).status is Normalized.open
    fake.set_status(int(ref.id), 7)
    got = await backend.get_ticket(ref)
    assert (got.status_raw, got.status) == ("7", Normalized.pending)


async def test_zone_lookup_cached_per_user(url: str, fake: FakeAutotask) -> None:
    one, two = AutotaskBackend("a", config(url)), AutotaskBackend("b", config(url))
    try:
        await one.test_connection()
        await two.create_ticket(DRAFT, op_key="k")
        await one.find_by_op_key("k")
        assert len(fake.calls("GET", "/atservicesrest/v1.0/zoneInformation")) == 1
        assert fake.calls("GET", "/atservicesrest/v1.0/zoneInformation")[0].query == (
            "user=api%40example.org")
    finally:
        await one.aclose()
        await two.aclose()


async def test_unknown_api_user_zone_lookup(url: str) -> None:
    b = AutotaskBackend("at", config(url, username="who@example.org"))
    try:
        with pytest.raises(AuthError, match="zone lookup failed for API user who@example.org"):
            await b.test_connection()
    finally:
        await b.aclose()


async def test_close_completes_without_time_entries(
    backend: AutotaskBackend, fake: FakeAutotask
) -> None:
    ref = await backend.create_ticket(DRAFT, op_key="k")
    got = await backend.close_ticket(ref, "Backup ran fine")
    assert got.status is Normalized.resolved and fake.tickets[int(ref.id)]["status"] == 5
    assert fake.tickets[int(ref.id)]["resolution"] == "Backup ran fine"
    assert fake.notes == []


async def test_close_with_time_entries_adds_internal_note(
    backend: AutotaskBackend, fake: FakeAutotask
) -> None:
    ref = await backend.create_ticket(DRAFT, op_key="k")
    other = await backend.create_ticket(DRAFT, op_key="k2")
    fake.add_time_entry(int(ref.id))
    got = await backend.patch_ticket(ref, TicketPatch(status="resolved"))
    assert got.status is Normalized.open and fake.tickets[int(ref.id)]["status"] == 1
    (note,) = fake.notes
    assert note["ticketID"] == int(ref.id) and note["publish"] == 2
    assert "time entries" in note["description"]
    assert "[mailticket ref m2t-close" in note["description"]  # ours: never mirrored back
    # The time entry of one ticket does not block another.
    assert (await backend.close_ticket(other)).status is Normalized.resolved


async def test_find_by_op_key(backend: AutotaskBackend) -> None:
    key = op_key("at", "m", "create")
    ref = await backend.create_ticket(DRAFT, op_key=key)
    await backend.create_ticket(DRAFT, op_key=op_key("at", "n", "create"))
    found = await backend.find_by_op_key(key)
    assert found is not None and (found.id, found.key) == (ref.id, ref.key)
    assert await backend.find_by_op_key("nothing") is None


async def test_reference_data(url: str, fake: FakeAutotask) -> None:
    b = AutotaskBackend("at", config(url))
    try:
        data = await b.refresh_reference_data()
        assert {k: len(v) for k, v in data.items()} == {
            "queues": 2, "sources": 3, "statuses": 4, "priorities": 4}
        assert data["queues"]["29683378"] == "Monitoring Alert"
        assert b.reference["queues"][29683378] == "Monitoring Alert"
        assert 8 not in b.reference["queues"]  # inactive
    finally:
        await b.aclose()
    bad = AutotaskBackend("at", config(url, queue_id=8))
    try:
        with pytest.raises(ValidationError, match="queue 8 is not an active"):
            await bad.refresh_reference_data()
    finally:
        await bad.aclose()


async def test_500_errors_are_mapped_by_message(url: str, fake: FakeAutotask) -> None:
    b = AutotaskBackend("at", config(url, queue_id=None))
    try:
        with pytest.raises(ValidationError, match="Missing Required Field: queueID") as info:
            await b.create_ticket(DRAFT, op_key="k")
        assert info.value.status == 500 and fake.tickets == {}
    finally:
        await b.aclose()
    wrong = AutotaskBackend("at", config(url, secret=SecretStr("nope")))
    try:
        with pytest.raises(AuthError, match="rejected API user api@example.org"):
            await wrong.test_connection()
        fake.auth_status = 401
        with pytest.raises(AuthError, match="Unauthorized"):
            await wrong.create_ticket(DRAFT, op_key="k")
    finally:
        await wrong.aclose()


async def test_missing_ticket_is_not_found(backend: AutotaskBackend) -> None:
    with pytest.raises(NotFound):
        await backend.get_ticket(RemoteRef("at", "424242"))


async def test_rate_limited(backend: AutotaskBackend, fake: FakeAutotask) -> None:
    await backend.test_connection()
    fake.fail_rate_limited(retry_after=60, body={"errors": ["Request rate exceeded"]})
    with pytest.raises(RateLimited, match="Request rate exceeded") as info:
        await backend.create_ticket(DRAFT, op_key="k")
    assert info.value.retry_after == 60
    fake.fail_next(errors("Internal Server Error", status=502))
    with pytest.raises(Transient):
        await backend.get_ticket(RemoteRef("at", "1"))
    # A 500 that reports a server fault is not mistaken for a validation error.
    fake.fail_next(errors("An unexpected error has occurred. Please try again."))
    with pytest.raises(AmbiguousResult):
        await backend.create_ticket(DRAFT, op_key="k")


async def test_polling_follows_next_page_url(backend: AutotaskBackend, fake: FakeAutotask) -> None:
    refs = [await backend.create_ticket(DRAFT, op_key=f"k{i}") for i in range(3)]
    mark = fake.clock
    fake.set_status(int(refs[0].id), 5)
    fake.set_status(int(refs[2].id), 8)
    page = await backend.query_tickets(updated_since=mark, limit=1)
    assert [t.ref.id for t in page.items] == [refs[0].id] and page.cursor
    assert page.items[0].status is Normalized.resolved
    page2 = await backend.query_tickets(updated_since=mark, cursor=page.cursor)
    assert [t.ref.id for t in page2.items] == [refs[2].id] and page2.cursor is None
    with pytest.raises(ValidationError, match="foreign page URL"):
        await backend.query_tickets(updated_since=None, cursor="https://evil.example/x")


async def test_patch_priority(backend: AutotaskBackend, fake: FakeAutotask) -> None:
    ref = await backend.create_ticket(DRAFT, op_key="k")
    got = await backend.patch_ticket(ref, TicketPatch(status="pending", priority="critical"))
    assert got.status is Normalized.pending and fake.tickets[int(ref.id)]["priority"] == 4


def _signed(payload: dict[str, object], secret: str = HOOK_SECRET) -> tuple[dict[str, str], bytes]:
    body = json.dumps(payload).encode()
    mac = hmac.new(secret.encode(), body, hashlib.sha1).digest()
    return {"X-Hook-Signature": "sha1=" + base64.b64encode(mac).decode()}, body


def test_webhook(backend: AutotaskBackend) -> None:
    payload = {"Action": "Update", "Guid": "g-1", "EntityType": "Ticket", "Id": 1001,
               "Fields": {"Status": 5}}
    event = backend.parse_webhook(*_signed(payload))
    assert (event.delivery_id, event.ticket_id, event.status_raw) == ("g-1", "1001", "5")
    headers, body = _signed(payload, "forged")
    with pytest.raises(WebhookSignatureError):
        backend.parse_webhook(headers, body)
    headers, body = _signed(payload)
    with pytest.raises(WebhookSignatureError):
        backend.parse_webhook(headers, body.replace(b"1001", b"1002"))


def test_throttle_hint() -> None:
    assert AutotaskBackend.requests_per_hour == 10_000
    assert AutotaskConfig.model_fields["max_requests_per_hour"].default == 10_000


async def test_dropped_create_is_ambiguous_then_found(
    backend: AutotaskBackend, fake: FakeAutotask
) -> None:
    key = op_key("at", "<lost@x>", "create")
    fake.drop_after("POST", "/ATServicesRest/V1.0/Tickets")
    with pytest.raises(AmbiguousResult):
        await backend.create_ticket(DRAFT, op_key=key)
    (tid,) = fake.tickets
    found = await backend.find_by_op_key(key)
    assert found is not None and found.id == str(tid)
