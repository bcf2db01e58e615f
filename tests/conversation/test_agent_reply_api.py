"""Agents answer by email through the API: who gets it, its headers and body, files, limits,
participants, and internal notes that never leave (SQLite and PostgreSQL, real SMTP sink)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from email.message import EmailMessage
from typing import Any

import pytest
from sqlalchemy import func, select

from mailticket.conversation import REPLY_MARKER
from mailticket.outbound.smtp import deliver_outgoing_mail
from mailticket.runtime import Runtime
from mailticket.store.models import Attachment, Comment, EmailLog, RawMessage
from tests.api.conftest import Api, build_api
from tests.smtp_sink import Received, SmtpSink

SUPPORT = "support@example.com"
AGENT = "anna@example.com"


@pytest.fixture
def smtp_sink() -> Iterator[SmtpSink]:
    with SmtpSink() as sink:
        yield sink


@pytest.fixture
def mail_api(
    make_runtime: Callable[..., Runtime], smtp_sink: SmtpSink
) -> Iterator[Callable[..., Api]]:
    built: list[Api] = []

    def factory(**overrides: Any) -> Api:
        values: dict[str, Any] = {
            "mail_from": f"Example Support <{SUPPORT}>", "mail_domain": "example.com",
            "own_addresses": "helpdesk@example.com",
            "assignee_addresses": f'{{"5": "{AGENT}"}}',
            "smtp_host": "127.0.0.1", "smtp_port": smtp_sink.port, "smtp_tls": "plain",
            "smtp_timeout": 5,
        }
        values.update(overrides)
        api = build_api(make_runtime(**values))
        built.append(api)
        return api

    yield factory
    for api in built:
        api.client.close()


def _customer_mail(**kw: Any) -> bytes:
    msg = EmailMessage()
    msg["From"] = kw.get("sender", "Dana Customer <dana@customer.example>")
    msg["To"] = kw.get("to", f"{SUPPORT}, colleague@customer.example")
    msg["Cc"] = kw.get("cc", f"boss@customer.example, {AGENT}, helpdesk@example.com")
    msg["Subject"] = kw.get("subject", "Printer on fire")
    msg["Message-ID"] = kw.get("message_id", "<first@customer.example>")
    if "in_reply_to" in kw:
        msg["In-Reply-To"] = kw["in_reply_to"]
        msg["References"] = kw.get("references", kw["in_reply_to"])
    msg.set_content(kw.get("body", "The printer on floor 3 is on fire.\nPlease help."))
    return msg.as_bytes()


async def _sent(api: Api, sink: SmtpSink) -> list[Received]:
    """Drain the outbox into the sink; the agents' answers (not the auto-replies)."""
    await deliver_outgoing_mail(api.runtime.session_factory, api.runtime.settings)
    return [m for m in sink.messages if m.message()["Auto-Submitted"] is None]


def _post(api: Api, ref: str | int, scope: str = "write", **kw: Any) -> Any:
    headers = {**api.auth(scope), **kw.pop("headers", {})}
    return api.client.post(f"/api/v1/tickets/{ref}/comments", headers=headers, **kw)


async def test_a_public_comment_is_mailed_to_the_participants_with_thread_headers(
    mail_api: Callable[..., Api], smtp_sink: SmtpSink
) -> None:
    api = mail_api()
    first = api.ingest(_customer_mail())
    # The customer's follow-up is the newest customer message: the answer replies to it.
    api.ingest(_customer_mail(
        message_id="<second@customer.example>", in_reply_to="<first@customer.example>",
        subject="Re: Printer on fire", body="It is still burning.", cc="",
    ))
    number = first.ticket_number
    r = _post(api, number, json={
        "body": "We are sending someone.\n\nStay away from it.", "author_name": "Anna Agent",
        "author_email": AGENT, "cc": ["Facilities@customer.example"],
    })
    assert r.status_code == 201, r.text
    assert r.json()["is_internal"] is False and r.json()["email_log_id"] is not None

    [sent] = await _sent(api, smtp_sink)
    mail = sent.message()
    assert sent.mail_from == SUPPORT
    assert sorted(sent.rcpt_tos) == sorted([
        "dana@customer.example", "colleague@customer.example", "boss@customer.example",
        "facilities@customer.example",
    ])  # never the support address, OWN_ADDRESSES nor an agent's address
    assert mail["To"] == "Dana Customer <dana@customer.example>"
    assert "facilities@customer.example" in mail["Cc"] and "boss@customer.example" in mail["Cc"]
    assert mail["Subject"] == f"[{number}] Printer on fire"
    assert mail["Message-ID"].startswith(f"<{number}-") and mail["Message-ID"].endswith(
        "@example.com>")
    assert mail["In-Reply-To"] == "<second@customer.example>"
    assert mail["References"].split() == ["<first@customer.example>", "<second@customer.example>"]
    assert mail["From"] == f"Anna Agent <{SUPPORT}>"
    assert mail["Reply-To"] == SUPPORT
    for automatic in ("Auto-Submitted", "Precedence", "X-Auto-Response-Suppress"):
        assert mail[automatic] is None
    text = mail.get_body(("plain",)).get_content().replace("\r\n", "\n")  # type: ignore[union-attr]
    html = mail.get_body(("html",)).get_content()  # type: ignore[union-attr]
    assert text.startswith("We are sending someone.\n\nStay away from it.\n")
    mine, _, quoted = text.partition(REPLY_MARKER)
    assert "Anna Agent" in mine and number in mine
    assert "> It is still burning." in quoted and "wrote:" in quoted
    assert "We are sending someone." in html and REPLY_MARKER in html

    with api.runtime.session_factory() as s:
        comment = s.scalars(select(Comment).where(Comment.source == "api")).one()
        out = s.get_one(EmailLog, comment.email_log_id)
        assert (out.direction, out.action, out.ticket_id) == ("out", "agent_reply", first.ticket_id)
        assert out.email_message_id == mail["Message-ID"]
        raw = s.get_one(RawMessage, out.raw_message_id)
        assert raw.raw.rstrip(b"\r\n") == sent.data.rstrip(b"\r\n")


