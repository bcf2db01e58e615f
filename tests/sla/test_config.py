"""SLA_PATH: calendars and policies, every mistake at its line; policy selection."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import pytest

from mailticket.settings import ConfigError, load_settings
from mailticket.sla.config import load_sla, parse_days, parse_duration
from mailticket.yamlconfig import ConfigFileError
from tests.sla.helpers import BERLIN, H, M, at, load, write_sla

FULL = """
warning_at: 0.8
default_calendar: office
calendars:
  office:
    timezone: Europe/Berlin
    hours:
      mon-fri: ["08:00-12:00", "13:00-17:00"]
      sat: "09:00-12:00"
    holidays: {country: DE, subdivision: BY}
    closed: ["2025-12-24", "2025-12-31"]
  always:
    timezone: UTC
    hours: 24x7
customers:
  acme: {calendar: always}
policies:
  - {name: Default, resolution: 40h}
  - {name: Critical, priority: critical, first_response: 30m, resolution: 4h, warning_at: 0.5}
  - {name: ACME, customer: acme, first_response: 1h, resolution: 1h30m}
  - name: ACME critical
    customer: acme
    priority: critical
    first_response: 15m
    calendar: office
"""


def issues(tmp_path: Path, text: str) -> list[tuple[int, str]]:
    with pytest.raises(ConfigFileError) as info:
        load_sla(write_sla(tmp_path, text))
    assert all(issue.file.endswith("sla.yaml") for issue in info.value.issues)
    return [(issue.line, issue.reason) for issue in info.value.issues]


def test_full_example_loads(tmp_path: Path) -> None:
    config = load(tmp_path, FULL)
    office = config.calendars["office"]
    assert office.timezone == "Europe/Berlin" and office.weekly_minutes == (5 * 8 + 3) * 60
    assert office.is_closed(date(2025, 12, 24)) and office.is_closed(date(2025, 1, 6))
    assert config.calendars["always"].weekly_minutes == 7 * 24 * 60
    critical = config.select_policy(None, "critical")
    assert critical is not None
    assert (critical.first_response, critical.resolution, critical.warning_share) == (30 * M, 4 * H, 0.5)
    assert config.select_policy(None, "low").name == "Default"  # type: ignore[union-attr]
    assert config.select_policy(None, "low").warning_share == 0.8  # type: ignore[union-attr]
    # Saturday morning counts on the office calendar.
    assert office.business_time(at(BERLIN, 2025, 12, 13, 9), at(BERLIN, 2025, 12, 13, 12)) == 3 * H


@pytest.mark.parametrize(
    ("customer", "priority", "expected"),
    [
        ("acme", "critical", "ACME critical"),  # customer + priority
        ("acme", "low", "ACME"),  # customer
        ("acme", None, "ACME"),
        ("globex", "critical", "Critical"),  # priority
        (None, "critical", "Critical"),
        ("globex", "normal", "Default"),  # default
        (None, None, "Default"),
    ],
)
def test_policy_precedence(tmp_path: Path, customer: str | None, priority: str | None, expected: str) -> None:
    config = load(tmp_path, FULL)
    chosen = config.select_policy(customer, priority)
    assert chosen is not None and chosen.name == expected


def test_without_a_default_policy_some_tickets_have_none(tmp_path: Path) -> None:
    config = load(tmp_path, "policies:\n  - {name: C, priority: critical, resolution: 4h}\n")
    assert config.select_policy(None, "normal") is None


def test_calendar_precedence(tmp_path: Path) -> None:
    config = load(tmp_path, FULL)
    acme = config.select_policy("acme", "low")
    acme_critical = config.select_policy("acme", "critical")
    default = config.select_policy("globex", "low")
    assert acme and acme_critical and default
    assert config.calendar_for(acme, "acme").name == "always"  # the customer's
    assert config.calendar_for(acme_critical, "acme").name == "office"  # the policy's own
    assert config.calendar_for(default, "globex").name == "office"  # the default
    assert config.calendar_for(default, "acme").name == "always"


def test_no_calendars_means_around_the_clock(tmp_path: Path) -> None:
    config = load(tmp_path, "policies:\n  - {name: D, first_response: 8h}\n")
    assert config.default_calendar == "24x7"
    assert config.calendars["24x7"].weekly_minutes == 7 * 24 * 60


def test_one_calendar_is_the_default(tmp_path: Path) -> None:
    config = load(tmp_path, """
        calendars:
          only: {timezone: Asia/Tokyo, hours: {mon-fri: "09:00-18:00"}}
        policies:
          - {name: D, first_response: 8h}
    """)
    assert config.default_calendar == "only"


def test_unknown_customers_are_reported_against_the_directory(tmp_path: Path) -> None:
    config = load(tmp_path, FULL)
    found = config.unknown_customers(["globex"])
    # Once per key, at the first line that names it.
    assert [(i.line, i.reason) for i in found] == [(15, "unknown customer 'acme'")]
    assert config.unknown_customers(["acme"]) == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("8h", 8 * H), ("90m", 90 * M), ("1h30m", 90 * M), ("1h 30m", 90 * M), ("45min", 45 * M),
    ],
)
def test_durations(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["2d", "0h", "", "h", "8", "1.5h", "-1h"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="business-time duration"):
        parse_duration(text)


def test_day_specs() -> None:
    assert parse_days("mon-fri") == [0, 1, 2, 3, 4]
    assert parse_days("sat,sun") == [5, 6]
    assert parse_days("fri-mon") == [4, 5, 6, 0]


def test_every_mistake_at_its_line(tmp_path: Path) -> None:
    found = issues(tmp_path, """
        default_calendar: office
        calendars:
          office:
            timezone: Europe/Berlni
            hours:
              mon-fry: "08:00-17:00"
              sat: "17:00-09:00"
            holidays: {country: XX}
          night:
            timezone: UTC
            hours: {mon: ["08:00-12:00", "11:00-13:00"]}
        customers:
          acme: {calendar: nowhere}
          Not A Key: {calendar: office}
        policies:
          - {name: Default, resolution: 2d}
          - {name: Default, priority: critical, first_response: 1h}
          - {name: Other, priority: critical, first_response: 2h}
          - {name: Empty}
          - {name: Cal, calendar: nope, first_response: 1h}
          - {name: P, priority: urgent, first_response: 1h}
          - {name: W, first_response: 1h, warning_at: 1.5, colour: red}
    """)
    lines = {line for line, _ in found}
    text = "\n".join(f"{line}: {reason}" for line, reason in found)
    assert (4, "calendars.office.timezone: unknown time zone 'Europe/Berlni' (an IANA name like Europe/Berlin) (got 'Europe/Berlni')") in found, text
    assert any(line == 6 and "mon-fry" in reason for line, reason in found), text
    assert any(line == 7 and "must end after it starts" in reason for line, reason in found), text
    assert any(line == 8 and "Country XX not available" in reason for line, reason in found), text
    assert any(line == 11 and "overlap on mon" in reason for line, reason in found), text
    assert any(line == 13 and "unknown calendar 'nowhere'" in reason for line, reason in found), text
    assert any(line == 14 and "Not A Key" in reason for line, reason in found), text
    assert any(line == 16 and "business-time duration" in reason for line, reason in found), text
    assert any(line == 17 and "duplicate policy name 'Default'" in reason for line, reason in found), text
    assert any(line == 18 and "already defined at line 17" in reason for line, reason in found), text
    assert any(line == 19 and "needs first_response, resolution or both" in reason for line, reason in found), text
    assert any(line == 20 and "unknown calendar 'nope'" in reason for line, reason in found), text
    assert any(line == 21 and "priority" in reason for line, reason in found), text
    assert any(line == 22 and "warning_at" in reason for line, reason in found), text
    assert any(line == 22 and "unknown key 'colour'" in reason for line, reason in found), text
    assert lines <= set(range(1, 23))


@pytest.mark.parametrize("zone", ["localtime", "posixrules", "Factory"])
def test_the_machines_own_zone_is_refused(tmp_path: Path, zone: str) -> None:
    """`localtime` loads (it is the host's /etc/localtime), so opening hours would follow
    whatever zone the server or its container happens to be set to: named, never guessed."""
    found = issues(tmp_path, f"""
        calendars:
          office: {{timezone: {zone}, hours: {{mon-fri: "09:00-17:00"}}}}
        policies:
          - {{name: Default, first_response: 4h}}
    """)
    assert len(found) == 1 and found[0][0] == 2, found
    assert f"calendars.office.timezone: {zone!r} is no place's time zone" in found[0][1]


def test_a_calendar_name_must_fit_the_database(tmp_path: Path) -> None:
    """Each ticket's SLA state names its calendar in a 64-character column: a longer name
    loaded fine and then failed every sweep on PostgreSQL (SQLite stored it)."""
    long = "office-hours-berlin-munich-and-frankfurt-with-bavarian-public-holidays"
    found = issues(tmp_path, f"""
        default_calendar: {long}
        calendars:
          {long}: {{timezone: Europe/Berlin, hours: {{mon-fri: "09:00-17:00"}}}}
          "": {{timezone: UTC, hours: 24x7}}
        policies:
          - {{name: Default, first_response: 4h}}
    """)
    assert found == [
        (3, f"calendars: {long!r} is not a calendar name (text of 1 to 64 characters)"),
        (4, "calendars: '' is not a calendar name (text of 1 to 64 characters)"),
    ]


def test_holiday_categories_beyond_the_public_ones(tmp_path: Path) -> None:
    """Munich's team has Assumption Day (Fri 2025-08-15) off: the holidays package files
    it under `catholic` for Bavaria, so the calendar names that category too."""
    config = load(tmp_path, """
        calendars:
          munich:
            timezone: Europe/Berlin
            hours: {mon-fri: "09:00-17:00"}
            holidays: {country: DE, subdivision: BY, categories: [public, catholic]}
          berlin:
            timezone: Europe/Berlin
            hours: {mon-fri: "09:00-17:00"}
            holidays: {country: DE, subdivision: BY}
        default_calendar: munich
        policies:
          - {name: Default, first_response: 4h}
    """)
    assumption, christmas = date(2025, 8, 15), date(2025, 12, 25)
    munich, plain = config.calendars["munich"], config.calendars["berlin"]
    assert munich.holiday_name(assumption) == "Assumption Day"
    assert munich.is_closed(christmas) and plain.is_closed(christmas)
    assert not plain.is_closed(assumption)
    thursday_16 = at(BERLIN, 2025, 8, 14, 16)
    assert munich.add_business_time(thursday_16, 2 * H) == at(BERLIN, 2025, 8, 18, 10)
    found = issues(tmp_path, """
        calendars:
          office:
            timezone: Europe/Berlin
            hours: {mon-fri: "09:00-17:00"}
            holidays: {country: DE, categories: [catolic]}
        policies:
          - {name: Default, first_response: 4h}
    """)
    assert found == [(5, "calendars.office.holidays: unknown to the holidays package: "
                         "Category is not supported: catolic.")]


def test_yaml_syntax_error(tmp_path: Path) -> None:
    assert issues(tmp_path, "policies:\n  - {name: x\n")[0][0] == 3


def test_empty_file_and_missing_policies(tmp_path: Path) -> None:
    assert issues(tmp_path, "") == [(1, "file is empty: expected `policies:` (and optionally `calendars:`, `customers:`)")]
    assert issues(tmp_path, "calendars: {}\n") == [(1, "missing required key 'policies'")]


def test_several_calendars_need_a_default(tmp_path: Path) -> None:
    found = issues(tmp_path, """
        calendars:
          a: {timezone: UTC, hours: 24x7}
          b: {timezone: UTC, hours: 24x7}
        policies:
          - {name: D, first_response: 1h}
    """)
    assert found == [(1, "several calendars: name a default_calendar")]


def test_duplicate_keys_are_errors(tmp_path: Path) -> None:
    found = issues(tmp_path, """
        policies:
          - name: D
            first_response: 1h
            first_response: 2h
    """)
    assert found == [(4, "duplicate key 'first_response'")]


def test_settings_name_the_file(tmp_path: Path) -> None:
    path = write_sla(tmp_path, FULL)
    assert load_settings(_env_file=None, sla_path=str(path)).sla_path == path
    with pytest.raises(ConfigError, match="SLA_PATH"):
        load_settings(_env_file=None, sla_path=str(tmp_path / "missing.yaml"))
