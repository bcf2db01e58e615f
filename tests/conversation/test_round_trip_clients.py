"""The customer/agent round trip as the customer's mail client sees it (SQLite and
PostgreSQL, the real pipeline, a real aiosmtpd sink for what we send): Outlook in other
languages, mail gateways that tag subjects, the agent's answer and the reply to it."""

from __future__ import annotations

import base64
import email
import secrets
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email import policy
from email.message import EmailMessage
from pathlib import Path

import pytest
from sqlalchemy import select, update

from mailticket.outbound.compose import compose, reply_subject, thread_headers
from mailticket.outbound.smtp import deliver_outgoing_mail
from mailticket.runtime import Runtime
from mailticket.store.models import Comment, Ticket
from mailticket.threading import subject_ticket_number
from mailticket.threading.threadindex import answer_index, conversation_ref
from tests.api.conftest import Api, build_api
from tests.escalation.helpers import setup
from tests.smtp_sink import SmtpSink

SUPPORT = "support@example.com"
AGENT = "anna@example.com"


@pytest.fixture
def helpdesk(make_runtime: Callable[..., Runtime]) -> Iterator[tuple[Api, SmtpSink]]:
    with SmtpSink() as sink:
        api = build_api(make_runtime(
            mail_from=f"Example Support <{SUPPORT}>", mail_domain="example.com",
            smtp_host="127.0.0.1", smtp_port=sink.port, smtp_tls="plain", smtp_timeout=5,
        ))
        yield api, sink
        api.client.close()


def _outlook(sender: str, subject: str, body: str, message_id: str, **headers: str) -> bytes:
    """A plain-text mail the way Outlook/Exchange writes it: Thread-Index and Thread-Topic,
    a Content-Language, and (when it answers) no In-Reply-To nor References."""
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = f"Example Support <{SUPPORT}>"
    msg["Subject"] = subject
    msg["Date"] = "Mon, 15 Dec 2025 09:30:00 +0800"
    msg["Message-ID"] = message_id
    msg["Thread-Topic"] = subject.rpartition("] ")[2]
    # A new conversation unless the test continues one.
    msg["Thread-Index"] = headers.pop("Thread_Index", None) or base64.b64encode(
        b"\x01\xdcm\x95\\u" + secrets.token_bytes(16)).decode()
    msg["X-MS-Has-Attach"] = ""
    for name, value in headers.items():
        msg[name.replace("_", "-")] = value
    msg.set_content(body, cte="base64")
    return msg.as_bytes()


async def _delivered(api: Api, sink: SmtpSink, start: int) -> list[EmailMessage]:
    await deliver_outgoing_mail(api.runtime.session_factory, api.runtime.settings)
    return [m.message() for m in sink.messages[start:]]


def _comments(api: Api, ticket_id: int, source: str) -> list[str]:
    with api.runtime.session_factory() as s:
        return list(s.scalars(select(Comment.body).where(
            Comment.ticket_id == ticket_id, Comment.source == source).order_by(Comment.id)))


