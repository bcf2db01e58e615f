"""Multi-ticket threading, on SQLite and PostgreSQL: one message opens or joins several
tickets (`split_by: customer`, or two workflows that each open one), the log keeps one row
per message (its ticket_id the first ticket) plus links, each ticket's thread shows the
message, and replies thread into every ticket the original belongs to, never merging them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from sqlalchemy import func, select

from mailticket.api import queries
from mailticket.customers.models import TicketCustomer
from mailticket.runtime import Runtime
from mailticket.store.models import Comment, EmailLog, EmailTicket, Ticket
from tests.api.conftest import build_api
from tests.escalation.helpers import Setup, setup
from tests.mailfactory import make_email

SPLIT = """
workflows:
  - name: one ticket per customer
    classification_trigger: support_request
    workflow_steps:
      - action: create_ticket
        params: {split_by: customer}
      - action: add_tags
        params: {tags: [shared-incident]}
"""

TWO_QUEUES = """
workflows:
  - name: network queue
    classification_trigger: support_request
    stop: false
    workflow_steps:
      - action: create_ticket
        params: {assigned_to_user_id: 1}
      - action: add_tags
        params: {tags: [network]}
  - name: security queue
    classification_trigger: support_request
    workflow_steps:
      - action: create_ticket
        params: {assigned_to_user_id: 2}
      - action: add_tags
        params: {tags: [security]}
