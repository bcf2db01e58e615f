"""The workflow engine against real databases (SQLite and PostgreSQL): savepoint per
workflow, failed/skipped rows kept, stop semantics, triggers."""

from __future__ import annotations

import logging
import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from mailticket.settings import Settings
from mailticket.store.batch import open_batch
from mailticket.store.models import EmailLog, RawMessage, Ticket, WorkflowExecution
from mailticket.types import Classification, ParsedEmail
from mailticket.workflows import registry
from mailticket.workflows.engine import run_workflows
from mailticket.workflows.loader import load_workflows
from mailticket.workflows.registry import ActionContext, ActionError, ActionParams, NoParams
from mailticket.workflows.schema import WorkflowSet

MESSAGE_ID = "<engine-test@client.example>"


class TicketParams(ActionParams):
    number: str = "TKT-20251215-001"


class FailParams(ActionParams):
    message: str = "step went wrong"


@registry.action("test_engine_make_ticket", TicketParams)
def _make_ticket(ctx: ActionContext, params: TicketParams) -> dict[str, Any]:
    ticket = Ticket(ticket_number=params.number, subject=ctx.email.subject, tags=[])
    ctx.session.add(ticket)
    ctx.session.flush()
    ctx.email_log.ticket_id = ticket.id
    ctx.ticket, ctx.created = ticket, True
    ctx.notes["made"] = params.number
    return {"ticket_id": ticket.id, "ticket_number": ticket.ticket_number, "created": True}


@registry.action("test_engine_tag", NoParams)
def _tag(ctx: ActionContext, params: NoParams) -> dict[str, Any]:
    if ctx.ticket is None:
        raise ActionError("no ticket to tag")
    ctx.ticket.tags = [*ctx.ticket.tags, "tagged"]
    # A value JSON cannot hold as such: the engine must still store the row.
    return {"tags": list(ctx.ticket.tags), "at": datetime(2025, 12, 15, tzinfo=UTC)}


@registry.action("test_engine_fail", FailParams)
def _fail(ctx: ActionContext, params: FailParams) -> dict[str, Any]:
    raise ActionError(params.message)


