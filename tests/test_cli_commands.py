"""The command line as an operator meets it: real subprocesses, real databases.

Each test here stands for a class of mistake found by using the CLI from outside: a
traceback for an expected failure, a secret echoed back, a database created by accident,
output that breaks in a pipe, a listing that says nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import FIXTURES
from tests.dbutil import TemplateDatabases
from tests.mailfactory import make_email

SEED = FIXTURES / "emails" / "seed"
AUTO_REPLY_WF = FIXTURES / "workflows" / "auto_reply.yaml"
BAD_WORKFLOW = """\
workflows:
  - name: broken
    classification_trigger: support_request
    workflow_steps:
      - action: make_coffee
"""
# Only variables a test sets on purpose: the developer's own environment stays out.
_CLEAN = {k: v for k, v in os.environ.items()
          if not k.startswith(("DATABASE_", "WORKFLOWS_", "OWN_", "MAX_", "AUTO_REPLY_"))}


def cli(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mailticket.cli", *args],
        capture_output=True, text=True, env={**_CLEAN, **env}, cwd=cwd, timeout=120,
    )


@pytest.fixture
def sqlite_url(template_dbs: TemplateDatabases) -> str:
    url, _ = template_dbs.fresh("sqlite")
    return url


@pytest.fixture
def bad_workflows(tmp_path: Path) -> Path:
    path = tmp_path / "bad.yaml"
    path.write_text(BAD_WORKFLOW)
    return path


# --- malformed WORKFLOWS_PATH ------------------------------------------------------------

def test_bad_workflows_file_is_one_line_for_every_command_that_loads_it(
    sqlite_url: str, bad_workflows: Path, tmp_path: Path
) -> None:
    (tmp_path / "md" / "new").mkdir(parents=True)
    listed = cli("workflows", "list", cwd=tmp_path, DATABASE_URL=sqlite_url,
                 WORKFLOWS_PATH=str(bad_workflows))
    assert listed.returncode == 1
    problem = next(line for line in listed.stderr.splitlines() if "bad.yaml:5:" in line)
    assert "make_coffee" in problem
    mail = tmp_path / "one.eml"
    mail.write_bytes(make_email())
    for argv in (["run", "--once"], ["ingest", str(mail)], ["serve", "--port", "9"]):
        out = cli(*argv, cwd=tmp_path, DATABASE_URL=sqlite_url, MAILDIR_PATH=str(tmp_path / "md"),
                  WORKFLOWS_PATH=str(bad_workflows))
        assert out.returncode != 0, argv
        assert "Traceback" not in out.stderr, (argv, out.stderr)
        assert problem in out.stderr.splitlines(), (argv, out.stderr)


def test_a_mail_template_the_workflows_name_but_nobody_wrote_stops_start_up(
    sqlite_url: str, tmp_path: Path
) -> None:
    """A typo in `template:` passed validate and start-up; then every support mail failed its
    workflow at send_auto_reply, which rolled back its create_ticket: mail logged, no ticket."""
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "welcome.txt").write_text("Hello {{ ticket.ticket_number }}\n")
    flows = tmp_path / "flows.yaml"
    flows.write_text(
        "workflows:\n"
        "  - name: confirm\n"
        "    classification_trigger: support_request\n"
        "    workflow_steps:\n"
        "      - action: create_ticket\n"
        "      - action: send_auto_reply\n"
        "        params:\n"
        "          template: welcom\n"
        "  - name: stale\n"
        "    event_trigger: {event: ticket_idle, days: 3}\n"
        "    workflow_steps:\n"
        "      - action: close\n"
        "        params: {template: closed_no_answer}\n"
    )
    (tmp_path / "md" / "new").mkdir(parents=True)
    env = {"DATABASE_URL": sqlite_url, "MAILDIR_PATH": str(tmp_path / "md"),
           "WORKFLOWS_PATH": str(flows), "TEMPLATES_PATH": str(templates)}
    expected = [
        f"{flows}:8: send_auto_reply: mail template welcom.txt not found in {templates}",
        f"{flows}:13: close: mail template closed_no_answer.txt not found in {templates}",
    ]
    checked = cli("workflows", "validate", str(flows), cwd=tmp_path, **env)
    assert checked.returncode == 1
    assert checked.stdout.splitlines() == expected
    for argv in (["run", "--once"], ["workflows", "list"]):
        out = cli(*argv, cwd=tmp_path, **env)
        assert out.returncode != 0, argv
        assert "Traceback" not in out.stderr
        assert all(line in out.stderr.splitlines() for line in expected), (argv, out.stderr)
    flows.write_text(flows.read_text().replace("welcom\n", "welcome\n")
                     .replace("{template: closed_no_answer}", "{status: resolved}"))
    assert cli("workflows", "validate", str(flows), cwd=tmp_path, **env).returncode == 0


def test_a_trigger_label_no_rule_gives_stops_start_up(sqlite_url: str, tmp_path: Path) -> None:
    """`classification_trigger: suport_request` loaded and never ran: every support mail
    went to EMAIL_UNMATCHED_ACTION (logged, no ticket) without a word."""
    flows = tmp_path / "flows.yaml"
    flows.write_text(
        "workflows:\n"
        "  - name: tickets\n"
        "    classification_trigger: [suport_request, invoice]\n"
        "    workflow_steps:\n"
        "      - action: create_ticket\n"
    )
    (tmp_path / "md" / "new").mkdir(parents=True)
    env = {"DATABASE_URL": sqlite_url, "MAILDIR_PATH": str(tmp_path / "md"),
           "WORKFLOWS_PATH": str(flows)}
    known = ("(known: auto_reply, bounce, bulk, own_mail, spam, spoofed?, support_request; "
             "CLASSIFICATION_RULES_PATH adds labels)")
    expected = [f"{flows}:3: classification_trigger: unknown label {label!r} {known}"
                for label in ("suport_request", "invoice")]
    checked = cli("workflows", "validate", str(flows), cwd=tmp_path, **env)
    assert (checked.returncode, checked.stdout.splitlines()) == (1, expected)
    out = cli("run", "--once", cwd=tmp_path, **env)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.splitlines()[1:] == expected
    # a label of the admin's own rules is one the classifier gives
    rules = tmp_path / "rules.yaml"
    rules.write_text("rules:\n  - name: invoices\n    label: invoice\n    weight: 0.8\n"
                     "    subject: '(?i)invoice'\n")
    flows.write_text(flows.read_text().replace("suport_request", "support_request"))
    for argv in (["workflows", "validate", str(flows)], ["run", "--once"]):
        ok = cli(*argv, cwd=tmp_path, CLASSIFICATION_RULES_PATH=str(rules), **env)
        assert ok.returncode == 0, (argv, ok.stdout, ok.stderr)


def test_bad_classification_rules_file_is_file_line_not_a_traceback(
    sqlite_url: str, tmp_path: Path
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text("rules:\n  - name: invoices\n    label: Invoice Mail\n    weight: 0.8\n")
    mail = tmp_path / "one.eml"
    mail.write_bytes(make_email())
    (tmp_path / "md" / "new").mkdir(parents=True)
    for argv in (["run", "--once"], ["ingest", str(mail)], ["serve", "--port", "9"]):
        out = cli(*argv, cwd=tmp_path, DATABASE_URL=sqlite_url, MAILDIR_PATH=str(tmp_path / "md"),
                  CLASSIFICATION_RULES_PATH=str(rules))
        assert out.returncode == 2, (argv, out.stderr)
        assert "Traceback" not in out.stderr, (argv, out.stderr)
        assert out.stderr.splitlines()[:2] == [
            "mailticket: CLASSIFICATION_RULES_PATH does not load:",
            f"{rules}:3: rules.0.label: String should match pattern "
            "'^[A-Za-z0-9][A-Za-z0-9_.-]*$'",
        ], argv


# --- OWN_ADDRESSES -----------------------------------------------------------------------

@pytest.mark.parametrize("value", ["help@example.com", "help@example.com, Desk <desk@example.com>",
                                   '["help@example.com"]'])
def test_own_addresses_accepts_a_plain_address_or_a_list(
    sqlite_url: str, tmp_path: Path, value: str
) -> None:
    out = cli("tickets", "list", cwd=tmp_path, DATABASE_URL=sqlite_url, OWN_ADDRESSES=value)
    assert out.returncode == 0, out.stderr


@pytest.mark.parametrize("value", ["not an address", '["unclosed"'])
def test_own_addresses_bad_value_names_the_variable(
    sqlite_url: str, tmp_path: Path, value: str
) -> None:
    out = cli("tickets", "list", cwd=tmp_path, DATABASE_URL=sqlite_url, OWN_ADDRESSES=value)
    assert out.returncode == 2
    assert "OWN_ADDRESSES" in out.stderr and "Traceback" not in out.stderr


# --- the password in DATABASE_URL --------------------------------------------------------

SECRET = "hunter2-Secret"


@pytest.mark.parametrize(
    ("url", "code"),
    [
        (f"postgresql+psycopg2://postgres:{SECRET}@127.0.0.1:1/nodb", 1),  # nobody listens
        (f"postgresql://postgres:{SECRET}@127.0.0.1:5432/no_such_db_here", 1),
        (f"postgresql://postgres:{SECRET}@127.0.0.1:port/db", 2),  # not a URL at all
        (f"mysql://root:{SECRET}@db.example/tickets", 2),  # not a database we speak
    ],
)
@pytest.mark.parametrize("verbose", [[], ["--verbose"]])
def test_database_password_is_never_echoed(
    tmp_path: Path, url: str, code: int, verbose: list[str]
) -> None:
    for argv in (["tickets", "list"], ["db", "upgrade"], ["ingest", str(SEED)]):
        out = cli(*verbose, *argv, cwd=tmp_path, DATABASE_URL=url)
        assert out.returncode == code, (argv, out.stderr)
        assert SECRET not in out.stderr + out.stdout, (argv, out.stderr)
        assert "DATABASE_URL" in out.stderr or "database" in out.stderr
        assert ("Traceback" in out.stderr) == bool(verbose), (argv, out.stderr)


# --- expected failures: one line, the traceback only when asked --------------------------

def test_quarantined_file_is_one_line_unless_verbose(sqlite_url: str, tmp_path: Path) -> None:
    (tmp_path / "empty.eml").write_bytes(b"")
    out = cli("ingest", str(tmp_path / "empty.eml"), cwd=tmp_path, DATABASE_URL=sqlite_url)
    assert out.returncode == 0
    assert "Traceback" not in out.stderr
    [line] = [x for x in out.stderr.splitlines() if "empty.eml" in x]
    assert "empty message" in line
    verbose = cli("-v", "quarantine", "retry", "1", cwd=tmp_path, DATABASE_URL=sqlite_url)
    assert "Traceback" in verbose.stderr


# --- output into a pipe that closes ------------------------------------------------------

def _closed_pipe_run(argv: list[str], cwd: Path, env: dict[str, str]) -> tuple[int, str]:
    """Run with stdout a pipe whose reader is already gone (as `| head` leaves it)."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "mailticket.cli", *argv], stdout=write_end,
            stderr=subprocess.PIPE, text=True, env={**_CLEAN, **env}, cwd=cwd, timeout=120,
        )
    finally:
        os.close(write_end)
    return proc.returncode, proc.stderr


