"""Configuration files, a clock the tests move, and a runtime wired like the worker's."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailticket.escalation.job import SweepResult, run_sweep
from mailticket.runtime import Runtime, prepare_worker
from mailticket.store.models import Ticket

BERLIN = ZoneInfo("Europe/Berlin")

CUSTOMERS = """
customers:
  - key: acme
    name: ACME Corp
    id: 101
    domains: [acme.example]
    contacts: [boss@gmail.com]
  - key: globex
    name: Globex
    id: 202
    domains: [globex.example]
"""

# Mon-Fri 09:00-17:00 Berlin with German public holidays; 4h to answer, 16h to resolve.
SLA = """
warning_at: 0.75
calendars:
  office:
    timezone: Europe/Berlin
    hours: {mon-fri: "09:00-17:00"}
    holidays: {country: DE}
policies:
  - {name: Standard, first_response: 4h, resolution: 16h}
  - {name: ACME urgent, customer: acme, priority: critical, first_response: 1h, resolution: 4h}
"""

CREATE = """
workflows:
  - name: tickets
    classification_trigger: support_request
    workflow_steps:
      - action: create_ticket
"""


def berlin(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=BERLIN)  # type: ignore[misc]


class Clock:
    """What the pipeline and the sweep take for now; tests set and move it."""

    def __init__(self, start: datetime) -> None:
        self.now = start.astimezone(UTC)

    def __call__(self) -> datetime:
        return self.now

    def set(self, moment: datetime) -> None:
        self.now = moment.astimezone(UTC)

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


@dataclass
class Setup:
    runtime: Runtime
    clock: Clock

    def ingest(self, raw: bytes) -> Any:
        # As a live source hands mail over: received now (the test's clock), whatever the
        # Date header of the test mail says.
        return self.runtime.pipeline.process(raw, "test", received_at=self.clock())

    def sweep(self, at: datetime | None = None) -> SweepResult:
        if at is not None:
            self.clock.set(at)
        rt = self.runtime
        return run_sweep(rt.session_factory, rt.settings, rt.sla, rt.workflows, clock=rt.clock)

    def session(self) -> Session:
        return self.runtime.session_factory()

    def ticket(self, ticket_id: int) -> Ticket:
        with self.session() as s:
            found = s.scalars(select(Ticket).where(Ticket.id == ticket_id)).one()
            s.expunge(found)
            return found


def setup(
    make_runtime: Callable[..., Runtime],
    tmp_path: Path,
    *,
    workflows: str = CREATE,
    customers: str | None = CUSTOMERS,
    sla: str | None = SLA,
    start: datetime | None = None,
    **overrides: Any,
) -> Setup:
    """A runtime like `mailticket run` builds it (files loaded, customers synced), with one
    clock for the pipeline and the sweep."""
    if customers is not None:
        overrides["customers_path"] = write(tmp_path, "customers.yaml", customers)
    if sla is not None:
        overrides["sla_path"] = write(tmp_path, "sla.yaml", sla)
    overrides["workflows_path"] = write(tmp_path, "workflows.yaml", workflows)
    overrides.setdefault("mail_domain", "mailticket.test")
    overrides.setdefault("mail_from", "support@support.example")
    rt = make_runtime(clock=None, **overrides)
    clock = Clock(start or berlin(2025, 12, 15, 10, 0).astimezone(UTC))
    rt.pipeline.clock = clock
    rt.clock = clock
    prepare_worker(rt)
    return Setup(rt, clock)
