"""Working from the thread view in headless Chromium against a real uvicorn server: an agent
writes a reply (with a file) and an internal note, the reply reaches a real SMTP sink and the
note never does, the customer's answer comes in through the pipeline and shows in the thread
with its quote folded away; a read token sees no forms. SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.wait import WebDriverWait

from mailticket.outbound.smtp import deliver_outgoing_mail
from mailticket.runtime import Runtime
from tests.api.conftest import Api, build_api
from tests.api.server import running
from tests.api.test_browser import _sign_in
from tests.smtp_sink import Received, SmtpSink

SUPPORT = "support@example.com"


@pytest.fixture
def smtp_sink() -> Iterator[SmtpSink]:
    with SmtpSink() as sink:
        yield sink


@pytest.fixture
def mail_api(make_runtime: Callable[..., Runtime], smtp_sink: SmtpSink) -> Iterator[Api]:
    api = build_api(make_runtime(
        mail_from=f"Example Support <{SUPPORT}>", mail_domain="example.com",
        smtp_host="127.0.0.1", smtp_port=smtp_sink.port, smtp_tls="plain", smtp_timeout=5,
    ))
    yield api
    api.client.close()


def _customer_mail(**kw: Any) -> bytes:
    msg = EmailMessage()
    msg["From"] = "Dana Customer <dana@customer.example>"
    msg["To"] = SUPPORT
    msg["Subject"] = kw.get("subject", "Printer on fire")
    msg["Message-ID"] = kw.get("message_id", "<first@customer.example>")
    if "in_reply_to" in kw:
        msg["In-Reply-To"] = kw["in_reply_to"]
        msg["References"] = kw.get("references", kw["in_reply_to"])
    msg.set_content(kw.get("body", "The printer on floor 3 is on fire.\nPlease help."))
    return msg.as_bytes()


def _answers(api: Api, sink: SmtpSink) -> list[Received]:
    """Drain the outbox into the sink; the agents' answers (not auto-replies)."""
    asyncio.run(deliver_outgoing_mail(api.runtime.session_factory, api.runtime.settings))
    return [m for m in sink.messages if m.message()["Auto-Submitted"] is None]


def _open_ticket(browser: webdriver.Chrome, base: str, number: str) -> None:
    browser.get(f"{base}/ui/tickets/{number}")
    WebDriverWait(browser, 10).until(expected_conditions.url_contains(number))


def test_reply_from_the_page_reaches_the_customer_and_their_answer_shows(
    mail_api: Api, smtp_sink: SmtpSink, browser: webdriver.Chrome, tmp_path: Path
) -> None:
    api = mail_api
    first = api.ingest(_customer_mail())
    number = first.ticket_number
    assert number is not None
    upload = tmp_path / "steps.txt"
    upload.write_bytes(b"1. unplug it\n2. step back\n")

    with running(api.app) as base:
        _sign_in(browser, base, api.tokens["write"])
        _open_ticket(browser, base, number)
        browser.find_element(By.ID, "note-body").send_keys("SECRET-NOTE: customer is on old firmware")
        browser.find_element(By.ID, "note-add").click()
        WebDriverWait(browser, 10).until(expected_conditions.url_contains("#notes"))
        assert "SECRET-NOTE" in browser.find_element(By.ID, "notes").find_element(
            By.XPATH, "following-sibling::article").text

        browser.find_element(By.ID, "reply-body").send_keys(
            "We are sending someone.\nStay away from it.")
        browser.find_element(By.ID, "reply-files").send_keys(str(upload))
        browser.find_element(By.ID, "reply-send").click()
        WebDriverWait(browser, 10).until(expected_conditions.url_contains("#thread"))
        sent_on_page = browser.find_elements(By.CSS_SELECTOR, "#thread article.mail.out")
        assert any("We are sending someone." in a.text for a in sent_on_page)

        # The reply arrives at the SMTP sink; the internal note never does.
        [sent] = _answers(api, smtp_sink)
        mail = sent.message()
        assert sent.rcpt_tos == ["dana@customer.example"]
        assert mail["Subject"] == f"[{number}] Printer on fire"
        assert mail["In-Reply-To"] == "<first@customer.example>"
        text = mail.get_body(("plain",)).get_content()  # type: ignore[union-attr]
        assert text.startswith("We are sending someone.")
        [attached] = list(mail.iter_attachments())
        assert attached.get_filename() == "steps.txt"
        assert attached.get_content() == "1. unplug it\n2. step back\n"
        assert all(b"SECRET-NOTE" not in m.data for m in smtp_sink.messages)

        # The customer answers that mail, quoting it; the pipeline threads it by header.
        answer = api.ingest(_customer_mail(
            subject=f"Re: [{number}] Printer on fire", message_id="<answer@customer.example>",
            in_reply_to=mail["Message-ID"],
            references=f"<first@customer.example> {mail['Message-ID']}",
            body="Thanks, the fire is out.\n\nOn Mon, 15 Dec 2025, Example Support wrote:\n"
                 "> We are sending someone.\n> Stay away from it.\n",
        ))
        assert (answer.action, answer.ticket_number) == ("linked", number)

        _open_ticket(browser, base, number)
        newest = browser.find_elements(By.CSS_SELECTOR, "#thread article.mail.in")[-1]
        assert "Thanks, the fire is out." in newest.text
        # The quote is folded: hidden until the control is opened (no script needed).
        quoted = newest.find_element(By.CSS_SELECTOR, "details.quoted pre")
        assert not quoted.is_displayed()
        newest.find_element(By.CSS_SELECTOR, "details.quoted summary").click()
        assert quoted.is_displayed() and "> We are sending someone." in quoted.text
    assert _answers(api, smtp_sink) == [sent], "nothing else went out"


