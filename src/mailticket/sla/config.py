"""SLA_PATH: business-hours calendars and SLA policies, validated whole at start-up with
`file:line` errors.

    warning_at: 0.8                 # share of a target that raises sla_warning
    default_calendar: office        # for policies and customers that name none
    calendars:
      office:
        timezone: Europe/Berlin
        hours:
          mon-fri: ["08:00-12:00", "13:00-17:00"]
          sat: "09:00-12:00"
        holidays: {country: DE, subdivision: BY, categories: [public, catholic]}
        closed: ["2025-12-24", "2025-12-31"]
      always: {timezone: UTC, hours: 24x7}
    customers:                      # a customer's own calendar
      acme: {calendar: always}
    policies:
      - {name: Critical, priority: critical, first_response: 30m, resolution: 4h}
      - {name: ACME, customer: acme, first_response: 1h, resolution: 1h30m}

Durations are business time in hours and minutes (8h, 90m, 1h30m): a "day" would mean
24 hours on a 24x7 calendar but three working days on an 8-hour one, so there is none.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any, TypeGuard
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import holidays as holidays_pkg
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mailticket.customers.schema import KEY_PATTERN, CustomerKey
from mailticket.settings import Priority
from mailticket.sla.calendar import BusinessCalendar, Range, always_open, week_from
from mailticket.sla.models import CALENDAR_NAME_MAX
from mailticket.yamlconfig import ConfigIssue, YamlDocument, read_yaml

WHAT = "`policies:` (and optionally `calendars:`, `customers:`)"
DEFAULT_WARNING_SHARE = 0.8

_DURATION = re.compile(r"^\s*(?:(\d+)\s*h)?\s*(?:(\d+)\s*m(?:in)?)?\s*$", re.IGNORECASE)
_TIME = re.compile(r"^(\d{1,2}):(\d{2})$")
KEY_RE = re.compile(KEY_PATTERN)
# Files of the time zone database that ZoneInfo loads but that name no place: the host's
# own setting (which differs between a laptop and a container) and the database's stand-ins.
_NOT_A_PLACE = frozenset({"localtime", "posixrules", "Factory"})
_DAYS = {"mon": 0, "tue": 1, "wed": 2, "thu": 3, "fri": 4, "sat": 5, "sun": 6}


def parse_duration(value: Any) -> timedelta:
    if isinstance(value, str):
        found = _DURATION.match(value)
        if found and (found.group(1) or found.group(2)):
            minutes = int(found.group(1) or 0) * 60 + int(found.group(2) or 0)
            if minutes > 0:
                return timedelta(minutes=minutes)
    raise ValueError(
        "a business-time duration like 8h, 90m or 1h30m (hours and minutes only: "
        "a day of business time depends on the calendar)"
    )


def parse_days(spec: str) -> list[int]:
    """`mon-fri`, `sat`, `mon,wed,fri`, `sun-tue` (wraps)."""
    days: list[int] = []
    for part in spec.lower().split(","):
        first, dash, last = part.strip().partition("-")
        if first not in _DAYS or (dash and last not in _DAYS):
            raise ValueError(f"{spec!r}: days are mon tue wed thu fri sat sun, e.g. mon-fri")
        start, end = _DAYS[first], _DAYS[last] if dash else _DAYS[first]
        day = start
        while True:
            days.append(day)
            if day == end:
                break
            day = (day + 1) % 7
    return days


def parse_range(spec: str) -> Range:
    first, dash, last = spec.replace(" ", "").partition("-")
    bounds = []
    for part in (first, last):
        found = _TIME.match(part)
        if not dash or not found:
            raise ValueError(f"{spec!r}: opening hours are written HH:MM-HH:MM, e.g. 08:00-17:00")
        hours, minutes = int(found.group(1)), int(found.group(2))
        if minutes > 59 or hours > 24 or (hours == 24 and minutes):
            raise ValueError(f"{spec!r}: {part} is not a time of day (00:00 to 24:00)")
        bounds.append(hours * 60 + minutes)
    if bounds[0] >= bounds[1]:
        raise ValueError(
            f"{spec!r}: a range must end after it starts; split a night shift at midnight "
            "(22:00-24:00 one day, 00:00-06:00 the next)"
        )
    return bounds[0], bounds[1]


class HolidaysSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    country: str
    subdivision: str | None = None
    # The package's holiday categories; None: its default, the public holidays. Some
    # days off are in another: Bavaria's Assumption Day is `catholic` (most of Bavaria,
    # Munich included, has it off), so a team there lists [public, catholic].
    categories: tuple[str, ...] | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _known(self) -> HolidaysSpec:
        try:
            holidays_pkg.country_holidays(
                self.country, subdiv=self.subdivision, categories=self.categories
            )
        except (NotImplementedError, ValueError) as exc:
            raise ValueError(f"unknown to the holidays package: {exc}") from None
        return self


class CalendarSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    timezone: str
    hours: str | dict[str, str | list[str]]
    holidays: HolidaysSpec | None = None
    closed: list[date] = Field(default_factory=list)

    @field_validator("timezone")
    @classmethod
    def _tz(cls, value: str) -> str:
        if value in _NOT_A_PLACE:
            raise ValueError(
                f"{value!r} is no place's time zone (it is whatever the machine running the "
                "service is set to, or none): name the zone of the opening hours, like "
                "Europe/Berlin"
            )
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (an IANA name like Europe/Berlin)") from None
        return value

    @field_validator("hours")
    @classmethod
    def _hours(cls, value: str | dict[str, str | list[str]]) -> str | dict[str, str | list[str]]:
        if isinstance(value, str) and value.strip().lower() != "24x7":
            raise ValueError("hours is `24x7` or a mapping like `mon-fri: 08:00-17:00`")
        return value

    def build(self, name: str) -> BusinessCalendar:
        if isinstance(self.hours, str):
            week = always_open().week
        else:
            week = _week(self.hours)
        return BusinessCalendar(
            name=name,
            timezone=self.timezone,
            week=week,
            country=self.holidays.country if self.holidays else None,
            subdivision=self.holidays.subdivision if self.holidays else None,
            holiday_categories=self.holidays.categories if self.holidays else None,
            closed_days=frozenset(self.closed),
        )


def week_problems(hours: dict[str, str | list[str]]) -> list[tuple[str | None, str]]:
    """(day key or None for the whole week, reason) for each mistake in `hours`."""
    problems: list[tuple[str | None, str]] = []
    by_day: dict[int, list[Range]] = {}
    for days_spec, ranges in hours.items():
        try:
            days = parse_days(days_spec)
            items = [ranges] if isinstance(ranges, str) else ranges
            parsed = [parse_range(item) for item in items]
        except ValueError as exc:
            problems.append((days_spec, str(exc)))
            continue
        for day in days:
            by_day.setdefault(day, []).extend(parsed)
    for day, day_ranges in sorted(by_day.items()):
        day_ranges.sort()
        for (_, end), (start, _) in zip(day_ranges, day_ranges[1:], strict=False):
            if start < end:
                name = next(k for k, v in _DAYS.items() if v == day)
                problems.append((None, f"opening hours overlap on {name}"))
                break
    if not problems and not any(by_day.values()):
        problems.append((None, "a calendar needs some opening hours"))
    return problems


def _week(hours: dict[str, str | list[str]]) -> tuple[tuple[Range, ...], ...]:
    by_day: dict[int, list[Range]] = {}
    for days_spec, ranges in hours.items():
        items = [ranges] if isinstance(ranges, str) else ranges
        for day in parse_days(days_spec):
            by_day.setdefault(day, []).extend(parse_range(item) for item in items)
    return week_from(by_day)


class PolicySpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)
    customer: CustomerKey | None = None
    priority: Priority | None = None
    first_response: timedelta | None = None
    resolution: timedelta | None = None
    calendar: str | None = None
    warning_at: float | None = Field(default=None, gt=0, lt=1)

    @field_validator("first_response", "resolution", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> Any:
        return None if value is None else parse_duration(value)

    @model_validator(mode="after")
    def _some_target(self) -> PolicySpec:
        if self.first_response is None and self.resolution is None:
            raise ValueError("a policy needs first_response, resolution or both")
        return self


class CustomerCalendarSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    calendar: str


class SlaFileSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    warning_at: float = Field(default=DEFAULT_WARNING_SHARE, gt=0, lt=1)
    default_calendar: str | None = None
    # Items are validated one by one (below), so one bad item hides none of the others.
    calendars: dict[str, Any] = Field(default_factory=dict)
    customers: dict[str, Any] = Field(default_factory=dict)
    policies: list[Any]


@dataclass(frozen=True)
class SlaPolicy:
    name: str
    customer: str | None
    priority: str | None
    first_response: timedelta | None
    resolution: timedelta | None
    calendar: str | None  # None: the customer's calendar, else the default
    warning_share: float
    line: int = 0

    def targets(self) -> dict[str, timedelta]:
        out = {}
        if self.first_response is not None:
            out["first_response"] = self.first_response
        if self.resolution is not None:
            out["resolution"] = self.resolution
        return out


@dataclass(frozen=True)
class SlaConfig:
    calendars: dict[str, BusinessCalendar]
    default_calendar: str
    customer_calendars: dict[str, str]
    policies: tuple[SlaPolicy, ...]
    source: str = ""
    lines: dict[str, int] = field(default_factory=dict)  # customer key -> line

    def select_policy(self, customer: str | None, priority: str | None) -> SlaPolicy | None:
        """customer+priority > customer > priority > default (neither)."""
        ranked = [
            (customer, priority) if customer is not None and priority is not None else None,
            (customer, None) if customer is not None else None,
            (None, priority) if priority is not None else None,
            (None, None),
        ]
        index = {(p.customer, p.priority): p for p in self.policies}
        for key in ranked:
            if key is not None and key in index:
                return index[key]
        return None

    def calendar_for(self, policy: SlaPolicy, customer: str | None) -> BusinessCalendar:
        """The policy's own calendar > the customer's > the default."""
        name = policy.calendar
        if name is None and customer is not None:
            name = self.customer_calendars.get(customer)
        return self.calendars[name or self.default_calendar]

    def unknown_customers(self, known: Iterable[str]) -> list[ConfigIssue]:
        """Customer keys the file names that the customer directory lacks (checked once
        the directory is loaded: in database mode it is not a file)."""
        have = set(known)
        named: dict[str, int] = {}
        for key, line in [
            *((k, self.lines.get(k, 0)) for k in self.customer_calendars),
            *((p.customer, p.line) for p in self.policies if p.customer is not None),
        ]:
            named[key] = min(line, named.get(key, line))
        return [
            ConfigIssue(self.source, line, f"unknown customer {key!r}")
            for key, line in sorted(named.items(), key=lambda kv: kv[1])
            if key not in have
        ]


def load_sla(path: Path) -> SlaConfig:
    """Raise ConfigFileError listing every problem, or return the configuration."""
    doc = read_yaml(path, WHAT)
    config = _build(doc) if doc.data is not None else None
    doc.raise_if_issues()
    assert config is not None  # no issues means it was built
    return config


def _build(doc: YamlDocument) -> SlaConfig | None:
    top = doc.validate(SlaFileSpec, doc.data)
    if top is None:
        return None
    calendars: dict[str, BusinessCalendar] = {}
    for name, raw in top.calendars.items():
        at_cal: tuple[str | int, ...] = ("calendars", name)
        if not name.strip() or len(name) > CALENDAR_NAME_MAX:
            # Stored with each ticket's SLA state: PostgreSQL would refuse a longer one at
            # every sweep (SQLite keeps it), so no sweep would ever get through.
            doc.issue(doc.line_at(at_cal), f"calendars: {name!r} is not a calendar name "
                      f"(text of 1 to {CALENDAR_NAME_MAX} characters)")
            continue
        spec = doc.validate(CalendarSpec, raw, at_cal)
        hours = raw.get("hours") if isinstance(raw, dict) else None
        problems = week_problems(hours) if _hours_shape(hours) else []
        for key, reason in problems:
            where = (*at_cal, "hours", key) if key is not None else (*at_cal, "hours")
            doc.issue(doc.line_at(where), f"calendars.{name}.hours: {reason}")
        if spec is not None and not problems:
            calendars[name] = spec.build(name)
    default = top.default_calendar
    if not top.calendars:
        if default is not None:
            doc.issue(doc.line_at(("default_calendar",)), f"unknown calendar {default!r}")
        # No calendars at all: every target counts around the clock.
        default = "24x7"
        calendars[default] = always_open(default)
    elif default is None:
        if len(top.calendars) > 1:
            doc.issue(doc.line_at(("calendars",)), "several calendars: name a default_calendar")
        default = next(iter(top.calendars))
    elif default not in top.calendars:
        doc.issue(doc.line_at(("default_calendar",)), f"unknown calendar {default!r}")

    def known_calendar(name: str, at: tuple[str | int, ...]) -> None:
        if name not in top.calendars and name != default:
            doc.issue(doc.line_at(at), f"unknown calendar {name!r} (defined: "
                      f"{', '.join(sorted(top.calendars)) or 'none'})")

    customer_calendars: dict[str, str] = {}
    lines: dict[str, int] = {}
    for key, raw in top.customers.items():
        at: tuple[str | int, ...] = ("customers", key)
        lines[key] = doc.line_at(at)
        if not KEY_RE.match(str(key)):
            doc.issue(lines[key], f"customers: {key!r} is not a customer key (lower-case letters, "
                      "digits, '.', '_' and '-')")
            continue
        spec = doc.validate(CustomerCalendarSpec, raw, at)
        if spec is not None:
            known_calendar(spec.calendar, (*at, "calendar"))
            customer_calendars[key] = spec.calendar

    policies: list[SlaPolicy] = []
    seen: dict[tuple[str | None, str | None], int] = {}
    names: dict[str, int] = {}
    for index, raw in enumerate(top.policies):
        at = ("policies", index)
        line = doc.line_at(at)
        name = raw.get("name") if isinstance(raw, dict) else None
        if isinstance(name, str):
            # Checked even for an invalid policy, so a duplicate shows in the same pass.
            if name in names:
                doc.issue(doc.line_at((*at, "name")),
                          f"duplicate policy name {name!r} (first at line {names[name]})")
            names.setdefault(name, line)
        spec = doc.validate(PolicySpec, raw, at)
        if spec is None:
            continue
        if spec.calendar is not None:
            known_calendar(spec.calendar, (*at, "calendar"))
        scope = (spec.customer, spec.priority.value if spec.priority else None)
        if scope in seen:
            doc.issue(line, f"a policy for {_scope(scope)} is already defined at line {seen[scope]}")
        seen.setdefault(scope, line)
        policies.append(SlaPolicy(
            name=spec.name,
            customer=spec.customer,
            priority=scope[1],
            first_response=spec.first_response,
            resolution=spec.resolution,
            calendar=spec.calendar,
            warning_share=spec.warning_at if spec.warning_at is not None else top.warning_at,
            line=line,
        ))
    return SlaConfig(calendars, default, customer_calendars, tuple(policies), doc.file, lines)


def _hours_shape(hours: Any) -> TypeGuard[dict[str, str | list[str]]]:
    """A mapping of day specs to a range or a list of ranges (else pydantic reports it)."""
    return isinstance(hours, dict) and all(
        isinstance(k, str)
        and (isinstance(v, str) or (isinstance(v, list) and all(isinstance(i, str) for i in v)))
        for k, v in hours.items()
    )


def _scope(scope: tuple[str | None, str | None]) -> str:
    customer, priority = scope
    if customer and priority:
        return f"customer {customer!r} and priority {priority!r}"
    if customer:
        return f"customer {customer!r}"
    if priority:
        return f"priority {priority!r}"
    return "every ticket (no customer, no priority)"
