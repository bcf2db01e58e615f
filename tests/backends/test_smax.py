from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime

import pytest
from pydantic import SecretStr
from starlette.responses import JSONResponse

from mailticket.backends.base import (
    AttachmentDraft,
    CommentDraft,
    Normalized,
    RemoteRef,
    TicketDraft,
    TicketPatch,
    op_key,
    op_marker,
)
from mailticket.backends.errors import (
    AmbiguousResult,
    AuthError,
    Conflict,
    NotFound,
    RateLimited,
    Unsupported,
    ValidationError,
)
from mailticket.backends.smax import SmaxBackend, SmaxConfig
from tests.backends.fakes._server import serve
from tests.backends.fakes.smax import TENANT, FakeSmax


@pytest.fixture
def fake() -> FakeSmax:
    return FakeSmax()


@pytest.fixture
def url(fake: FakeSmax) -> Iterator[str]:
    with serve(fake.app) as base:
        yield base


def config(url: str, **over: object) -> SmaxConfig:
    values: dict[str, object] = {"base_url": url, "tenant_id": TENANT, "login": "integration",
                                 "password": SecretStr("pw"), "requested_by_person": "10016",
                                 "submitter_user_id": "10016"}
    values.update(over)
    return SmaxConfig.model_validate(values)


@pytest.fixture
async def backend(url: str) -> AsyncIterator[SmaxBackend]:
    b = SmaxBackend("smax", config(url))
    yield b
    await b.aclose()


DRAFT = TicketDraft(subject="Laptop broken", text="Screen\nflickers", priority="high")


async def test_full_cycle(backend: SmaxBackend, fake: FakeSmax) -> None:
    key = op_key("smax", "<m@x>", "create")
    ref = await backend.create_ticket(DRAFT, op_key=key)
    rec = fake.requests[ref.id]
    assert rec["ExternalProcessReference"] == key and rec["RequestedByPerson"] == "10016"
    assert (rec["Priority"], rec["Description"]) == (
        "HighPriority", f"<p>Screen<br>flickers</p><p>[mailticket ref {op_marker(key)}]</p>")
    assert ref.url and ref.id in ref.url

    pub = await backend.create_comment(ref, CommentDraft("Hello"), op_key="c1")
    priv = await backend.create_comment(ref, CommentDraft("note", public=False), op_key="c2")
    by_id = {c["Id"]: c for c in fake.comments}
    assert (by_id[pub]["PrivacyType"], by_id[pub]["Body"]) == (
        "PUBLIC", "<p>Hello</p><p>[mailticket ref m2t-c1]</p>")
    assert by_id[priv]["PrivacyType"] == "INTERNAL" and by_id[priv]["EntityId"] == ref.id
    assert by_id[pub]["Submitter"] == {"UserId": "10016"}
    assert await backend.find_comment_by_op_key(ref, "c2") == priv
    assert await backend.find_comment_by_op_key(ref, "c3") is None
    agent = fake.agent_comment(ref.id, "Ordered a screen")
    listed = {c.id: c.op_key for c in await backend.list_comments(ref)}
    assert listed == {pub: "m2t-c1", priv: "m2t-c2", agent["Id"]: None}

    g1 = await backend.create_attachment(
        ref, AttachmentDraft("a.txt", "text/plain", b"one"), public=True, op_key="a1")
    g2 = await backend.create_attachment(
        ref, AttachmentDraft("b.png", "image/png", b"two!"), public=True, op_key="a2")
    atts = fake.attachments_of(ref.id)
    assert [(a["id"], a["file_name"], a["file_extension"], a["size"]) for a in atts] == [
        (g1, "a.txt", "txt", 3), (g2, "b.png", "png", 4)]  # merged, not replaced
    assert fake.uploads[g2]["data"] == b"two!"

    assert (await backend.get_ticket(ref)).status is Normalized.open
    fake.set_phase(ref.id, "Fulfill", "RequestStatusPendingVendor")
    got = await backend.get_ticket(ref)
    assert (got.status_raw, got.status) == ("Fulfill", Normalized.pending)
    fake.set_phase(ref.id, "Abandon")
    assert (await backend.get_ticket(ref)).status is Normalized.canceled


async def test_completion_status_failed(url: str, fake: FakeSmax) -> None:
    b = SmaxBackend("smax", config(url, requested_by_person="424242"))
    try:
        with pytest.raises(ValidationError,
                           match="CREATE FAILED: Invalid value for RequestedByPerson") as info:
            await b.create_ticket(DRAFT, op_key="k")
        assert info.value.status == 200 and fake.requests == {}
    finally:
        await b.aclose()


async def test_requester_maps_to_a_person(url: str, fake: FakeSmax) -> None:
    carol = TicketDraft(subject="s", text="t", requester_email="carol@example.com")
    stranger = TicketDraft(subject="s", text="t", requester_email="new@example.org",
                           requester_name="New Person")
    plain = SmaxBackend("smax", config(url, requested_by_person=None))
    create = SmaxBackend("smax", config(url, create_requester=True))
    try:
        ref = await plain.create_ticket(carol, op_key="k1")
        assert fake.requests[ref.id]["RequestedByPerson"] == "10020"
        with pytest.raises(ValidationError, match="needs a RequestedByPerson"):
            await plain.create_ticket(stranger, op_key="k2")
        ref = await create.create_ticket(stranger, op_key="k3")
        person = fake.persons[fake.requests[ref.id]["RequestedByPerson"]]
        assert (person["Email"], person["Name"]) == ("new@example.org", "New Person")
    finally:
        await plain.aclose()
        await create.aclose()