async def test_chinese_outlook_prefixes_never_reach_our_subject_and_a_bare_number_threads(
    helpdesk: tuple[Api, SmtpSink],
) -> None:
    api, sink = helpdesk
    customer = "王芳 <wang.fang@kunde.example>"
    # She forwards her colleague's mail to support: Outlook (zh-CN) writes "转发:".
    opened = api.ingest(_outlook(
        customer, "转发: 打印机坏了",
        "请帮忙看一下。\n\n发件人: 李雷 <li.lei@kunde.example>\n发送时间: 2025年12月15日 9:00\n"
        "收件人: 王芳 <wang.fang@kunde.example>\n主题: 打印机坏了\n\n三楼的打印机坏了。\n",
        "<SG2PR01MB0001@apcprd01.prod.outlook.com>", Content_Language="zh-CN",
    ))
    assert opened.action == "created"
    number = opened.ticket_number
    [confirmation] = await _delivered(api, sink, 0)
    # Her client shows one stable subject: our tag, then her words, no "转发:" behind the tag.
    assert confirmation["Subject"] == f"[{number}] 打印机坏了"

    # Outlook answers our confirmation with "答复:" and drops In-Reply-To and References.
    reply = api.ingest(_outlook(
        customer, f"答复: {confirmation['Subject']}",
        "我重启了，还是不行。\n\n发件人: Example Support <support@example.com>\n"
        f"发送时间: 2025年12月15日 10:00\n收件人: {customer}\n主题: {confirmation['Subject']}\n\n"
        "Hello 王芳,\n\nthank you for contacting us.\n",
        "<SG2PR01MB0002@apcprd01.prod.outlook.com>", Content_Language="zh-CN",
    ))
    assert (reply.action, reply.ticket_id, reply.matched_by) == (
        "linked", opened.ticket_id, "subject")

    r = api.client.post(f"/api/v1/tickets/{number}/comments", headers=api.auth("write"), json={
        "body": "请更换硒鼓。", "author_name": "Anna", "author_email": AGENT})
    assert r.status_code == 201, r.text
    [answer] = await _delivered(api, sink, 1)
    assert answer["Subject"] == f"[{number}] 打印机坏了"
    assert answer["In-Reply-To"] == "<SG2PR01MB0002@apcprd01.prod.outlook.com>"

    # A client that lost the brackets: the bare number right after "回复：" still threads.
    bare = api.ingest(_outlook(
        customer, f"回复：{number} 打印机坏了", "好的，谢谢！\n",
        "<SG2PR01MB0003@apcprd01.prod.outlook.com>",
    ))
    assert (bare.action, bare.ticket_id) == ("linked", opened.ticket_id)
    assert opened.ticket_id is not None
    assert _comments(api, opened.ticket_id, "email") == ["我重启了，还是不行。", "好的，谢谢！"]
    with api.runtime.session_factory() as s:
        assert [t.ticket_number for t in s.scalars(select(Ticket))] == [number]


async def test_a_gateway_tag_in_front_of_the_reply_marker_is_not_part_of_our_subject(
    helpdesk: tuple[Api, SmtpSink],
) -> None:
    api, sink = helpdesk
    customer = "Jörg Müller <joerg@kunde.example>"
    # His company's Exchange tags mail from outside "[EXTERNAL]"; he answered a supplier's
    # mail and sent the answer on to support.
    opened = api.ingest(_outlook(
        customer, "[EXTERNAL] AW: Lieferschein fehlt",
        "Hallo Support,\n\nder Lieferschein fehlt weiterhin.\n\nGruß\nJörg\n",
        "<AM0PR01MB0001@eurprd01.prod.outlook.com>", Content_Language="de-DE",
    ))
    number = opened.ticket_number
    [confirmation] = await _delivered(api, sink, 0)
    assert confirmation["Subject"] == f"[{number}] Lieferschein fehlt"
    # Our confirmation comes back into his mailbox tagged again, and he answers it.
    reply = api.ingest(_outlook(
        customer, f"AW: [EXTERNAL] {confirmation['Subject']}", "Noch eine Frage.\n",
        "<AM0PR01MB0002@eurprd01.prod.outlook.com>",
    ))
    assert (reply.action, reply.ticket_id) == ("linked", opened.ticket_id)
    r = api.client.post(f"/api/v1/tickets/{number}/comments", headers=api.auth("write"), json={
        "body": "Wir schicken ihn erneut.", "author_email": AGENT})
    assert r.status_code == 201, r.text
    [answer] = await _delivered(api, sink, 1)
    assert answer["Subject"] == f"[{number}] Lieferschein fehlt"


