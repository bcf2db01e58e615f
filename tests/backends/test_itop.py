from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime

import pytest
from pydantic import SecretStr
from pydantic import ValidationError as PydanticValidationError
from starlette.responses import HTMLResponse, PlainTextResponse

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
from tests.backends.fakes.faults import Fault
from tests.backends.fakes.itop import FakeITop


@pytest.fixture
def fake() -> FakeITop:
    return FakeITop()


@pytest.fixture
def url(fake: FakeITop) -> Iterator[str]:
    with serve(fake.app) as base:
        yield base


def config(url: str, **over: object) -> ITopConfig:
    values: dict[str, object] = {
        "base_url": url, "auth_user": "rest", "auth_pwd": SecretStr("pw"), "org_id": "3",
        "team_id": "5", "agent_id": "9",
    }
    values.update(over)
    return ITopConfig.model_validate(values)


@pytest.fixture
async def backend(url: str) -> AsyncIterator[ITopBackend]:
    b = ITopBackend("itop", config(url))
    yield b
    await b.aclose()


def op_marker(key: str) -> str:
    """The footer's marker, spelled out (a test must not trust the code under test)."""
    return "m2t-" + key[:20]


DRAFT = TicketDraft(subject="Mail quota", text="Mailbox <full>\nplease help", priority="high",
                    local_number="TKT-20260101-007", requester_email="carol@example.com")


async def test_full_cycle(backend: ITopBackend, fake: FakeITop) -> None:
    key = op_key("itop", "<m@x>", "create")
    ref = await backend.create_ticket(DRAFT, op_key=key)
    rec = fake.objects["UserRequest"][int(ref.id)]
    assert ref.key == "R-000101" and ref.url and f"id={ref.id}" in ref.url
    assert rec["org_id"] == "3" and rec["urgency"] == "2"
    # Stock UserRequest: the ticket number and the op marker live in the description.
    assert rec["description"] == (
        "<p>Mailbox &lt;full&gt;<br>please help</p>"
        f"<p>[mailticket TKT-20260101-007 ref {op_marker(key)}]</p>")
    assert "external_ref" not in rec
    assert rec["caller_id"] == "12"  # the Person whose email is the requester's
    assert set(fake.comments_seen) == {"mailticket"}

    pub = await backend.create_comment(ref, CommentDraft("visible"), op_key="c1")
    priv = await backend.create_comment(ref, CommentDraft("hidden", public=False), op_key="c2")
    pub2 = await backend.create_comment(ref, CommentDraft("again"), op_key="c3")
    assert (pub, priv, pub2) == ("public_log:0", "private_log:0", "public_log:1")
    assert [e["message"] for e in rec["public_log"]["entries"]] == [
        "visible\n\n[mailticket ref m2t-c1]", "again\n\n[mailticket ref m2t-c3]"]
    assert [e["message"] for e in rec["private_log"]["entries"]] == [
        "hidden\n\n[mailticket ref m2t-c2]"]
    assert await backend.find_comment_by_op_key(ref, "c3") == "public_log:1"
    assert await backend.find_comment_by_op_key(ref, "c9") is None

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

    fake.add_log(int(ref.id), "public_log", "answer from the partner", who="Pat Partner")
    mirrored = await backend.list_comments(ref)
    # Ours are told by the marker we stored, although iTop shows our contact's name.
    assert [(c.text, c.author, c.op_key) for c in mirrored if c.public][-2:] == [
        ("again\n\n[mailticket ref m2t-c3]", "Rest Integration", "m2t-c3"),
        ("answer from the partner", "Pat Partner", None)]
    assert all(c.author == "Rest Integration" for c in mirrored if c.op_key)


async def test_find_by_op_key_on_a_stock_install(backend: ITopBackend) -> None:
    ref = await backend.create_ticket(DRAFT, op_key="a" * 64)
    await backend.create_ticket(DRAFT, op_key="b" * 64)
    found = await backend.find_by_op_key("a" * 64)
    assert found is not None and (found.id, found.key) == (ref.id, ref.key)
    assert await backend.find_by_op_key("c" * 64) is None
    # Quotes and OQL words never reach the query: the marker keeps letters and digits.
    assert await backend.find_by_op_key("x' OR 1=1 --") is None


async def test_a_field_the_site_added_may_hold_the_key(url: str, fake: FakeITop) -> None:
    stock = ITopBackend("itop", config(url, op_key_field="external_ref"))
    try:
        with pytest.raises(ValidationError, match="external_ref: Unknown attribute"):
            await stock.create_ticket(DRAFT, op_key="k")
    finally:
        await stock.aclose()
    # Sent on purpose: the stock datamodel (and so the document) has no such attribute.
    assert [p.message for p in fake.take_breaches()] == [
        "body: Additional properties are not allowed ('external_ref' was unexpected) "
        "(at json_data/fields)"]


