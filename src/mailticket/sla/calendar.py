"""Business-hours calendars: weekly opening hours in a time zone, minus public holidays
(the `holidays` package, per country and subdivision) and the company's own closed days.

Opening hours are wall-clock times, so they follow DST: 08:00-17:00 is 07:00-16:00 UTC
in Berlin's winter and 06:00-15:00 in its summer, and a 24x7 day is 23 or 25 hours long on
the days the clocks change. A range bound that the clocks skip (inside a DST gap) is the
instant they jump over it: where the clocks change at midnight (Santiago, Havana, Beirut),
a day that has no 00:00 opens when the clocks jump to 01:00, and the day before closes
there, so a 24x7 calendar loses no hour. A range ends at the later of two ambiguous
instants (fold=1): one over the repeated hour lasts as long as the clocks say, and ranges
that meet inside it (or days that meet there) count the hour they share once.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import holidays as holidays_pkg

DAY = timedelta(days=1)
# How far ahead a due time is searched. A calendar with some opening hours every week
# never gets near it; only a year-long run of closed days would.
MAX_SEARCH_DAYS = 3 * 366

_MEMO_DAYS = 4096  # about eleven years of days per calendar
Range = tuple[int, int]  # minutes after local midnight, end exclusive, 0..1440


@dataclass(frozen=True)
class BusinessCalendar:
    name: str
    timezone: str
    # weekday (Monday 0) -> opening ranges of that day, sorted, not overlapping
    week: tuple[tuple[Range, ...], ...]
    country: str | None = None
    subdivision: str | None = None
    closed_days: frozenset[date] = frozenset()
    # The holidays package's categories (None: its public holidays).
    holiday_categories: tuple[str, ...] | None = None
    _holidays: Any = field(default=None, compare=False, repr=False)
    _days: dict[date, list[tuple[datetime, datetime]]] = field(
        default_factory=dict, compare=False, repr=False
    )

    def __post_init__(self) -> None:
        if len(self.week) != 7:
            raise ValueError("a week has 7 days")
        if self.country is not None:
            object.__setattr__(
                self,
                "_holidays",
                holidays_pkg.country_holidays(
                    self.country, subdiv=self.subdivision, categories=self.holiday_categories
                ),
            )

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def weekly_minutes(self) -> int:
        return sum(end - start for day in self.week for start, end in day)

    def is_closed(self, day: date) -> bool:
        if day in self.closed_days:
            return True
        return self._holidays is not None and day in self._holidays

    def holiday_name(self, day: date) -> str | None:
        if day in self.closed_days:
            return "closed"
        if self._holidays is not None:
            name = self._holidays.get(day)
            return str(name) if name is not None else None
        return None

    def day_intervals(self, day: date) -> list[tuple[datetime, datetime]]:
        """The opening intervals of one local date, as UTC instants. Memoised: a sweep asks
        for the same few weeks of days for every ticket."""
        cached = self._days.get(day)
        if cached is not None:
            return cached
        out: list[tuple[datetime, datetime]] = []
        if not self.is_closed(day):
            tz = self.tz
            for start, end in self.week[day.weekday()]:
                begin = _instant(day, start, tz, fold=0)
                finish = _instant(day, end, tz, fold=1)
                if finish > begin:
                    out.append((begin, finish))
        if len(self._days) >= _MEMO_DAYS:
            self._days.clear()
        self._days[day] = out
        return out

    def intervals_from(self, start: datetime) -> Iterator[tuple[datetime, datetime]]:
        """Opening intervals that end after `start`, clipped to begin no earlier, in order,
        for MAX_SEARCH_DAYS. They never overlap: where the clocks go back, a range that ends
        in the repeated hour (fold=1, the later instant) and the next that begins there
        (fold=0, the earlier one) share that hour, which counts once; so do the day before
        and the day of a change at midnight (Havana's 01:00 -> 00:00)."""
        start = _utc(start)
        day = start.astimezone(self.tz).date() - DAY
        counted = start
        for _ in range(MAX_SEARCH_DAYS + 2):
            for begin, finish in self.day_intervals(day):
                if finish > counted:
                    yield max(begin, counted), finish
                    counted = finish
            day += DAY

    def business_time(self, start: datetime, end: datetime) -> timedelta:
        """Opening time within [start, end)."""
        start, end = _utc(start), _utc(end)
        total = timedelta(0)
        if end <= start:
            return total
        for begin, finish in self.intervals_from(start):
            if begin >= end:
                break
            total += min(finish, end) - begin
        return total

    def add_business_time(self, start: datetime, amount: timedelta) -> datetime | None:
        """The instant at which `amount` of opening time has passed since `start`; `start`
        itself for zero; None when not within MAX_SEARCH_DAYS."""
        start = _utc(start)
        if amount <= timedelta(0):
            return start
        left = amount
        for begin, finish in self.intervals_from(start):
            span = finish - begin
            if span >= left:
                return begin + left
            left -= span
        return None


def _instant(day: date, minutes: int, tz: ZoneInfo, *, fold: int) -> datetime:
    """The UTC instant at which the wall clock of `tz` reads `minutes` past `day`'s midnight
    (`fold` picks one of two when it reads so twice); a wall time the clocks skip is the
    instant of the jump, the first at which they read it or later."""
    if minutes >= 1440:
        day, minutes = day + DAY, minutes - 1440
    wall = datetime.combine(day, time(minutes // 60, minutes % 60))
    moment = wall.replace(tzinfo=tz, fold=fold).astimezone(UTC)
    if _wall(moment, tz) == wall:
        return moment
    # In a gap PEP 495 maps fold=1 with the offset after the jump (an instant before it)
    # and fold=0 with the offset before it (an instant after it): search between them.
    low = wall.replace(tzinfo=tz, fold=1).astimezone(UTC)
    high = wall.replace(tzinfo=tz, fold=0).astimezone(UTC)
    while high - low > _SECOND:
        middle = low + (high - low) // 2
        if _wall(middle, tz) < wall:
            low = middle
        else:
            high = middle
    return high


_SECOND = timedelta(seconds=1)


def _wall(moment: datetime, tz: ZoneInfo) -> datetime:
    return moment.astimezone(tz).replace(tzinfo=None, fold=0)


def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError("SLA times must be timezone-aware")
    return moment.astimezone(UTC)


def always_open(name: str = "24x7", timezone: str = "UTC") -> BusinessCalendar:
    return BusinessCalendar(name, timezone, tuple(((0, 1440),) for _ in range(7)))


def week_from(ranges_by_day: Mapping[int, Iterable[Range]]) -> tuple[tuple[Range, ...], ...]:
    return tuple(tuple(sorted(ranges_by_day.get(day, ()))) for day in range(7))