"""


def incident(n: int = 1, **kw: str) -> bytes:
    return make_email(
        sender="Noc <noc@carrier.example>",
        to="ann@acme.example, support@support.example",
        headers={"Cc": "bob@globex.example"},
        subject="Fibre cut in Hamburg",
        message_id=f"<cut{n}@carrier.example>",
        **kw,
    )


def thread_ids(env: Setup, ticket_id: int) -> list[str]:
    with env.session() as s:
        return [row.email_message_id for row in queries.thread(s, ticket_id)[0]]


def test_split_by_customer_opens_one_ticket_each(
    make_runtime: Callable[..., Runtime], tmp_path: Path
) -> None:
    env = setup(make_runtime, tmp_path, workflows=SPLIT, sla=None)
    opened = env.ingest(incident())
    assert opened.action == "created" and len(opened.ticket_numbers) == 2
    with env.session() as s:
        tickets = s.scalars(select(Ticket).order_by(Ticket.id)).all()
        assert [t.customer_id for t in tickets] == [101, 202]
        assert all(t.tags == ["shared-incident"] for t in tickets)
        assert all(t.requester_email == "noc@carrier.example" for t in tickets)
        evidence = {
            e.ticket_id: (e.matched_by, e.matched_value) for e in s.scalars(select(TicketCustomer))
        }
        assert evidence == {
            tickets[0].id: ("domain", "acme.example"), tickets[1].id: ("domain", "globex.example")
        }
        # one log row, naming the first ticket (ops' SQL); a link row for the second
        (log,) = s.scalars(select(EmailLog)).all()
        assert log.ticket_id == tickets[0].id == opened.ticket_id
        assert [(x.email_log_id, x.ticket_id) for x in s.scalars(select(EmailTicket))] == [
            (log.id, tickets[1].id)
        ]
    assert thread_ids(env, tickets[0].id) == thread_ids(env, tickets[1].id) == ["<cut1@carrier.example>"]

    # Ann answers: the reply joins both tickets, each gets her words; nothing is merged.
    reply = env.ingest(make_email(
        sender="ann@acme.example", in_reply_to="<cut1@carrier.example>",
        references="<cut1@carrier.example>", subject="Re: Fibre cut", message_id="<ann1@acme.example>",
    ))
    assert reply.action == "linked"
    assert reply.ticket_numbers == [t.ticket_number for t in tickets]
    with env.session() as s:
        assert s.scalar(select(func.count()).select_from(Ticket).where(
            Ticket.merged_into_id.is_not(None))) == 0
        comments = s.scalars(select(Comment.ticket_id).where(Comment.source == "email")).all()
        assert sorted(comments) == sorted(t.id for t in tickets)
    for ticket in tickets:
        assert thread_ids(env, ticket.id) == ["<cut1@carrier.example>", "<ann1@acme.example>"]

    # and a reply to the reply joins both too (her message belongs to both)
    again = env.ingest(make_email(
        sender="noc@carrier.example", in_reply_to="<ann1@acme.example>",
        references="<cut1@carrier.example> <ann1@acme.example>", subject="Re: Re: Fibre cut",
    ))
    assert len(again.ticket_numbers) == 2


def test_split_without_a_second_customer_is_one_ticket(
    make_runtime: Callable[..., Runtime], tmp_path: Path
) -> None:
    env = setup(make_runtime, tmp_path, workflows=SPLIT, sla=None)
    one = env.ingest(make_email(sender="jane@acme.example", to="support@support.example"))
    none = env.ingest(make_email(sender="x@unknown.example", to="support@support.example"))
    assert len(one.ticket_numbers) == len(none.ticket_numbers) == 1
    assert env.ticket(one.ticket_id).customer_id == 101
    assert env.ticket(none.ticket_id).customer_id is None


def test_two_workflows_open_two_tickets_and_the_api_shows_both_threads(
    make_runtime: Callable[..., Runtime], tmp_path: Path
) -> None:
    env = setup(make_runtime, tmp_path, workflows=TWO_QUEUES, sla=None)
    api = build_api(env.runtime)
    opened = env.ingest(incident())
    assert opened.workflows == ["network queue", "security queue"]
    first, second = opened.ticket_numbers
    net, sec = (api.get(f"/api/v1/tickets/{n}").json() for n in (first, second))
    assert (net["assigned_to_user_id"], net["tags"]) == (1, ["network"])
    assert (sec["assigned_to_user_id"], sec["tags"]) == (2, ["security"])
    for number in (first, second):
        emails = api.get(f"/api/v1/tickets/{number}/emails").json()["emails"]
        assert [e["email_message_id"] for e in emails] == ["<cut1@carrier.example>"]

    reply = env.ingest(make_email(
        sender="noc@carrier.example", in_reply_to="<cut1@carrier.example>", subject="update"
    ))
    # both workflows run again, and each finds the tickets the reply already joined
    assert reply.ticket_numbers == [first, second]
    for number in (first, second):
        emails = api.get(f"/api/v1/tickets/{number}/emails").json()["emails"]
        assert len(emails) == 2
    by_email = api.get("/api/v1/tickets/by-email/noc@carrier.example").json()["tickets"]
    assert sorted(t["ticket_number"] for t in by_email) == sorted([first, second])
    api.client.close()


def test_a_reply_to_one_tickets_own_mail_stays_on_that_ticket(
    make_runtime: Callable[..., Runtime], tmp_path: Path
) -> None:
    """An answer to mail of ticket A (say its auto-reply) also references the shared
    original: it joins A only, and B is not merged into A."""
    env = setup(make_runtime, tmp_path, workflows=SPLIT, sla=None)
    opened = env.ingest(incident())
    a, b = opened.ticket_numbers
    # a message only ticket A has (an agent's mail, here an inbound one logged on A)
    only_a = env.ingest(make_email(
        sender="ann@acme.example", subject=f"[{a}] details", message_id="<a-only@acme.example>"
    ))
    assert only_a.ticket_numbers == [a]
    reply = env.ingest(make_email(
        sender="noc@carrier.example", in_reply_to="<a-only@acme.example>",
        references="<cut1@carrier.example> <a-only@acme.example>", subject="Re: details",
    ))
    assert reply.ticket_numbers == [a]
    with env.session() as s:
        assert s.scalar(select(Ticket.status).where(Ticket.ticket_number == b)) == "open"


def test_bulk_ingest_threads_like_one_by_one(
    make_runtime: Callable[..., Runtime], tmp_path: Path
) -> None:
    env = setup(make_runtime, tmp_path, workflows=SPLIT, sla=None)
    mails = [
        incident(),
        make_email(sender="ann@acme.example", in_reply_to="<cut1@carrier.example>",
                   subject="Re: Fibre cut"),
    ]
    outcomes = list(env.runtime.pipeline.ingest_many(("bulk", raw) for raw in mails))
    assert [len(o.ticket_numbers) for o in outcomes] == [2, 2]
    assert outcomes[0].ticket_numbers == outcomes[1].ticket_numbers
    with env.session() as s:
        assert s.scalar(select(func.count()).select_from(EmailTicket)) == 2
