"""The SLA clock: pure functions of a ticket's status history, its calendar and `now`.

The clock runs while a ticket is open (any status that is neither paused nor stopped),
pauses while it is `pending` (waiting for the customer) and starts again when the status
returns to open (the customer replied). Only business time counts.

- first response: from creation until the first public agent reply; a ticket resolved
  without one counts as answered at its resolution.
- resolution: until the ticket is resolved or closed. Reopening resumes the same clock:
  time already used stays used.

A target is `breached` once its business time used reaches the target (and stays so even
if completed later), `warning` once it reaches the policy's warning share, else `on_track`.
A target completed in time is `on_track` with `completed_at` set.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from mailticket.sla.calendar import BusinessCalendar
from mailticket.sla.config import SlaPolicy

PAUSED = frozenset({"pending"})
STOPPED = frozenset({"resolved", "closed", "merged"})
State = Literal["on_track", "warning", "breached"]
_RANK: dict[State, int] = {"on_track": 0, "warning": 1, "breached": 2}
TARGETS = ("first_response", "resolution")


@dataclass(frozen=True)
class StatusSpan:
    """The ticket had `status` from `start` until the next span's start."""

    status: str
    start: datetime


@dataclass(frozen=True)
class TargetState:
    target: str  # first_response | resolution
    limit: timedelta  # business time allowed
    elapsed: timedelta  # business time used so far
    state: State
    # When the target breaches (or breached) if the clock runs on from now; None while
    # paused or completed before breaching.
    due_at: datetime | None
    warning_at: datetime | None
    breached_at: datetime | None  # when elapsed reached the limit
    warned_at: datetime | None  # when elapsed reached the warning share
    completed_at: datetime | None
    paused: bool

    @property
    def remaining(self) -> timedelta:
        return max(self.limit - self.elapsed, timedelta(0))


@dataclass(frozen=True)
class SlaState:
    policy: str
    calendar: str
    state: State  # the worst of the targets
    paused: bool
    first_response: TargetState | None
    resolution: TargetState | None

    def targets(self) -> list[TargetState]:
        return [t for t in (self.first_response, self.resolution) if t is not None]


def running_intervals(
    created_at: datetime, history: Sequence[StatusSpan], until: datetime
) -> list[tuple[datetime, datetime]]:
    """The [start, end) intervals in which the clock ran, between creation and `until`."""
    created_at, until = _utc(created_at), _utc(until)
    spans = sorted(history, key=lambda s: _utc(s.start))
    if not spans or _utc(spans[0].start) > created_at:
        # A ticket is open from its creation until its first recorded change.
        spans.insert(0, StatusSpan("open", created_at))
    out = []
    for index, span in enumerate(spans):
        start = max(_utc(span.start), created_at)
        end = _utc(spans[index + 1].start) if index + 1 < len(spans) else until
        end = min(end, until)
        if end > start and span.status not in PAUSED and span.status not in STOPPED:
            out.append((start, end))
    return out


def current_status(history: Sequence[StatusSpan], now: datetime) -> str:
    past = [s for s in history if _utc(s.start) <= _utc(now)]
    return max(past, key=lambda s: _utc(s.start)).status if past else "open"


def resolved_at(history: Sequence[StatusSpan], now: datetime) -> datetime | None:
    """Start of the current stopped stretch, if the ticket is stopped now."""
    past = sorted((s for s in history if _utc(s.start) <= _utc(now)), key=lambda s: _utc(s.start))
    if not past or past[-1].status not in STOPPED:
        return None
    start = past[-1].start
    for span in reversed(past):
        if span.status not in STOPPED:
            break
        start = span.start
    return _utc(start)


def target_state(
    target: str,
    limit: timedelta,
    warning_share: float,
    calendar: BusinessCalendar,
    running: list[tuple[datetime, datetime]],
    *,
    completed_at: datetime | None,
    running_now: bool,
    now: datetime,
) -> TargetState:
    now = _utc(now)
    end = min(completed_at, now) if completed_at is not None else now
    warn_limit = limit * warning_share
    elapsed = timedelta(0)
    warned_at = breached_at = None
    for start, finish in running:
        if start >= end:
            break
        finish = min(finish, end)
        used = calendar.business_time(start, finish)
        if warned_at is None and elapsed + used >= warn_limit:
            warned_at = calendar.add_business_time(start, warn_limit - elapsed)
        if breached_at is None and elapsed + used >= limit:
            breached_at = calendar.add_business_time(start, limit - elapsed)
        elapsed += used
    ticking = completed_at is None and running_now
    due_at = warning_at = None
    if breached_at is not None:
        due_at = breached_at
    elif ticking:
        due_at = calendar.add_business_time(now, limit - elapsed)
    if warned_at is not None:
        warning_at = warned_at
    elif ticking:
        warning_at = calendar.add_business_time(now, warn_limit - elapsed)
    state: State
    if breached_at is not None:
        state = "breached"
    elif warned_at is not None and completed_at is None:
        state = "warning"
    else:
        state = "on_track"
    return TargetState(
        target=target,
        limit=limit,
        elapsed=elapsed,
        state=state,
        due_at=due_at,
        warning_at=warning_at,
        breached_at=breached_at,
        warned_at=warned_at,
        completed_at=completed_at,
        paused=completed_at is None and not running_now,
    )


def compute(
    policy: SlaPolicy,
    calendar: BusinessCalendar,
    *,
    created_at: datetime,
    history: Sequence[StatusSpan],
    first_response_at: datetime | None,
    now: datetime,
) -> SlaState:
    """The SLA state of one ticket at `now`."""
    now = _utc(now)
    running = running_intervals(created_at, history, now)
    status = current_status(history, now)
    running_now = status not in PAUSED and status not in STOPPED
    done = resolved_at(history, now)
    answered = _utc(first_response_at) if first_response_at is not None else None
    if answered is not None and done is not None:
        answered = min(answered, done)
    elif answered is None:
        answered = done
    first = res = None
    if policy.first_response is not None:
        first = target_state(
            "first_response", policy.first_response, policy.warning_share, calendar, running,
            completed_at=answered, running_now=running_now, now=now,
        )
    if policy.resolution is not None:
        res = target_state(
            "resolution", policy.resolution, policy.warning_share, calendar, running,
            completed_at=done, running_now=running_now, now=now,
        )
    targets = [t for t in (first, res) if t is not None]
    worst: State = max((t.state for t in targets), key=lambda s: _RANK[s], default="on_track")
    return SlaState(
        policy=policy.name,
        calendar=calendar.name,
        state=worst,
        paused=any(t.paused for t in targets),
        first_response=first,
        resolution=res,
    )


def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError("SLA times must be timezone-aware")
    return moment.astimezone(UTC)
