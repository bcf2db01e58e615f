"""The thread view's forms on the server side (both DBs): who sees them, CSRF refusals,
internal notes that never become mail, status/priority/assignee changes, quote folding."""

from __future__ import annotations

import re
from email import message_from_bytes
from email.utils import getaddresses

from sqlalchemy import func, select

from mailticket.api import csrf
from mailticket.sla.models import TicketStatusChange
from mailticket.store.models import Comment, Ticket
from mailticket.store.outbox_models import OutboxItem
from tests.api.conftest import Api
from tests.mailfactory import make_email


def _login(api: Api, scope: str) -> None:
    r = api.client.post("/ui/login", data={"token": api.tokens[scope]}, follow_redirects=False)
    assert r.status_code == 303


def _token_on(page: str) -> str:
    found = re.search(rf'name="{csrf.FIELD}" value="([0-9a-f]+)"', page)
    assert found is not None, "the page carries no form token"
    return found.group(1)


def _outbox_count(api: Api) -> int:
    with api.runtime.session_factory() as s:
        return int(s.scalar(select(func.count()).select_from(OutboxItem)) or 0)


def test_a_read_token_sees_no_forms_and_cannot_post(api: Api) -> None:
    opened = api.ingest(make_email(subject="Printer", sender="ann@example.com"))
    _login(api, "read")
    page = api.client.get(f"/ui/tickets/{opened.ticket_number}")
    assert page.status_code == 200
    for form in ("reply-form", "note-form", "update-form", csrf.FIELD):
        assert form not in page.text
    # A forged post with a read token, even with the token its own cookie would sign.
    forged = csrf.form_token(api.tokens["read"])
    for path, data in (
        ("notes", {"body": "sneaky"}),
        ("reply", {"body": "sneaky"}),
        ("update", {"status": "closed", "priority": "low", "assignee": ""}),
    ):
        r = api.client.post(f"/ui/tickets/{opened.ticket_number}/{path}",
                            data={**data, csrf.FIELD: forged}, follow_redirects=False)
        assert r.status_code == 403, (path, r.status_code)
        assert "write" in r.text and "text/html" in r.headers["content-type"]
    with api.runtime.session_factory() as s:
        ticket = s.get_one(Ticket, opened.ticket_id)
        assert ticket.status == "open" and ticket.comments == []


def test_posts_without_the_form_token_or_from_another_site_are_refused(api: Api) -> None:
    opened = api.ingest(make_email(subject="Printer", sender="ann@example.com"))
    _login(api, "write")
    page = api.client.get(f"/ui/tickets/{opened.ticket_number}").text
    good = _token_on(page)
    assert good == csrf.form_token(api.tokens["write"])
    url = f"/ui/tickets/{opened.ticket_number}/notes"
    missing = api.client.post(url, data={"body": "x"}, follow_redirects=False)
    wrong = api.client.post(url, data={"body": "x", csrf.FIELD: "0" * 64}, follow_redirects=False)
    other = api.client.post(url, data={"body": "x", csrf.FIELD: csrf.form_token(api.tokens["read"])},
                            follow_redirects=False)
    foreign = api.client.post(url, data={"body": "x", csrf.FIELD: good},
                              headers={"Sec-Fetch-Site": "cross-site"}, follow_redirects=False)
    origin = api.client.post(url, data={"body": "x", csrf.FIELD: good},
                             headers={"Origin": "https://evil.example"}, follow_redirects=False)
    for r in (missing, wrong, other, foreign, origin):
        assert r.status_code == 403 and "text/html" in r.headers["content-type"]
    with api.runtime.session_factory() as s:
        assert s.scalar(select(func.count()).select_from(Comment)) == 0
    ok = api.client.post(url, data={"body": "checked the spooler", csrf.FIELD: good},
                         headers={"Sec-Fetch-Site": "same-origin"}, follow_redirects=False)
    assert ok.status_code == 303
    assert ok.headers["location"] == f"/ui/tickets/{opened.ticket_number}#notes"


def test_an_internal_note_from_the_page_is_never_mailed(api: Api) -> None:
    opened = api.ingest(make_email(subject="Printer", sender="ann@example.com"))
    before = _outbox_count(api)  # the auto-reply, if any
    _login(api, "write")
    token = _token_on(api.client.get(f"/ui/tickets/{opened.ticket_number}").text)
    r = api.client.post(f"/ui/tickets/{opened.ticket_number}/notes",
                        data={"body": "customer is on the old firmware", csrf.FIELD: token})
    assert r.status_code == 200 and "customer is on the old firmware" in r.text
    assert "internal note" in r.text
    assert _outbox_count(api) == before
    with api.runtime.session_factory() as s:
        (note,) = s.scalars(select(Comment)).all()
        assert (note.is_internal, note.email_log_id) == (True, None)
        assert note.author_email == "token:test-write"