async def test_added_field_lookup(url: str, fake: FakeITop) -> None:
    fake.add_attributes("external_ref")
    b = ITopBackend("itop", config(url, op_key_field="external_ref"))
    try:
        ref = await b.create_ticket(DRAFT, op_key="k" * 10)
        assert fake.objects["UserRequest"][int(ref.id)]["external_ref"] == "k" * 10
        found = await b.find_by_op_key("k" * 10)
        assert found is not None and found.id == ref.id
        assert await b.find_by_op_key("x' OR 1=1 --") is None  # never spliced into OQL
    finally:
        await b.aclose()


async def test_requester_maps_to_a_person(url: str, fake: FakeITop) -> None:
    stranger = TicketDraft(subject="s", text="t", requester_email="new.person@example.com",
                           requester_name="New Person")
    default = ITopBackend("itop", config(url, caller_id="9"))
    create = ITopBackend("itop", config(url, create_requester=True))
    plain = ITopBackend("itop", config(url))
    try:
        r1 = await default.create_ticket(stranger, op_key="k1")
        assert fake.objects["UserRequest"][int(r1.id)]["caller_id"] == "9"
        r2 = await plain.create_ticket(stranger, op_key="k2")
        assert fake.objects["UserRequest"][int(r2.id)]["caller_id"] == "0"  # may be empty
        r3 = await create.create_ticket(stranger, op_key="k3")
        caller = fake.objects["UserRequest"][int(r3.id)]["caller_id"]
        person = fake.objects["Person"][int(caller)]
        assert (person["email"], person["name"], person["first_name"], person["org_id"]) == (
            "new.person@example.com", "Person", "New", "3")
        # Found from now on, not created twice.
        r4 = await create.create_ticket(stranger, op_key="k4")
        assert fake.objects["UserRequest"][int(r4.id)]["caller_id"] == caller
        odd = TicketDraft(subject="s", text="t", requester_email="o'neil@example.com")
        await plain.create_ticket(odd, op_key="k5")  # a quote in the address is escaped
    finally:
        for b in (default, create, plain):
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
            await bare._stimulus(ref, "ev_resolve", {"solution": "x"})
        with pytest.raises(ValidationError, match="Missing mandatory attribute.*org_id"):
            await bare._op("core/create", **{"class": "UserRequest"},
                           fields={"title": "t", "description": "d"})
        with pytest.raises(ValidationError, match="iTop code 11"):
            await bare._op("core/delete_everything")
        with pytest.raises(NotFound):
            await bare.get_ticket(RemoteRef("itop", "999"))
        with pytest.raises(NotFound, match="Invalid object UserRequest::999"):
            await bare.create_comment(RemoteRef("itop", "999"), CommentDraft("x"), op_key="c")
    finally:
        await bare.aclose()
    assert all(s.path == "/webservices/rest.php" for s in fake.seen)
    # The unknown operation was sent on purpose.
    assert [p.message for p in fake.take_breaches()] == [
        "body: 'core/delete_everything' is not one of ['list_operations', 'core/create', "
        "'core/get', 'core/update', 'core/apply_stimulus', 'core/delete', 'core/get_related', "
        "'core/check_credentials'] (at json_data/operation)"]


async def test_close_new_request_without_team_or_agent(url: str, fake: FakeITop) -> None:
    bare = ITopBackend("itop", config(url, team_id=None, agent_id=None))
    try:
        ref = await bare.create_ticket(DRAFT, op_key="k")
        got = await bare.close_ticket(ref, "done")
    finally:
        await bare.aclose()
    assert got.status is Normalized.resolved
    rec = fake.objects["UserRequest"][int(ref.id)]
    assert (rec["team_id"], rec["agent_id"], rec["solution"]) == ("0", "0", "done")
    assert fake.operations[-3:-1] == ["core/apply_stimulus:ev_assign",
                                      "core/apply_stimulus:ev_resolve"]


async def test_a_wrong_configured_id_is_not_a_missing_ticket(url: str, fake: FakeITop) -> None:
    wrong = ITopBackend("itop", config(url, agent_id="99"))
    try:
        ref = await wrong.create_ticket(DRAFT, op_key="k")
        with pytest.raises(ValidationError, match="Invalid object Person::99") as info:
            await wrong.close_ticket(ref)
        assert not isinstance(info.value, NotFound)
        assert "agent_id" in str(info.value)
    finally:
        await wrong.aclose()


async def test_reopen_and_what_cannot_be_reopened(backend: ITopBackend, fake: FakeITop) -> None:
    ref = await backend.create_ticket(DRAFT, op_key="k")
    await backend.close_ticket(ref, "fixed")
    got = await backend.patch_ticket(ref, TicketPatch(status="open"))
    assert (got.status_raw, got.status) == ("assigned", Normalized.open)
    assert "core/apply_stimulus:ev_reopen" in fake.operations
    # Already open: nothing to do, no stimulus sent.
    count = len(fake.operations)
    await backend.patch_ticket(ref, TicketPatch(status="open"))
    assert not any("stimulus" in op for op in fake.operations[count:])
    fake.set_status(int(ref.id), "closed")
    with pytest.raises(Unsupported, match="closed"):
        await backend.patch_ticket(ref, TicketPatch(status="open"))
    with pytest.raises(Unsupported, match="canceled"):
        await backend.patch_ticket(ref, TicketPatch(status="canceled"))