def test_a_read_token_sees_the_thread_without_forms(
    mail_api: Api, browser: webdriver.Chrome
) -> None:
    api = mail_api
    first = api.ingest(_customer_mail())
    assert first.ticket_number is not None
    with running(api.app) as base:
        _sign_in(browser, base, api.tokens["read"])
        _open_ticket(browser, base, first.ticket_number)
        assert "The printer on floor 3 is on fire." in browser.find_element(By.ID, "thread").text
        browser.implicitly_wait(0)
        assert browser.find_elements(By.CSS_SELECTOR, "form.work") == []
        assert browser.find_elements(By.ID, "reply-body") == []


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_the_reply_form_says_whom_the_reply_goes_to(
    mail_api: Api, browser: webdriver.Chrome, smtp_sink: SmtpSink, tmp_path: Path
) -> None:
    # A customer's mail with 300 people in Cc: every reply from the page is mailed to all of
    # them, so the form says so before the agent sends.
    msg = EmailMessage()
    msg["From"] = "Dana Customer <dana@customer.example>"
    msg["To"] = SUPPORT
    msg["Cc"] = ", ".join(f"person{i}@list.example" for i in range(300))
    msg["Subject"] = "Reply all"
    msg["Message-ID"] = "<cc-300@customer.example>"
    msg.set_content("Everyone please read.")
    out = mail_api.ingest(msg.as_bytes())
    single = mail_api.ingest(_customer_mail(message_id="<alone@customer.example>",
                                            subject="just me"))
    with running(mail_api.app) as base:
        _sign_in(browser, base, mail_api.tokens["write"])
        _open_ticket(browser, base, out.ticket_number)
        browser.save_screenshot(str(tmp_path / "many.png"))
        told = browser.find_element(By.ID, "reply-recipients").text
        assert told.startswith("Goes to 301 addresses: dana@customer.example, person0@list"), told
        assert told.endswith("person18@list.example and 281 more."), told
        _open_ticket(browser, base, single.ticket_number)
        told = browser.find_element(By.ID, "reply-recipients").text
        assert told == "Goes to 1 address: dana@customer.example.", told
        # The form says what the reply does: the same 301 get it.
        browser.get(f"{base}/ui/tickets/{out.ticket_number}")
        browser.find_element(By.ID, "reply-body").send_keys("Noted, all of you.")
        browser.find_element(By.ID, "reply-send").click()
        WebDriverWait(browser, 10).until(expected_conditions.url_contains("#thread"))
    answers = _answers(mail_api, smtp_sink)
    assert len(answers) == 1 and len(answers[0].rcpt_tos) == 301
