"""Jira end to end: pipeline -> outbox -> fake Jira over HTTP, and back by webhook / poll."""

from __future__ import annotations

from fastapi import FastAPI
from sqlalchemy import select

from mailticket.backends.models import RemoteCommentRef, WebhookDelivery
from mailticket.backends.registry import registry_for
from mailticket.backends.sync import poll_backend
from mailticket.backends.webhook_api import build_router
from mailticket.runtime import Runtime
from mailticket.store.models import Comment, Ticket
from tests.backends.fakes.asgi import AsgiServer
from tests.backends.fakes.jira import FakeJira
from tests.backends.helpers import count, drain, drain_until_quiet, items, link_of
from tests.backends.mail import mail

PDF = ("report.pdf", "application/pdf", b"%PDF-1.4 fake pdf bytes\x00\x01")


def _ingest(rt: Runtime, raw: bytes) -> int:
    outcome = rt.pipeline.process(raw, "test")
    assert outcome.ticket_id is not None, outcome
    return outcome.ticket_id


async def test_push_comment_attachment(jira_runtime: Runtime, fake_jira: FakeJira) -> None:
    rt = jira_runtime
    first, first_id = mail(attachment=PDF)
    ticket_id = _ingest(rt, first)
    with rt.session_factory() as s:
        assert [i.operation for i in items(s)] == ["create_ticket", "create_attachment"]
        assert link_of(s, ticket_id, "jira").state == "pending"

    report = await drain(rt)
    assert (report.done, report.dead) == (2, 0)
    assert len(fake_jira.issues) == 1
    issue = next(iter(fake_jira.issues.values()))
    fields = issue["fields"]
    assert fields["summary"] == "Printer on fire"
    assert "It is on fire." in fields["description"]
    assert fields["customfield_10050"] == "carol@example.com"  # the workflow's field mapping
    assert any(label.startswith("m2t-") for label in fields["labels"])
    assert fake_jira.attachments[issue["id"]] == [PDF]
    with rt.session_factory() as s:
        link = link_of(s, ticket_id, "jira")
        assert (link.state, link.remote_id, link.remote_key) == ("linked", issue["id"], "OPS-1")
        assert link.remote_url == f"{fake_jira.url}/browse/OPS-1"

    # A follow-up email becomes one public comment (with its attachment), never a 2nd issue.
    reply, _ = mail(subject="Re: Printer on fire", body="Now smoke too.", reply_to=first_id,
                    attachment=("smoke.txt", "text/plain", b"smoke"))
    assert _ingest(rt, reply) == ticket_id
    report = await drain(rt)
    assert (report.done, report.dead) == (2, 0)
    assert len(fake_jira.issues) == 1
    comments = fake_jira.comments[issue["id"]]
    assert len(comments) == 1
    assert "Now smoke too." in comments[0]["body"]
    props = {p["key"]: p["value"] for p in comments[0]["properties"]}
    assert props["sd.public.comment"] == {"internal": False}
    assert "op_key" in props["mailticket"]
    assert [a[0] for a in fake_jira.attachments[issue["id"]]] == ["report.pdf", "smoke.txt"]
    # The API-token auth was used (no bearer configured).
    assert set(fake_jira.auth_seen) == {"Basic"}


async def test_status_and_comments_come_back_by_webhook(
    jira_runtime: Runtime, fake_jira: FakeJira
) -> None:
    rt = jira_runtime
    raw, _ = mail()
    ticket_id = _ingest(rt, raw)
    await drain(rt)
    issue = next(iter(fake_jira.issues.values()))
    app = FastAPI()
    app.include_router(build_router(rt))
    with AsgiServer(app) as api:
        url = f"{api.url}/api/v1/webhooks/jira"
        fake_jira.set_status(issue["key"], "Resolved")
        resp = fake_jira.webhook(url, "jira:issue_updated", issue["key"], delivery_id="d-1")
        assert resp.status_code == 200, resp.text
        assert resp.json()["status"] == "ok"
        with rt.session_factory() as s:
            ticket = s.get_one(Ticket, ticket_id)
            assert ticket.status == "resolved"
            assert ticket.resolved_at is not None
            assert link_of(s, ticket_id, "jira").last_status_raw == "Resolved"

        # The same delivery again: acknowledged, not replayed (the reopen below stays).
        fake_jira.set_status(issue["key"], "In Progress")
        again = fake_jira.webhook(url, "jira:issue_updated", issue["key"], delivery_id="d-1")
        assert again.status_code == 200 and again.json()["status"] == "duplicate"
        with rt.session_factory() as s:
            assert s.get_one(Ticket, ticket_id).status == "resolved"
            assert count(s, WebhookDelivery) == 1

        # Forged: signed with another secret. Rejected, nothing recorded or changed.
        forged = fake_jira.webhook(url, "jira:issue_updated", issue["key"], delivery_id="d-2",
                                   secret="not-the-secret")
        assert forged.status_code == 401
        with rt.session_factory() as s:
            assert s.get_one(Ticket, ticket_id).status == "resolved"
            assert count(s, WebhookDelivery) == 1

        # An agent's remote comment comes back once, as an internal comment.
        agent = fake_jira.add_remote_comment(issue["key"], "We sent a technician.", internal=True)
        ok = fake_jira.webhook(url, "comment_created", issue["key"], comment=agent,
                               delivery_id="d-3")
        assert ok.status_code == 200 and ok.json()["comments"] == 1
        # The status moved meanwhile: the webhook is a hint, the ticket is re-read.
        with rt.session_factory() as s:
            ticket = s.get_one(Ticket, ticket_id)
            assert ticket.status == "open"
            mirrored = s.scalars(select(Comment).where(Comment.ticket_id == ticket_id,
                                                       Comment.source == "backend")).all()
            assert len(mirrored) == 1
            assert mirrored[0].is_internal and "We sent a technician." in mirrored[0].body
        again = fake_jira.webhook(url, "comment_created", issue["key"], comment=agent,
                                  delivery_id="d-4")
        assert again.json()["comments"] == 0

        # Unknown instance name: 404.
        missing = fake_jira.webhook(f"{api.url}/api/v1/webhooks/nope", "x", issue["key"])
        assert missing.status_code == 404


