from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

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
    NotFound,
    RateLimited,
    Transient,
    Unsupported,
    ValidationError,
)
from mailticket.backends.freshdesk import FreshdeskBackend, FreshdeskConfig
from tests.backends.fakes._server import serve
from tests.backends.fakes.freshdesk import FakeFreshdesk


@pytest.fixture
def fake() -> FakeFreshdesk:
    return FakeFreshdesk(custom_fields=frozenset({"cf_mailticket_ref", "cf_site"}))


@pytest.fixture
def url(fake: FakeFreshdesk) -> Iterator[str]:
    with serve(fake.app) as base:
        yield base


def config(url: str, **over: object) -> FreshdeskConfig:
    values: dict[str, object] = {"base_url": url, "api_key": SecretStr("fdkey"),
                                 "op_key_field": "cf_mailticket_ref",
                                 "custom_field_mappings": {"site": "cf_site"}}
    values.update(over)
    return FreshdeskConfig.model_validate(values)


@pytest.fixture
async def backend(url: str) -> AsyncIterator[FreshdeskBackend]:
    b = FreshdeskBackend("fd", config(url))
    yield b
    await b.aclose()


DRAFT = TicketDraft(subject="Invoice wrong", text="Line 2 <b>doubled</b>",
                    requester_email="c@example.org", priority="low", tags=("billing",),
                    custom_fields={"site": "HQ"})


async def test_full_cycle(backend: FreshdeskBackend, fake: FakeFreshdesk) -> None:
    key = op_key("fd", "<m@x>", "create")
    ref = await backend.create_ticket(DRAFT, op_key=key)
    t = fake.tickets[int(ref.id)]
    # An unknown address: Freshdesk makes the contact (create_requester, the default).
    assert (t["email"], t["status"], t["priority"], t["source"]) == ("c@example.org", 2, 1, 1)
    assert t["custom_fields"] == {"cf_mailticket_ref": key, "cf_site": "HQ"}
    assert t["description"] == (f"<div>Line 2 &lt;b&gt;doubled&lt;/b&gt;</div>"
                                f"<p>[mailticket ref {op_marker(key)}]</p>")
    assert t["tags"] == ["billing", op_marker(key)]
    assert ref.url and ref.url.endswith(f"/a/tickets/{ref.id}")

    pub = await backend.create_comment(ref, CommentDraft("public words"), op_key="c1")
    priv = await backend.create_comment(ref, CommentDraft("private words", public=False),
                                        op_key="c2")
    att = await backend.create_attachment(
        ref, AttachmentDraft("scan.pdf", "application/pdf", b"%PDF-1.4"), public=False,
        op_key="a")
    convo = {str(c["id"]): c for c in fake.conversations[int(ref.id)]}
    assert (convo[pub]["kind"], convo[pub]["private"]) == ("note", False)
    assert (convo[priv]["kind"], convo[priv]["private"]) == ("note", True)
    (note,) = [c for c in convo.values() if c["attachments"]]
    (a,) = note["attachments"]
    assert str(a["id"]) == att and a["name"] == "scan.pdf" and a["data"] == b"%PDF-1.4"
    assert a["content_type"] == "application/pdf" and note["private"] is True

    agent = fake.agent_note(int(ref.id), "called the customer")
    listed = await backend.list_comments(ref)
    # Ours by the marker we wrote; the agent's has none.
    assert [(c.id, c.public, c.op_key) for c in listed] == [
        (pub, True, "m2t-c1"), (priv, False, "m2t-c2"), (str(note["id"]), False, "m2t-a"),
        (str(agent["id"]), False, None)]
    assert await backend.find_comment_by_op_key(ref, "c2") == priv
    assert await backend.find_comment_by_op_key(ref, "c3") is None

    assert (await backend.get_ticket(ref)).status is Normalized.open
    fake.set_status(int(ref.id), 3)
    got = await backend.get_ticket(ref)
    assert (got.status_raw, got.status) == ("3", Normalized.pending)


async def test_public_as_reply(url: str, fake: FakeFreshdesk) -> None:
    b = FreshdeskBackend("fd", config(url, public_as="reply"))
    try:
        ref = await b.create_ticket(DRAFT, op_key="k")
        cid = await b.create_comment(ref, CommentDraft("mailed to the customer"), op_key="c")
        (entry,) = fake.conversations[int(ref.id)]
        assert str(entry["id"]) == cid and entry["kind"] == "reply"
        assert len(fake.calls("POST", f"/api/v2/tickets/{ref.id}/reply")) == 1
    finally:
        await b.aclose()


async def test_find_by_op_key(backend: FreshdeskBackend, fake: FakeFreshdesk) -> None:
    key = op_key("fd", "m", "create")
    ref = await backend.create_ticket(DRAFT, op_key=key)
    await backend.create_ticket(DRAFT, op_key=op_key("fd", "n", "create"))
    assert await backend.find_by_op_key(key) == ref
    assert await backend.find_by_op_key("0" * 64) is None
    assert fake.calls("GET", "/api/v2/search/tickets")[0].query.startswith(
        "query=%22mailticket_ref%3A%27")


