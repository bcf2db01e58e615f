"""The thread view as a person sees it: headless Chromium against a real uvicorn server."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from email.message import EmailMessage

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.wait import WebDriverWait

from tests.api.conftest import Api
from tests.api.server import running
from tests.mailfactory import make_email

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):
        pytest.fail("Chromium is missing: scripts/test installs Debian's chromium and chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.implicitly_wait(5)
    yield driver
    driver.quit()


def _mail_with_attachment() -> bytes:
    msg = EmailMessage()
    msg["From"] = "Anna Kunde <anna@example.com>"
    msg["To"] = "support@example.com"
    msg["Subject"] = "Router <b>dead</b> <script>window.pwned = 1</script>"
    msg["Message-ID"] = "<router-1@example.com>"
    msg["Date"] = "Mon, 15 Dec 2025 10:00:00 +0000"
    msg.set_content("The router blinks red since this morning.\n<img src=x onerror=alert(1)>")
    msg.add_attachment(b"log line 1\nlog line 2\n", maintype="text", subtype="plain",
                       filename="router.log")
    return msg.as_bytes()


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_login_and_read_a_thread(api: Api, browser: webdriver.Chrome) -> None:
    first = api.ingest(_mail_with_attachment(), received_at=datetime(2025, 12, 15, 10, 0, tzinfo=UTC))
    api.ingest(
        make_email(subject="Re: Router", sender="Anna@Example.com", in_reply_to="<router-1@example.com>",
                   body="It works again after a restart."),
        received_at=datetime(2025, 12, 15, 12, 30, tzinfo=UTC),
    )
    with running(api.app) as base:
        browser.get(f"{base}/ui/tickets")
        assert browser.current_url == f"{base}/ui/login", "no cookie, no tickets"
        browser.find_element(By.ID, "token").send_keys("mtk_wrong")
        browser.find_element(By.ID, "sign-in").click()
        assert "not valid" in browser.find_element(By.ID, "login-error").text

        browser.find_element(By.ID, "token").send_keys(api.tokens["read"])
        browser.find_element(By.ID, "sign-in").click()
        # A form submit returns before the next page has loaded: wait for it to arrive.
        WebDriverWait(browser, 10).until(expected_conditions.url_to_be(f"{base}/ui/tickets"))
        assert browser.execute_script("return document.cookie") == "", "the token cookie is HttpOnly"
        rows = browser.find_element(By.ID, "tickets").text
        assert first.ticket_number in rows and "anna@example.com" in rows

        browser.find_element(By.LINK_TEXT, first.ticket_number).click()
        WebDriverWait(browser, 10).until(expected_conditions.url_contains(first.ticket_number))
        title = browser.find_element(By.ID, "ticket-title").text
        # Markup from a mail is shown as text, never run.
        assert "<script>window.pwned = 1</script>" in title
        assert browser.execute_script("return window.pwned === undefined") is True

        mails = browser.find_elements(By.CSS_SELECTOR, "#thread article.mail.in")
        assert len(mails) == 2
        first_mail, reply = (m.text for m in mails)
        assert "Anna Kunde <anna@example.com>" in first_mail
        assert "2025-12-15 10:00 UTC" in first_mail and "received" in first_mail
        assert "The router blinks red since this morning." in first_mail
        assert "<img src=x onerror=alert(1)>" in first_mail
        assert "router.log" in first_mail
        assert "2025-12-15 12:30 UTC" in reply and "threaded by in_reply_to" in reply
        assert "It works again after a restart." in reply
        assert browser.find_elements(By.CSS_SELECTOR, "#thread article.mail.in img") == []

        link = browser.find_element(By.CSS_SELECTOR, "a.attachment").get_attribute("href")
        assert link and link.startswith(f"{base}/ui/emails/")
        # The download works with the browser's cookie and the same bytes come back.
        cookie = browser.get_cookie("mailticket_token")
        assert cookie is not None and cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        downloaded = api.client.get(
            link.removeprefix(base), headers={"Cookie": f"mailticket_token={cookie['value']}"}
        )
        assert downloaded.content == b"log line 1\nlog line 2\n"
