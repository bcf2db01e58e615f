"""Time-triggered workflows end to end, on SQLite and PostgreSQL, with a clock the test
moves: the sweep raises an event once, the workflows whose event_trigger names it run
(logged with the event as their trigger), and their mail reaches a real SMTP server."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from sqlalchemy import func, select

from mailticket.outbound.smtp import deliver_outgoing_mail
from mailticket.runtime import Runtime
from mailticket.sla.models import TicketStatusChange
from mailticket.sla.service import record_status
from mailticket.store.models import EmailLog, Ticket, WorkflowExecution
from tests.escalation.helpers import Setup, berlin, setup
from tests.mailfactory import make_email
from tests.smtp_sink import SmtpSink

WARN = """
workflows:
  - name: tickets
    classification_trigger: support_request
    workflow_steps:
      - action: create_ticket
  - name: warn the lead
    event_trigger: {event: sla_warning, target: first_response}
    workflow_steps:
      - action: notify
        params: {to: lead@support.example, template: sla_warning}
      - action: set_priority
        params: {priority: high}
"""

IDLE = """
workflows:
  - name: tickets
    classification_trigger: support_request
    workflow_steps:
      - action: create_ticket
  - name: remind after 3 days
    event_trigger: {event: ticket_idle, days: 3, status: pending}
    workflow_steps:
      - action: add_tags
        params: {tags: [reminded]}
  - name: close after 7 days
    event_trigger: {event: ticket_idle, days: 7, status: pending}
    workflow_steps:
      - action: close
        params: {template: closed_no_answer}