@pytest.mark.parametrize(
    ("subject", "expected"),
    [
        ("答复: [TKT-20251215-001] 打印机坏了", "[TKT-20251215-001] 打印机坏了"),
        ("回复： 转发: 打印机坏了", "[TKT-20251215-001] 打印机坏了"),
        ("Ответ: Принтер", "[TKT-20251215-001] Принтер"),
        ("ΑΠ: Εκτυπωτής", "[TKT-20251215-001] Εκτυπωτής"),
        ("Réf : Imprimante", "[TKT-20251215-001] Imprimante"),
        ("[EXTERNAL] RE: [TKT-20251215-001] Printer", "[TKT-20251215-001] Printer"),
        ("RE: [EXT] [TKT-20251215-001] Printer", "[TKT-20251215-001] Printer"),
        ("SV: Re:  [TKT-20251215-001]  Printer  jam", "[TKT-20251215-001] Printer jam"),
        # a tag the customer wrote before their own words stays, and so do words that merely
        # begin like a prefix
        ("[Urgent] Printer", "[TKT-20251215-001] [Urgent] Printer"),
        ("Rechnung: März", "[TKT-20251215-001] Rechnung: März"),
        ("R: package install fails", "[TKT-20251215-001] R: package install fails"),
    ],
)
def test_reply_subjects_drop_what_clients_and_gateways_add(subject: str, expected: str) -> None:
    assert reply_subject("TKT-20251215-001", subject) == expected
    assert reply_subject("TKT-20251215-001", expected) == expected



@pytest.mark.parametrize("prefix", ["回复：", "答复: ", "Ответ: ", "Antw: ", "Réf : ", "[EXTERNAL] RE: "])
def test_a_bare_number_after_a_translated_prefix_names_the_ticket(prefix: str) -> None:
    assert subject_ticket_number(f"{prefix}TKT-20251215-007 打印机") == "TKT-20251215-007"
    # only right after the prefixes: a number later in the subject is no claim
    assert subject_ticket_number(f"{prefix}see TKT-20251215-007") is None


async def test_the_confirmation_of_an_outlook_reply_keeps_the_parent_in_its_references(
    helpdesk: tuple[Api, SmtpSink],
) -> None:
    """Outlook for Windows answers with In-Reply-To and no References. Answering that mail,
    our References must hold its parent, then its id (RFC 5322 §3.6.4), so the customer's
    client files the confirmation under the whole conversation, not a branch of one mail."""
    api, sink = helpdesk
    # He answers a mail his account manager sent him, and writes to support with it.
    opened = api.ingest(_outlook(
        "Jörg Müller <joerg@kunde.example>", "AW: Ihre Bestellung 4711",
        "Die Lieferung ist unvollständig.\n\nVon: Maria Vertrieb <maria@example.com>\n"
        "Gesendet: Freitag, 12. Dezember 2025 16:00\nAn: joerg@kunde.example\n"
        "Betreff: Ihre Bestellung 4711\n\nIhre Bestellung ist unterwegs.\n",
        "<AM0PR01MB0003@eurprd01.prod.outlook.com>",
        In_Reply_To="<order-4711@crm.example.com>",
    ))
    assert opened.action == "created"
    [confirmation] = await _delivered(api, sink, 0)
    assert confirmation["Subject"] == f"[{opened.ticket_number}] Ihre Bestellung 4711"
    assert confirmation["In-Reply-To"] == "<AM0PR01MB0003@eurprd01.prod.outlook.com>"
    assert confirmation["References"].split() == [
        "<order-4711@crm.example.com>", "<AM0PR01MB0003@eurprd01.prod.outlook.com>"]


def test_references_follow_rfc_5322_when_the_parent_names_only_its_parent() -> None:
    assert thread_headers("<m@c>", [], ["<p@c>"]) == ("<m@c>", ["<p@c>", "<m@c>"])
    # References win when the parent has them; an In-Reply-To naming several ids is no chain.
    assert thread_headers("<m@c>", ["<a@c>", "<p@c>"], ["<p@c>"])[1] == [
        "<a@c>", "<p@c>", "<m@c>"]
    assert thread_headers("<m@c>", [], ["<p@c>", "<q@c>"])[1] == ["<m@c>"]