def test_every_command_survives_a_closed_pipe(sqlite_url: str, tmp_path: Path) -> None:
    # The seed's mails are a year old: answer them anyway, so the outbox has an item.
    env = {"DATABASE_URL": sqlite_url, "WORKFLOWS_PATH": str(AUTO_REPLY_WF),
           "AUTO_REPLY_MAX_AGE": "0"}
    seeded = cli("ingest", "--send-replies", "--json", str(SEED), cwd=tmp_path, **env)
    number = json.loads(seeded.stdout.splitlines()[0])["ticket_number"]
    commands = [
        ["tickets", "list"], ["tickets", "show", number], ["quarantine", "list"],
        ["outbox", "list"], ["outbox", "show", "1"], ["workflows", "list"], ["tokens", "list"],
        ["ingest", "--json", str(SEED)], ["workflows", "validate", str(AUTO_REPLY_WF)],
        ["--help"],
    ]
    for argv in commands:
        code, err = _closed_pipe_run(argv, tmp_path, env)
        assert "BrokenPipeError" not in err and "Traceback" not in err, (argv, err)
        assert code in (0, 141), (argv, code, err)


# --- listings say what they show -----------------------------------------------------------

def test_tickets_list_has_a_header_and_refuses_an_unknown_status(
    sqlite_url: str, tmp_path: Path
) -> None:
    empty = cli("tickets", "list", cwd=tmp_path, DATABASE_URL=sqlite_url)
    assert empty.returncode == 0 and empty.stdout.strip() == "no tickets"
    cli("ingest", "--backdate", str(SEED), cwd=tmp_path, DATABASE_URL=sqlite_url)
    listed = cli("tickets", "list", cwd=tmp_path, DATABASE_URL=sqlite_url)
    header, *rows = listed.stdout.splitlines()
    assert header.split()[:7] == [
        "TICKET", "STATUS", "PRIORITY", "CUSTOMER", "SLA", "REQUESTER", "SUBJECT"
    ]
    assert len(rows) == 2 and all(r.startswith("TKT-") for r in rows)
    bogus = cli("tickets", "list", "--status", "bogus", cwd=tmp_path, DATABASE_URL=sqlite_url)
    assert bogus.returncode == 2 and "invalid choice: 'bogus'" in bogus.stderr
    resolved = cli("tickets", "list", "--status", "resolved", cwd=tmp_path,
                   DATABASE_URL=sqlite_url)
    assert resolved.returncode == 0 and resolved.stdout.strip() == "no resolved tickets"


