"""Mail from one of our own addresses (reading/ownmail.py), on SQLite and PostgreSQL: it is
logged (label `own_mail`, action `logged`), never opens a ticket, and when it threads into
a ticket it stays on that ticket's log like an auto-reply: no comment, no reopen, no
follow-up, no SLA restart, no auto-reply."""

from __future__ import annotations

import json
import mailbox
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from mailticket.backends import fake
from mailticket.runtime import Runtime
from mailticket.sla.models import TicketStatusChange
from mailticket.store.models import Comment, EmailLog, QuarantineEntry, Ticket
from mailticket.store.outbox_models import OutboxItem
from mailticket.types import Outcome
from tests.api.conftest import Api, build_api
from tests.backends.helpers import drain_until_quiet, workflow_for, write_backends
from tests.backends.mail import mail as backend_mail
from tests.escalation.helpers import Setup, berlin, setup
from tests.mailfactory import make_email
from tests.senderauth.conftest import OUR_MX, QUARANTINE_SPOOFED, delivered

DEFAULT_WORKFLOWS = (
    Path(__file__).parents[1] / "src" / "mailticket" / "workflows" / "default.yaml"
).read_text(encoding="utf-8")
CUSTOMER = "jane@acme.example"
# A workflow for every label: create_ticket must still refuse our own mail.
ANY_CREATE = """
workflows:
  - name: everything
    classification_trigger: any
    workflow_steps:
      - action: create_ticket
"""


def _env(make_runtime: Callable[..., Runtime], tmp_path: Path, **kw: Any) -> tuple[Setup, Api]:
    kw.setdefault("workflows", DEFAULT_WORKFLOWS)
    # MAIL_FROM unset: the support address is support@MAIL_DOMAIN.
    env = setup(make_runtime, tmp_path, mail_domain="example.com", mail_from=None, **kw)
    return env, build_api(env.runtime)


def _count(env: Setup, model: Any) -> int:
    with env.session() as s:
        return int(s.scalar(select(func.count()).select_from(model)) or 0)


def _log(env: Setup, message_id: str) -> EmailLog:
    with env.session() as s:
        row = s.scalars(select(EmailLog).where(EmailLog.email_message_id == message_id)).one()
        s.expunge(row)
        return row


def _assert_own_logged(outcome: Outcome, ticket_id: int | None) -> None:
    assert (outcome.action, outcome.classification, outcome.ticket_id) == (
        "logged", "own_mail", ticket_id)
    shown = outcome.as_json()
    assert (shown["action"], shown["classification"], shown["tickets"]) == (
        "logged", "own_mail", [])


@pytest.mark.parametrize("unmatched", ["log", "create_ticket"])
def test_new_mail_from_the_support_address_is_logged_and_opens_nothing(
    make_runtime: Callable[..., Runtime], tmp_path: Path, unmatched: str
) -> None:
    env, api = _env(make_runtime, tmp_path, email_unmatched_action=unmatched)
    # An agent writing to a customer from a mail client, Bcc to the support mailbox.
    out = env.ingest(make_email(
        sender="Support <support@example.com>", to=CUSTOMER, subject="Your printer",
        message_id="<agent1@mua.example.com>", body="Please turn it off and on.",
    ))
    _assert_own_logged(out, None)
    row = _log(env, "<agent1@mua.example.com>")
    assert (row.action, row.classification, row.ticket_id) == ("logged", "own_mail", None)
    assert _count(env, Ticket) == 0 and _count(env, OutboxItem) == 0
    api.client.close()


def test_no_workflow_opens_a_ticket_for_our_own_mail(
    make_runtime: Callable[..., Runtime], tmp_path: Path
) -> None:
    env, api = _env(make_runtime, tmp_path, workflows=ANY_CREATE)
    out = env.ingest(make_email(sender="support@example.com", message_id="<probe@mon.example>",
                                subject="monitoring probe"))
    _assert_own_logged(out, None)
    assert out.workflows == ["everything"]
    assert _count(env, Ticket) == 0
    # The customer's mail still opens its ticket through the same workflow.
    assert env.ingest(make_email(sender=CUSTOMER)).action == "created"
    api.client.close()