async def test_the_template_can_be_overridden_and_the_quote_switched_off(
    mail_api: Callable[..., Api], smtp_sink: SmtpSink, tmp_path: Any
) -> None:
    (tmp_path / "agent_reply.txt").write_text("Custom: {{ body }} ({{ ticket_number }})\n")
    # the workflows' send_auto_reply names it: start-up checks it is there
    (tmp_path / "ticket_created.txt").write_text("got it\n")
    api = mail_api(templates_path=str(tmp_path), agent_reply_quote=False,
                   agent_reply_show_name=False)
    first = api.ingest(_customer_mail(cc=""))
    assert _post(api, first.ticket_id, json={"body": "Done.", "author_name": "Anna"}
                 ).status_code == 201
    [sent] = await _sent(api, smtp_sink)
    mail = sent.message()
    assert mail.get_content_type() == "text/plain"
    assert mail.get_content().replace("\r\n", "\n") == f"Custom: Done. ({first.ticket_number})\n"
    assert mail["From"] == f"Example Support <{SUPPORT}>"


async def test_internal_notes_are_never_mailed_from_the_api(
    mail_api: Callable[..., Api], smtp_sink: SmtpSink
) -> None:
    api = mail_api()
    first = api.ingest(_customer_mail())
    before = len(smtp_sink.messages)
    r = _post(api, first.ticket_id, json={"body": "secret: customer is difficult",
                                           "visibility": "internal"})
    assert r.status_code == 201 and r.json()["is_internal"] is True
    assert r.json()["email_log_id"] is None
    files = {"files": ("a.txt", b"x", "text/plain")}
    refused = _post(api, first.ticket_id, data={"body": "note", "visibility": "internal"},
                    files=files)
    assert refused.status_code == 422 and "never mailed" in refused.json()["detail"]
    refused = _post(api, first.ticket_id, json={"body": "note", "visibility": "internal",
                                                 "cc": ["x@customer.example"]})
    assert refused.status_code == 422
    await deliver_outgoing_mail(api.runtime.session_factory, api.runtime.settings)
    fresh = smtp_sink.messages[before:]
    assert all(b"secret" not in m.data and b"note" not in m.data for m in fresh)
    assert all(m.message()["Auto-Submitted"] == "auto-replied" for m in fresh)
    with api.runtime.session_factory() as s:
        assert s.scalar(select(func.count()).select_from(EmailLog).where(
            EmailLog.action == "agent_reply")) == 0


async def test_files_are_sent_and_stored_like_inbound_attachments(
    mail_api: Callable[..., Api], smtp_sink: SmtpSink
) -> None:
    api = mail_api()
    first = api.ingest(_customer_mail(cc=""))
    pdf = b"%PDF-1.4 " + bytes(range(256)) * 40
    r = _post(api, first.ticket_id, data={"body": "The manual is attached.",
                                          "cc": ["a@customer.example", "b@customer.example"]},
              files=[("files", ("manual.pdf", pdf, "application/pdf")),
                     ("files", ("Grüße.txt", b"hallo", "text/plain"))])
    assert r.status_code == 201, r.text
    [sent] = await _sent(api, smtp_sink)
    mail = sent.message()
    assert {"a@customer.example", "b@customer.example"} <= set(sent.rcpt_tos)
    got = {part.get_filename(): part.get_content() for part in mail.iter_attachments()}
    assert got == {"manual.pdf": pdf, "Grüße.txt": "hallo"}
    email_id = r.json()["email_log_id"]
    listing = api.get(f"/api/v1/emails/{email_id}/attachments").json()["attachments"]
    assert [(a["filename"], a["size"]) for a in listing] == [("manual.pdf", len(pdf)),
                                                             ("Grüße.txt", 5)]
    assert all(a["ticket_id"] == first.ticket_id for a in listing)
    download = api.get(listing[0]["download_url"])
    assert download.status_code == 200 and download.content == pdf