def test_empty_quarantine_and_outbox_say_so(sqlite_url: str, tmp_path: Path) -> None:
    q = cli("quarantine", "list", cwd=tmp_path, DATABASE_URL=sqlite_url)
    assert q.returncode == 0 and "quarantine is empty" in q.stdout
    o = cli("outbox", "list", cwd=tmp_path, DATABASE_URL=sqlite_url)
    assert o.returncode == 0 and "outbox is empty" in o.stdout


# --- outgoing mail: in the thread, and readable in the outbox ----------------------------

def test_outgoing_mail_in_the_thread_and_outbox_show(sqlite_url: str, tmp_path: Path) -> None:
    env = {"DATABASE_URL": sqlite_url, "WORKFLOWS_PATH": str(AUTO_REPLY_WF),
           "MAIL_FROM": "Support <support@example.com>", "AUTO_REPLY_MAX_AGE": "0"}
    first = make_email(subject="Scanner jams", sender="Ana <ana@customer.example>")
    (tmp_path / "a.eml").write_bytes(first)
    out = cli("ingest", "--send-replies", "--json", str(tmp_path / "a.eml"), cwd=tmp_path, **env)
    number = json.loads(out.stdout)["ticket_number"]
    shown = cli("tickets", "show", number, cwd=tmp_path, **env)
    assert shown.returncode == 0, shown.stderr
    assert "[None]" not in shown.stdout and "None" not in shown.stdout
    outgoing = [line for line in shown.stdout.splitlines() if line.startswith("->")]
    assert len(outgoing) == 1 and "to ana@customer.example" in outgoing[0]

    item = json.loads(cli("outbox", "list", "--json", cwd=tmp_path, **env).stdout)
    mail = cli("outbox", "show", str(item["id"]), cwd=tmp_path, **env)
    assert mail.returncode == 0, mail.stderr
    text = mail.stdout
    assert "envelope: from support@example.com to ana@customer.example" in text
    assert f"Subject: [{number}] Scanner jams" in text
    assert "Auto-Submitted: auto-replied" in text and "In-Reply-To: <" in text
    assert number in text.split("Auto-Submitted", 1)[1]  # the body names the ticket
    raw = subprocess.run([sys.executable, "-m", "mailticket.cli", "outbox", "show", "--raw",
                          str(item["id"])], capture_output=True, env={**_CLEAN, **env},
                         cwd=tmp_path, timeout=60)
    assert raw.stdout.startswith(b"From: ") or b"\nFrom: " in raw.stdout[:2000]
    missing = cli("outbox", "show", "999", cwd=tmp_path, **env)
    assert missing.returncode == 1 and "no outbox item 999" in missing.stderr