async def test_own_comments_are_not_echoed(jira_runtime: Runtime, fake_jira: FakeJira) -> None:
    rt = jira_runtime
    raw, mid = mail()
    ticket_id = _ingest(rt, raw)
    _ingest(rt, mail(body="more details", reply_to=mid)[0])
    await drain_until_quiet(rt)
    issue = next(iter(fake_jira.issues.values()))
    ours = fake_jira.comments[issue["id"]][0]
    backend = registry_for(rt.settings.backends_file).build("jira")
    try:
        # A webhook's copy of our own comment carries no properties; the listing does.
        app = FastAPI()
        app.include_router(build_router(rt))
        with AsgiServer(app) as api:
            resp = fake_jira.webhook(f"{api.url}/api/v1/webhooks/jira", "comment_created",
                                     issue["key"], comment=ours)
            assert resp.json()["comments"] == 0
        report = await poll_backend(rt.session_factory, rt.settings, backend)
        assert report.comments == 0
    finally:
        await backend.aclose()
    with rt.session_factory() as s:
        assert count(s, Comment, Comment.ticket_id == ticket_id, Comment.source == "backend") == 0
        assert count(s, RemoteCommentRef, RemoteCommentRef.direction == "out") == 1


async def test_status_comes_back_by_polling(jira_runtime: Runtime, fake_jira: FakeJira) -> None:
    rt = jira_runtime
    ids = [_ingest(rt, mail(subject=f"Issue {n}")[0]) for n in range(3)]
    await drain(rt)
    keys = sorted(i["key"] for i in fake_jira.issues.values())
    fake_jira.set_status(keys[0], "Canceled")
    fake_jira.set_status(keys[1], "Done")  # mapped by the instance's status_map
    # Nobody mapped it, and its category "done" could mean solved or abandoned.
    fake_jira.set_status(keys[2], "Shipped", category="done")
    backend = registry_for(rt.settings.backends_file).build("jira")
    try:
        report = await poll_backend(rt.session_factory, rt.settings, backend)
    finally:
        await backend.aclose()
    assert report.unknown_status == [f"{keys[2]}: Shipped"]
    with rt.session_factory() as s:
        by_key = {link_of(s, t, "jira").remote_key: s.get_one(Ticket, t) for t in ids}
        canceled = by_key[keys[0]]
        assert canceled.status == "closed" and canceled.resolved_at is None
        assert canceled.custom_fields["remote_resolution"] == "canceled"
        assert by_key[keys[1]].status == "resolved"
        assert by_key[keys[2]].status == "open"  # reported, not guessed
        assert by_key[keys[2]].custom_fields.get("remote_resolution") is None


async def test_requester_maps_to_a_jira_user_or_a_new_jsm_customer(fake_jira: FakeJira) -> None:
    """The reporter is the Jira user with the sender's address; an unknown sender becomes a
    Jira Service Management customer when asked (create_requester), else the default."""
    from mailticket.backends.base import TicketDraft
    from mailticket.backends.jira import JiraBackend, JiraConfig
    from tests.backends.conftest import jira_instance

    def backend(**extra: object) -> JiraBackend:
        cfg = {k: v for k, v in jira_instance(fake_jira, **extra).items() if k != "kind"}
        return JiraBackend("jira", JiraConfig.model_validate(cfg))

    stranger = TicketDraft(subject="s", text="t", requester_email="New.Person@example.com",
                           requester_name="New Person")
    known = TicketDraft(subject="s", text="t", requester_email="Carol@Example.com")
    plain, create = backend(default_reporter="acc-carol"), backend(create_requester=True)
    try:
        def reporter(issue_id: str) -> object:
            return (fake_jira.issues[issue_id]["fields"].get("reporter") or {}).get("accountId")

        assert reporter((await create.create_ticket(known, op_key="k1")).id) == "acc-carol"
        assert reporter((await plain.create_ticket(stranger, op_key="k2")).id) == "acc-carol"
        assert "new.person@example.com" not in fake_jira.users  # plain made nobody
        made = reporter((await create.create_ticket(stranger, op_key="k3")).id)
        customer = fake_jira.users["new.person@example.com"]
        assert made == customer["accountId"] and customer["displayName"] == "New Person"
        # Found from now on, not created twice.
        assert reporter((await create.create_ticket(stranger, op_key="k4")).id) == made
    finally:
        await plain.aclose()
        await create.aclose()
