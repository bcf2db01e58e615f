"""Every fake reproduces every fault the way its vendor does, through the same
`fail_next(Fault...)`; each test shows the backend's reaction to it.

Lost answer: the vendor applies the request, the connection closes before any answer.
Rate limit: 429 with Retry-After. Server error: 500 (iTop: its text/html page). Deleted
ticket: reads answer as the vendor does for a missing one. Wrong password: the vendor's own
refusal (401, Autotask's 500, iTop's code 1 in an HTTP 200).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from mailticket.backends.base import RemoteRef, TicketBackend, TicketDraft
from mailticket.backends.errors import (
    AmbiguousResult,
    AuthError,
    NotFound,
    RateLimited,
    Transient,
    Unsupported,
)
from tests.backends.fakes.faults import Fault
from tests.backends.vendor_kits import KITS, Kit, running

DRAFT = TicketDraft(subject="Printer on fire", text="It smokes.", requester_email="c@example.org")
# How each vendor says "bad credentials" and "no such ticket" (HTTP status): Autotask
# answers bad credentials with a 500, iTop everything with a 200 and a JSON code,
# Autotask and SMAX a missing record with an empty result (SMAX: the backend keeps no status).
REFUSED = {"jira": 401, "zendesk": 401, "autotask": 500, "itop": 200, "servicenow": 401,
           "zammad": 401, "freshdesk": 401, "smax": 401, "webhook": 401}
MISSING = {"jira": 404, "zendesk": 404, "autotask": 200, "itop": 200, "servicenow": 404,
           "zammad": 404, "freshdesk": 404, "smax": None}


@pytest.fixture(params=KITS, ids=[k.name for k in KITS])
def kit(request: pytest.FixtureRequest) -> Kit:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def fake(kit: Kit) -> Any:
    return kit.fake()


@pytest.fixture
async def backend(kit: Kit, fake: Any) -> AsyncIterator[TicketBackend[Any]]:
    with running(fake) as url:
        client = kit.backend(fake, url)
        try:
            yield client
        finally:
            await client.aclose()


async def _ticket(backend: TicketBackend[Any]) -> RemoteRef:
    return await backend.create_ticket(DRAFT, op_key="a" * 64)


def _readable(backend: TicketBackend[Any]) -> None:
    if backend.kind == "webhook":
        pytest.skip("a webhook receiver holds no tickets to read back (get_ticket: Unsupported)")


async def test_lost_answer(kit: Kit, fake: Any, backend: TicketBackend[Any]) -> None:
    fake.fail_next(Fault.LOST_ANSWER, method="POST", path=kit.create, where=kit.create_where)
    with pytest.raises(AmbiguousResult):
        await _ticket(backend)
    assert kit.tickets(fake) == 1  # applied, though the client never heard so


async def test_rate_limited(kit: Kit, fake: Any, backend: TicketBackend[Any]) -> None:
    _readable(backend)
    ref = await _ticket(backend)
    fake.fail_next(Fault.RATE_LIMITED, retry_after=42)
    with pytest.raises(RateLimited) as info:
        await backend.get_ticket(ref)
    assert info.value.status == 429 and info.value.retry_after == 42


async def test_rate_limited_write_is_not_applied(kit: Kit, fake: Any,
                                                 backend: TicketBackend[Any]) -> None:
    fake.fail_next(Fault.RATE_LIMITED, retry_after=42)
    with pytest.raises(RateLimited):
        await _ticket(backend)
    assert kit.tickets(fake) == 0


async def test_server_error(kit: Kit, fake: Any, backend: TicketBackend[Any]) -> None:
    _readable(backend)
    ref = await _ticket(backend)
    fake.fail_next(Fault.SERVER_ERROR)
    with pytest.raises(Transient) as info:
        await backend.get_ticket(ref)
    assert info.value.status == 500 and not isinstance(info.value, AmbiguousResult)
    if kit.name == "itop":
        assert isinstance(info.value.raw, str) and "iTop: An error occurred" in info.value.raw


async def test_deleted_ticket(kit: Kit, fake: Any, backend: TicketBackend[Any]) -> None:
    _readable(backend)
    ref = await _ticket(backend)
    fake.fail_next(Fault.DELETED, ticket=ref.id)
    assert kit.tickets(fake) == 0
    with pytest.raises(NotFound) as info:
        await backend.get_ticket(ref)
    assert info.value.status == MISSING[kit.name]


async def test_wrong_password(kit: Kit, fake: Any, backend: TicketBackend[Any]) -> None:
    _readable(backend)
    ref = await _ticket(backend)
    # Every request from now on, sign-ins included (SMAX signs in again once on a 401).
    fake.fail_next(Fault.WRONG_PASSWORD, times=5)
    with pytest.raises(AuthError) as info:
        await backend.get_ticket(ref)
    assert info.value.status == REFUSED[kit.name]


async def test_webhook_wrong_secret_refused(kit: Kit, fake: Any,
                                            backend: TicketBackend[Any]) -> None:
    if kit.name != "webhook":
        pytest.skip("the webhook receiver's 'wrong password' is a wrong signing secret")
    fake.fail_next(Fault.WRONG_PASSWORD)
    with pytest.raises(AuthError) as info:
        await _ticket(backend)
    assert info.value.status == REFUSED[kit.name]
    with pytest.raises(Unsupported):
        await backend.get_ticket(RemoteRef("hook", "x"))
