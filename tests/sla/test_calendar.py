"""Business time: opening hours in a time zone, DST, holidays, closed days, 24x7."""

from __future__ import annotations

import random
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from mailticket.sla.calendar import BusinessCalendar, always_open, week_from
from tests.sla.helpers import BERLIN, NEW_YORK, H, M, at, office, utc


def test_within_one_day() -> None:
    cal = office()
    assert cal.business_time(at(BERLIN, 2025, 12, 15, 10), at(BERLIN, 2025, 12, 15, 12)) == 2 * H


def test_overnight_counts_only_opening_hours() -> None:
    cal = office()
    # Mon 16:00 -> Tue 10:00: one hour each side of the night.
    assert cal.business_time(at(BERLIN, 2025, 12, 15, 16), at(BERLIN, 2025, 12, 16, 10)) == 2 * H


def test_weekend_counts_nothing() -> None:
    cal = office()
    assert cal.business_time(at(BERLIN, 2025, 12, 13, 0), at(BERLIN, 2025, 12, 15, 0)) == timedelta(0)
    assert cal.business_time(at(BERLIN, 2025, 12, 12, 16), at(BERLIN, 2025, 12, 15, 10)) == 2 * H


def test_a_whole_week() -> None:
    cal = office()
    assert cal.business_time(at(BERLIN, 2025, 12, 1), at(BERLIN, 2025, 12, 8)) == 40 * H
    assert cal.weekly_minutes == 40 * 60


def test_start_outside_hours_waits_for_the_opening() -> None:
    cal = office()
    # Saturday 10:00 + 1h -> Monday 10:00
    assert cal.add_business_time(at(BERLIN, 2025, 12, 13, 10), H) == at(BERLIN, 2025, 12, 15, 10)
    # Monday 07:00 + 30m -> Monday 09:30
    assert cal.add_business_time(at(BERLIN, 2025, 12, 15, 7), 30 * M) == at(BERLIN, 2025, 12, 15, 9, 30)


def test_adding_runs_over_the_night_and_the_weekend() -> None:
    cal = office()
    # Friday 16:00 + 3h = 1h Friday + 2h Monday
    assert cal.add_business_time(at(BERLIN, 2025, 12, 12, 16), 3 * H) == at(BERLIN, 2025, 12, 15, 11)
    # An exact fit ends at the closing time, not the next opening.
    assert cal.add_business_time(at(BERLIN, 2025, 12, 15, 9), 8 * H) == at(BERLIN, 2025, 12, 15, 17)


def test_zero_is_the_start_itself() -> None:
    start = at(BERLIN, 2025, 12, 13, 10)  # a Saturday
    assert office().add_business_time(start, timedelta(0)) == start


def test_spring_forward_keeps_wall_clock_hours() -> None:
    """Europe/Berlin moves to CEST on Sunday 2025-03-30: 09:00 is 08:00Z before, 07:00Z after."""
    cal = office()
    friday_4pm = at(BERLIN, 2025, 3, 28, 16)
    due = cal.add_business_time(friday_4pm, 3 * H)
    assert due == at(BERLIN, 2025, 3, 31, 11)
    assert due == utc(2025, 3, 31, 9)
    assert cal.business_time(friday_4pm, due) == 3 * H


def test_fall_back_keeps_wall_clock_hours() -> None:
    cal = office()
    due = cal.add_business_time(at(BERLIN, 2025, 10, 24, 16), 3 * H)
    assert due == utc(2025, 10, 27, 10)  # Monday 11:00 CET


@pytest.mark.parametrize(
    ("day", "hours"),
    [(date(2025, 3, 30), 23), (date(2025, 10, 26), 25), (date(2025, 6, 1), 24)],
)
def test_a_24x7_day_lasts_as_long_as_the_clocks_say(day: date, hours: int) -> None:
    cal = always_open(timezone="Europe/Berlin")
    start = at(BERLIN, day.year, day.month, day.day)
    end = at(BERLIN, *(day + timedelta(days=1)).timetuple()[:3])
    assert cal.business_time(start, end) == hours * H
    assert cal.add_business_time(start, hours * H) == end


@pytest.mark.parametrize(
    ("tz", "jump"),
    [
        ("America/Santiago", utc(2025, 9, 7, 4)),  # 00:00 -04 -> 01:00 -03
        ("America/Havana", utc(2025, 3, 9, 5)),  # 00:00 -05 -> 01:00 -04
        ("Asia/Beirut", utc(2025, 3, 29, 22)),  # 00:00 +02 -> 01:00 +03
    ],
)
def test_24x7_loses_no_hour_where_the_clocks_skip_midnight(tz: str, jump: datetime) -> None:
    """Where the clocks jump from 00:00 to 01:00, the day before ends at the jump and the
    day of it begins there: no hour of a 24x7 calendar falls between them."""
    cal = always_open(timezone=tz)
    start = jump - 30 * H
    assert cal.business_time(start, start + 60 * H) == 60 * H
    assert cal.add_business_time(start, 60 * H) == start + 60 * H
    assert cal.add_business_time(jump - 30 * M, H) == jump + 30 * M
    day = jump.astimezone(ZoneInfo(tz)).date()
    assert cal.day_intervals(day)[0][0] == jump
    assert cal.day_intervals(day - timedelta(days=1))[0][1] == jump


