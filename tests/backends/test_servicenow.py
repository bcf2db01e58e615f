from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import UTC

import pytest
from pydantic import SecretStr

from mailticket.backends.base import (
    AttachmentDraft,
    CommentDraft,
    Normalized,
    TicketDraft,
    TicketPatch,
    op_key,
    op_marker,
)
from mailticket.backends.errors import (
    AmbiguousResult,
    AuthError,
    NotFound,
    RateLimited,
    Transient,
    Unsupported,
    ValidationError,
)
from mailticket.backends.servicenow import ServiceNowBackend, ServiceNowConfig
from tests.backends.fakes._server import serve
from tests.backends.fakes.servicenow import FakeServiceNow, failure


@pytest.fixture
def fake() -> FakeServiceNow:
    return FakeServiceNow()


@pytest.fixture
def url(fake: FakeServiceNow) -> Iterator[str]:
    with serve(fake.app) as base:
        yield base


def make(url: str, password: str = "pw") -> ServiceNowBackend:
    cfg = ServiceNowConfig(base_url=url, username="svc", password=SecretStr(password))
    return ServiceNowBackend("snow", cfg)


@pytest.fixture
async def backend(url: str) -> AsyncIterator[ServiceNowBackend]:
    b = make(url)
    yield b
    await b.aclose()


DRAFT = TicketDraft(subject="Printer on fire", text="It smokes.", priority="high",
                    custom_fields={"u_site": "HQ"})


async def test_full_cycle(backend: ServiceNowBackend, fake: FakeServiceNow) -> None:
    key = op_key("snow", "<m1@example.org>", "create")
    ref = await backend.create_ticket(DRAFT, op_key=key)
    rec = fake.incidents[ref.id]
    assert ref.key == "INC0010001" and ref.url and ref.id in ref.url
    assert rec["correlation_id"] == key and rec["correlation_display"] == "mailticket"
    assert rec["description"].startswith("It smokes.") and op_marker(key) in rec["description"]
    assert (rec["urgency"], rec["impact"], rec["contact_type"]) == ("1", "2", "email")
    assert rec["u_site"] == "HQ"  # remote field names from push_to_backend pass through

    public_id = await backend.create_comment(ref, CommentDraft("hello customer"), op_key="c1")
    internal_id = await backend.create_comment(
        ref, CommentDraft("agents only", public=False), op_key="c2"
    )
    by_id = {j["sys_id"]: j for j in fake.journal}
    assert by_id[public_id]["element"] == "comments"
    assert by_id[public_id]["value"] == "hello customer\n\n[mailticket ref m2t-c1]"
    assert by_id[internal_id]["element"] == "work_notes"
    assert by_id[internal_id]["value"] == "agents only\n\n[mailticket ref m2t-c2]"
    assert await backend.find_comment_by_op_key(ref, "c2") == internal_id
    assert await backend.find_comment_by_op_key(ref, "c3") is None

    agent = fake.agent_note(ref.id, "rebooted the printer")
    listed = await backend.list_comments(ref)
    # Ours by the marker we wrote, not by the user name (an agent may share it).
    assert [(c.id, c.public, c.op_key) for c in listed] == [
        (public_id, True, "m2t-c1"), (internal_id, False, "m2t-c2"), (agent, False, None)]
    assert listed[-1].author == "beth.anglin" and listed[-1].text == "rebooted the printer"

    att_id = await backend.create_attachment(
        ref, AttachmentDraft("log.txt", "text/plain", b"line1\n"), public=True, op_key="a1"
    )
    (att,) = fake.attachments
    assert att["sys_id"] == att_id and att["table_sys_id"] == ref.id
    assert att["data"] == b"line1\n" and att["content_type"] == "text/plain"

    got = await backend.get_ticket(ref)
    assert (got.status_raw, got.status) == ("1", Normalized.open)

    fake.set_state(ref.id, "3")
    got = await backend.get_ticket(ref)
    assert (got.status_raw, got.status) == ("3", Normalized.pending)
    assert got.updated_at is not None and got.updated_at.tzinfo is UTC


async def test_find_by_op_key(backend: ServiceNowBackend) -> None:
    ref = await backend.create_ticket(DRAFT, op_key="k-1")
    await backend.create_ticket(DRAFT, op_key="k-2")
    found = await backend.find_by_op_key("k-1")
    assert found is not None and found.id == ref.id and found.key == ref.key
    assert await backend.find_by_op_key("k-3") is None


async def test_close_sends_close_code_and_notes(
    backend: ServiceNowBackend, fake: FakeServiceNow
) -> None:
    ref = await backend.create_ticket(DRAFT, op_key="k")
    got = await backend.close_ticket(ref, "replaced the fuser")
    rec = fake.incidents[ref.id]
    assert rec["state"] == "6" and rec["close_notes"] == "replaced the fuser"
    assert rec["close_code"] == "Solved (Permanently)"
    assert got.status is Normalized.resolved
    fake.set_state(ref.id, "7")
    assert (await backend.get_ticket(ref)).status is Normalized.closed
    fake.set_state(ref.id, "8")
    assert (await backend.get_ticket(ref)).status is Normalized.canceled