async def test_attachment_limits_answer_clearly_and_send_nothing(
    mail_api: Callable[..., Api], smtp_sink: SmtpSink
) -> None:
    api = mail_api(reply_max_attachments=2, reply_max_attachment_bytes=2000,
                   api_max_body_bytes=64 * 1024)
    first = api.ingest(_customer_mail(cc=""))

    def post_files(*sizes: int) -> Any:
        return _post(api, first.ticket_id, data={"body": "files"},
                     files=[("files", (f"f{i}.bin", b"x" * n, "application/octet-stream"))
                            for i, n in enumerate(sizes)])

    too_big = post_files(1500, 1000)
    assert too_big.status_code == 413
    assert too_big.headers["content-type"] == "application/problem+json"
    assert "REPLY_MAX_ATTACHMENT_BYTES" in too_big.json()["detail"]
    too_many = post_files(1, 1, 1)
    assert too_many.status_code == 422 and "REPLY_MAX_ATTACHMENTS" in too_many.json()["detail"]
    over_gate = post_files(70 * 1024)
    assert over_gate.status_code == 413 and "API_MAX_BODY_BYTES" in over_gate.json()["detail"]
    nameless = _post(api, first.ticket_id, data={"body": "x"},
                     files=[("files", ("", b"x", "text/plain"))])
    assert nameless.status_code in (400, 422)
    misplaced = _post(api, first.ticket_id, data={"body": "x"},
                      files=[("attachment", ("a.txt", b"x", "text/plain"))])
    assert misplaced.status_code == 422
    unknown = _post(api, first.ticket_id, data={"body": "x", "colour": "red"},
                    files=[("files", ("a.txt", b"x", "text/plain"))])
    assert unknown.status_code == 422
    wrong_type = _post(api, first.ticket_id, content=b"body=x",
                       headers={"content-type": "text/plain"})
    assert wrong_type.status_code == 415
    bad_cc = _post(api, first.ticket_id, json={"body": "x", "cc": ["not an address"]})
    assert bad_cc.status_code == 422 and bad_cc.json()["errors"][0]["loc"][:2] == ["body", "cc"]
    assert await _sent(api, smtp_sink) == []
    with api.runtime.session_factory() as s:
        assert s.scalar(select(func.count()).select_from(Comment).where(
            Comment.source == "api")) == 0
        assert s.scalar(select(func.count()).select_from(Attachment).where(
            Attachment.ticket_id == first.ticket_id)) == 0


async def test_participants_can_be_listed_added_and_removed(
    mail_api: Callable[..., Api], smtp_sink: SmtpSink
) -> None:
    api = mail_api()
    first = api.ingest(_customer_mail())
    base = f"/api/v1/tickets/{first.ticket_id}/participants"

    def listed() -> list[tuple[str, str]]:
        body = api.get(base).json()
        return [(p["address"], p["source"]) for p in body["participants"]]

    assert listed() == [("dana@customer.example", "requester"),
                        ("colleague@customer.example", "mail"),
                        ("boss@customer.example", "mail")]
    w = api.auth("write")
    r = api.client.post(base, json={"address": "EVE@customer.example", "name": "Eve"},
                        headers=w)
    assert r.status_code == 201, r.text
    assert ("eve@customer.example", "added") in listed()
    assert api.client.post(base, json={"address": SUPPORT}, headers=w).status_code == 422
    assert api.client.post(base, json={"address": AGENT}, headers=w).status_code == 422
    assert api.client.post(base, json={"address": "nobody"}, headers=w).status_code == 422
    assert api.client.post(base, json={"address": "x@y.example"},
                           headers=api.auth("read")).status_code == 403
    gone = api.client.delete(f"{base}/boss@customer.example", headers=w)
    assert gone.status_code == 200 and gone.json()["removed"] == ["boss@customer.example"]
    assert api.client.delete(f"{base}/stranger@customer.example", headers=w).status_code == 404
    assert api.client.delete(f"{base}/odd@@x", headers=w).status_code == 404

    assert _post(api, first.ticket_id, json={"body": "Update."}).status_code == 201
    [sent] = await _sent(api, smtp_sink)
    assert sorted(sent.rcpt_tos) == ["colleague@customer.example", "dana@customer.example",
                                     "eve@customer.example"]
    # A removed address stays removed when it writes again on the thread.
    api.ingest(_customer_mail(message_id="<third@customer.example>",
                              in_reply_to="<first@customer.example>", subject="Re: x"))
    assert "boss@customer.example" not in [a for a, _ in listed()]

    # Nobody left: a public reply is refused (409), nothing is stored or sent.
    for address, _ in listed():
        assert api.client.delete(f"{base}/{address}", headers=w).status_code == 200
    refused = _post(api, first.ticket_id, json={"body": "anyone?"})
    assert refused.status_code == 409, refused.text
    assert await _sent(api, smtp_sink) == [sent]