def test_an_agents_copy_of_a_reply_stays_on_the_ticket_log_only(
    make_runtime: Callable[..., Runtime], tmp_path: Path
) -> None:
    env, api = _env(make_runtime, tmp_path)
    opened = env.ingest(make_email(sender=CUSTOMER, message_id="<c1@acme.example>"))
    assert opened.action == "created"
    outbox = _count(env, OutboxItem)  # the ticket_created answer
    assert outbox == 1
    done = api.client.patch(f"/api/v1/tickets/{opened.ticket_id}", json={"status": "pending"},
                            headers=api.auth("write"))
    assert done.status_code == 200, done.text
    env.clock.advance(hours=1)
    copy = env.ingest(make_email(
        sender="Support <support@example.com>", to=CUSTOMER, in_reply_to="<c1@acme.example>",
        subject="Re: Help please", message_id="<a1@mua.example.com>", body="Try again now.",
    ))
    _assert_own_logged(copy, opened.ticket_id)
    assert copy.matched_by == "in_reply_to"
    row = _log(env, "<a1@mua.example.com>")
    assert (row.ticket_id, row.is_reply, row.action) == (opened.ticket_id, True, "logged")
    # Waiting for the customer still: no comment, no status change, no answer.
    assert env.ticket(opened.ticket_id).status == "pending"
    with env.session() as s:
        assert s.scalar(select(func.count()).select_from(Comment)) == 0
        history = [h.status for h in s.scalars(select(TicketStatusChange).where(
            TicketStatusChange.ticket_id == opened.ticket_id).order_by(TicketStatusChange.id))]
    assert history == ["pending"]
    assert _count(env, OutboxItem) == outbox
    # The API's thread names it as our own mail.
    emails = api.get(f"/api/v1/tickets/{opened.ticket_id}/emails").json()["emails"]
    assert [(e["email_message_id"], e["classification"]) for e in emails
            if e["direction"] == "in"] == [
        ("<c1@acme.example>", "support_request"), ("<a1@mua.example.com>", "own_mail")]
    api.client.close()


@pytest.mark.parametrize("days", [1, 30])  # inside and outside the reopen window
def test_our_own_mail_never_reopens_nor_follows_up_a_closed_ticket(
    make_runtime: Callable[..., Runtime], tmp_path: Path, days: int
) -> None:
    env, api = _env(make_runtime, tmp_path, email_unmatched_action="create_ticket")
    opened = env.ingest(make_email(sender=CUSTOMER, message_id="<r1@acme.example>"))
    done = api.client.patch(f"/api/v1/tickets/{opened.ticket_id}", json={"status": "closed"},
                            headers=api.auth("write"))
    assert done.status_code == 200, done.text
    env.clock.set(berlin(2025, 12, 15, 12, 0))
    env.clock.advance(days=days)
    back = env.ingest(make_email(
        sender="support@example.com", in_reply_to="<r1@acme.example>",
        subject=f"Re: [{opened.ticket_number}] Help please", message_id="<r2@relay.example>",
    ))
    _assert_own_logged(back, opened.ticket_id)
    ticket = env.ticket(opened.ticket_id)
    assert ticket.status == "closed" and ticket.closed_at is not None
    assert _count(env, Ticket) == 1 and _count(env, Comment) == 0
    api.client.close()


@pytest.mark.parametrize("sender", [
    "SUPPORT@Example.COM", "support+eu@example.com", "billing@example.com",
    "Billing+Invoices@EXAMPLE.com",
])
def test_every_own_address_counts_in_any_case_and_with_a_tag(
    make_runtime: Callable[..., Runtime], tmp_path: Path, sender: str
) -> None:
    env, api = _env(make_runtime, tmp_path, own_addresses="billing@example.com")
    out = env.ingest(make_email(sender=sender))
    _assert_own_logged(out, None)
    assert _count(env, Ticket) == 0 and _count(env, OutboxItem) == 0
    api.client.close()


