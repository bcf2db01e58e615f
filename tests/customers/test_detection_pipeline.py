"""Customer detection at ticket creation, through the pipeline, on SQLite and PostgreSQL:
exact address > domain > parent domain, shared domains never by domain, a workflow's
explicit customer wins, evidence stored beside the ticket, workflows limited to customers."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, event, select

from mailticket.customers.models import TicketCustomer
from mailticket.runtime import Runtime
from mailticket.store.models import Ticket, WorkflowExecution
from tests.escalation.helpers import setup
from tests.mailfactory import make_email


def _evidence(s: object, ticket_id: int) -> tuple[int, str, str | None] | None:
    row = s.get(TicketCustomer, ticket_id)  # type: ignore[attr-defined]
    return None if row is None else (row.customer_id, row.matched_by, row.matched_value)


def test_sender_maps_to_its_customer(make_runtime: Callable[..., Runtime], tmp_path: Path) -> None:
    env = setup(make_runtime, tmp_path, sla=None)
    by_domain = env.ingest(make_email(sender="Jane <jane@mail.eu.acme.example>"))
    by_address = env.ingest(make_email(sender="boss@gmail.com"))
    shared = env.ingest(make_email(sender="someone@gmail.com"))
    stranger = env.ingest(make_email(sender="x@unknown.example"))
    other = env.ingest(make_email(sender="it@globex.example"))
    assert {o.action for o in (by_domain, by_address, shared, stranger, other)} == {"created"}
    with env.session() as s:
        customer = {t.id: t.customer_id for t in s.scalars(select(Ticket))}
        assert customer[by_domain.ticket_id] == 101
        assert _evidence(s, by_domain.ticket_id) == (101, "domain", "acme.example")
        assert customer[by_address.ticket_id] == 101
        assert _evidence(s, by_address.ticket_id) == (101, "address", "boss@gmail.com")
        assert customer[shared.ticket_id] is None and _evidence(s, shared.ticket_id) is None
        assert customer[stranger.ticket_id] is None
        assert customer[other.ticket_id] == 202
        row = s.get(TicketCustomer, by_domain.ticket_id)
        assert row is not None and row.email_log_id == by_domain.email_log_id


def test_bulk_ingest_maps_like_one_by_one(
    make_runtime: Callable[..., Runtime], tmp_path: Path
) -> None:
    env = setup(make_runtime, tmp_path, sla=None)
    mails = [
        make_email(sender=s)
        for s in ("a@acme.example", "boss@gmail.com", "b@globex.example", "c@gmail.com")
    ]
    outcomes = list(env.runtime.pipeline.ingest_many(("bulk", raw) for raw in mails))
    with env.session() as s:
        got = [s.get_one(Ticket, o.ticket_id).customer_id for o in outcomes]
    assert got == [101, 101, 202, None]


def test_a_batch_asks_for_its_senders_customers_with_its_mail_lookups(
    make_runtime: Callable[..., Runtime], tmp_path: Path
) -> None:
    """The customer rules of a batch's senders are asked in the batch's prefetch query (one
    round trip with the mail lookups), and map as when they were asked on their own."""
    env = setup(make_runtime, tmp_path, sla=None)
    mails = [
        make_email(sender=s)
        for s in ("a@acme.example", "boss@gmail.com", "b@globex.example", "c@gmail.com")
    ]
    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement)

    event.listen(Engine, "before_cursor_execute", record)
    try:
        with env.runtime.session_factory() as s:
            outcomes = env.runtime.pipeline.process_batch(s, [(raw, "b") for raw in mails])
            s.commit()
    finally:
        event.remove(Engine, "before_cursor_execute", record)
    asked = [q for q in seen if "mailticket_customer_domains" in q]
    assert len(asked) == 1, asked
    assert "tticket_email_log.email_message_id IN" in asked[0], "a query of its own"
    with env.session() as s:
        got = [s.get_one(Ticket, o.ticket_id).customer_id for o in outcomes]
        assert _evidence(s, outcomes[0].ticket_id) == (101, "domain", "acme.example")
    assert got == [101, 101, 202, None]


def test_workflow_customer_wins_and_workflows_filter_by_customer(
    make_runtime: Callable[..., Runtime], tmp_path: Path
) -> None:
    env = setup(make_runtime, tmp_path, sla=None, workflows="""
        workflows:
          - name: globex desk
            classification_trigger: support_request
            customer: globex
            workflow_steps:
              - action: create_ticket
                params: {customer: globex}
              - action: add_tags
                params: {tags: [globex-desk]}
          - name: acme by id
            classification_trigger: support_request
            customer: [101]
            workflow_steps:
              - action: create_ticket
              - action: add_tags
                params: {tags: [acme-desk]}
          - name: everyone else
            classification_trigger: support_request
            workflow_steps:
              - action: create_ticket
                params: {customer_id: 202}
    """)
    acme = env.ingest(make_email(sender="jane@acme.example", message_id="<a1@acme.example>"))
    other = env.ingest(make_email(sender="x@unknown.example"))
    assert acme.workflows == ["acme by id"]
    assert other.workflows == ["everyone else"]
    with env.session() as s:
        first = s.get_one(Ticket, acme.ticket_id)
        assert first.customer_id == 101 and first.tags == ["acme-desk"]
        # the explicit customer of a workflow wins over detection, with its evidence
        forced = s.get_one(Ticket, other.ticket_id)
        assert forced.customer_id == 202
        assert _evidence(s, forced.id) == (202, "workflow", "everyone else")
    # a reply from an address that maps to nobody is about acme's ticket: acme's workflow
    reply = env.ingest(make_email(
        sender="helper@unknown.example", in_reply_to="<a1@acme.example>", subject="more"
    ))
    assert reply.action == "linked" and reply.ticket_id == acme.ticket_id
    assert reply.workflows[0] == "acme by id"


def test_unknown_explicit_customer_fails_the_workflow(
    make_runtime: Callable[..., Runtime], tmp_path: Path
) -> None:
    env = setup(make_runtime, tmp_path, sla=None, workflows="""
        workflows:
          - name: typo
            classification_trigger: support_request
            workflow_steps:
              - action: create_ticket
                params: {customer: initech}
    """)
    outcome = env.ingest(make_email(sender="a@acme.example"))
    assert outcome.action == "logged"
    with env.session() as s:
        run = s.scalars(select(WorkflowExecution)).one()
        assert run.status == "failed" and "no customer 'initech'" in (run.error or "")