def test_status_priority_and_assignee_change_from_the_page(api: Api) -> None:
    opened = api.ingest(make_email(subject="Printer", sender="ann@example.com"))
    _login(api, "write")
    token = _token_on(api.client.get(f"/ui/tickets/{opened.ticket_number}").text)
    url = f"/ui/tickets/{opened.ticket_number}/update"
    r = api.client.post(url, data={"status": "resolved", "priority": "high", "assignee": "7",
                                   csrf.FIELD: token})
    assert r.status_code == 200
    assert 'id="ticket-status">resolved' in r.text and 'id="ticket-assignee">7' in r.text
    with api.runtime.session_factory() as s:
        ticket = s.get_one(Ticket, opened.ticket_id)
        assert (ticket.status, ticket.priority, ticket.assigned_to_user_id) == ("resolved", "high", 7)
        assert ticket.closed_at is not None and ticket.resolved_at is not None
        history = s.scalars(select(TicketStatusChange.source)
                            .where(TicketStatusChange.ticket_id == ticket.id)).all()
        assert history == ["ui"]
    api.client.post(url, data={"status": "open", "priority": "high", "assignee": "",
                               csrf.FIELD: token})
    with api.runtime.session_factory() as s:
        ticket = s.get_one(Ticket, opened.ticket_id)
        assert (ticket.status, ticket.assigned_to_user_id, ticket.closed_at) == ("open", None, None)
    bad = api.client.post(url, data={"status": "gone", "priority": "high", csrf.FIELD: token})
    assert bad.status_code == 422 and "text/html" in bad.headers["content-type"]
    bad_user = api.client.post(url, data={"status": "open", "priority": "high", "assignee": "x1",
                                          csrf.FIELD: token})
    assert bad_user.status_code == 422 and "user id" in bad_user.text


def test_quoted_text_is_folded_behind_a_control(api: Api) -> None:
    opened = api.ingest(make_email(subject="Printer", sender="ann@example.com",
                                   message_id="<p1@example.com>", body="The printer jams."))
    api.ingest(make_email(
        subject="Re: Printer", sender="ann@example.com", in_reply_to="<p1@example.com>",
        body="Now it smokes too.\n\nOn Mon, 15 Dec 2025 at 10:00, Ann <ann@example.com> wrote:\n"
             "> The printer jams.\n",
    ))
    _login(api, "read")
    page = api.client.get(f"/ui/tickets/{opened.ticket_number}").text
    new, _, folded = page.partition("<details")
    assert "Now it smokes too." in new
    assert "<summary>show quoted text</summary>" in folded
    assert "&gt; The printer jams." in folded.partition("</details>")[0]


def test_a_reply_needs_the_form_token_and_valid_cc(api: Api) -> None:
    opened = api.ingest(make_email(subject="Printer", sender="ann@example.com"))
    before = _outbox_count(api)
    _login(api, "write")
    token = _token_on(api.client.get(f"/ui/tickets/{opened.ticket_number}").text)
    url = f"/ui/tickets/{opened.ticket_number}/reply"
    files = {"files": ("a.txt", b"hello", "text/plain")}
    missing = api.client.post(url, data={"body": "on our way"}, files=files)
    assert missing.status_code == 403
    bad_cc = api.client.post(url, data={"body": "on our way", "cc": "not an address",
                                        csrf.FIELD: token}, files=files)
    assert bad_cc.status_code == 422 and "cc" in bad_cc.text
    assert _outbox_count(api) == before
    with api.runtime.session_factory() as s:
        assert s.scalar(select(func.count()).select_from(Comment)) == 0
    sent = api.client.post(url, data={"body": "on our way", csrf.FIELD: token}, files=files,
                           follow_redirects=False)
    assert sent.status_code == 303 and sent.headers["location"].endswith("#thread")
    assert _outbox_count(api) == before + 1


def test_the_reply_cc_field_is_read_as_an_address_list(api: Api) -> None:
    """A display name may hold a comma (`"Doe, Jane" <jane@…>`): the field is read as a mail
    header's address list, not split on every comma; what it cannot read is a 422 page that
    names the problem, and nothing is mailed."""
    opened = api.ingest(make_email(subject="Printer", sender="ann@example.com"))
    _login(api, "write")
    token = _token_on(api.client.get(f"/ui/tickets/{opened.ticket_number}").text)
    url = f"/ui/tickets/{opened.ticket_number}/reply"
    before = _outbox_count(api)
    for bad, said in (
        ('"Doe, Jane" <jane@example.com>, not an address', "not an e-mail address"),
        ("alice@example.org)<bob@example.com>", "unmatched"),
        ('"Doe, Jane <jane@example.com>', "left open"),
        ("jane@example.com bob@example.com", "cannot read every address"),
    ):
        r = api.client.post(url, data={"body": "hi", "cc": bad, csrf.FIELD: token})
        assert r.status_code == 422, (bad, r.status_code, r.text)
        assert "text/html" in r.headers["content-type"] and said in r.text, (bad, r.text)
        assert "Traceback" not in r.text
    assert _outbox_count(api) == before
    sent = api.client.post(url, data={
        "body": "on our way", csrf.FIELD: token,
        "cc": '"Doe, Jane" <Jane@Example.com>, bob@example.com; "Roe; Rick" <rick@example.com>',
    }, follow_redirects=False)
    assert sent.status_code == 303, sent.text
    with api.runtime.session_factory() as s:
        item = s.scalars(select(OutboxItem).order_by(OutboxItem.id.desc())).first()
        assert item is not None and item.message is not None
        mail = message_from_bytes(item.message)
    assert [a for _, a in getaddresses([mail["To"]])] == ["ann@example.com"]
    # After the ticket's own participants (the thread's To), the three of the field, whole.
    cc = [a for _, a in getaddresses(mail.get_all("Cc", []))]
    assert cc[-3:] == ["jane@example.com", "bob@example.com", "rick@example.com"], cc
    assert len(cc) == len(set(cc)) and not any("doe" in a or "roe" in a for a in cc), cc