def _form_mail(reply_to: str, message_id: str) -> bytes:
    """What a website's contact form sends: its own From, the visitor in Reply-To."""
    msg = EmailMessage()
    msg["From"] = "Kunde Webshop Kontaktformular <webshop@kunde.example>"
    msg["To"] = SUPPORT
    msg["Reply-To"] = reply_to
    msg["Subject"] = "Kontaktformular: Lieferung fehlt"
    msg["Date"] = "Mon, 15 Dec 2025 09:30:00 +0100"
    msg["Message-ID"] = message_id
    msg.set_content("Name: Jörg Müller\nE-Mail: joerg@kunde.example\n\nNachricht:\n"
                    "Meine Lieferung fehlt.\n")
    return msg.as_bytes()


async def test_the_agents_answer_goes_where_the_customers_mail_asked_answers_to_go(
    helpdesk: tuple[Api, SmtpSink],
) -> None:
    """A contact form writes From its own address with the visitor in Reply-To: the
    confirmation honoured that, but the agent's answer went to the form's mailbox, and the
    customer never heard back (RFC 5322 §3.6.2)."""
    api, sink = helpdesk
    opened = api.ingest(_form_mail("Jörg Müller <joerg@kunde.example>", "<form-1@shop.example>"))
    assert opened.action == "created"
    [confirmation] = await _delivered(api, sink, 0)
    assert confirmation["To"] == "joerg@kunde.example"

    r = api.client.post(f"/api/v1/tickets/{opened.ticket_number}/comments",
                        headers=api.auth("write"),
                        json={"body": "Wir schicken sie erneut.", "author_email": AGENT})
    assert r.status_code == 201, r.text
    await _delivered(api, sink, 1)
    assert sink.messages[-1].rcpt_tos == ["joerg@kunde.example"]
    assert sink.messages[-1].message()["To"] == "joerg@kunde.example"
    listed = api.get(f"/api/v1/tickets/{opened.ticket_id}/participants").json()
    assert [(p["address"], p["source"]) for p in listed["participants"]] == [
        ("joerg@kunde.example", "requester")]

    # He answers from his own mailbox; the next answer still reaches him alone.
    reply = api.ingest(_outlook(
        "Jörg Müller <joerg@kunde.example>", f"AW: [{opened.ticket_number}] Lieferung fehlt",
        "Danke!\n", "<AM0PR01MB0009@eurprd01.prod.outlook.com>",
        In_Reply_To=sink.messages[-1].message()["Message-ID"],
    ))
    assert (reply.action, reply.ticket_id) == ("linked", opened.ticket_id)
    r = api.client.post(f"/api/v1/tickets/{opened.ticket_number}/comments",
                        headers=api.auth("write"), json={"body": "Gern.", "author_email": AGENT})
    assert r.status_code == 201, r.text
    await _delivered(api, sink, 2)
    assert sink.messages[-1].rcpt_tos == ["joerg@kunde.example"]


async def test_a_reply_to_naming_only_us_leaves_the_answer_with_the_sender(
    helpdesk: tuple[Api, SmtpSink],
) -> None:
    api, sink = helpdesk
    opened = api.ingest(_form_mail(SUPPORT, "<form-2@shop.example>"))
    r = api.client.post(f"/api/v1/tickets/{opened.ticket_number}/comments",
                        headers=api.auth("write"), json={"body": "Gern.", "author_email": AGENT})
    assert r.status_code == 201, r.text
    await deliver_outgoing_mail(api.runtime.session_factory, api.runtime.settings)
    assert sink.messages[-1].rcpt_tos == ["webshop@kunde.example"]


_CLOSE_WHEN_SILENT = """
workflows:
  - name: tickets
    classification_trigger: support_request
    workflow_steps:
      - action: create_ticket
  - name: close after 7 days
    event_trigger: {event: ticket_idle, days: 7, status: pending}
    workflow_steps:
      - action: close
        params: {template: closed_no_answer}
"""


