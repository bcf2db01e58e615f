"""The SLA clock wired in, on SQLite and PostgreSQL, with a clock the test moves: tickets
from mail start it, business hours and holidays shape it, `pending` (set through the API)
pauses it, the customer's reply restarts it, an agent's public comment is the first
response, and the sweep raises sla_warning and sla_breached once each."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select

from mailticket import metrics
from mailticket.runtime import Runtime
from mailticket.sla.models import SlaEvent, TicketSla, TicketStatusChange
from mailticket.sla.service import states_of
from tests.api.conftest import build_api
from tests.escalation.helpers import Setup, berlin, setup
from tests.mailfactory import make_email


def state(env: Setup, ticket_id: int) -> TicketSla:
    with env.session() as s:
        row = states_of(s, [ticket_id])[ticket_id]
        s.expunge(row)
        return row


def utc(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC)


def events(env: Setup) -> list[tuple[str, str, bool]]:
    with env.session() as s:
        return [(e.kind, e.target, e.fired) for e in s.scalars(select(SlaEvent).order_by(SlaEvent.id))]


def test_business_hours_pause_resume_first_response_and_events(
    make_runtime: Callable[..., Runtime], tmp_path: Path
) -> None:
    env = setup(make_runtime, tmp_path)
    api = build_api(env.runtime)
    opened = env.ingest(make_email(sender="jane@acme.example", message_id="<q1@acme.example>"))
    tid = opened.ticket_id

    env.sweep(berlin(2025, 12, 15, 10, 0))
    row = state(env, tid)
    assert (row.policy, row.calendar, row.state) == ("Standard", "office", "on_track")
    assert utc(row.first_response_due_at) == berlin(2025, 12, 15, 14, 0)
    # 16 business hours: Mon 10-17 (7), Tue 9-17 (8), Wed 9-10 (1)
    assert utc(row.resolution_due_at) == berlin(2025, 12, 17, 10, 0)

    warned = env.sweep(berlin(2025, 12, 15, 13, 0))  # 3h of 4h: the 75% warning share
    assert [(e.kind, e.target) for e in warned.events] == [("sla_warning", "first_response")]
    assert env.sweep(berlin(2025, 12, 15, 13, 5)).events == []  # once

    # An agent asks a question and waits for the customer: the clock stops.
    env.clock.set(berlin(2025, 12, 15, 13, 30))
    answer = api.client.patch(f"/api/v1/tickets/{tid}", json={"status": "pending"},
                              headers=api.auth("write"))
    assert answer.status_code == 200, answer.text
    paused = env.sweep(berlin(2025, 12, 15, 16, 59))
    assert paused.events == []
    row = state(env, tid)
    assert row.paused and row.first_response_due_at is None and row.state == "warning"

    # The customer replies the next morning: open again, 30 minutes of the 4h left.
    env.clock.set(berlin(2025, 12, 16, 10, 0))
    reply = env.ingest(make_email(sender="jane@acme.example", in_reply_to="<q1@acme.example>"))
    assert reply.action == "linked" and env.ticket(tid).status == "open"
    env.sweep()
    row = state(env, tid)
    assert not row.paused and utc(row.first_response_due_at) == berlin(2025, 12, 16, 10, 30)

    breached = env.sweep(berlin(2025, 12, 16, 10, 31))
    assert [(e.kind, e.target) for e in breached.events] == [("sla_breached", "first_response")]
    assert breached.breaches == 1
    assert env.sweep(berlin(2025, 12, 16, 10, 40)).events == []

    # The agent's public answer is the first response (an internal note is not).
    env.clock.set(berlin(2025, 12, 16, 10, 45))
    before = (metrics.sample_value(metrics.FIRST_RESPONSE_SECONDS + "_count") or 0)
    note = api.client.post(f"/api/v1/tickets/{tid}/comments",
                           json={"body": "checking", "visibility": "internal"},
                           headers=api.auth("write"))
    assert note.status_code == 201
    assert state(env, tid).first_response_at is None
    said = api.client.post(f"/api/v1/tickets/{tid}/comments",
                           json={"body": "Fixed the printer.", "visibility": "public"},
                           headers=api.auth("write"))
    assert said.status_code == 201
    assert (metrics.sample_value(metrics.FIRST_RESPONSE_SECONDS + "_count") or 0) == before + 1
    env.sweep()
    row = state(env, tid)
    assert utc(row.first_response_at) == berlin(2025, 12, 16, 10, 45)
    assert row.first_response_state == "breached"  # late stays late
    assert events(env) == [
        ("sla_warning", "first_response", True), ("sla_breached", "first_response", True),
    ]
    with env.session() as s:
        history = [(h.status, h.source) for h in s.scalars(
            select(TicketStatusChange).order_by(TicketStatusChange.changed_at))]
    assert history == [("pending", "api"), ("open", "email")]
    api.client.close()


def test_holidays_and_the_customers_own_policy(
    make_runtime: Callable[..., Runtime], tmp_path: Path
) -> None:
    env = setup(make_runtime, tmp_path, start=berlin(2025, 12, 24, 16, 0).astimezone(UTC))
    normal = env.ingest(make_email(sender="jane@acme.example"))
    urgent = env.ingest(make_email(sender="jane@acme.example", subject="URGENT: server down"))
    env.sweep()
    # Wed 16-17 (1h), Christmas Thu and Fri, a weekend, then Mon 9-12 (3h).
    assert utc(state(env, normal.ticket_id).first_response_due_at) == berlin(2025, 12, 29, 12, 0)
    row = state(env, urgent.ticket_id)
    assert row.policy == "ACME urgent"
    assert utc(row.first_response_due_at) == berlin(2025, 12, 24, 17, 0)
    first = env.sweep(berlin(2025, 12, 24, 17, 0)).events
    assert [(e.ticket_id, e.kind, e.target) for e in first] == [
        (urgent.ticket_id, "sla_breached", "first_response")
    ]
    # Christmas, then a weekend: nothing moves until Monday morning.
    assert env.sweep(berlin(2025, 12, 28, 23, 59)).events == []
    morning = env.sweep(berlin(2025, 12, 29, 11, 59)).events
    assert {(e.ticket_id, e.kind) for e in morning} == {
        (normal.ticket_id, "sla_warning"), (urgent.ticket_id, "sla_warning")
    }
    late = {(e.ticket_id, e.kind, e.target) for e in env.sweep(berlin(2025, 12, 29, 12, 0)).events}
    assert late == {
        (normal.ticket_id, "sla_breached", "first_response"),
        (urgent.ticket_id, "sla_breached", "resolution"),  # 4h: Wed 16-17, Mon 9-12
    }


def test_a_reply_to_a_resolved_ticket_resumes_the_resolution_clock(
    make_runtime: Callable[..., Runtime], tmp_path: Path
) -> None:
    env = setup(make_runtime, tmp_path)
    api = build_api(env.runtime)
    opened = env.ingest(make_email(sender="jane@acme.example", message_id="<r1@acme.example>"))
    tid = opened.ticket_id
    env.clock.set(berlin(2025, 12, 15, 12, 0))
    done = api.client.patch(f"/api/v1/tickets/{tid}", json={"status": "resolved"},
                            headers=api.auth("write"))
    assert done.status_code == 200
    env.sweep(berlin(2025, 12, 16, 12, 0))
    row = state(env, tid)
    assert row.resolution_due_at is None and row.state == "on_track"
    env.clock.set(berlin(2025, 12, 16, 12, 0))
    env.ingest(make_email(sender="jane@acme.example", in_reply_to="<r1@acme.example>"))
    env.sweep()
    # 2h used on Monday; 14h left from Tue 12:00: Tue 12-17 (5), Wed (8), Thu 9-10 (1)
    assert utc(state(env, tid).resolution_due_at) == berlin(2025, 12, 18, 10, 0)
    api.client.close()


def test_a_priority_change_through_the_api_picks_another_policy(
    make_runtime: Callable[..., Runtime], tmp_path: Path
) -> None:
    env = setup(make_runtime, tmp_path)
    api = build_api(env.runtime)
    opened = env.ingest(make_email(sender="jane@acme.example"))
    env.sweep()
    assert state(env, opened.ticket_id).policy == "Standard"
    changed = api.client.patch(f"/api/v1/tickets/{opened.ticket_id}",
                               json={"priority": "critical"}, headers=api.auth("write"))
    assert changed.status_code == 200
    env.sweep()
    row = state(env, opened.ticket_id)
    assert row.policy == "ACME urgent"
    assert utc(row.first_response_due_at) == berlin(2025, 12, 15, 11, 0)
    api.client.close()
