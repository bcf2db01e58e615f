"""The seed's three worked examples, verbatim, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from sqlalchemy import func, select

from mailticket.runtime import Runtime
from mailticket.store.models import Comment, EmailLog, Ticket, WorkflowExecution
from tests.conftest import FIXTURES

SEED = FIXTURES / "emails" / "seed"
WORKFLOW = FIXTURES / "workflows" / "seed.yaml"


def _ingest(rt: Runtime, name: str) -> object:
    path = SEED / name
    return rt.pipeline.process(path.read_bytes(), str(path))


def test_example_1_basic_request(make_runtime: Callable[..., Runtime]) -> None:
    rt = make_runtime(workflows_path=WORKFLOW)
    outcome = _ingest(rt, "01_basic_request.eml")
    assert outcome.action == "created"  # type: ignore[attr-defined]
    assert outcome.ticket_number == "TKT-20251215-001"  # type: ignore[attr-defined]
    with rt.session_factory() as s:
        t = s.scalars(select(Ticket)).one()
        assert t.priority == "normal"  # "down" is in the body only
        assert t.tags == []
        assert t.assigned_to_user_id == 5
        assert t.status == "open"
        assert t.custom_fields == {
            "email_from": "customer@example.com",
            "email_message_id": "<abc123@example.com>",
            "created_from_email": True,
        }
        assert "customer@example.com" in t.description
        assert "2025-12-15T10:00:00" in t.description
        assert "Our internet is down. Can you help?" in t.description
        log = s.scalars(select(EmailLog)).one()
        assert log.ticket_id == t.id and not log.is_reply and log.direction == "in"
        assert log.thread_data == {
            "message_id": "<abc123@example.com>", "in_reply_to": None, "references": None
        }
        ex = s.scalars(select(WorkflowExecution)).one()
        assert ex.workflow_name == "Support Email → Ticket" and ex.status == "ok"
        assert ex.result == {
            "ticket_id": t.id, "ticket_number": "TKT-20251215-001",
            "created": True, "linked": False,
        }


def test_example_2_reply_links(make_runtime: Callable[..., Runtime]) -> None:
    rt = make_runtime(workflows_path=WORKFLOW)
    _ingest(rt, "01_basic_request.eml")
    outcome = _ingest(rt, "02_reply.eml")
    assert outcome.action == "linked"  # type: ignore[attr-defined]
    assert outcome.ticket_number == "TKT-20251215-001"  # type: ignore[attr-defined]
    assert outcome.matched_by == "in_reply_to"  # type: ignore[attr-defined]
    with rt.session_factory() as s:
        assert s.scalar(select(func.count()).select_from(Ticket)) == 1
        reply = s.scalars(select(EmailLog).where(EmailLog.email_message_id == "<def456@example.com>")).one()
        assert reply.is_reply and reply.matched_by == "in_reply_to"
        assert reply.matched_value == "<TKT-20251215-001@bmcnetworks.dk>"
        comment = s.scalars(select(Comment)).one()
        assert comment.body == "Thanks, issue is resolved now"
        assert comment.author_email == "customer@example.com" and not comment.is_internal
        ex = s.scalars(select(WorkflowExecution).order_by(WorkflowExecution.id.desc())).first()
        assert ex is not None and ex.result is not None
        assert ex.result["created"] is False and ex.result["linked"] is True


def test_example_3_urgent_tagged(make_runtime: Callable[..., Runtime]) -> None:
    rt = make_runtime(workflows_path=WORKFLOW)
    outcome = _ingest(rt, "03_urgent_tagged.eml")
    assert outcome.action == "created"  # type: ignore[attr-defined]
    with rt.session_factory() as s:
        t = s.scalars(select(Ticket)).one()
        assert t.priority == "critical"
        assert t.tags == ["critical", "server"]
        assert t.custom_fields["created_from_email"] is True


def test_redelivery_creates_nothing(make_runtime: Callable[..., Runtime], tmp_path: Path) -> None:
    rt = make_runtime(workflows_path=WORKFLOW)
    raw = (SEED / "01_basic_request.eml").read_bytes()
    first = rt.pipeline.process(raw, "a")
    crlf = rt.pipeline.process(raw.replace(b"\n", b"\r\n"), "b")
    assert first.action == "created"
    assert crlf.action == "duplicate" and crlf.ticket_number == first.ticket_number
    with rt.session_factory() as s:
        assert s.scalar(select(func.count()).select_from(Ticket)) == 1
        assert s.scalar(select(func.count()).select_from(EmailLog)) == 1
