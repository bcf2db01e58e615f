"""The SLA clock, on a controlled `now`: business hours, pause while pending, resume on the
customer's reply, first response and resolution, warning share, breach."""

from __future__ import annotations

from datetime import datetime, timedelta

from mailticket.sla.calendar import BusinessCalendar, always_open
from mailticket.sla.clock import SlaState, StatusSpan, compute
from mailticket.sla.config import SlaPolicy
from tests.sla.helpers import BERLIN, H, M, at, office, policy

MON_10 = at(BERLIN, 2025, 12, 15, 10)


def mon(hour: int, minute: int = 0) -> datetime:
    return at(BERLIN, 2025, 12, 15, hour, minute)


def tue(hour: int, minute: int = 0) -> datetime:
    return at(BERLIN, 2025, 12, 16, hour, minute)


def run(
    now: datetime,
    *,
    history: list[tuple[str, datetime]] = (),  # type: ignore[assignment]
    created: datetime = MON_10,
    first_response_at: datetime | None = None,
    pol: SlaPolicy | None = None,
    cal: BusinessCalendar | None = None,
) -> SlaState:
    return compute(
        pol or policy(),
        cal or office(),
        created_at=created,
        history=[StatusSpan(s, t) for s, t in history],
        first_response_at=first_response_at,
        now=now,
    )


def test_fresh_ticket_is_on_track_with_due_times() -> None:
    state = run(mon(11))
    first, res = state.first_response, state.resolution
    assert first is not None and res is not None
    assert (first.elapsed, first.state, first.paused) == (H, "on_track", False)
    assert first.due_at == mon(14)
    assert first.warning_at == mon(13)  # 75 % of 4h
    # 16h: 7h on Monday, 8h on Tuesday, 1h on Wednesday.
    assert res.due_at == at(BERLIN, 2025, 12, 17, 10)
    assert res.remaining == 15 * H
    assert (state.state, state.policy, state.calendar) == ("on_track", "p", "office")


def test_warning_at_the_share_then_breach_at_the_target() -> None:
    assert run(mon(12, 59)).first_response.state == "on_track"  # type: ignore[union-attr]
    warned = run(mon(13)).first_response
    assert warned is not None and warned.state == "warning" and warned.warned_at == mon(13)
    assert run(mon(13)).state == "warning"
    breached = run(mon(14)).first_response
    assert breached is not None and breached.state == "breached"
    assert breached.breached_at == mon(14) and breached.due_at == mon(14)
    # Still breached, still the same instants, a day later.
    later = run(tue(16)).first_response
    assert later is not None and (later.breached_at, later.warned_at) == (mon(14), mon(13))
    assert later.elapsed == 4 * H + 3 * H + 7 * H


def test_the_night_does_not_count() -> None:
    first = run(tue(9), created=mon(16)).first_response
    assert first is not None and first.elapsed == H
    assert first.due_at == tue(12)


def test_created_on_a_saturday_starts_on_monday() -> None:
    saturday = at(BERLIN, 2025, 12, 13, 10)
    assert run(at(BERLIN, 2025, 12, 14, 23), created=saturday).first_response.elapsed == timedelta(0)  # type: ignore[union-attr]
    first = run(mon(9, 30), created=saturday).first_response
    assert first is not None and first.elapsed == 30 * M and first.due_at == mon(13)


def test_pending_pauses_and_the_customers_reply_resumes() -> None:
    history = [("pending", mon(11))]
    paused = run(tue(15), history=history, first_response_at=mon(10, 45))
    res = paused.resolution
    assert res is not None
    assert (res.elapsed, res.paused, res.due_at, res.state) == (H, True, None, "on_track")
    assert paused.paused
    resumed = run(tue(16), history=[*history, ("open", tue(15))], first_response_at=mon(10, 45))
    res = resumed.resolution
    assert res is not None and (res.elapsed, res.paused) == (2 * H, False)
    # 14h left from Tue 16:00: 1h Tue, 8h Wed, 5h Thu.
    assert res.due_at == at(BERLIN, 2025, 12, 18, 14)


def test_a_long_pause_never_breaches() -> None:
    history = [("pending", mon(11))]
    state = run(at(BERLIN, 2026, 1, 30, 12), history=history, first_response_at=mon(10, 30))
    assert state.state == "on_track"
    assert state.resolution is not None and state.resolution.elapsed == H


def test_pause_also_holds_the_first_response_clock() -> None:
    # Set to pending without a reply (an agent waiting for a log file they asked by phone).
    state = run(tue(12), history=[("pending", mon(11)), ("open", tue(11))])
    first = state.first_response
    assert first is not None and first.elapsed == 2 * H and first.due_at == tue(14)