# --- a command run from the wrong folder -------------------------------------------------

READ_ONLY = [["tickets", "list"], ["tickets", "show", "1"], ["quarantine", "list"],
             ["quarantine", "show", "1"], ["outbox", "list"], ["outbox", "show", "1"],
             ["tokens", "list"]]


@pytest.mark.parametrize("argv", READ_ONLY + [["ingest", str(SEED)], ["run", "--once"]],
                         ids=lambda a: " ".join(a[:2]))
def test_no_database_is_created_by_accident(tmp_path: Path, argv: list[str]) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = cli(*argv, cwd=elsewhere, MAILDIR_PATH=str(tmp_path / "md"))
    assert out.returncode == 1, out.stderr
    assert list(elsewhere.iterdir()) == [], "a database file appeared"
    assert f"no database at {elsewhere / 'mailticket.db'}" in out.stderr
    assert "mailticket db upgrade" in out.stderr and "Traceback" not in out.stderr


def test_db_upgrade_creates_the_default_database_where_it_runs(tmp_path: Path) -> None:
    out = cli("db", "upgrade", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "mailticket.db").exists()
    assert cli("tickets", "list", cwd=tmp_path).returncode == 0


# --- ingest: MAX_MESSAGE_SIZE and answering nobody by default ----------------------------

