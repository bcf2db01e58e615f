"""Auto-replies through the whole pipeline: queued with the ticket, threaded, sent once."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, event, func, select
from sqlalchemy.orm import Session

from mailticket.outbound.auto_reply import idempotency_key
from mailticket.outbound.smtp import deliver_outgoing_mail
from mailticket.runtime import Runtime
from mailticket.store.models import EmailLog, Ticket, WorkflowExecution
from mailticket.store.outbox_models import OutboxItem
from tests.mailfactory import make_email
from tests.smtp_sink import SmtpSink

WORKFLOW = Path(__file__).with_name("auto_reply_workflow.yaml")


def _runtime(make_runtime: Callable[..., Runtime], **overrides: object) -> Runtime:
    return make_runtime(
        workflows_path=WORKFLOW,
        mail_domain="mailticket.test",
        mail_from="support@example.com",
        smtp_host="127.0.0.1",
        smtp_tls="plain",
        **overrides,
    )


def _count(s: Session, model: type[object], *where: object) -> int:
    return s.scalar(select(func.count()).select_from(model).where(*where)) or 0  # type: ignore[arg-type]


async def test_new_ticket_gets_one_reply_that_threads(
    make_runtime: Callable[..., Runtime], smtp_sink: SmtpSink
) -> None:
    rt = _runtime(make_runtime, smtp_port=smtp_sink.port)
    first = make_email(
        subject="Printer broken",
        sender="Carla <carla@customer.example>",
        message_id="<first@customer.example>",
    )
    created = rt.pipeline.process(first, "test")
    assert created.action == "created"
    # the same bytes again: a duplicate, still one answer
    assert rt.pipeline.process(first, "test").action == "duplicate"

    with rt.session_factory() as s:
        out = s.scalars(select(EmailLog).where(EmailLog.direction == "out")).one()
        assert out.ticket_id == created.ticket_id
        assert _count(s, OutboxItem) == 1
    our_id = out.email_message_id
    assert our_id.startswith(f"<{created.ticket_number}-")

    # the customer answers our mail (subject without the number): header threading finds it
    reply = make_email(subject="thanks", sender="carla@customer.example", in_reply_to=our_id)
    linked = rt.pipeline.process(reply, "test")
    assert linked.action == "linked" and linked.ticket_id == created.ticket_id

    # an out-of-office answering our auto-reply is never answered
    ooo = make_email(
        subject="Out of office",
        sender="carla@customer.example",
        in_reply_to=our_id,
        headers={"Auto-Submitted": "auto-replied"},
    )
    assert rt.pipeline.process(ooo, "test").ticket_id == created.ticket_id

    report = await deliver_outgoing_mail(rt.session_factory, rt.settings)
    assert report.done == 1
    [sent] = smtp_sink.messages
    msg = sent.message()
    assert msg["Message-ID"] == our_id
    assert msg["In-Reply-To"] == "<first@customer.example>"
    assert msg["Subject"] == f"[{created.ticket_number}] Printer broken"
    assert sent.rcpt_tos == ["carla@customer.example"]
    with rt.session_factory() as s:
        assert _count(s, OutboxItem) == 1
        assert _count(s, Ticket) == 1


def test_rate_limit_in_the_pipeline(make_runtime: Callable[..., Runtime]) -> None:
    rt = _runtime(make_runtime, auto_reply_rate_limit=10)
    for n in range(11):
        outcome = rt.pipeline.process(
            make_email(subject=f"Problem {n}", sender="loop@robot.example"), "test"
        )
        assert outcome.action == "created"
    with rt.session_factory() as s:
        assert _count(s, Ticket) == 11
        assert _count(s, OutboxItem) == 10


def test_a_batch_asks_once_whether_its_messages_were_answered(
    make_runtime: Callable[..., Runtime],
) -> None:
    """Each new ticket's answer is looked up by its idempotency key (sent once, however often
    the message is processed): the batch asks for all its messages' keys in its prefetch,
    not one query per message. A key already queued still answers "already queued"."""
    rt = _runtime(make_runtime)
    mails = [
        make_email(subject=f"Problem {n}", sender=f"c{n}@customer.example",
                   message_id=f"<p{n}@customer.example>")
        for n in range(4)
    ]
    with rt.session_factory.begin() as s:  # answered before (say, by an earlier run)
        s.add(OutboxItem(
            kind="smtp", target="smtp", operation="send_mail",
            payload={"message_id": "<earlier@mailticket.test>"},
            idempotency_key=idempotency_key("<p2@customer.example>", "ticket_created"),
        ))
    one_key = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "FROM mailticket_outbox" in statement and "idempotency_key =" in statement:
            one_key.append(statement)

    event.listen(Engine, "before_cursor_execute", record)
    try:
        with rt.session_factory() as s:
            outcomes = rt.pipeline.process_batch(s, [(raw, "test") for raw in mails])
            s.commit()
    finally:
        event.remove(Engine, "before_cursor_execute", record)
    assert [o.action for o in outcomes] == ["created"] * 4
    # Only the key found queued loads its row; the three new answers asked nothing more.
    assert len(one_key) == 1, one_key
    with rt.session_factory() as s:
        assert _count(s, OutboxItem) == 4
        answered = s.scalars(select(EmailLog.email_to).where(EmailLog.direction == "out"))
        assert sorted(answered) == [f"c{n}@customer.example" for n in (0, 1, 3)]
        steps = s.scalars(
            select(WorkflowExecution.steps).where(
                WorkflowExecution.email_message_id == "<p2@customer.example>"
            )
        ).one()
        assert steps[1]["result"]["reason"] == "already queued for this message"