def test_first_response_in_time_completes_the_target() -> None:
    first = run(tue(16), first_response_at=mon(12)).first_response
    assert first is not None
    assert (first.state, first.completed_at, first.due_at, first.elapsed) == (
        "on_track", mon(12), None, 2 * H,
    )
    assert not first.paused


def test_first_response_after_the_warning_is_on_track() -> None:
    first = run(tue(16), first_response_at=mon(13, 30)).first_response
    assert first is not None and first.state == "on_track" and first.warned_at == mon(13)


def test_late_first_response_stays_breached() -> None:
    first = run(tue(16), first_response_at=mon(15)).first_response
    assert first is not None
    assert (first.state, first.breached_at, first.completed_at) == ("breached", mon(14), mon(15))


def test_resolution_completes_and_reopening_resumes_the_same_clock() -> None:
    history = [("resolved", mon(12))]
    done = run(tue(16), history=history, first_response_at=mon(11))
    res = done.resolution
    assert res is not None
    assert (res.state, res.completed_at, res.elapsed, res.due_at) == ("on_track", mon(12), 2 * H, None)
    reopened = run(tue(10), history=[*history, ("open", tue(9))], first_response_at=mon(11))
    res = reopened.resolution
    assert res is not None and res.completed_at is None
    assert res.elapsed == 3 * H  # 2h before the resolution, 1h since reopening
    # 13h left from Tue 10:00: 7h Tue, 6h Wed.
    assert res.due_at == at(BERLIN, 2025, 12, 17, 15)


def test_resolved_then_closed_is_one_stopped_stretch() -> None:
    state = run(tue(16), history=[("resolved", mon(12)), ("closed", tue(9))], first_response_at=mon(11))
    assert state.resolution is not None and state.resolution.completed_at == mon(12)


def test_resolved_without_a_reply_answers_the_first_response_too() -> None:
    state = run(tue(16), history=[("resolved", mon(11))])
    first = state.first_response
    assert first is not None and first.completed_at == mon(11) and first.state == "on_track"


def test_resolved_late_is_breached_for_good() -> None:
    pol = policy(first_response=None, resolution=2 * H)
    state = run(tue(16), history=[("resolved", mon(15))], pol=pol)
    assert state.first_response is None
    res = state.resolution
    assert res is not None
    assert (res.state, res.breached_at, res.completed_at) == ("breached", mon(12), mon(15))
    assert state.state == "breached"


def test_overall_state_is_the_worst_target() -> None:
    pol = policy(first_response=2 * H, resolution=40 * H, share=0.5)
    state = run(mon(11, 30), pol=pol)
    assert state.first_response.state == "warning"  # type: ignore[union-attr]
    assert state.resolution.state == "on_track"  # type: ignore[union-attr]
    assert state.state == "warning"


def test_24x7_across_spring_forward() -> None:
    """Created Saturday 12:00 CET; 24h later the clock on the wall says 13:00 CEST."""
    pol = policy(first_response=None, resolution=24 * H)
    saturday_noon = at(BERLIN, 2025, 3, 29, 12)
    state = run(saturday_noon + 2 * H, created=saturday_noon, pol=pol,
                cal=always_open(timezone="Europe/Berlin"))
    assert state.resolution is not None
    assert state.resolution.due_at == at(BERLIN, 2025, 3, 30, 13)


def test_business_hours_across_a_dst_change_with_a_pause() -> None:
    friday = at(BERLIN, 2025, 3, 28, 15)
    history = [("pending", at(BERLIN, 2025, 3, 28, 16)), ("open", at(BERLIN, 2025, 3, 31, 10))]
    state = run(at(BERLIN, 2025, 3, 31, 11), created=friday, history=history,
                pol=policy(first_response=None, resolution=4 * H))
    res = state.resolution
    assert res is not None and res.elapsed == 2 * H
    assert res.due_at == at(BERLIN, 2025, 3, 31, 13)


def test_history_order_and_spans_before_creation_do_not_matter() -> None:
    history = [("open", tue(9)), ("pending", mon(11)), ("open", mon(8))]
    state = run(tue(10), history=history, first_response_at=mon(10, 30))
    assert state.resolution is not None and state.resolution.elapsed == 2 * H


def test_a_future_change_is_ignored_until_it_happens() -> None:
    state = run(mon(11), history=[("resolved", tue(9))])
    assert state.resolution is not None and state.resolution.completed_at is None
