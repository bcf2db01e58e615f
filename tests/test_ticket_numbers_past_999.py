"""Past 999 a day the counter grows a digit: TKT-20251215-1100 comes after -999, and a
number is the same ticket however many leading zeros someone writes it with."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from sqlalchemy import update

from mailticket.reading.ticketnumbers import canonical_ticket_number
from mailticket.runtime import Runtime
from mailticket.store.models import TicketCounter
from mailticket.ticketing.tickets import find_ticket
from tests.conftest import FIXTURES
from tests.mailfactory import make_email

SEED_WF = FIXTURES / "workflows" / "seed.yaml"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Re: [TKT-20251215-1100] printer", "TKT-20251215-1100"),
        ("tkt-20251215-01100", "TKT-20251215-1100"),
        ("TKT-20251215-0999", "TKT-20251215-999"),
        ("TKT-20251215-0042", "TKT-20251215-042"),
        ("<TKT-20251215-1000-9f8e@helpdesk.example>", "TKT-20251215-1000"),
        ("TKT-20251215-12", None),
        # Whatever the pattern matches ignoring case, as the Kelvin sign that stands for K.
        ("<t\u212at-20251215-007@x>", "TKT-20251215-007"),
        ("<m1.2@client7.example>", None),
    ],
)
def test_numbers_compare_as_numbers(text: str, expected: str | None) -> None:
    assert canonical_ticket_number(text) == expected


def _open(rt: Runtime, counter: int, subject: str) -> str:
    with rt.session_factory.begin() as s:
        s.merge(TicketCounter(day="20251215", last_value=0))
        s.execute(update(TicketCounter).where(TicketCounter.day == "20251215")
                  .values(last_value=counter))
    outcome = rt.pipeline.process(
        make_email(subject=subject, sender="carla@customer.example"), "test"
    )
    assert outcome.action == "created" and outcome.ticket_number is not None
    return outcome.ticket_number


def test_999_and_1100_are_told_apart_everywhere(make_runtime: Callable[..., Runtime]) -> None:
    rt = make_runtime(workflows_path=SEED_WF)
    n999 = _open(rt, 998, "first problem")
    n1100 = _open(rt, 1099, "second problem")
    assert (n999, n1100) == ("TKT-20251215-999", "TKT-20251215-1100")

    # Threading by subject and by our own Message-ID in References, written either way.
    for subject, expected in (
        ("Re: [TKT-20251215-1100] second problem", n1100),
        ("Re: TKT-20251215-01100", n1100),
        ("Re: [TKT-20251215-0999]", n999),
    ):
        reply = rt.pipeline.process(
            make_email(subject=subject, sender="carla@customer.example"), "test"
        )
        assert (reply.action, reply.ticket_number) == ("linked", expected), subject
    by_ref = rt.pipeline.process(
        make_email(subject="no number here", references="<TKT-20251215-01100-ab12@x.example>"),
        "test",
    )
    assert by_ref.ticket_number == n1100

    # Looking a ticket up (API, CLI, workflows) by a number with leading zeros.
    with rt.session_factory() as s:
        for ref, expected in (("TKT-20251215-01100", n1100), ("tkt-20251215-0999", n999)):
            found = find_ticket(s, ref)
            assert found is not None and found.ticket_number == expected
