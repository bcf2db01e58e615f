"""`mailticket customers`, `mailticket sla sweep` and the customer/SLA columns of `tickets`,
as a person runs them (a real subprocess, real database)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.escalation.helpers import CUSTOMERS, SLA, write

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


def cli(tmp_path: Path, db_url: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    full = {
        **os.environ,
        "DATABASE_URL": db_url,
        "WORKFLOWS_PATH": str(write(tmp_path, "wf.yaml", WORKFLOWS)),
        "CUSTOMERS_PATH": str(write(tmp_path, "customers.yaml", CUSTOMERS)),
        "SLA_PATH": str(write(tmp_path, "sla.yaml", SLA)),
        "TICKET_TIMEZONE": "Europe/Berlin",
        **env,
    }
    return subprocess.run(
        [sys.executable, "-m", "mailticket.cli", *args],
        capture_output=True, text=True, env=full, timeout=120, cwd=tmp_path,
    )


def test_customers_sla_sweep_and_ticket_columns(db_url: str, tmp_path: Path) -> None:
    synced = cli(tmp_path, db_url, "customers", "sync")
    assert synced.returncode == 0, synced.stderr
    assert "created: 2 (acme, globex)" in synced.stdout
    listed = cli(tmp_path, db_url, "customers", "list")
    assert "acme" in listed.stdout and "domains: acme.example" in listed.stdout
    assert "contacts: boss@gmail.com" in listed.stdout

    mail = tmp_path / "in.eml"
    mail.write_bytes(
        b"From: jane@acme.example\r\nTo: support@support.example\r\n"
        b"Subject: Printer on fire\r\nDate: Mon, 15 Dec 2025 10:00:00 +0100\r\n"
        b"Message-ID: <fire@acme.example>\r\n\r\nThe printer in room 4 is on fire.\r\n"
    )
    ingested = cli(tmp_path, db_url, "ingest", "--backdate", str(mail))
    assert ingested.returncode == 0, ingested.stderr

    swept = cli(tmp_path, db_url, "sla", "sweep", "--at", "2025-12-15T13:30:00+01:00")
    assert swept.returncode == 0, swept.stderr
    assert "1 events" in swept.stdout and "sla_warning:first_response" in swept.stdout
    assert "ran 'warn' for sla_warning:first_response: ok" in swept.stdout
    again = cli(tmp_path, db_url, "sla", "sweep", "--at", "2025-12-15T13:40:00+01:00")
    assert "0 events" in again.stdout

    tickets = cli(tmp_path, db_url, "tickets", "list", "--customer", "acme")
    assert tickets.returncode == 0, tickets.stderr
    assert "acme" in tickets.stdout and "warning due 2025-12-15 13:00 UTC" in tickets.stdout
    assert "CUSTOMER" in tickets.stdout.splitlines()[0]
    assert cli(tmp_path, db_url, "tickets", "list", "--customer", "globex").stdout == (
        "no globex tickets\n"
    )
    number = tickets.stdout.splitlines()[1].split()[0]
    shown = cli(tmp_path, db_url, "tickets", "show", number)
    assert "customer: acme (ACME Corp, id 101) by domain acme.example" in shown.stdout
    assert "sla: warning  policy 'Standard', calendar 'office'" in shown.stdout
    assert "first response: warning, due 2025-12-15 13:00 UTC" in shown.stdout


def test_tickets_of_an_unknown_customer_is_an_error_not_an_empty_list(
    db_url: str, tmp_path: Path
) -> None:
    assert cli(tmp_path, db_url, "customers", "sync").returncode == 0
    typo = cli(tmp_path, db_url, "tickets", "list", "--customer", "acmee")
    assert typo.returncode == 1 and typo.stdout == ""
    assert typo.stderr.startswith("mailticket: no customer 'acmee'")
    known = cli(tmp_path, db_url, "tickets", "list", "--customer", "acme")
    assert (known.returncode, known.stdout) == (0, "no acme tickets\n")


def test_configuration_mistakes_stop_with_their_lines(db_url: str, tmp_path: Path) -> None:
    bad = write(tmp_path, "bad-sla.yaml", """
        policies:
          - {name: Standard, first_response: 2 days}
    """)
    out = cli(tmp_path, db_url, "sla", "sweep", SLA_PATH=str(bad))
    assert out.returncode == 2
    assert f"{bad}:2:" in out.stderr and "Traceback" not in out.stderr
    unknown = write(tmp_path, "unknown-sla.yaml", """
        policies:
          - {name: Umbrella, customer: umbrella, first_response: 1h}
    """)
    out = cli(tmp_path, db_url, "sla", "sweep", SLA_PATH=str(unknown))
    assert out.returncode == 2
    assert f"{unknown}:2: unknown customer 'umbrella'" in out.stderr