async def test_the_close_notice_answers_the_customers_mail_at_their_reply_to(
    make_runtime: Callable[..., Runtime], tmp_path: Path,
) -> None:
    """The "closed, no answer" notice went to the form's From address, and answered the
    customer's out-of-office (the newest inbound mail) instead of the customer's own mail."""
    with SmtpSink() as sink:
        env = setup(make_runtime, tmp_path, workflows=_CLOSE_WHEN_SILENT, sla=None,
                    customers=None, mail_from=f"Example Support <{SUPPORT}>",
                    mail_domain="example.com", smtp_host=sink.host, smtp_port=sink.port,
                    smtp_tls="plain", smtp_timeout=5)
        api = build_api(env.runtime)
        try:
            opened = env.ingest(_form_mail("Jörg Müller <joerg@kunde.example>",
                                           "<form-3@shop.example>"))
            r = api.client.patch(f"/api/v1/tickets/{opened.ticket_id}", headers=api.auth("write"),
                                 json={"status": "pending"})
            assert r.status_code == 200, r.text
            # His out-of-office answers something of ours and threads onto the ticket.
            away = env.ingest(_outlook(
                "Jörg Müller <joerg@kunde.example>",
                f"Automatische Antwort: [{opened.ticket_number}] Lieferung fehlt",
                "Ich bin bis 5. Januar nicht im Büro.\n", "<AM0PR01MB0010@eurprd01.prod.outlook.com>",
                Auto_Submitted="auto-replied", X_Auto_Response_Suppress="All",
            ))
            assert away.ticket_id == opened.ticket_id
            assert env.sweep(env.clock.advance(days=8)).runs == [
                ("close after 7 days", "ticket_idle:7d", "ok")]
            await deliver_outgoing_mail(env.runtime.session_factory, env.runtime.settings)
            [notice] = [m for m in sink.messages if b"we have not heard back" in m.data]
            assert notice.rcpt_tos == ["joerg@kunde.example"]
            assert notice.message()["In-Reply-To"] == "<form-3@shop.example>"
        finally:
            api.client.close()


@pytest.mark.parametrize("subject", [
    "Fehler =?utf-8?b?eA==?= im Export",  # a mailer's undecodable word, kept as text
    "Überweisung =?iso-8859-1?q?f=FCr?= März",
    "Rechnung für März – Kundennr. 4711 " * 4,
])
def test_the_subject_the_customer_reads_is_the_subject_we_meant(subject: str) -> None:
    composed = compose(
        from_address=SUPPORT, from_name="Änna Ägent", to_address="joerg@kunde.example",
        to_name="Müller, Jörg", subject=reply_subject("TKT-20251215-001", subject),
        message_id="<m@example.com>", in_reply_to=None, references=[], text_body="x",
        html_body=None, date=datetime(2025, 12, 15, 10, 0, tzinfo=UTC),
    )
    read = email.message_from_bytes(composed.raw, policy=policy.default)
    assert read["Subject"] == reply_subject("TKT-20251215-001", subject)
    assert (read["From"].addresses[0].display_name, read["To"].addresses[0].display_name) == (
        "Änna Ägent", "Müller, Jörg")


def _child(index: str) -> str:
    """What Outlook writes answering a mail with this Thread-Index: one 5-byte block more."""
    return base64.b64encode(base64.b64decode(index) + b"\x00\x05\x0d\xac\x3a").decode()


