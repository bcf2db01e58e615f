from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Iterator

import pytest
from pydantic import SecretStr
from starlette.responses import PlainTextResponse

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
    Conflict,
    NotFound,
    Transient,
    Unsupported,
    ValidationError,
)
from mailticket.backends.itop import ITopBackend, ITopConfig
from tests.backends.fakes._server import serve
from tests.backends.fakes.itop import FakeITop


@pytest.fixture
def fake() -> FakeITop:
    # op_key_field names a field an admin added; stock UserRequest has none.
    return FakeITop(added_fields=("external_ref",))


@pytest.fixture
def url(fake: FakeITop) -> Iterator[str]:
    with serve(fake.app) as base:
        yield base


def config(url: str, **over: object) -> ITopConfig:
    values: dict[str, object] = {
        "base_url": url, "auth_user": "rest", "auth_pwd": SecretStr("pw"), "org_id": "3",
        "op_key_field": "external_ref", "team_id": "5", "agent_id": "9",
    }
    values.update(over)
    return ITopConfig.model_validate(values)


@pytest.fixture
async def backend(url: str) -> AsyncIterator[ITopBackend]:
    b = ITopBackend("itop", config(url))
    yield b
    await b.aclose()


DRAFT = TicketDraft(subject="Mail quota", text="Mailbox <full>\nplease help", priority="high")


async def test_full_cycle(backend: ITopBackend, fake: FakeITop) -> None:
    key = op_key("itop", "<m@x>", "create")
    ref = await backend.create_ticket(DRAFT, op_key=key)
    rec = fake.objects["UserRequest"][int(ref.id)]
    assert ref.key == "R-000001" and ref.url and f"id={ref.id}" in ref.url
    assert rec["external_ref"] == key and rec["org_id"] == "3" and rec["urgency"] == "2"
    assert rec["description"] == "<p>Mailbox &lt;full&gt;<br>please help</p>"
    assert set(fake.comments_seen) == {"mailticket"}

    pub = await backend.create_comment(ref, CommentDraft("visible"), op_key="c1")
    priv = await backend.create_comment(ref, CommentDraft("hidden", public=False), op_key="c2")
    pub2 = await backend.create_comment(ref, CommentDraft("again"), op_key="c3")
    assert (pub, priv, pub2) == ("public_log:0", "private_log:0", "public_log:1")
    assert [e["message"] for e in rec["public_log"]["entries"]] == ["visible", "again"]
    assert [e["message"] for e in rec["private_log"]["entries"]] == ["hidden"]

    att = await backend.create_attachment(
        ref, AttachmentDraft("q.png", "image/png", b"\x89PNG"), public=True, op_key="a")
    a = fake.objects["Attachment"][int(att)]
    assert (a["item_class"], a["item_id"], a["item_org_id"]) == ("UserRequest", ref.id, "3")
    assert base64.b64decode(a["contents"]["data"]) == b"\x89PNG"
    assert a["contents"]["mimetype"] == "image/png"

    assert (await backend.get_ticket(ref)).status is Normalized.open
    fake.set_status(int(ref.id), "pending")
    got = await backend.get_ticket(ref)
    assert (got.status_raw, got.status) == ("pending", Normalized.pending)

    fake.add_log(int(ref.id), "public_log", "answer from the partner", who="partner")
    mirrored = await backend.list_comments(ref)
    assert [(c.text, c.public, c.author, c.op_key) for c in mirrored][-2:] == [
        ("answer from the partner", True, "partner", None), ("hidden", False, "rest", "ours")]


async def test_find_by_op_key(backend: ITopBackend) -> None:
    ref = await backend.create_ticket(DRAFT, op_key="a" * 64)
    await backend.create_ticket(DRAFT, op_key="b" * 64)
    found = await backend.find_by_op_key("a" * 64)
    assert found is not None and (found.id, found.key) == (ref.id, ref.key)
    assert await backend.find_by_op_key("c" * 64) is None
    assert await backend.find_by_op_key("x' OR 1=1 --") is None  # never spliced into OQL


async def test_no_op_key_field_means_cannot_tell(url: str) -> None:
    b = ITopBackend("itop", config(url, op_key_field=None))
    try:
        await b.create_ticket(DRAFT, op_key="k")
        assert await b.find_by_op_key("k") is None
    finally:
        await b.aclose()


async def test_close_assigns_then_resolves(backend: ITopBackend, fake: FakeITop) -> None:
    ref = await backend.create_ticket(DRAFT, op_key="k")
    got = await backend.close_ticket(ref, "quota raised")
    rec = fake.objects["UserRequest"][int(ref.id)]
    assert got.status is Normalized.resolved
    assert (rec["team_id"], rec["agent_id"], rec["solution"]) == ("5", "9", "quota raised")
    # Resolving again is a no-op instead of an invalid stimulus.
    assert (await backend.close_ticket(ref)).status is Normalized.resolved


