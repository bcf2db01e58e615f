from __future__ import annotations

import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from mailticket.sla.calendar import BusinessCalendar, always_open, week_from
from mailticket.sla.config import SlaConfig, SlaPolicy, load_sla

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
H = timedelta(hours=1)
M = timedelta(minutes=1)


def at(tz: ZoneInfo, *parts: int) -> datetime:
    """A wall-clock time in `tz`, as an aware datetime."""
    return datetime(*parts, tzinfo=tz)  # type: ignore[misc]


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


def office(
    tz: str = "Europe/Berlin",
    *,
    country: str | None = None,
    subdivision: str | None = None,
    closed: frozenset[object] = frozenset(),
) -> BusinessCalendar:
    """Mon-Fri 09:00-17:00."""
    return BusinessCalendar(
        "office", tz, week_from({d: [(9 * 60, 17 * 60)] for d in range(5)}),
        country=country, subdivision=subdivision, closed_days=closed,  # type: ignore[arg-type]
    )


def policy(
    first_response: timedelta | None = 4 * H,
    resolution: timedelta | None = 16 * H,
    share: float = 0.75,
    name: str = "p",
) -> SlaPolicy:
    return SlaPolicy(name, None, None, first_response, resolution, None, share)


def write_sla(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sla.yaml"
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def load(tmp_path: Path, text: str) -> SlaConfig:
    return load_sla(write_sla(tmp_path, text))


__all__ = ["always_open"]