async def test_an_outlook_answer_that_lost_its_headers_and_number_finds_the_ticket(
    helpdesk: tuple[Api, SmtpSink],
) -> None:
    """Outlook dropped In-Reply-To and References and he wrote a new subject: only the
    conversation index (Thread-Index) still ties his answer to the ticket."""
    api, sink = helpdesk
    customer = "Jörg Müller <joerg@kunde.example>"
    started = "AdxtlVx1Sv2mQn7GRCiJ0w3hKD4K5Q=="
    opened = api.ingest(_outlook(customer, "Drucker druckt nicht", "Hallo, er druckt nicht.\n",
                                 "<AM0PR01MB0100@eurprd01.prod.outlook.com>",
                                 Thread_Index=started))
    [confirmation] = await _delivered(api, sink, 0)
    # Our answers continue his conversation: his index and one child block.
    ours = base64.b64decode(confirmation["Thread-Index"])
    assert ours[:22] == base64.b64decode(started) and len(ours) == 27
    r = api.client.post(f"/api/v1/tickets/{opened.ticket_number}/comments",
                        headers=api.auth("write"),
                        json={"body": "Bitte Toner tauschen.", "author_email": AGENT})
    assert r.status_code == 201, r.text
    [answer] = await _delivered(api, sink, 1)
    assert base64.b64decode(answer["Thread-Index"])[:22] == base64.b64decode(started)

    reply = api.ingest(_outlook(
        customer, "Toner bestellt - wie lange dauert das?",
        "Toner ist bestellt. Wie lange dauert die Lieferung?\n\n"
        "________________________________\nVon: Example Support <support@example.com>\n"
        f"Gesendet: Montag, 15. Dezember 2025 11:00\nAn: {customer}\n"
        f"Betreff: {answer['Subject']}\n\nBitte Toner tauschen.\n",
        "<AM0PR01MB0101@eurprd01.prod.outlook.com>",
        Thread_Index=_child(answer["Thread-Index"]),
    ))
    assert (reply.action, reply.ticket_id, reply.matched_by) == (
        "linked", opened.ticket_id, "thread_index")
    assert opened.ticket_id is not None
    assert _comments(api, opened.ticket_id, "email") == [
        "Toner ist bestellt. Wie lange dauert die Lieferung?"]


async def test_a_conversation_we_started_threads_an_outlook_colleagues_answer(
    helpdesk: tuple[Api, SmtpSink],
) -> None:
    """The customer writes from Gmail (no Thread-Index): our answer starts a conversation
    of the ticket's own, and his colleague's Outlook answer to it comes back by it."""
    api, sink = helpdesk
    msg = EmailMessage()
    msg["From"] = "Dana <dana@gmail.example>"
    msg["To"] = SUPPORT
    msg["Cc"] = "Kollege <kollege@kunde.example>"
    msg["Subject"] = "VPN trennt ständig"
    msg["Message-ID"] = "<CAF=abc@mail.gmail.com>"
    msg.set_content("Seit heute trennt das VPN alle 5 Minuten.\n")
    opened = api.ingest(msg.as_bytes())
    r = api.client.post(f"/api/v1/tickets/{opened.ticket_number}/comments",
                        headers=api.auth("write"),
                        json={"body": "Welche Client-Version?", "author_email": AGENT})
    assert r.status_code == 201, r.text
    answer = [m for m in await _delivered(api, sink, 0) if m["Auto-Submitted"] is None][0]
    assert len(base64.b64decode(answer["Thread-Index"])) == 22
    reply = api.ingest(_outlook(
        "Kollege <kollege@kunde.example>", "Client-Version", "Version 5.2.1\n",
        "<AM0PR01MB0102@eurprd01.prod.outlook.com>",
        Thread_Index=_child(answer["Thread-Index"]),
    ))
    assert (reply.action, reply.ticket_id, reply.matched_by) == (
        "linked", opened.ticket_id, "thread_index")


async def test_a_conversation_index_alone_never_picks_between_tickets_nor_follows_junk(
    make_runtime: Callable[..., Runtime],
) -> None:
    api = build_api(make_runtime(ticket_subject_match="participants"))
    try:
        shared = "AdxtlVx1Sv2mQn7GRCiJ0w3hKD4K5Q=="
        # A colleague's internal conversation reaches support from two people; B is no
        # participant of A's ticket (TICKET_SUBJECT_MATCH=participants): two tickets share it.
        first = api.ingest(_outlook("A <a@kunde.example>", "FW: Server", "Bitte prüfen.\n",
                                    "<AM0PR01MB0200@eurprd01.prod.outlook.com>",
                                    Thread_Index=shared))
        second = api.ingest(_outlook("B <b@kunde.example>", "FW: Server", "Auch bei uns.\n",
                                     "<AM0PR01MB0201@eurprd01.prod.outlook.com>",
                                     Thread_Index=_child(shared)))
        assert (first.action, second.action) == ("created", "created")
        third = api.ingest(_outlook("A <a@kunde.example>", "Noch etwas", "Und noch etwas.\n",
                                    "<AM0PR01MB0202@eurprd01.prod.outlook.com>",
                                    Thread_Index=_child(_child(shared))))
        assert third.action == "created"
        # A malformed index is no conversation.
        junk = api.ingest(_outlook("A <a@kunde.example>", "Weiteres", "x\n",
                                   "<AM0PR01MB0203@eurprd01.prod.outlook.com>",
                                   Thread_Index="AdxtlVx1Sv2mQn7GRCiJ0w3hKD4K5QAA"))
        assert junk.action == "created"
    finally:
        api.client.close()


