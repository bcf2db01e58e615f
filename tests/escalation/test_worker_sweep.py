"""The worker runs the sweep as a scheduled job: `run --once` drains the sources, sweeps
with the runtime's clock (the test moves it), and sends what the event workflows queued."""

from __future__ import annotations

import mailbox
from collections.abc import Callable
from pathlib import Path

from mailticket.cli.run import _sweeper
from mailticket.live.worker import Worker
from mailticket.runtime import Runtime
from tests.escalation.helpers import berlin, setup
from tests.mailfactory import make_email
from tests.smtp_sink import SmtpSink

WORKFLOWS = """
workflows:
  - name: tickets
    classification_trigger: support_request
    workflow_steps: [{action: create_ticket}]
  - name: warn
    event_trigger: {event: sla_warning}
    workflow_steps:
      - action: notify
        params: {to: lead@support.example, template: sla_warning}
"""


async def test_run_once_sweeps_with_the_runtime_clock(
    make_runtime: Callable[..., Runtime], tmp_path: Path, smtp_sink: SmtpSink
) -> None:
    box = mailbox.Maildir(str(tmp_path / "Maildir"))
    box.add(make_email(sender="jane@acme.example", subject="Printer on fire"))
    env = setup(
        make_runtime, tmp_path, workflows=WORKFLOWS, maildir_path=tmp_path / "Maildir",
        smtp_host=smtp_sink.host, smtp_port=smtp_sink.port, smtp_tls="plain",
    )
    rt = env.runtime
    sweep = _sweeper(rt)
    assert sweep is not None
    worker = Worker(rt.settings, rt.engine, rt.session_factory, rt.pipeline, sweep=sweep)
    assert await worker.run_once() == 1
    assert smtp_sink.messages == []
    env.clock.set(berlin(2025, 12, 15, 13, 0))
    await worker.run_once()
    (sent,) = smtp_sink.messages
    assert sent.rcpt_tos == ["lead@support.example"]
    assert "SLA warning: first response" in str(sent.message()["Subject"])
    await worker.run_once()
    assert len(smtp_sink.messages) == 1


def test_no_sweep_without_sla_or_event_workflows(
    make_runtime: Callable[..., Runtime], tmp_path: Path
) -> None:
    env = setup(make_runtime, tmp_path, sla=None)
    assert _sweeper(env.runtime) is None