async def test_dates_are_in_the_server_time_zone(backend: ITopBackend, fake: FakeITop) -> None:
    ref = await backend.create_ticket(DRAFT, op_key="k")
    rec = fake.objects["UserRequest"][int(ref.id)]
    got = await backend.get_ticket(ref)
    # 09:00:01 in Paris on 1 January is 08:00:01 UTC.
    assert rec["last_update"] == "2026-01-01 09:00:01"
    assert got.updated_at == datetime(2026, 1, 1, 8, 0, 1, tzinfo=UTC)
    mark = fake.clock
    fake.set_status(int(ref.id), "pending")
    page = await backend.query_tickets(updated_since=mark)
    assert [t.ref.id for t in page.items] == [ref.id]
    assert (await backend.query_tickets(updated_since=fake.clock)).items == []
    utc = ITopBackend("itop", config(fake_url(backend), timezone="UTC"))
    try:
        assert (await utc.get_ticket(ref)).updated_at == datetime(2026, 1, 1, 9, 0, 2,
                                                                   tzinfo=UTC)
    finally:
        await utc.aclose()
    with pytest.raises(PydanticValidationError, match="unknown time zone"):
        config("http://x", timezone="Mars/Olympus")


def fake_url(backend: ITopBackend) -> str:
    return backend.config.base_url


async def test_resolution_text_comes_back(backend: ITopBackend, fake: FakeITop) -> None:
    ref = await backend.create_ticket(DRAFT, op_key="k")
    fake.set_status(int(ref.id), "resolved", solution="Quota raised to 10 GB")
    got = await backend.get_ticket(ref)
    assert (got.status, got.resolution) == (Normalized.resolved, "Quota raised to 10 GB")
    page = await backend.query_tickets(updated_since=None)
    assert page.items[0].resolution == "Quota raised to 10 GB"


async def test_database_down_is_transient(backend: ITopBackend, fake: FakeITop) -> None:
    ref = await backend.create_ticket(DRAFT, op_key="k")
    fake.fail_next(Fault.SERVER_ERROR)
    with pytest.raises(Transient, match="iTop: An error occurred") as read:
        await backend.get_ticket(ref)
    assert not isinstance(read.value, AmbiguousResult) and read.value.status == 500
    fake.fail_next(Fault.SERVER_ERROR)
    with pytest.raises(AmbiguousResult):  # a write: look it up before sending it again
        await backend.create_comment(ref, CommentDraft("x"), op_key="c")
    # A page that is not a REST answer at all, even with HTTP 200, is transient too.
    fake.fail_next(HTMLResponse("<p>Fatal error</p>", 200))
    with pytest.raises(Transient, match="Fatal error"):
        await backend.get_ticket(ref)


async def test_missing_tickets_in_one_query(backend: ITopBackend, fake: FakeITop) -> None:
    refs = [await backend.create_ticket(DRAFT, op_key=f"k{i}") for i in range(3)]
    fake.fail_next(Fault.DELETED, ticket=refs[1].id)
    before = len(fake.seen)
    assert await backend.missing_tickets(refs) == {refs[1].id}
    assert len(fake.seen) == before + 1


async def test_refresh_reads_organizations_teams_services(url: str, fake: FakeITop) -> None:
    good = ITopBackend("itop", config(url, service_id="2", caller_id="12"))
    try:
        data = await good.refresh_reference_data()
    finally:
        await good.aclose()
    assert data == {"organizations": {"3": "Demo", "4": "Acme"}, "teams": {"5": "Helpdesk"},
                    "services": {"2": "Mail"}}
    for over, words in (({"team_id": "6"}, "team_id 6 is not an iTop team"),
                        ({"agent_id": "99"}, "agent_id 99 is not an iTop Person"),
                        ({"org_id": "8"}, "org_id 8 is not an iTop organization")):
        wrong = ITopBackend("itop", config(url, **over))
        try:
            with pytest.raises(ValidationError, match=words):
                await wrong.refresh_reference_data()
        finally:
            await wrong.aclose()
    bad = ITopBackend("itop", config(url, auth_pwd=SecretStr("wrong")))
    try:
        with pytest.raises(AuthError):
            await bad.refresh_reference_data()
    finally:
        await bad.aclose()


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
    with pytest.raises(AmbiguousResult):  # no requester: the create is the first call
        await backend.create_ticket(TicketDraft(subject="s", text="t"), op_key="k2")


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
        await backend.create_ticket(TicketDraft(subject="s", text="t"), op_key="f" * 64)
    (key,) = fake.objects["UserRequest"]
    found = await backend.find_by_op_key("f" * 64)
    assert found is not None and found.id == str(key)