@registry.action("test_engine_crash", NoParams)
def _crash(ctx: ActionContext, params: NoParams) -> dict[str, Any]:
    return {"half": 1 // 0}


@registry.action("test_engine_tag_then_fail", NoParams)
def _tag_then_fail(ctx: ActionContext, params: NoParams) -> dict[str, Any]:
    assert ctx.ticket is not None
    ctx.ticket.tags = [*ctx.ticket.tags, "doomed"]
    ctx.session.flush()
    ctx.notes["half"] = True
    raise ActionError("gave up after tagging")


def _parsed(subject: str = "Printer on fire") -> ParsedEmail:
    return ParsedEmail(
        message_id=MESSAGE_ID,
        message_id_synthetic=False,
        in_reply_to=[],
        references=[],
        subject=subject,
        from_address="customer@example.com",
        from_name="Customer",
        to=["support@example.com"],
        cc=[],
        reply_to=[],
        date=datetime(2025, 12, 15, 9, 0, tzinfo=UTC),
        headers={"subject": [subject]},
        text="It is on fire.",
        html=None,
        attachments=[],
        content_type="text/plain",
        report_type=None,
        part_types=["text/plain"],
        return_path="customer@example.com",
        embedded=[],
        defects=[],
        raw_size=10,
    )



@pytest.fixture
def session(session_factory: sessionmaker[Session]) -> Iterator[Session]:
    with session_factory() as s:
        yield s


def make_ctx(
    session: Session, settings: Settings, label: str = "support_request", confidence: float = 0.9
) -> ActionContext:
    raw = RawMessage(sha256="0" * 64, size=10, raw=b"raw bytes!", source="test")
    session.add(raw)
    session.flush()
    email = _parsed()
    classification = Classification(label, confidence)
    log_row = EmailLog(
        email_message_id=email.message_id,
        email_subject=email.subject,
        email_from=email.from_address,
        raw_message_id=raw.id,
        classification=label,
        confidence=confidence,
    )
    session.add(log_row)
    session.flush()
    return ActionContext(
        work=open_batch(session),
        settings=settings,
        email=email,
        classification=classification,
        thread=None,
        email_log=log_row,
        raw_message_id=raw.id,
    )


def workflows(tmp_path: Path, text: str) -> WorkflowSet:
    path = tmp_path / "wf.yaml"
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return load_workflows(path)


def rows(session: Session) -> list[WorkflowExecution]:
    return list(session.scalars(select(WorkflowExecution).order_by(WorkflowExecution.id)))


def ticket_count(session: Session) -> int:
    return int(session.scalar(select(func.count()).select_from(Ticket)) or 0)


def test_successful_workflow_records_steps_and_merged_result(
    session: Session, settings: Settings, tmp_path: Path
) -> None:
    ws = workflows(
        tmp_path,
        """
        workflows:
          - name: Support → ticket
            classification_trigger: support_request
            confidence_threshold: 0.7
            workflow_steps:
              - action: test_engine_make_ticket
              - action: test_engine_tag
        """,
    )
    ctx = make_ctx(session, settings)
    (ex,) = run_workflows(ctx, ws)
    session.commit()

    assert ex.id is not None and ex.status == "ok" and ex.error is None
    assert ex.workflow_name == "Support → ticket"
    assert ex.email_log_id == ctx.email_log.id and ex.email_message_id == MESSAGE_ID
    assert ex.classification == "support_request" and ex.confidence == 0.9
    assert ex.duration_ms is not None and ex.duration_ms >= 0
    assert [(s["action"], s["status"]) for s in ex.steps] == [
        ("test_engine_make_ticket", "ok"),
        ("test_engine_tag", "ok"),
    ]
    assert all(s["duration_ms"] >= 0 for s in ex.steps)
    assert ex.result == {
        "ticket_id": ctx.ticket.id if ctx.ticket else None,
        "ticket_number": "TKT-20251215-001",
        "created": True,
        "tags": ["tagged"],
        "at": "2025-12-15 00:00:00+00:00",
    }
    session.expunge_all()
    (stored,) = rows(session)
    assert stored.status == "ok" and stored.result == ex.result and stored.steps == ex.steps
    ticket = session.scalars(select(Ticket)).one()
    assert ticket.tags == ["tagged"]
    assert session.get_one(EmailLog, ex.email_log_id).ticket_id == ticket.id


def test_failing_step_rolls_back_its_workflow_and_keeps_the_row(
    session: Session, settings: Settings, tmp_path: Path
) -> None:
    ws = workflows(
        tmp_path,
        """
        workflows:
          - name: half done
            classification_trigger: support_request
            workflow_steps:
              - action: test_engine_make_ticket
              - action: test_engine_fail
                params: {message: "backend said no"}
              - action: test_engine_tag
        """,
    )
    ctx = make_ctx(session, settings)
    (ex,) = run_workflows(ctx, ws)
    # Nothing the workflow did may leak to the pipeline: the ticket it made is gone.
    assert ctx.ticket is None and not ctx.created and ctx.notes == {}
    session.commit()
    session.expunge_all()

    assert ticket_count(session) == 0
    assert session.get_one(EmailLog, ctx.email_log.id).ticket_id is None
    (stored,) = rows(session)
    assert stored.status == "failed" and stored.error == "backend said no"
    assert stored.result is None
    assert [(s["action"], s["status"]) for s in stored.steps] == [
        ("test_engine_make_ticket", "rolled_back"),
        ("test_engine_fail", "failed"),
        ("test_engine_tag", "not_run"),
    ]
    assert stored.steps[1]["error"] == "backend said no"
    assert stored.steps[0]["result"]["ticket_number"] == "TKT-20251215-001"


def test_unexpected_exception_is_a_failed_workflow_with_traceback_logged(
    session: Session, settings: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ws = workflows(
        tmp_path,
        """
        workflows:
          - name: buggy
            classification_trigger: any
            stop: true
            workflow_steps:
              - action: test_engine_make_ticket
              - action: test_engine_crash
          - name: next one
            classification_trigger: any
            workflow_steps:
              - action: test_engine_make_ticket
                params: {number: TKT-20251215-002}
        """,
    )
    ctx = make_ctx(session, settings)
    with caplog.at_level(logging.ERROR, logger="mailticket.workflows.engine"):
        executions = run_workflows(ctx, ws)
    assert [(e.workflow_name, e.status) for e in executions] == [
        ("buggy", "failed"),
        ("next one", "ok"),
    ]
    assert executions[0].error == "ZeroDivisionError: integer division or modulo by zero"
    (record,) = [r for r in caplog.records if "buggy" in r.getMessage()]
    assert record.exc_info is not None and record.exc_info[0] is ZeroDivisionError
    # The failed workflow's ticket was rolled back; the next workflow's is kept.
    assert ctx.ticket is not None and ctx.ticket.ticket_number == "TKT-20251215-002"
    session.commit()
    numbers = list(session.scalars(select(Ticket.ticket_number)))
    assert numbers == ["TKT-20251215-002"]
    assert [r.status for r in rows(session)] == ["failed", "ok"]


def test_later_failure_keeps_earlier_workflows_writes(
    session: Session, settings: Settings, tmp_path: Path
) -> None:
    ws = workflows(
        tmp_path,
        """
        workflows:
          - name: first
            classification_trigger: support_request
            stop: false
            workflow_steps:
              - action: test_engine_make_ticket
          - name: second
            classification_trigger: support_request
            workflow_steps:
              - action: test_engine_tag
              - action: test_engine_fail
        """,
    )
    ctx = make_ctx(session, settings)
    run_workflows(ctx, ws)
    assert ctx.ticket is not None and ctx.created
    session.commit()
    session.expunge_all()
    ticket = session.scalars(select(Ticket)).one()
    assert ticket.tags == []  # the second workflow's tag went with its savepoint
    assert [(r.workflow_name, r.status) for r in rows(session)] == [
        ("first", "ok"),
        ("second", "failed"),
    ]


def test_below_threshold_is_recorded_as_skipped(
    session: Session, settings: Settings, tmp_path: Path
) -> None:
    ws = workflows(
        tmp_path,
        """
        workflows:
          - name: confident only
            classification_trigger: support_request
            confidence_threshold: 0.8
            workflow_steps:
              - action: test_engine_make_ticket
          - name: fallback
            classification_trigger: support_request
            confidence_threshold: 0.5
            workflow_steps:
              - action: test_engine_make_ticket
                params: {number: TKT-20251215-009}
        """,
    )
    ctx = make_ctx(session, settings, confidence=0.6)
    executions = run_workflows(ctx, ws)
    session.commit()
    session.expunge_all()
    assert [(e.workflow_name, e.status) for e in executions] == [
        ("confident only", "skipped"),
        ("fallback", "ok"),
    ]
    skipped = rows(session)[0]
    assert skipped.error is None and skipped.result is not None
    assert skipped.result["skipped"] is True
    assert skipped.result["reason"] == "confidence 0.600 is below the workflow's threshold 0.800"
    assert skipped.steps == [{"action": "test_engine_make_ticket", "status": "not_run"}]
    assert list(session.scalars(select(Ticket.ticket_number))) == ["TKT-20251215-009"]


def test_threshold_is_inclusive(session: Session, settings: Settings, tmp_path: Path) -> None:
    ws = workflows(
        tmp_path,
        """
        workflows:
          - name: exactly
            classification_trigger: support_request
            confidence_threshold: 0.7
            workflow_steps: [{action: test_engine_make_ticket}]
        """,
    )
    (ex,) = run_workflows(make_ctx(session, settings, confidence=0.7), ws)
    assert ex.status == "ok"


@pytest.mark.parametrize(("stop", "expected"), [(True, ["first"]), (False, ["first", "second"])])
def test_stop_semantics(
    session: Session, settings: Settings, tmp_path: Path, stop: bool, expected: list[str]
) -> None:
    ws = workflows(
        tmp_path,
        f"""
        workflows:
          - name: second
            order: 20
            classification_trigger: any
            workflow_steps: [{{action: test_engine_tag}}]
          - name: first
            order: 10
            stop: {str(stop).lower()}
            classification_trigger: support_request
            workflow_steps: [{{action: test_engine_make_ticket}}]
        """,
    )
    ctx = make_ctx(session, settings)
    executions = run_workflows(ctx, ws)
    assert [e.workflow_name for e in executions] == expected
    assert all(e.status == "ok" for e in executions)
    session.commit()
    assert [r.workflow_name for r in rows(session)] == expected


def test_skipped_and_failed_workflows_do_not_stop(
    session: Session, settings: Settings, tmp_path: Path
) -> None:
    ws = workflows(
        tmp_path,
        """
        workflows:
          - name: picky
            classification_trigger: any
            confidence_threshold: 1.0
            workflow_steps: [{action: test_engine_make_ticket}]
          - name: broken
            classification_trigger: any
            workflow_steps: [{action: test_engine_fail}]
          - name: works
            classification_trigger: any
            workflow_steps: [{action: test_engine_make_ticket}]
          - name: never
            classification_trigger: any
            workflow_steps: [{action: test_engine_tag}]
        """,
    )
    executions = run_workflows(make_ctx(session, settings), ws)
    assert [(e.workflow_name, e.status) for e in executions] == [
        ("picky", "skipped"),
        ("broken", "failed"),
        ("works", "ok"),
    ]


@pytest.mark.parametrize(
    ("label", "expected"),
    [
        ("support_request", ["any label", "listed"]),
        ("billing", ["any label", "listed"]),
        ("spam", ["any label"]),
    ],
)
def test_any_and_list_triggers(
    session: Session, settings: Settings, tmp_path: Path, label: str, expected: list[str]
) -> None:
    ws = workflows(
        tmp_path,
        """
        workflows:
          - name: any label
            classification_trigger: any
            stop: false
            workflow_steps: [{action: test_engine_make_ticket}]
          - name: listed
            classification_trigger: [billing, support_request]
            stop: false
            workflow_steps: [{action: test_engine_tag}]
          - name: bounces only
            classification_trigger: bounce
            workflow_steps: [{action: test_engine_tag}]
        """,
    )
    executions = run_workflows(make_ctx(session, settings, label=label), ws)
    assert [e.workflow_name for e in executions] == expected
    assert all(e.status == "ok" and e.classification == label for e in executions)


def test_no_matching_workflow_records_nothing(
    session: Session, settings: Settings, tmp_path: Path
) -> None:
    ws = workflows(
        tmp_path,
        """
        workflows:
          - name: support
            classification_trigger: support_request
            workflow_steps: [{action: test_engine_make_ticket}]
          - name: disabled
            classification_trigger: any
            enabled: false
            workflow_steps: [{action: test_engine_make_ticket}]
        """,
    )
    assert run_workflows(make_ctx(session, settings, label="bounce"), ws) == []
    session.commit()
    assert rows(session) == [] and ticket_count(session) == 0


def test_engine_never_commits(
    session_factory: sessionmaker[Session], settings: Settings, tmp_path: Path
) -> None:
    ws = workflows(
        tmp_path,
        """
        workflows:
          - name: support
            classification_trigger: support_request
            workflow_steps: [{action: test_engine_make_ticket}]
          - name: broken
            classification_trigger: any
            workflow_steps: [{action: test_engine_fail}]
        """,
    )
    with session_factory() as session:
        executions = run_workflows(make_ctx(session, settings), ws)
        assert len(executions) == 1
        session.rollback()
    with session_factory() as session:
        assert rows(session) == [] and ticket_count(session) == 0
        assert session.scalar(select(func.count()).select_from(EmailLog)) == 0


def test_on_error_continue_undoes_only_that_step(
    session: Session, settings: Settings, tmp_path: Path
) -> None:
    ws = workflows(
        tmp_path,
        """
        workflows:
          - name: ticket plus extras
            classification_trigger: support_request
            workflow_steps:
              - action: test_engine_make_ticket
              - action: test_engine_tag_then_fail
                on_error: continue
              - action: test_engine_tag
        """,
    )
    ctx = make_ctx(session, settings)
    (ex,) = run_workflows(ctx, ws)
    assert ex.status == "ok"
    assert ex.error == "test_engine_tag_then_fail: gave up after tagging"
    assert [(s["action"], s["status"]) for s in ex.steps] == [
        ("test_engine_make_ticket", "ok"),
        ("test_engine_tag_then_fail", "failed"),
        ("test_engine_tag", "ok"),
    ]
    assert ex.result is not None and ex.result["tags"] == ["tagged"]
    assert ctx.ticket is not None and ctx.notes == {"made": "TKT-20251215-001"}
    session.commit()
    session.expunge_all()
    ticket = session.scalars(select(Ticket)).one()
    assert ticket.tags == ["tagged"]  # "doomed" went with the step's own savepoint


def test_on_error_continue_then_a_hard_failure_rolls_back_everything(
    session: Session, settings: Settings, tmp_path: Path
) -> None:
    ws = workflows(
        tmp_path,
        """
        workflows:
          - name: doomed
            classification_trigger: support_request
            workflow_steps:
              - action: test_engine_make_ticket
              - action: test_engine_fail
                on_error: continue
              - action: test_engine_crash
        """,
    )
    ctx = make_ctx(session, settings)
    (ex,) = run_workflows(ctx, ws)
    assert ex.status == "failed" and ex.error is not None
    assert ex.error.startswith("ZeroDivisionError")
    assert [s["status"] for s in ex.steps] == ["rolled_back", "failed", "failed"]
    session.commit()
    assert ticket_count(session) == 0 and ctx.ticket is None