async def test_data_policy_403_is_validation_not_auth(backend: ServiceNowBackend) -> None:
    ref = await backend.create_ticket(DRAFT, op_key="k")
    with pytest.raises(ValidationError, match="Data Policy Exception"):
        await backend._patch(ref, {"state": "6"})


async def test_patch_status_and_unknown_status(
    backend: ServiceNowBackend, fake: FakeServiceNow
) -> None:
    ref = await backend.create_ticket(DRAFT, op_key="k")
    got = await backend.patch_ticket(ref, TicketPatch(status="pending", priority="low"))
    assert got.status is Normalized.pending
    assert (fake.incidents[ref.id]["urgency"], fake.incidents[ref.id]["impact"]) == ("3", "3")
    fake.set_state(ref.id, "42")
    assert (await backend.get_ticket(ref)).status is Normalized.unknown


async def test_status_map_override(url: str, fake: FakeServiceNow) -> None:
    cfg = ServiceNowConfig(base_url=url, username="svc", password=SecretStr("pw"),
                           status_map={"42": "pending"})
    b = ServiceNowBackend("snow", cfg)
    try:
        ref = await b.create_ticket(DRAFT, op_key="k")
        fake.set_state(ref.id, "42")
        assert (await b.get_ticket(ref)).status is Normalized.pending
    finally:
        await b.aclose()


async def test_polling_pages_and_since(backend: ServiceNowBackend, fake: FakeServiceNow) -> None:
    refs = [await backend.create_ticket(DRAFT, op_key=f"k{i}") for i in range(3)]
    fake.incidents["foreign"] = {"sys_id": "foreign", "number": "INC9", "state": "1",
                                 "sys_updated_on": "2027-01-01 00:00:00"}
    mark = fake.clock.replace(tzinfo=UTC)
    fake.set_state(refs[0].id, "6")
    fake.set_state(refs[2].id, "2")
    page = await backend.query_tickets(updated_since=mark, limit=1)
    assert [t.ref.id for t in page.items] == [refs[0].id] and page.cursor == "1"
    assert page.items[0].status is Normalized.resolved
    page2 = await backend.query_tickets(updated_since=mark, cursor=page.cursor, limit=1)
    assert [t.ref.id for t in page2.items] == [refs[2].id] and page2.cursor is None
    everything = await backend.query_tickets(updated_since=None)
    assert len(everything.items) == 3  # the incident not created by us is left out


async def test_bad_credentials(url: str) -> None:
    b = make(url, password="wrong")
    try:
        with pytest.raises(AuthError, match="rejected svc.*User Not Authenticated") as info:
            await b.test_connection()
        assert info.value.status == 401
    finally:
        await b.aclose()


async def test_test_connection_ok(backend: ServiceNowBackend) -> None:
    assert "readable" in await backend.test_connection()


async def test_rate_limited(backend: ServiceNowBackend, fake: FakeServiceNow) -> None:
    fake.fail_next(failure(429, "Too Many Requests", "rate rule"), 1)
    fake.fail_rate_limited(retry_after=12)
    with pytest.raises(RateLimited):
        await backend.create_ticket(DRAFT, op_key="k")
    with pytest.raises(RateLimited) as info:
        await backend.create_ticket(DRAFT, op_key="k")
    assert info.value.retry_after == 12
    assert fake.incidents == {}


async def test_5xx_is_transient_and_404_not_found(
    backend: ServiceNowBackend, fake: FakeServiceNow
) -> None:
    ref = await backend.create_ticket(DRAFT, op_key="k")
    fake.fail_next(failure(503, "Service Unavailable"))
    with pytest.raises(Transient):
        await backend.get_ticket(ref)
    del fake.incidents[ref.id]
    with pytest.raises(NotFound, match="No Record found"):
        await backend.get_ticket(ref)


def test_no_webhooks(backend: ServiceNowBackend) -> None:
    with pytest.raises(Unsupported):
        backend.parse_webhook({}, b"{}")


async def test_api_key_auth(url: str, fake: FakeServiceNow) -> None:
    b = ServiceNowBackend("snow", ServiceNowConfig(base_url=url, api_key=SecretStr("k")))
    try:
        with pytest.raises(AuthError):
            await b.test_connection()
        assert fake.seen[-1].headers["x-sn-apikey"] == "k"
    finally:
        await b.aclose()


async def test_dropped_create_is_ambiguous_then_found(
    backend: ServiceNowBackend, fake: FakeServiceNow
) -> None:
    fake.drop_after("POST", "/api/now/table/incident")
    with pytest.raises(AmbiguousResult):
        await backend.create_ticket(DRAFT, op_key="lost-answer")
    (rec,) = fake.incidents.values()  # it did happen on the far side
    found = await backend.find_by_op_key("lost-answer")
    assert found is not None and found.id == rec["sys_id"]