@pytest.mark.parametrize("sender", ["supportx@example.com", "support@example.com.evil.example",
                                    "billing-support@example.com"])
def test_addresses_that_only_look_like_ours_are_customers(
    make_runtime: Callable[..., Runtime], tmp_path: Path, sender: str
) -> None:
    env, api = _env(make_runtime, tmp_path, own_addresses="billing@example.com")
    out = env.ingest(make_email(sender=sender))
    assert (out.action, out.classification) == ("created", "support_request")
    api.client.close()


def test_a_customer_mail_with_support_in_cc_opens_its_ticket(
    make_runtime: Callable[..., Runtime], tmp_path: Path
) -> None:
    env, api = _env(make_runtime, tmp_path)
    out = env.ingest(make_email(sender=CUSTOMER, to="someone@acme.example",
                                headers={"Cc": "Support <support@example.com>"}))
    assert (out.action, out.classification) == ("created", "support_request")
    assert env.ticket(out.ticket_id).requester_email == CUSTOMER
    assert _count(env, OutboxItem) == 1
    api.client.close()


def test_a_forged_own_address_spam_never_opens_a_ticket(
    make_runtime: Callable[..., Runtime], tmp_path: Path
) -> None:
    # Spam from outside with our address in From: the spam label would otherwise leave it
    # to EMAIL_UNMATCHED_ACTION=create_ticket (no workflow here ignores spam).
    env, api = _env(make_runtime, tmp_path, workflows="workflows: []\n",
                    email_unmatched_action="create_ticket")
    out = env.ingest(make_email(sender="support@example.com", headers={"X-Spam-Flag": "YES"}))
    _assert_own_logged(out, None)
    assert _count(env, Ticket) == 0
    api.client.close()


def test_ingest_json_says_logged_own_mail_in_a_batch_beside_customer_mail(
    db_url: str, tmp_path: Path
) -> None:
    """The brief's reproduction, through `mailticket ingest --json` (one batch: the bulk
    path LMTP, IMAP and Maildir share): our mail is logged beside customer mail that opens
    its ticket."""
    md = mailbox.Maildir(str(tmp_path / "Maildir"))
    md.add(make_email(sender=CUSTOMER, subject="Printer jams", message_id="<b1@acme.example>"))
    md.add(make_email(sender="Support <support@example.com>", to=CUSTOMER,
                      subject="Your printer", message_id="<b2@mua.example.com>"))
    md.add(make_email(sender="Support <support@example.com>", to=CUSTOMER,
                      in_reply_to="<b1@acme.example>", message_id="<b3@mua.example.com>"))
    md.close()
    env = {k: v for k, v in os.environ.items() if k not in ("WORKFLOWS_PATH", "MAIL_FROM")}
    env.update(DATABASE_URL=db_url, MAIL_DOMAIN="example.com")
    out = subprocess.run(
        [sys.executable, "-m", "mailticket.cli", "ingest", "--json", str(tmp_path / "Maildir")],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120,
    )
    assert out.returncode == 0, out.stderr
    rows = {r["message_id"]: r for r in map(json.loads, out.stdout.splitlines())}
    first = rows["<b1@acme.example>"]
    assert (first["action"], first["classification"]) == ("created", "support_request")
    assert [(rows[m]["action"], rows[m]["classification"], rows[m]["ticket_number"])
            for m in ("<b2@mua.example.com>", "<b3@mua.example.com>")] == [
        ("logged", "own_mail", None), ("logged", "own_mail", first["ticket_number"])]




