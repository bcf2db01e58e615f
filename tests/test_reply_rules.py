"""What a reply does to its ticket, and which mail is too old to answer.

- `#tags` written in a customer's reply are added to the ticket (as they are from the first
  mail); quoted lines and automatic mail add none, and a reply never changes the priority.
- No auto-reply to mail received longer ago than AUTO_REPLY_MAX_AGE (default one day), also
  when an archive import dates its tickets back (`--backdate`).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from sqlalchemy import func, select

from mailticket.runtime import Runtime
from mailticket.store.models import Ticket, WorkflowExecution
from mailticket.store.outbox_models import OutboxItem
from tests.conftest import FIXTURES, SEED_DAY
from tests.mailfactory import make_email

AUTO_REPLY_WF = FIXTURES / "workflows" / "auto_reply.yaml"


def test_hashtags_in_a_reply_tag_the_ticket(make_runtime: Callable[..., Runtime]) -> None:
    rt = make_runtime(workflows_path=AUTO_REPLY_WF, auto_reply_enabled=False)
    first = rt.pipeline.process(
        make_email(subject="Printer", body="It jams. #printer", message_id="<p1@c.example>"), "t"
    )
    reply = make_email(
        subject="Re: Printer", in_reply_to="<p1@c.example>", message_id="<p2@c.example>",
        body="Now it smokes too #hardware #urgent\n\n> It jams. #printer #quoted-only\n",
    )
    linked = rt.pipeline.process(reply, "t")
    assert linked.action == "linked" and linked.ticket_id == first.ticket_id
    robot = make_email(
        subject="Automatic reply: Printer", in_reply_to="<p1@c.example>",
        sender="boss@c.example", headers={"Auto-Submitted": "auto-replied"},
        body="I am away until Monday. #vacation",
    )
    assert rt.pipeline.process(robot, "t").ticket_id == first.ticket_id
    with rt.session_factory() as s:
        ticket = s.get_one(Ticket, first.ticket_id)
        assert ticket.tags == ["printer", "hardware", "urgent"]
        assert ticket.priority == "normal"  # a reply's #urgent tags, it does not escalate


def _replies(rt: Runtime) -> int:
    with rt.session_factory() as s:
        return s.scalar(select(func.count()).select_from(OutboxItem)) or 0


def _last_reason(rt: Runtime) -> str:
    with rt.session_factory() as s:
        run = s.scalars(select(WorkflowExecution).order_by(WorkflowExecution.id.desc())).first()
        assert run is not None
        step = next(st for st in run.steps if st["action"] == "send_auto_reply")
        return str(step["result"]["reason"]) if "reason" in step["result"] else "sent"


def test_no_auto_reply_to_old_mail(make_runtime: Callable[..., Runtime]) -> None:
    rt = make_runtime(workflows_path=AUTO_REPLY_WF)  # clock: SEED_DAY
    rt.pipeline.process(make_email(sender="old@c.example"), "t",
                        received_at=SEED_DAY - timedelta(days=3))
    assert _replies(rt) == 0
    assert _last_reason(rt) == "received 3d ago, longer than AUTO_REPLY_MAX_AGE=1d"
    rt.pipeline.process(make_email(sender="fresh@c.example"), "t",
                        received_at=SEED_DAY - timedelta(hours=23))
    assert _replies(rt) == 1


def test_backdated_import_still_knows_the_mail_is_old(
    make_runtime: Callable[..., Runtime]
) -> None:
    rt = make_runtime(workflows_path=AUTO_REPLY_WF)
    rt.pipeline.backdate = True  # tickets dated by arrival: the action's "now" is then too
    outcome = rt.pipeline.process(make_email(sender="old@c.example"), "t",
                                  received_at=SEED_DAY - timedelta(days=400))
    assert outcome.ticket_number is not None and "-2024" in outcome.ticket_number
    assert _replies(rt) == 0


def test_max_age_is_configurable(make_runtime: Callable[..., Runtime]) -> None:
    rt = make_runtime(workflows_path=AUTO_REPLY_WF, auto_reply_max_age="2h")
    rt.pipeline.process(make_email(sender="a@c.example"), "t",
                        received_at=SEED_DAY - timedelta(hours=3))
    assert _replies(rt) == 0
    anything = make_runtime(workflows_path=AUTO_REPLY_WF, auto_reply_max_age="0")
    anything.pipeline.process(make_email(sender="b@c.example"), "t",
                              received_at=SEED_DAY - timedelta(days=3000))
    assert _replies(anything) == 1


def test_age_is_judged_by_arrival_not_by_the_senders_clock(
    make_runtime: Callable[..., Runtime]
) -> None:
    rt = make_runtime(workflows_path=AUTO_REPLY_WF)
    # Only a Date header, a year behind: the sender's clock is wrong, the mail is new.
    skewed = make_email(sender="skewed@c.example").replace(b"Date: ", b"Date: Sun, 1 Dec 2024 "
                                                           b"09:00:00 +0000\nX-Was: ", 1)
    rt.pipeline.process(skewed, "t")
    assert _replies(rt) == 1
    # Our MTA stamped it three days ago (a mailbox that nobody read for a while).
    stamped = make_email(
        sender="late@c.example",
        headers={"Received": "from mx.c.example by mail.example.com; Fri, 12 Dec 2025 "
                             "10:00:00 +0000"},
    )
    rt.pipeline.process(stamped, "t")
    assert _replies(rt) == 1
    assert _last_reason(rt) == "received 3d ago, longer than AUTO_REPLY_MAX_AGE=1d"