"""


def smtp(sink: SmtpSink) -> dict[str, object]:
    return {"smtp_host": sink.host, "smtp_port": sink.port, "smtp_tls": "plain"}


def _agent_waits(env: Setup, tid: int) -> None:
    """The agent set the ticket to pending now (through the API), waiting for the customer."""
    with env.session() as s:
        s.get_one(Ticket, tid).status = "pending"
        record_status(s, tid, "pending", env.clock(), source="api")
        s.commit()


def runs(env: Setup) -> list[tuple[str, str | None, int | None, str, str | None]]:
    with env.session() as s:
        return [
            (r.workflow_name, r.trigger, r.ticket_id, r.status, r.email_message_id)
            for r in s.scalars(
                select(WorkflowExecution)
                .where(WorkflowExecution.trigger.is_not(None))
                .order_by(WorkflowExecution.created_at, WorkflowExecution.id)
            )
        ]


async def test_sla_warning_notifies_by_mail_once(
    make_runtime: Callable[..., Runtime], tmp_path: Path, smtp_sink: SmtpSink
) -> None:
    env = setup(make_runtime, tmp_path, workflows=WARN, ticket_timezone="Europe/Berlin",
                **smtp(smtp_sink))
    opened = env.ingest(make_email(sender="Jane <jane@acme.example>", subject="Printer on fire"))
    assert opened.action == "created"
    assert env.ticket(opened.ticket_id).customer_id == 101

    assert env.sweep(berlin(2025, 12, 15, 12, 59)).events == []
    fired = env.sweep(berlin(2025, 12, 15, 13, 0))  # 3h of 4h
    assert [(e.kind, e.target) for e in fired.events] == [("sla_warning", "first_response")]
    assert fired.runs == [("warn the lead", "sla_warning:first_response", "ok")]
    assert env.sweep(berlin(2025, 12, 15, 13, 30)).runs == []  # once per ticket and target

    report = await deliver_outgoing_mail(env.runtime.session_factory, env.runtime.settings)
    assert report.done == 1
    (sent,) = smtp_sink.messages
    assert sent.rcpt_tos == ["lead@support.example"]
    msg = sent.message()
    assert msg["Subject"] == (
        f"[{opened.ticket_number}] SLA warning: first response: Printer on fire"
    )
    body = msg.get_content()
    assert "close to missing its SLA" in body and "ACME Corp" in body
    assert "First response due: 2025-12-15 14:00 CET" in body
    assert runs(env) == [
        ("warn the lead", "sla_warning:first_response", opened.ticket_id, "ok", None)
    ]
    ticket = env.ticket(opened.ticket_id)
    assert ticket.priority == "high"
    with env.session() as s:
        out = s.scalars(select(EmailLog).where(EmailLog.direction == "out")).one()
        assert (out.ticket_id, out.action, out.email_to) == (
            opened.ticket_id, "notify", "lead@support.example"
        )


async def test_ticket_pending_seven_days_is_closed_with_a_mail(
    make_runtime: Callable[..., Runtime], tmp_path: Path, smtp_sink: SmtpSink
) -> None:
    env = setup(make_runtime, tmp_path, workflows=IDLE, sla=None, **smtp(smtp_sink))
    opened = env.ingest(make_email(
        sender="Jane <jane@acme.example>", subject="VPN drops", message_id="<vpn@acme.example>"
    ))
    tid = opened.ticket_id
    # The agent asks something and waits (Monday 12:00).
    env.clock.set(berlin(2025, 12, 15, 12, 0))
    _agent_waits(env, tid)

    assert env.sweep(berlin(2025, 12, 18, 11, 59)).events == []
    reminded = env.sweep(berlin(2025, 12, 18, 12, 0))
    assert reminded.runs == [("remind after 3 days", "ticket_idle:3d", "ok")]
    assert env.sweep(berlin(2025, 12, 22, 11, 0)).runs == []
    closed = env.sweep(berlin(2025, 12, 22, 12, 0))
    assert closed.runs == [("close after 7 days", "ticket_idle:7d", "ok")]
    assert env.sweep(berlin(2025, 12, 30, 12, 0)).runs == []  # closed: no longer idle

    ticket = env.ticket(tid)
    assert ticket.status == "closed" and "reminded" in ticket.tags
    await deliver_outgoing_mail(env.runtime.session_factory, env.runtime.settings)
    (sent,) = smtp_sink.messages
    assert sent.rcpt_tos == ["jane@acme.example"]
    msg = sent.message()
    assert msg["In-Reply-To"] == "<vpn@acme.example>"
    assert msg["Subject"] == f"[{opened.ticket_number}] VPN drops"
    assert "After 7 days without an answer we have closed it." in msg.get_body(
        ("plain",)).get_content()
    with env.session() as s:
        history = [(h.status, h.source) for h in s.scalars(
            select(TicketStatusChange).order_by(TicketStatusChange.changed_at))]
        assert history == [("pending", "api"), ("closed", "workflow")]

    # The customer answers the close notice: the ticket opens again, a new quiet period.
    env.clock.set(berlin(2025, 12, 23, 9, 0))
    our_id = msg["Message-ID"]
    back = env.ingest(make_email(sender="jane@acme.example", in_reply_to=our_id, subject="no!"))
    assert back.action == "reopened" and back.ticket_id == tid
    assert env.ticket(tid).status == "open"
    assert env.sweep(berlin(2025, 12, 31, 9, 0)).runs == []  # open, not pending


def test_event_workflows_limited_to_a_customer_and_failures_logged(
    make_runtime: Callable[..., Runtime], tmp_path: Path
) -> None:
    env = setup(make_runtime, tmp_path, assignee_addresses='{"7": "anna@support.example"}',
                workflows="""
        workflows:
          - name: tickets
            classification_trigger: support_request
            workflow_steps:
              - action: create_ticket
          - name: acme breaches go to anna
            event_trigger: {event: sla_breached}
            customer: acme
            stop: false
            workflow_steps:
              - action: assign
                params: {user_id: 7}
              - action: notify
                params: {to: assignee, template: sla_breached}
          - name: everybody's breach pages the assignee
            event_trigger: {event: sla_breached, target: first_response}
            workflow_steps:
              - action: notify
                params: {to: [assignee], template: sla_breached}
    """)
    acme = env.ingest(make_email(sender="jane@acme.example"))
    other = env.ingest(make_email(sender="joe@unknown.example"))
    result = env.sweep(berlin(2025, 12, 15, 14, 0))  # both miss their first response
    assert sorted(result.runs) == sorted([
        ("acme breaches go to anna", "sla_breached:first_response", "ok"),
        ("everybody's breach pages the assignee", "sla_breached:first_response", "ok"),
        ("everybody's breach pages the assignee", "sla_breached:first_response", "failed"),
    ])
    assert env.ticket(acme.ticket_id).assigned_to_user_id == 7
    assert env.ticket(other.ticket_id).assigned_to_user_id is None
    with env.session() as s:
        failed = s.scalars(select(WorkflowExecution).where(
            WorkflowExecution.status == "failed")).one()
        assert failed.ticket_id == other.ticket_id
        assert failed.error == "notify has no recipient: assignee: the ticket has none"
        sent_to = s.scalars(select(EmailLog.email_to).where(EmailLog.direction == "out")).all()
        # one mail per event, workflow and recipient
        assert sorted(sent_to) == ["anna@support.example", "anna@support.example"]
        assert s.scalar(select(func.count()).select_from(EmailLog).where(
            EmailLog.action == "notify")) == 2


def test_an_idle_period_in_hours_runs_its_workflow(
    make_runtime: Callable[..., Runtime], tmp_path: Path
) -> None:
    """`days: 0.0416666667` is an hour: the event the sweep raises for it runs the
    workflow (its quiet period was read back rounded, 0.0416667, and matched nothing)."""
    env = setup(make_runtime, tmp_path, sla=None, workflows="""
        workflows:
          - name: tickets
            classification_trigger: support_request
            workflow_steps:
              - action: create_ticket
          - name: nudge after an hour
            event_trigger: {event: ticket_idle, days: 0.0416666667, status: pending}
            workflow_steps:
              - action: add_tags
                params: {tags: [nudged]}
    """)
    opened = env.ingest(make_email(sender="jane@acme.example", subject="VPN drops"))
    tid = opened.ticket_id
    env.clock.set(berlin(2025, 12, 15, 12, 0))
    _agent_waits(env, tid)
    assert env.sweep(berlin(2025, 12, 15, 12, 59)).events == []
    nudged = env.sweep(berlin(2025, 12, 15, 13, 1))
    assert [e.trigger for e in nudged.events] == ["ticket_idle:0.0416667d"]
    assert nudged.runs == [("nudge after an hour", "ticket_idle:0.0416667d", "ok")]
    assert "nudged" in env.ticket(tid).tags
    assert env.sweep(berlin(2025, 12, 15, 14, 0)).runs == []