def _forged(message_id: str, subject: str, in_reply_to: str | None = None) -> bytes:
    """From: support@example.com, sent from outside: our MTA says DMARC failed."""
    raw = make_email(sender="Support <support@example.com>", subject=subject,
                     message_id=message_id, in_reply_to=in_reply_to, body="Pay here.")
    return delivered(raw, above=[
        f"Authentication-Results: {OUR_MX}; dmarc=fail (p=reject) header.from=example.com"])


def test_a_forged_support_address_writes_no_more_than_any_sender(
    make_runtime: Callable[..., Runtime], tmp_path: Path
) -> None:
    env, api = _env(make_runtime, tmp_path, email_unmatched_action="create_ticket",
                    sender_auth_authserv_ids=OUR_MX)
    opened = env.ingest(make_email(sender=CUSTOMER, message_id="<s1@acme.example>"))
    done = api.client.patch(f"/api/v1/tickets/{opened.ticket_id}", json={"status": "closed"},
                            headers=api.auth("write"))
    assert done.status_code == 200, done.text
    env.clock.advance(hours=1)
    # By the ticket number alone: suspect mail never threads by subject, and our own
    # address opens no ticket of its own.
    by_subject = env.ingest(_forged("<s2@evil.example>", f"Re: [{opened.ticket_number}] Hi"))
    assert by_subject.suspect
    _assert_own_logged(by_subject, None)
    # With the ticket's Message-ID: on its log, but no comment, no reopen, no recipient.
    by_header = env.ingest(_forged("<s3@evil.example>", "Re: Hi", "<s1@acme.example>"))
    _assert_own_logged(by_header, opened.ticket_id)
    assert env.ticket(opened.ticket_id).status == "closed"
    assert _count(env, Ticket) == 1 and _count(env, Comment) == 0
    listed = api.get(f"/api/v1/tickets/{opened.ticket_id}/participants")
    assert listed.status_code == 200, listed.text
    assert CUSTOMER in listed.text and "support@example.com" not in listed.text
    api.client.close()


def test_a_spoofed_workflow_still_holds_forged_own_mail(
    make_runtime: Callable[..., Runtime], tmp_path: Path
) -> None:
    env, api = _env(make_runtime, tmp_path, workflows=QUARANTINE_SPOOFED,
                    sender_auth_authserv_ids=OUR_MX)
    held = env.ingest(_forged("<q1@evil.example>", "Invoice"))
    assert held.action == "quarantined"
    with env.session() as s:
        assert s.scalar(select(func.count()).select_from(QuarantineEntry)) == 1
    assert _count(env, Ticket) == 0
    api.client.close()


async def test_our_own_mail_is_not_mirrored_to_an_external_backend(
    make_runtime: Callable[..., Runtime], tmp_path: Path
) -> None:
    store = fake.store(f"own-{tmp_path.name}")
    path = write_backends(tmp_path / "b.yaml", {"jira": {"kind": "fake",
                                                         "store": f"own-{tmp_path.name}"}})
    rt = make_runtime(workflows_path=workflow_for(tmp_path, "jira"), backends_file=path,
                      mail_domain="example.com")
    raw, mid = backend_mail()
    first = rt.pipeline.process(raw, "t")
    assert first.action == "created"
    # The agent's copy of an answer: on the ticket (this workflow on `any` joins it, as it
    # joins an auto-reply), but no comment there nor a public one in the remote system.
    copy = rt.pipeline.process(
        backend_mail(sender="Support <support@example.com>", reply_to=mid)[0], "t")
    assert (copy.action, copy.classification, copy.ticket_id) == (
        "linked", "own_mail", first.ticket_id)
    with rt.session_factory() as s:
        assert s.scalar(select(func.count()).select_from(Comment)) == 0
    rt.pipeline.process(backend_mail(body="still on fire", reply_to=mid)[0], "t")
    await drain_until_quiet(rt)
    (remote,) = store.tickets.values()
    assert len(remote.comments) == 1  # the customer's reply only