def test_24x7_counts_the_hour_havana_repeats_at_midnight_once() -> None:
    """Havana goes back from 01:00 to 00:00 on 2026-11-01: 00:00 comes twice, the end of
    Saturday (the later one) and the start of Sunday (the earlier one). Real time counts."""
    cal = always_open(timezone="America/Havana")
    start = utc(2026, 10, 31, 12)
    assert cal.business_time(start, start + 48 * H) == 48 * H
    assert cal.add_business_time(start, 48 * H) == start + 48 * H
    spans = list(cal.intervals_from(start))[:3]
    assert all(end <= begin for (_, end), (begin, _) in zip(spans, spans[1:], strict=False))


def test_ranges_that_meet_in_the_repeated_hour_count_it_once() -> None:
    """Berlin repeats 02:00-03:00 on 2025-10-26: a night shift split at 02:30 (00:00-02:30,
    02:30-06:00) is open from 00:00 CEST to 06:00 CET, 7 real hours, not 8."""
    cal = BusinessCalendar("night", "Europe/Berlin", week_from({6: [(0, 150), (150, 360)]}))
    start = utc(2025, 10, 25, 12)
    assert cal.business_time(start, start + 24 * H) == 7 * H
    assert cal.add_business_time(start, 7 * H) == utc(2025, 10, 26, 5)
    assert cal.add_business_time(start, 4 * H) == utc(2025, 10, 26, 2)


def test_a_range_that_starts_in_the_skipped_hour_opens_at_the_jump() -> None:
    """Berlin skips 02:00-03:00 on 2025-03-30: 02:30-03:30 that day is 03:00-03:30 CEST."""
    cal = BusinessCalendar("night", "Europe/Berlin", week_from({6: [(150, 210)]}))
    assert cal.day_intervals(date(2025, 3, 30)) == [(utc(2025, 3, 30, 1), utc(2025, 3, 30, 1, 30))]


def test_24x7_is_plain_elapsed_time() -> None:
    cal = always_open()
    start = utc(2025, 12, 13, 22, 17)
    assert cal.add_business_time(start, 50 * H) == start + 50 * H
    assert cal.business_time(start, start + 50 * H) == 50 * H


def test_public_holidays_per_subdivision() -> None:
    """Epiphany (Mon 2025-01-06) is a holiday in Bavaria, not in Berlin."""
    bavaria = office(country="DE", subdivision="BY")
    berlin = office(country="DE", subdivision="BE")
    day = (at(BERLIN, 2025, 1, 6), at(BERLIN, 2025, 1, 7))
    assert bavaria.business_time(*day) == timedelta(0)
    assert berlin.business_time(*day) == 8 * H
    assert bavaria.holiday_name(date(2025, 1, 6)) is not None
    assert bavaria.holiday_name(date(2025, 1, 7)) is None


def test_holidays_of_the_calendars_country() -> None:
    """Thanksgiving 2025 is Thursday 2025-11-27 in the US."""
    cal = office("America/New_York", country="US")
    wednesday_4pm = at(NEW_YORK, 2025, 11, 26, 16)
    assert cal.add_business_time(wednesday_4pm, 2 * H) == at(NEW_YORK, 2025, 11, 28, 10)


def test_christmas_run_of_holidays_and_company_closed_days() -> None:
    cal = office(country="DE", closed=frozenset({date(2025, 12, 24), date(2025, 12, 31)}))
    # Tue 23 Dec 16:00 + 2h: Wed 24 closed, Thu 25 / Fri 26 holidays, weekend -> Mon 29 10:00
    assert cal.add_business_time(at(BERLIN, 2025, 12, 23, 16), 2 * H) == at(BERLIN, 2025, 12, 29, 10)
    assert cal.holiday_name(date(2025, 12, 24)) == "closed"


def test_split_shifts_and_a_night_shift_across_midnight() -> None:
    cal = BusinessCalendar("split", "UTC", week_from({
        0: [(8 * 60, 12 * 60), (13 * 60, 17 * 60), (22 * 60, 24 * 60)],
        1: [(0, 6 * 60)],
    }))
    monday, tuesday = utc(2025, 12, 15), utc(2025, 12, 16)
    assert cal.business_time(monday, tuesday) == 10 * H
    # Lunch is skipped; the night shift runs on across midnight.
    assert cal.add_business_time(utc(2025, 12, 15, 11), 2 * H) == utc(2025, 12, 15, 14)
    assert cal.add_business_time(utc(2025, 12, 15, 16), 4 * H) == utc(2025, 12, 16, 1)


def test_naive_times_are_refused() -> None:
    from datetime import datetime

    with pytest.raises(ValueError, match="timezone-aware"):
        office().business_time(datetime(2025, 1, 1), utc(2025, 1, 2))


def test_a_calendar_never_open_has_no_due_time() -> None:
    cal = office(closed=frozenset())
    never = BusinessCalendar("never", "UTC", week_from({}))
    assert never.add_business_time(utc(2025, 1, 1), H) is None
    assert cal.add_business_time(utc(2025, 1, 1), H) is not None


@pytest.mark.parametrize("tz", ["Europe/Berlin", "America/New_York", "Asia/Kolkata", "UTC"])
def test_adding_then_measuring_gives_back_the_amount(tz: str) -> None:
    """The two operations are inverse, for many starts (inside and outside hours, across
    DST changes and holidays) and amounts."""
    cal = office(tz, country="DE" if tz == "Europe/Berlin" else None)
    rng = random.Random(f"sla-{tz}")
    base = utc(2025, 1, 1)
    for _ in range(300):
        start = base + timedelta(minutes=rng.randrange(0, 365 * 24 * 60))
        amount = timedelta(minutes=rng.randrange(0, 60 * 60))
        due = cal.add_business_time(start, amount)
        assert due is not None
        assert cal.business_time(start, due) == amount, (start, amount, due)
        assert due >= start
