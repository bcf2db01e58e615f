"""Event-triggered workflows: the YAML (event_trigger, customer), every mistake at its line,
and the start-up check of the customers workflows and the SLA file name."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from mailticket.runtime import Runtime, prepare_worker
from mailticket.types import TicketEvent
from mailticket.workflows.loader import WorkflowLoadError, load_workflows
from mailticket.workflows.schema import EventTrigger
from mailticket.yamlconfig import ConfigFileError
from tests.escalation.helpers import CUSTOMERS, berlin, write


def load(tmp_path: Path, text: str) -> object:
    path = tmp_path / "wf.yaml"
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return load_workflows(path)


def issues(tmp_path: Path, text: str) -> list[tuple[int, str]]:
    with pytest.raises(WorkflowLoadError) as info:
        load(tmp_path, text)
    return [(i.line, i.reason) for i in info.value.issues]


def test_event_workflows_load(tmp_path: Path) -> None:
    ws = load(tmp_path, """
        workflows:
          - name: warn
            event_trigger: {event: sla_warning, target: resolution}
            customer: [acme, 42]
            workflow_steps:
              - action: notify
                params: {to: [lead@example.com, assignee], template: sla_warning}
          - name: close
            event_trigger:
              event: ticket_idle
              days: 7
              status: pending
            workflow_steps:
              - action: close
                params: {template: closed_no_answer}
          - name: mail
            classification_trigger: "spoofed?"
            workflow_steps: [{action: quarantine}]
    """)
    warn, close, mail = ws.workflows  # type: ignore[attr-defined]
    assert warn.event == EventTrigger("sla_warning", "resolution")
    assert warn.customers == ("acme", 42) and warn.customer_line == 4
    assert warn.trigger_text == "event: sla_warning (resolution)"
    assert close.event == EventTrigger("ticket_idle", None, 7.0, ("pending",))
    assert close.trigger_text == "event: ticket_idle (7d, pending)"
    assert ws.idle_triggers() == [close.event]  # type: ignore[attr-defined]
    assert mail.event is None and mail.triggered_by("spoofed?")
    assert not warn.triggered_by("support_request")
    event = TicketEvent("sla_warning", 1, "resolution", berlin(2025, 12, 15, 10))
    assert ws.for_event(event, lambda: (42, "other")) == [warn]  # type: ignore[attr-defined]
    assert ws.for_event(event, lambda: (7, "initech")) == []  # type: ignore[attr-defined]
    idle = TicketEvent("ticket_idle", 1, "7d", berlin(2025, 12, 15, 10), idle_days=7.0)
    assert ws.for_event(idle) == [close]  # type: ignore[attr-defined]
    assert ws.for_event(TicketEvent("ticket_idle", 1, "3d", idle.at, idle_days=3.0)) == []  # type: ignore[attr-defined]


def test_mistakes_are_reported_at_their_lines(tmp_path: Path) -> None:
    found = issues(tmp_path, """
        workflows:
          - name: both
            classification_trigger: support_request
            event_trigger: {event: sla_warning}
            workflow_steps: [{action: add_tags, params: {tags: [x]}}]
          - name: idle without days
            event_trigger: {event: ticket_idle}
            workflow_steps: [{action: close}]
          - name: days on a warning
            event_trigger: {event: sla_warning, days: 3}
            workflow_steps: [{action: close}]
          - name: unknown event
            event_trigger: {event: sla_missed}
            workflow_steps: [{action: close}]
          - name: mail action on an event
            event_trigger: {event: sla_breached}
            workflow_steps:
              - action: notify
                params: {to: lead@example.com, template: sla_breached}
              - action: create_ticket
          - name: threshold on an event
            event_trigger: {event: sla_breached}
            confidence_threshold: 0.5
            workflow_steps: [{action: close}]
          - name: bad customer
            classification_trigger: support_request
            customer: ["ACME Corp", 0]
            workflow_steps: [{action: create_ticket}]
          - name: bad split
            classification_trigger: support_request
            workflow_steps:
              - action: create_ticket
                params: {split_by: customer, customer: acme}
          - name: bad recipient
            event_trigger: {event: sla_breached}
            workflow_steps:
              - action: notify
                params: {to: the boss, template: x}
    """)
    lines = dict(found)
    assert lines[4] == (
        "event_trigger: a workflow runs for mail (classification_trigger) or for ticket "
        "events (event_trigger), not both"
    )
    assert "ticket_idle needs `days:`" in lines[7]
    assert "`days:` and `status:` are for ticket_idle" in lines[10]
    assert lines[13].startswith("event_trigger.event: Input should be 'sla_warning'")
    assert lines[20].startswith("create_ticket needs an email; an event_trigger workflow has none")
    assert "confidence_threshold is for classification_trigger" in lines[23]
    assert "'ACME Corp' is not a customer key" in lines[27]
    assert "split_by: customer finds the customers itself" in lines[33]
    assert "'the boss': an address, `assignee` or `requester`" in lines[38]
    assert len(found) == 9, found


def test_start_up_refuses_customers_nobody_defined(
    make_runtime: Callable[..., Runtime], tmp_path: Path
) -> None:
    workflows = write(tmp_path, "wf.yaml", """
        workflows:
          - name: initech only
            classification_trigger: support_request
            customer: [acme, initech]
            workflow_steps: [{action: create_ticket}]
    """)
    sla = write(tmp_path, "sla.yaml", """
        policies:
          - {name: Standard, first_response: 4h}
          - {name: Umbrella, customer: umbrella, first_response: 1h}
    """)
    customers = write(tmp_path, "customers.yaml", CUSTOMERS)
    rt = make_runtime(workflows_path=workflows, sla_path=sla, customers_path=customers)
    with pytest.raises(ConfigFileError) as info:
        prepare_worker(rt)
    assert [str(i) for i in info.value.issues] == [
        f"{sla}:3: unknown customer 'umbrella'",
        f"{workflows}:4: workflow 'initech only': unknown customer 'initech'",
    ]
    # nothing was changed: the customers were not synced either
    from mailticket.customers.directory import list_customers

    with rt.session_factory() as s:
        assert list_customers(s) == []
