"""Threading signals, their order, ghost parents, arrival order and merges."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from sqlalchemy import func, select

from mailticket.runtime import Runtime
from mailticket.store.models import Comment, EmailLog, Ticket
from mailticket.types import Outcome
from tests.conftest import FIXTURES
from tests.mailfactory import make_email

SEED_WF = FIXTURES / "workflows" / "seed.yaml"


@pytest.fixture
def rt(make_runtime: Callable[..., Runtime]) -> Runtime:
    return make_runtime(workflows_path=SEED_WF)


def ingest(rt: Runtime, raw: bytes) -> Outcome:
    return rt.pipeline.process(raw, "test")


def count(rt: Runtime, model: type) -> int:
    with rt.session_factory() as s:
        return int(s.scalar(select(func.count()).select_from(model)) or 0)


def test_reply_by_stored_customer_message_id(rt: Runtime) -> None:
    first = ingest(rt, make_email(message_id="<orig@client.example>"))
    reply = ingest(rt, make_email(subject="Re: Help please", in_reply_to="<orig@client.example>"))
    assert reply.action == "linked" and reply.ticket_number == first.ticket_number
    assert reply.matched_by == "in_reply_to"


def test_references_newest_first(rt: Runtime) -> None:
    a = ingest(rt, make_email(message_id="<a@x>", subject="first problem"))
    b = ingest(rt, make_email(message_id="<b@x>", subject="second problem"))
    assert a.ticket_number != b.ticket_number
    # No In-Reply-To; References name both tickets' mail: the newest (last) wins.
    r = ingest(rt, make_email(references="<a@x> <b@x>"))
    assert r.action == "linked" and r.ticket_number == b.ticket_number
    assert r.matched_by == "references"


def test_ticket_number_inside_an_unknown_id(rt: Runtime) -> None:
    t = ingest(rt, make_email())
    r = ingest(rt, make_email(references=f"<{t.ticket_number}-9f8e7d@helpdesk.example>"))
    assert r.action == "linked" and r.ticket_number == t.ticket_number


def test_in_reply_to_beats_subject(rt: Runtime) -> None:
    a = ingest(rt, make_email(message_id="<a1@x>"))
    b = ingest(rt, make_email(message_id="<b1@x>"))
    r = ingest(rt, make_email(subject=f"Re: [{b.ticket_number}] x", in_reply_to="<a1@x>"))
    assert r.ticket_number == a.ticket_number and r.matched_by == "in_reply_to"


def test_subject_only_policy_any_and_participants(make_runtime: Callable[..., Runtime]) -> None:
    rt_any = make_runtime(workflows_path=SEED_WF)
    t = ingest(rt_any, make_email(sender="alice@example.com"))
    stranger = ingest(rt_any, make_email(sender="mallory@evil.example", subject=f"AW: [{t.ticket_number}]"))
    assert stranger.action == "linked" and stranger.matched_by == "subject"

    rt_p = make_runtime(workflows_path=SEED_WF, ticket_subject_match="participants")
    stranger2 = ingest(rt_p, make_email(sender="eve@evil.example", subject=f"SV: {t.ticket_number}"))
    assert stranger2.action == "created" and stranger2.ticket_number != t.ticket_number
    owner = ingest(rt_p, make_email(sender="Alice@Example.com", subject=f"Re: {t.ticket_number}"))
    assert owner.action == "linked" and owner.ticket_number == t.ticket_number


def test_ghost_parent_joins(rt: Runtime) -> None:
    # Both replies point at a parent we never received.
    a = ingest(rt, make_email(in_reply_to="<ghost@list.example>", references="<ghost@list.example>"))
    b = ingest(rt, make_email(sender="other@example.com", references="<ghost@list.example>"))
    assert a.action == "created"
    assert b.action == "linked" and b.ticket_number == a.ticket_number


def test_arrival_order_does_not_matter(rt: Runtime) -> None:
    reply = ingest(rt, make_email(message_id="<r@x>", in_reply_to="<p@x>", references="<p@x>"))
    parent = ingest(rt, make_email(message_id="<p@x>"))
    assert parent.action == "linked" and parent.ticket_number == reply.ticket_number
    assert parent.matched_by == "referenced_by"


def test_late_parent_merges_two_tickets(rt: Runtime) -> None:
    # C references only B; A has no refs: two tickets. Then B (reply to A) arrives and
    # ties them together: one conversation, one ticket.
    c = ingest(rt, make_email(message_id="<c@x>", in_reply_to="<b@x>", references="<b@x>"))
    a = ingest(rt, make_email(message_id="<a@x>"))
    assert a.ticket_number != c.ticket_number
    b = ingest(rt, make_email(message_id="<b@x>", in_reply_to="<a@x>", references="<a@x>"))
    assert b.ticket_number == a.ticket_number
    with rt.session_factory() as s:
        old = s.scalars(select(Ticket).where(Ticket.ticket_number == c.ticket_number)).one()
        assert old.status == "merged"
        live = s.scalars(select(Ticket).where(Ticket.merged_into_id.is_(None))).all()
        assert len(live) == 1
        assert s.scalar(select(func.count()).select_from(EmailLog).where(EmailLog.ticket_id == live[0].id)) == 3
    # The merged ticket's number still routes to the live ticket.
    later = ingest(rt, make_email(subject=f"Re: [{c.ticket_number}]"))
    assert later.ticket_number == a.ticket_number


def test_auto_reply_threads_but_never_reopens(rt: Runtime) -> None:
    t = ingest(rt, make_email(message_id="<q@x>"))
    with rt.session_factory() as s:
        s.scalars(select(Ticket)).one().status = "resolved"
        s.commit()
    ooo = ingest(rt, make_email(
        subject="Automatic reply: Help please", in_reply_to="<q@x>",
        headers={"Auto-Submitted": "auto-replied"},
    ))
    assert ooo.classification == "auto_reply"
    assert ooo.ticket_id is not None
    with rt.session_factory() as s:
        ticket = s.scalars(select(Ticket)).one()
        assert ticket.status == "resolved"
        assert s.scalar(select(func.count()).select_from(Comment)) == 0
        log = s.scalars(select(EmailLog).where(EmailLog.email_message_id != "<q@x>")).one()
        assert log.ticket_id == ticket.id and log.is_reply
    human = ingest(rt, make_email(subject="Re: Help please", in_reply_to="<q@x>", body="still broken"))
    assert human.action == "reopened" and human.ticket_number == t.ticket_number
    with rt.session_factory() as s:
        assert s.scalars(select(Ticket)).one().status == "open"


def test_bounce_threads_by_embedded_original(rt: Runtime) -> None:
    t = ingest(rt, make_email(message_id="<orig-bounce@x>"))
    # Our auto-reply to it would carry the ticket number in its Message-ID.
    original_id = f"<{t.ticket_number}-abc123@support.example>"
    dsn = (
        "From: MAILER-DAEMON@mx.example\r\nTo: support@example.com\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\nMessage-ID: <dsn1@mx.example>\r\n"
        "Date: Mon, 15 Dec 2025 10:00:00 +0000\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n\r\n'
        "--B\r\nContent-Type: text/plain\r\n\r\nDelivery failed.\r\n"
        "--B\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example\r\n\r\n"
        "Final-Recipient: rfc822; gone@client.example\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        "--B\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        f"From: support@example.com\r\nTo: gone@client.example\r\nMessage-ID: {original_id}\r\n"
        "Subject: [x] Help please\r\n--B--\r\n"
    ).encode()
    out = ingest(rt, dsn)
    assert out.classification == "bounce"
    assert out.action == "logged" and out.ticket_id == t.ticket_id
    assert out.matched_by == "embedded"
    assert count(rt, Comment) == 0


def test_link_email_to_unknown_ticket_fails_clearly(
    make_runtime: Callable[..., Runtime], tmp_path
) -> None:  # type: ignore[no-untyped-def]
    wf = tmp_path / "wf.yaml"
    wf.write_text(
        "workflows:\n  - name: route\n    classification_trigger: any\n"
        "    workflow_steps:\n      - action: link_email_to_ticket\n"
        "        params: {ticket_number: TKT-20991231-001}\n"
    )
    rt = make_runtime(workflows_path=wf)
    out = ingest(rt, make_email())
    assert out.action == "logged" and out.ticket_number is None
    from mailticket.store.models import WorkflowExecution

    with rt.session_factory() as s:
        ex = s.scalars(select(WorkflowExecution)).one()
        assert ex.status == "failed" and "TKT-20991231-001" in (ex.error or "")
        assert s.scalar(select(func.count()).select_from(Ticket)) == 0


def test_poison_message_is_quarantined_and_retryable(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mailticket.store.models import QuarantineEntry
    from mailticket.ticketing import quarantine

    good = make_email()
    real = rt.classifier.classify

    def boom(email):  # type: ignore[no-untyped-def]
        raise RuntimeError("classifier exploded")

    monkeypatch.setattr(rt.classifier, "classify", boom)
    out = ingest(rt, good)
    assert out.action == "quarantined" and "classifier exploded" in (out.error or "")
    again = ingest(rt, good)
    assert again.action == "quarantined"
    with rt.session_factory() as s:
        entry = s.scalars(select(QuarantineEntry)).one()
        assert entry.attempts == 2 and entry.status == "held"
        assert s.scalar(select(func.count()).select_from(EmailLog)) == 0
    monkeypatch.setattr(rt.classifier, "classify", real)
    fixed = quarantine.retry(rt.pipeline, entry.id)
    assert fixed.action == "created"
    with rt.session_factory() as s:
        assert s.get_one(QuarantineEntry, entry.id).status == "released"


def test_batch_ingest_isolates_failures(rt: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    msgs = [(f"m{i}", make_email(subject=f"problem {i}")) for i in range(5)]
    real = rt.classifier.classify

    def flaky(email):  # type: ignore[no-untyped-def]
        if email.subject == "problem 2":
            raise ValueError("bad one")
        return real(email)

    monkeypatch.setattr(rt.classifier, "classify", flaky)
    outcomes = list(rt.pipeline.ingest_many(msgs, batch_size=2))
    assert [o.action for o in outcomes] == ["created", "created", "quarantined", "created", "created"]
    assert count(rt, Ticket) == 4