async def test_always_200_error_codes(url: str, fake: FakeITop) -> None:
    bare = ITopBackend("itop", config(url, team_id=None, agent_id=None))
    try:
        ref = await bare.create_ticket(DRAFT, op_key="k")
        with pytest.raises(Conflict, match="iTop code 100: Invalid stimulus: 'ev_resolve'"):
            await bare.close_ticket(ref)
        with pytest.raises(ValidationError, match="Missing mandatory attribute.*org_id"):
            await bare._op("core/create", **{"class": "UserRequest"},
                           fields={"title": "t", "description": "d"})
        with pytest.raises(ValidationError, match="iTop code 11"):
            await bare._op("core/delete_everything")
        with pytest.raises(NotFound):
            await bare.get_ticket(RemoteRef("itop", "999"))
        with pytest.raises(NotFound, match="No item found"):
            await bare.create_comment(RemoteRef("itop", "999"), CommentDraft("x"), op_key="c")
    finally:
        await bare.aclose()
    assert all(s.path == "/webservices/rest.php" for s in fake.seen)
    # The unknown operation was sent on purpose.
    assert [p.message for p in fake.take_breaches()] == [
        "body: 'core/delete_everything' is not one of ['list_operations', 'core/create', "
        "'core/get', 'core/update', 'core/apply_stimulus', 'core/delete', 'core/get_related', "
        "'core/check_credentials'] (at json_data/operation)"]


async def test_stimulus_missing_solution_is_validation(backend: ITopBackend, fake: FakeITop) -> None:
    ref = await backend.create_ticket(DRAFT, op_key="k")
    await backend._stimulus(ref, "ev_assign", {"team_id": "5", "agent_id": "9"})
    with pytest.raises(ValidationError, match="stimulus: solution"):
        await backend._stimulus(ref, "ev_resolve", {})


async def test_patch_pending_and_priority(backend: ITopBackend, fake: FakeITop) -> None:
    ref = await backend.create_ticket(DRAFT, op_key="k")
    await backend._stimulus(ref, "ev_assign", {"team_id": "5", "agent_id": "9"})
    got = await backend.patch_ticket(ref, TicketPatch(status="pending", priority="low"))
    assert got.status is Normalized.pending
    assert fake.objects["UserRequest"][int(ref.id)]["urgency"] == "4"


async def test_bad_credentials(url: str) -> None:
    b = ITopBackend("itop", config(url, auth_pwd=SecretStr("wrong")))
    try:
        with pytest.raises(AuthError, match="rejected rest.*iTop code 1: Error: Invalid login"):
            await b.test_connection()
    finally:
        await b.aclose()


async def test_token_auth(url: str) -> None:
    b = ITopBackend("itop", config(url, auth_user=None, auth_pwd=None,
                                   auth_token=SecretStr("tok")))
    try:
        assert "reachable" in await b.test_connection()
    finally:
        await b.aclose()


async def test_proxy_errors(backend: ITopBackend, fake: FakeITop) -> None:
    ref = await backend.create_ticket(DRAFT, op_key="k")
    fake.fail_next(PlainTextResponse("Bad Gateway", 502))
    with pytest.raises(Transient) as info:
        await backend.get_ticket(ref)
    assert not isinstance(info.value, AmbiguousResult)
    fake.fail_next(PlainTextResponse("Bad Gateway", 502))
    with pytest.raises(AmbiguousResult):
        await backend.create_ticket(DRAFT, op_key="k2")


async def test_polling_last_update(backend: ITopBackend, fake: FakeITop) -> None:
    refs = [await backend.create_ticket(DRAFT, op_key=f"k{i}") for i in range(3)]
    mark = fake.clock
    fake.set_status(int(refs[2].id), "resolved")
    fake.set_status(int(refs[0].id), "closed")
    page = await backend.query_tickets(updated_since=mark, limit=1)
    assert len(page.items) == 1 and page.cursor == "2"
    page2 = await backend.query_tickets(updated_since=mark, cursor=page.cursor, limit=1)
    page3 = await backend.query_tickets(updated_since=mark, cursor=page2.cursor, limit=1)
    assert page3.items == [] and page3.cursor is None
    seen = {t.ref.id: t.status for t in page.items + page2.items}
    assert seen == {refs[2].id: Normalized.resolved, refs[0].id: Normalized.closed}


def test_no_webhooks(backend: ITopBackend) -> None:
    with pytest.raises(Unsupported):
        backend.parse_webhook({}, b"")


async def test_dropped_create_is_ambiguous_then_found(backend: ITopBackend, fake: FakeITop) -> None:
    fake.drop_after("POST", "/webservices/rest.php")
    with pytest.raises(AmbiguousResult):
        await backend.create_ticket(DRAFT, op_key="f" * 64)
    (key,) = fake.objects["UserRequest"]
    found = await backend.find_by_op_key("f" * 64)
    assert found is not None and found.id == str(key)