def test_conversation_refs_and_answer_indexes() -> None:
    started = "AdxtlVx1Sv2mQn7GRCiJ0w3hKD4K5Q=="
    key = conversation_ref(started)
    assert key == "<4afda6427ec6442889d30de1283e0ae5@thread-index.invalid>"
    later = datetime(2025, 12, 16, 10, 0, tzinfo=UTC)
    child = answer_index(started, "TKT-20251215-001@example.com", later)
    assert len(base64.b64decode(child)) == 27 and conversation_ref(child) == key
    grandchild = answer_index(child, "TKT-20251215-001@example.com", later)
    assert base64.b64decode(grandchild)[:27] == base64.b64decode(child)
    fresh = answer_index(None, "TKT-20251215-001@example.com", later)
    again = answer_index("not base64!", "TKT-20251215-001@example.com", later)
    assert conversation_ref(fresh) == conversation_ref(again) != key
    for junk in (None, "", "AAAA", started[:-4], "AdxtlVx1Sv2mQn7GRCiJ0w3hKD4K5QAA", "!!"):
        assert conversation_ref(junk) is None


def test_an_answer_index_stays_within_one_header_line() -> None:
    long = base64.b64encode(base64.b64decode("AdxtlVx1Sv2mQn7GRCiJ0w3hKD4K5Q==")
                            + b"\x00\x05\x0d\xac\x3a" * 190).decode()
    answer = answer_index(long, "seed", datetime(2025, 12, 16, 10, 0, tzinfo=UTC))
    assert len(answer) < 900 and conversation_ref(answer) == conversation_ref(long)


async def test_an_outlook_answer_to_an_old_closed_conversation_continues_on_its_followup(
    make_runtime: Callable[..., Runtime],
) -> None:
    """The closed ticket and its follow-up share the customer's conversation: an answer
    found by it alone goes where the follow-up rules send it, not to a third ticket."""
    api = build_api(make_runtime(clock=None))
    try:
        customer = "Jörg Müller <joerg@kunde.example>"
        started = "AdxtlVx1Sv2mQn7GRCiJ0w3hKD4K5Q=="
        opened = api.ingest(_outlook(customer, "Drucker", "Er druckt nicht.\n",
                                     "<AM0PR01MB0300@eurprd01.prod.outlook.com>",
                                     Thread_Index=started))
        r = api.client.patch(f"/api/v1/tickets/{opened.ticket_id}", headers=api.auth("write"),
                             json={"status": "closed"})
        assert r.status_code == 200, r.text
        with api.runtime.session_factory() as s:
            s.execute(update(Ticket).where(Ticket.id == opened.ticket_id).values(
                closed_at=datetime.now(UTC) - timedelta(days=30)))
            s.commit()
        followup = api.ingest(_outlook(
            customer, f"AW: [{opened.ticket_number}] Drucker", "Wieder kaputt.\n",
            "<AM0PR01MB0301@eurprd01.prod.outlook.com>", Thread_Index=_child(started)))
        assert followup.action == "followup" and followup.ticket_id != opened.ticket_id
        again = api.ingest(_outlook(
            customer, "Noch eine Frage", "Und der Toner?\n",
            "<AM0PR01MB0302@eurprd01.prod.outlook.com>", Thread_Index=_child(_child(started))))
        assert (again.action, again.ticket_id) == ("linked", followup.ticket_id)
    finally:
        api.client.close()