def test_ingest_applies_max_message_size_unless_lifted(sqlite_url: str, tmp_path: Path) -> None:
    big = make_email(subject="huge log", body="x" * 6000, message_id="<big@customer.example>")
    (tmp_path / "big.eml").write_bytes(big)
    env = {"DATABASE_URL": sqlite_url, "MAX_MESSAGE_SIZE": "4096"}
    held = cli("ingest", "--json", str(tmp_path / "big.eml"), cwd=tmp_path, **env)
    row = json.loads(held.stdout)
    assert row["action"] == "quarantined" and row["error"].startswith(f"too large: {len(big)}")
    assert row["message_id"] == "<big@customer.example>"
    listed = cli("quarantine", "list", cwd=tmp_path, **env)
    assert "too large" in listed.stdout
    lifted = cli("ingest", "--json", "--no-size-limit", str(tmp_path / "big.eml"), cwd=tmp_path,
                 **env)
    assert json.loads(lifted.stdout)["action"] == "created"


def test_a_too_large_entry_is_not_retried_from_its_headers(sqlite_url: str, tmp_path: Path) -> None:
    """Its retry opened a ticket from the headers alone (no text, an auto-reply), and their
    Message-ID then made the whole message a duplicate: its text was never stored."""
    big = make_email(subject="huge log", body="the log says: disk full\n" + "x" * 6000,
                     message_id="<big-retry@customer.example>")
    (tmp_path / "big.eml").write_bytes(big)
    env = {"DATABASE_URL": sqlite_url, "MAX_MESSAGE_SIZE": "4096"}
    held = cli("ingest", "--json", str(tmp_path / "big.eml"), cwd=tmp_path, **env)
    assert json.loads(held.stdout)["action"] == "quarantined"
    retried = cli("quarantine", "retry", "1", cwd=tmp_path, **env)
    assert retried.returncode == 1, retried.stdout
    assert "holds only the headers" in retried.stderr and "--no-size-limit" in retried.stderr
    assert "no tickets" in cli("tickets", "list", cwd=tmp_path, **env).stdout
    assert "held" in cli("quarantine", "list", cwd=tmp_path, **env).stdout
    whole = cli("ingest", "--json", "--no-size-limit", str(tmp_path / "big.eml"), cwd=tmp_path,
                **env)
    assert json.loads(whole.stdout)["action"] == "created"


def test_ingest_answers_nobody_unless_asked(sqlite_url: str, tmp_path: Path) -> None:
    # Any age: what keeps these quiet must be the import itself.
    env = {"DATABASE_URL": sqlite_url, "WORKFLOWS_PATH": str(AUTO_REPLY_WF),
           "AUTO_REPLY_MAX_AGE": "0"}
    folder = tmp_path / "archive"
    folder.mkdir()
    (folder / "a.eml").write_bytes(make_email(sender="a@customer.example"))
    (folder / "b.eml").write_bytes(make_email(sender="b@customer.example"))
    quiet = cli("ingest", "--json", str(folder), cwd=tmp_path, **env)
    assert [json.loads(x)["action"] for x in quiet.stdout.splitlines()] == ["created"] * 2
    assert "outbox is empty" in cli("outbox", "list", cwd=tmp_path, **env).stdout

    (folder / "c.eml").write_bytes(make_email(sender="c@customer.example"))
    asked = cli("ingest", "--json", "--send-replies", str(folder / "c.eml"), cwd=tmp_path,
                **env)
    assert json.loads(asked.stdout)["action"] == "created"
    items = cli("outbox", "list", "--json", cwd=tmp_path, **env).stdout.splitlines()
    assert len(items) == 1


# --- ingest --json: a logged message names the ticket it sits on ------------------------

def test_logged_out_of_office_names_its_ticket(sqlite_url: str, tmp_path: Path) -> None:
    env = {"DATABASE_URL": sqlite_url, "WORKFLOWS_PATH": str(FIXTURES / "workflows" / "seed.yaml")}
    first = make_email(subject="VPN down", message_id="<vpn@customer.example>")
    ooo = make_email(subject="Automatic reply: VPN down", sender="boss@customer.example",
                     in_reply_to="<vpn@customer.example>",
                     headers={"Auto-Submitted": "auto-replied"})
    (tmp_path / "1.eml").write_bytes(first)
    (tmp_path / "2.eml").write_bytes(ooo)
    out = cli("ingest", "--json", str(tmp_path / "1.eml"), str(tmp_path / "2.eml"),
              cwd=tmp_path, **env)
    created, logged = (json.loads(x) for x in out.stdout.splitlines())
    assert created["action"] == "created"
    assert logged["action"] == "logged" and logged["classification"] == "auto_reply"
    assert logged["ticket_number"] == created["ticket_number"]