async def test_stale_last_update_time_is_conflict(backend: SmaxBackend, fake: FakeSmax) -> None:
    ref = await backend.create_ticket(DRAFT, op_key="k")
    with pytest.raises(Conflict, match="modified by another user"):
        await backend._bulk("UPDATE", {"Id": ref.id, "LastUpdateTime": 1, "Priority": "x"})


async def test_relogin_once_on_401(backend: SmaxBackend, fake: FakeSmax) -> None:
    ref = await backend.create_ticket(DRAFT, op_key="k")
    assert backend.logins == 1
    fake.expire_tokens()
    assert (await backend.get_ticket(ref)).ref.id == ref.id
    assert backend.logins == 2
    assert fake.calls("GET", f"/rest/{TENANT}/ems/Request/")[-1].headers["cookie"].startswith(
        "LWSSO_COOKIE_KEY=")
    assert len(fake.calls("POST", "/auth/authentication-endpoint/authenticate/login")) == 2
    # A 401 that survives a fresh sign-in is not retried forever.
    fake.fail_next(JSONResponse({"message": "Unauthorized"}, 401), times=2,
                   path_prefix=f"/rest/{TENANT}/")
    with pytest.raises(AuthError):
        await backend.get_ticket(ref)
    assert backend.logins == 3
    assert (await backend.get_ticket(ref)).ref.id == ref.id

async def test_token_mode_cookie(url: str, fake: FakeSmax) -> None:
    b = SmaxBackend("smax", config(url, auth_mode="token"))
    try:
        await b.test_connection()
        assert fake.calls("GET", f"/rest/{TENANT}/ems/Request")[-1].headers["cookie"].startswith(
            "SMAX_AUTH_TOKEN=")
        assert fake.calls("POST", "/auth/authentication-endpoint/authenticate/token")
    finally:
        await b.aclose()


async def test_find_by_op_key(backend: SmaxBackend) -> None:
    ref = await backend.create_ticket(DRAFT, op_key="a" * 64)
    await backend.create_ticket(DRAFT, op_key="b" * 64)
    assert await backend.find_by_op_key("a" * 64) == ref
    assert await backend.find_by_op_key("c" * 64) is None
    assert await backend.find_by_op_key("x' or '1'='1") is None


async def test_close_and_patch(backend: SmaxBackend, fake: FakeSmax) -> None:
    ref = await backend.create_ticket(DRAFT, op_key="k")
    got = await backend.patch_ticket(ref, TicketPatch(priority="low"))
    assert fake.requests[ref.id]["Priority"] == "LowPriority" and got.status is Normalized.open
    got = await backend.close_ticket(ref, "new screen")
    rec = fake.requests[ref.id]
    assert (rec["PhaseId"], rec["Status"], rec["CompletionCode"]) == (
        "Close", "RequestStatusComplete", "CompletionCodeFulfilled")
    assert rec["Solution"] == "<p>new screen</p>" and got.status is Normalized.closed
    with pytest.raises(NotFound):
        await backend.get_ticket(RemoteRef("smax", "1"))


async def test_polling_last_update_time(backend: SmaxBackend, fake: FakeSmax) -> None:
    refs = [await backend.create_ticket(DRAFT, op_key=f"k{i}") for i in range(3)]
    mark = datetime.fromtimestamp(fake.clock_ms / 1000, UTC)
    fake.set_phase(refs[2].id, "Review")
    fake.set_phase(refs[0].id, "Close")
    page = await backend.query_tickets(updated_since=mark, limit=1)
    assert [t.ref.id for t in page.items] == [refs[2].id] and page.cursor == "1"
    assert page.items[0].status is Normalized.resolved
    page2 = await backend.query_tickets(updated_since=mark, cursor=page.cursor, limit=1)
    assert [(t.ref.id, t.status) for t in page2.items] == [(refs[0].id, Normalized.closed)]
    assert page2.cursor is None
    assert page2.items[0].updated_at == datetime.fromtimestamp(fake.clock_ms / 1000, UTC)


async def test_bad_credentials(url: str) -> None:
    b = SmaxBackend("smax", config(url, password=SecretStr("nope")))
    try:
        with pytest.raises(AuthError, match="sign-in refused for integration on tenant"):
            await b.test_connection()
    finally:
        await b.aclose()


async def test_rate_limited(backend: SmaxBackend, fake: FakeSmax) -> None:
    await backend.test_connection()
    fake.fail_rate_limited(retry_after=5)
    with pytest.raises(RateLimited) as info:
        await backend.create_ticket(DRAFT, op_key="k")
    assert info.value.retry_after == 5


def test_no_webhooks(backend: SmaxBackend) -> None:
    with pytest.raises(Unsupported):
        backend.parse_webhook({}, b"")


async def test_dropped_create_is_ambiguous_then_found(backend: SmaxBackend, fake: FakeSmax) -> None:
    await backend.test_connection()
    fake.drop_after("POST", f"/rest/{TENANT}/ems/bulk")
    with pytest.raises(AmbiguousResult):
        await backend.create_ticket(DRAFT, op_key="d" * 64)
    (rid,) = fake.requests
    found = await backend.find_by_op_key("d" * 64)
    assert found is not None and found.id == rid
