"""make_email's Dates are counted per test: a message's Date does not depend on the tests
that ran before it (tests compare Dates with a test clock of 10:00)."""

from __future__ import annotations

import email
from email.utils import parsedate_to_datetime

from tests.mailfactory import make_email


def _date(raw: bytes) -> str:
    return parsedate_to_datetime(email.message_from_bytes(raw)["Date"]).strftime("%H:%M")


def test_a_test_making_many_messages() -> None:
    dates = [_date(make_email()) for _ in range(100)]
    assert dates[:2] == ["09:01", "09:02"] and dates[-1] == "10:40"


def test_the_next_test_starts_at_nine_again() -> None:
    """Run after the one above (file order, or alone): the same Dates either way."""
    assert [_date(make_email()) for _ in range(3)] == ["09:01", "09:02", "09:03"]


def test_message_ids_stay_unique_across_tests() -> None:
    ids = {email.message_from_bytes(make_email())["Message-ID"] for _ in range(50)}
    assert len(ids) == 50
