import pytest

from mailticket.reading.ticketnumbers import (
    TICKET_NUMBER_RE,
    canonical_ticket_number,
    format_ticket_number,
)
from mailticket.threading.subject import strip_reply_prefixes, subject_ticket_number


@pytest.mark.parametrize(
    "subject",
    [
        "[TKT-20251215-001] Help with network issue",
        "Re: [TKT-20251215-001] Help with network issue",
        "AW: SV: Fwd: [TKT-20251215-001] Help",
        "Re: TKT-20251215-001",
        "RE: tkt-20251215-001 still broken",
        "Re[2]: TKT-20251215-001",
        "SV: Vs: TKT-20251215-001",
        "Printer [ TKT-20251215-001 ] again",
        "[support] Re: TKT-20251215-001",
    ],
)
def test_subject_numbers_found(subject: str) -> None:
    assert subject_ticket_number(subject) == "TKT-20251215-001"


@pytest.mark.parametrize(
    "subject",
    ["", "Help with network issue", "Question about TKT-20251215-001 and others",
     "TKT-2025121-001", "Re: XTKT-20251215-001"],
)
def test_subject_numbers_not_found(subject: str) -> None:
    assert subject_ticket_number(subject) is None


def test_four_digit_counter_recognised_everywhere() -> None:
    number = format_ticket_number("20251215", 1000)
    assert number == "TKT-20251215-1000"
    assert subject_ticket_number(f"Re: [{number}] x") == number
    assert canonical_ticket_number(f"<{number}-a1b2@support.example>") == number
    assert TICKET_NUMBER_RE.fullmatch(number)


def test_strip_reply_prefixes() -> None:
    assert strip_reply_prefixes("Re: AW: Fwd: Hello") == "Hello"
