"""A customer's reply to a closed ticket, on SQLite and PostgreSQL with a clock the test
moves: within the reopen window it reopens the ticket (and the SLA clock runs again); after
it, a follow-up ticket linked to the old one; auto-replies and bounces do neither."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import select

from mailticket.runtime import Runtime
from mailticket.sla.models import TicketStatusChange
from mailticket.store.models import EmailLog, Ticket
from tests.api.conftest import Api, build_api
from tests.escalation.helpers import Setup, berlin, setup
from tests.mailfactory import make_email

CUSTOMER = "jane@acme.example"


def _open_and_close(env: Setup, api: Api, mid: str, **closed: int) -> Any:
    opened = env.ingest(make_email(sender=CUSTOMER, message_id=mid, subject="Printer jams"))
    assert opened.action == "created"
    env.clock.set(berlin(2025, 12, 15, 12, 0))
    done = api.client.patch(
        f"/api/v1/tickets/{opened.ticket_id}", json={"status": "closed"}, headers=api.auth("write")
    )
    assert done.status_code == 200, done.text
    assert done.json()["closed_at"] == "2025-12-15T11:00:00Z"
    return opened


def _log(env: Setup, message_id: str) -> EmailLog:
    with env.session() as s:
        row = s.scalars(select(EmailLog).where(EmailLog.email_message_id == message_id)).one()
        s.expunge(row)
        return row


def _env(make_runtime: Callable[..., Runtime], tmp_path: Path, **kw: Any) -> tuple[Setup, Api]:
    env = setup(make_runtime, tmp_path, **kw)
    return env, build_api(env.runtime)


def test_a_reply_within_the_window_reopens_and_restarts_the_sla_clock(
    make_runtime: Callable[..., Runtime], tmp_path: Path
) -> None:
    env, api = _env(make_runtime, tmp_path)
    opened = _open_and_close(env, api, "<c1@acme.example>")
    # 13 days, 23 hours later: still inside the default 14 days.
    env.clock.set(berlin(2025, 12, 29, 11, 0))
    reply = env.ingest(make_email(sender=CUSTOMER, in_reply_to="<c1@acme.example>",
                                  message_id="<c2@acme.example>", body="It jams again."))
    assert (reply.action, reply.ticket_id, reply.matched_by) == (
        "reopened", opened.ticket_id, "in_reply_to")
    assert _log(env, "<c2@acme.example>").action == "reopened"
    ticket = env.ticket(opened.ticket_id)
    assert (ticket.status, ticket.closed_at) == ("open", None)
    with env.session() as s:
        history = [(h.status, h.source) for h in s.scalars(
            select(TicketStatusChange).where(TicketStatusChange.ticket_id == opened.ticket_id)
            .order_by(TicketStatusChange.id))]
    assert history == [("closed", "api"), ("open", "email")]
    env.sweep()
    detail = api.get(f"/api/v1/tickets/{opened.ticket_id}").json()
    assert detail["status"] == "open" and detail["followups"] == []
    # The clock runs again: the resolution target is due, not completed.
    with env.session() as s:
        from mailticket.sla.service import states_of
        assert states_of(s, [opened.ticket_id])[opened.ticket_id].resolution_due_at is not None
    api.client.close()


def test_a_reply_after_the_window_opens_a_linked_followup(
    make_runtime: Callable[..., Runtime], tmp_path: Path
) -> None:
    env, api = _env(make_runtime, tmp_path)
    opened = _open_and_close(env, api, "<f1@acme.example>")
    env.clock.set(berlin(2025, 12, 29, 12, 1))  # 14 days and a minute after closing
    # Threaded by the subject's number alone (a mail client that drops the headers).
    reply = env.ingest(make_email(sender=CUSTOMER, subject=f"Re: [{opened.ticket_number}] Printer jams",
                                  message_id="<f2@acme.example>", body="It jams again."))
    assert reply.action == "followup" and reply.ticket_id != opened.ticket_id
    assert (reply.matched_by, _log(env, "<f2@acme.example>").matched_value) == (
        "followup", opened.ticket_number)
    old = env.ticket(opened.ticket_id)
    assert old.status == "closed"  # the old ticket stays closed
    new = api.get(f"/api/v1/tickets/{reply.ticket_id}").json()
    assert new["status"] == "open"
    assert new["followup_of"]["ticket_number"] == opened.ticket_number
    old_detail = api.get(f"/api/v1/tickets/{opened.ticket_id}").json()
    assert [t["ticket_number"] for t in old_detail["followups"]] == [reply.ticket_number]

    # Another answer to the old thread continues on the follow-up, not a third ticket;
    # and the follow-up's mail carries the old thread's ids without merging the two.
    again = env.ingest(make_email(sender=CUSTOMER, in_reply_to="<f1@acme.example>",
                                  references="<f1@acme.example> <f2@acme.example>",
                                  message_id="<f3@acme.example>", body="Still jams."))
    assert (again.action, again.ticket_id) == ("linked", reply.ticket_id)
    assert again.matched_by in ("followup", "references", "in_reply_to")
    assert env.ticket(opened.ticket_id).status == "closed"
    assert env.ticket(opened.ticket_id).merged_into_id is None

    # The thread view shows the link on both tickets.
    cookie = {"Cookie": f"mailticket_token={api.tokens['read']}"}
    page = api.client.get(f"/ui/tickets/{reply.ticket_number}", headers=cookie).text
    assert f"follow-up of <a href=\"/ui/tickets/{opened.ticket_number}\"" in page
    old_page = api.client.get(f"/ui/tickets/{opened.ticket_number}", headers=cookie).text
    assert f"/ui/tickets/{reply.ticket_number}" in old_page and "followed up by" in old_page
    api.client.close()


def test_the_window_is_a_setting(make_runtime: Callable[..., Runtime], tmp_path: Path) -> None:
    env, api = _env(make_runtime, tmp_path, ticket_reopen_window="2h")
    opened = _open_and_close(env, api, "<w1@acme.example>")
    env.clock.set(berlin(2025, 12, 15, 13, 59))
    inside = env.ingest(make_email(sender=CUSTOMER, in_reply_to="<w1@acme.example>",
                                   body="It jams again."))
    assert inside.action == "reopened"
    api.client.patch(f"/api/v1/tickets/{opened.ticket_id}", json={"status": "resolved"},
                     headers=api.auth("write"))
    env.clock.set(berlin(2025, 12, 15, 16, 0, 1))  # closed 13:59 (clock), +2h and a second
    after = env.ingest(make_email(sender=CUSTOMER, in_reply_to="<w1@acme.example>",
                                  body="And again."))
    assert after.action == "followup"
    api.client.close()


def test_auto_replies_and_bounces_never_reopen_nor_follow_up(
    make_runtime: Callable[..., Runtime], tmp_path: Path
) -> None:
    env, api = _env(make_runtime, tmp_path)
    opened = _open_and_close(env, api, "<a1@acme.example>")
    for when in (berlin(2025, 12, 16, 10, 0), berlin(2026, 2, 1, 10, 0)):  # inside, after
        env.clock.set(when)
        away = env.ingest(make_email(
            sender=CUSTOMER, subject="Automatic reply: Printer jams", in_reply_to="<a1@acme.example>",
            headers={"Auto-Submitted": "auto-replied"}, body="I am out of the office.",
        ))
        bounce = env.ingest(make_email(
            sender="MAILER-DAEMON@acme.example", subject="Undelivered Mail Returned to Sender",
            references="<a1@acme.example>", body="Delivery failed.",
        ))
        for outcome in (away, bounce):
            assert outcome.classification in ("auto_reply", "bounce")
            assert outcome.action in ("linked", "logged")
            assert outcome.ticket_id == opened.ticket_id
        assert env.ticket(opened.ticket_id).status == "closed"
    with env.session() as s:
        assert s.scalars(select(Ticket.id).where(Ticket.followup_of_id.is_not(None))).all() == []
    api.client.close()


def test_a_followup_with_no_workflow_to_open_it_stays_on_the_old_log(
    make_runtime: Callable[..., Runtime], tmp_path: Path
) -> None:
    """No workflow takes the reply (and unmatched mail is only logged): nothing is lost,
    the mail is logged on the old ticket, which stays closed."""
    quiet = """
    workflows:
      - name: tickets
        classification_trigger: support_request
        enabled: false
        workflow_steps:
          - action: create_ticket
    """
    env, api = _env(make_runtime, tmp_path)
    opened = _open_and_close(env, api, "<n1@acme.example>")
    (tmp_path / "workflows.yaml").write_text(quiet.replace("\n    ", "\n").lstrip(), "utf-8")
    env.runtime.reload_workflows()
    env.clock.set(berlin(2026, 2, 1, 10, 0))
    reply = env.ingest(make_email(sender=CUSTOMER, in_reply_to="<n1@acme.example>",
                                  body="It jams again."))
    assert (reply.action, reply.ticket_id) == ("logged", opened.ticket_id)
    assert env.ticket(opened.ticket_id).status == "closed"
    api.client.close()