async def test_stock_helpdesk_finds_by_tag_and_maps_the_requester(url: str,
                                                                    fake: FakeFreshdesk) -> None:
    fake.custom_fields.clear()  # a stock helpdesk: no custom field at all
    b = FreshdeskBackend("fd", config(url, op_key_field=None, custom_field_mappings={},
                                      create_requester=False, default_requester_id=None))
    try:
        key = op_key("fd", "m", "create")
        draft = TicketDraft(subject="s", text="t", requester_email="carol@example.com",
                            local_number="TKT-20260101-001")
        ref = await b.create_ticket(draft, op_key=key)
        t = fake.tickets[int(ref.id)]
        assert t["requester_id"] == 4401 and "email" not in t  # the existing contact
        assert t["tags"] == [op_marker(key), "TKT-20260101-001"]
        assert "TKT-20260101-001" in t["description"]
        assert await b.find_by_op_key(key) == ref
        assert await b.find_by_op_key(op_key("fd", "x", "create")) is None
        stranger = TicketDraft(subject="s", text="t", requester_email="who@example.org")
        with pytest.raises(ValidationError, match="needs a requester"):
            await b.create_ticket(stranger, op_key="k2")
    finally:
        await b.aclose()


async def test_close_and_status_numbers(backend: FreshdeskBackend, fake: FakeFreshdesk) -> None:
    ref = await backend.create_ticket(DRAFT, op_key="k")
    got = await backend.close_ticket(ref, "credited")
    assert (got.status_raw, got.status) == ("4", Normalized.resolved)
    assert fake.conversations[int(ref.id)][-1]["private"] is True
    fake.set_status(int(ref.id), 5)
    assert (await backend.get_ticket(ref)).status is Normalized.closed
    got = await backend.patch_ticket(ref, TicketPatch(status="open", priority="critical",
                                                      fields={"site": "Branch"}))
    assert got.status is Normalized.open
    assert fake.tickets[int(ref.id)]["priority"] == 4
    assert fake.tickets[int(ref.id)]["custom_fields"]["cf_site"] == "Branch"


async def test_validation_error_shape(backend: FreshdeskBackend) -> None:
    with pytest.raises(ValidationError, match="Validation failed; subject: It should be"):
        await backend.create_ticket(TicketDraft(subject="", text="x",
                                                requester_email="c@example.org"), op_key="k")
    with pytest.raises(ValidationError, match="needs a requester"):
        await backend.create_ticket(TicketDraft(subject="s", text="x"), op_key="k")
    with pytest.raises(NotFound):
        await backend.get_ticket(RemoteRef("fd", "99999"))


async def test_polling(backend: FreshdeskBackend, fake: FakeFreshdesk) -> None:
    refs = [await backend.create_ticket(DRAFT, op_key=f"k{i}") for i in range(3)]
    fake.clock = fake.clock.replace(hour=9)
    mark = fake.clock
    fake.set_status(int(refs[1].id), 4)
    fake.set_status(int(refs[0].id), 5)
    page = await backend.query_tickets(updated_since=mark, limit=1)
    assert [t.ref.id for t in page.items] == [refs[1].id] and page.cursor == "2"
    page2 = await backend.query_tickets(updated_since=mark, cursor=page.cursor, limit=1)
    assert [(t.ref.id, t.status) for t in page2.items] == [(refs[0].id, Normalized.closed)]
    assert page2.cursor is None


async def test_bad_credentials(url: str) -> None:
    b = FreshdeskBackend("fd", config(url, api_key=SecretStr("wrong")))
    try:
        with pytest.raises(AuthError, match="rejected the API key.*logged in") as info:
            await b.test_connection()
        assert info.value.status == 401
    finally:
        await b.aclose()


async def test_connection_ok(backend: FreshdeskBackend) -> None:
    assert "agent@example.org" in await backend.test_connection()


async def test_rate_limit_and_5xx(backend: FreshdeskBackend, fake: FakeFreshdesk) -> None:
    fake.fail_next(JSONResponse({"message": "You have exceeded the limit of requests per hour"},
                                429, {"Retry-After": "41", "X-RateLimit-Total": "700",
                                      "X-RateLimit-Remaining": "0"}))
    with pytest.raises(RateLimited, match="exceeded the limit") as info:
        await backend.get_ticket(RemoteRef("fd", "1"))
    assert info.value.retry_after == 41
    fake.fail_next(JSONResponse({"code": "internal_error"}, 500))
    with pytest.raises(Transient):
        await backend.get_ticket(RemoteRef("fd", "1"))


def test_unsigned_webhooks_unsupported(backend: FreshdeskBackend) -> None:
    with pytest.raises(Unsupported):
        backend.parse_webhook({}, b"{}")


async def test_dropped_create_is_ambiguous_then_found(
    backend: FreshdeskBackend, fake: FakeFreshdesk
) -> None:
    key = op_key("fd", "<lost@x>", "create")
    fake.drop_after("POST", "/api/v2/tickets")
    with pytest.raises(AmbiguousResult):
        await backend.create_ticket(DRAFT, op_key=key)
    (tid,) = fake.tickets
    found = await backend.find_by_op_key(key)
    assert found is not None and found.id == str(tid)
