"""The thread view as a person sees it: headless Chromium against a real uvicorn server."""

from __future__ import annotations

import contextlib
import http.server
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import ClassVar

import httpx
import pytest
from selenium import webdriver
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.wait import WebDriverWait
from sqlalchemy import func, select

from mailticket.api.pages import FIELD_SHOWN
from mailticket.api.web import BODY_SHOWN
from mailticket.store.models import Comment
from tests.api.conftest import Api
from tests.api.server import free_port, running
from tests.mailfactory import make_email


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


# --- hostile mail on screen -------------------------------------------------------------------

WIDTH, HEIGHT = 1280, 900


def _sign_in(browser: webdriver.Chrome, base: str, token: str) -> None:
    browser.set_window_size(WIDTH, HEIGHT)
    browser.get(f"{base}/ui/login")
    browser.find_element(By.ID, "token").send_keys(token)
    browser.find_element(By.ID, "sign-in").click()
    WebDriverWait(browser, 10).until(expected_conditions.url_to_be(f"{base}/ui/tickets"))


def _luminance(css: str) -> float:
    # "rgb(r, g, b)" or "rgba(r, g, b, a)" → WCAG relative luminance
    parts = [float(p) for p in css[css.index("(") + 1 : css.index(")")].split(",")[:3]]
    lin = [c / 255 / 12.92 if c / 255 <= 0.03928 else ((c / 255 + 0.055) / 1.055) ** 2.4
           for c in parts]
    return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]


def _contrast(fg: str, bg: str) -> float:
    hi, lo = sorted((_luminance(fg), _luminance(bg)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


# The left edge, on screen, of the first `ch` inside the element `css` (or None).
CHAR_X = """
const el = document.querySelector(arguments[0]);
const walker = document.createTreeWalker(el, NodeFilter.SHOW_TEXT);
for (let node = walker.nextNode(); node; node = walker.nextNode()) {
  const i = node.data.indexOf(arguments[1]);
  if (i >= 0) {
    const range = document.createRange();
    range.setStart(node, i); range.setEnd(node, i + 1);
    return range.getBoundingClientRect().left;
  }
}
return null;
"""

# Nothing may stick out sideways: the page does not scroll horizontally.
OVERFLOW = """
const main = document.querySelector("main");
const widest = Math.max(...[...document.querySelectorAll("main *")].map(
  e => e.getBoundingClientRect().right));
return {page: document.documentElement.scrollWidth, viewport: window.innerWidth,
        main: main.getBoundingClientRect().right, widest: widest};
"""


def _fits(browser: webdriver.Chrome) -> None:
    sizes = browser.execute_script(OVERFLOW)
    assert sizes["page"] <= sizes["viewport"], sizes
    assert sizes["widest"] <= sizes["main"] + 1, sizes


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_long_unbroken_strings_wrap(api: Api, browser: webdriver.Chrome, tmp_path: Path) -> None:
    long_word = "z" * 3000
    wide = api.ingest(make_email(
        subject=f"Error {long_word}", sender=f"{'w' * 300}@example.com",
        body=f"see https://example.com/{'a' * 8000}\n{'b' * 5000}",
        attachments=[(b"x", "text/plain", f"{'f' * 500}.txt")],
    ))
    with running(api.app) as base:
        _sign_in(browser, base, api.tokens["read"])
        browser.save_screenshot(str(tmp_path / "list.png"))
        _fits(browser)
        browser.get(f"{base}/ui/tickets/{wide.ticket_number}")
        browser.save_screenshot(str(tmp_path / "thread.png"))
        _fits(browser)
        assert long_word[:100] in browser.find_element(By.ID, "ticket-title").text


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_direction_controls_are_shown_not_obeyed(
    api: Api, browser: webdriver.Chrome, tmp_path: Path
) -> None:
    # U+202E would show "XYZ.pdf" as "fdp.ZYX", and everything after it with it.
    spoof = api.ingest(make_email(subject="Invoice \u202eXYZ.pdf", sender="Mal \u202elory <m@x.example>",
                                  body="Attached: \u202eXYZ.pdf\nsecond line"))
    with running(api.app) as base:
        _sign_in(browser, base, api.tokens["read"])
        browser.save_screenshot(str(tmp_path / "list.png"))
        cell = "#tickets tbody tr td:nth-child(2)"
        assert browser.execute_script(CHAR_X, cell, "X") < browser.execute_script(CHAR_X, cell, "Z")
        # The choice is visible: a marker where the control was.
        assert "[U+202E]" in browser.find_element(By.CSS_SELECTOR, cell).text
        browser.get(f"{base}/ui/tickets/{spoof.ticket_number}")
        browser.save_screenshot(str(tmp_path / "thread.png"))
        # The customer's mail by its id, not its place in the thread: the thread lists mail
        # by time, and whether the auto-reply's test-clock stamp comes first depends on the
        # Date this test's mail has.
        mail = f"#mail-{spoof.email_log_id}"
        for css in ("#ticket-title", f"{mail} .subject", f"{mail} .body"):
            assert browser.execute_script(CHAR_X, css, "X") < browser.execute_script(
                CHAR_X, css, "Z"), css
        assert "[U+202E]" in browser.find_element(By.CSS_SELECTOR, f"{mail} .sender").text


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_the_eml_link_is_readable(api: Api, browser: webdriver.Chrome, tmp_path: Path) -> None:
    out = api.ingest(make_email(subject="a link to the original"))
    with running(api.app) as base:
        _sign_in(browser, base, api.tokens["read"])
        browser.get(f"{base}/ui/tickets/{out.ticket_number}")
        browser.save_screenshot(str(tmp_path / "thread.png"))
        link = browser.find_element(By.LINK_TEXT, "original .eml")
        header = browser.find_element(By.CSS_SELECTOR, "#thread article header")
        colour = link.value_of_css_property("color")
        background = header.value_of_css_property("background-color")
        # WCAG AA for normal text: 4.5:1.
        assert _contrast(colour, background) >= 4.5, (colour, background)
        # The top bar keeps its white links on dark blue.
        top = browser.find_element(By.CSS_SELECTOR, "body > header a")
        bar = browser.find_element(By.CSS_SELECTOR, "body > header")
        assert _contrast(top.value_of_css_property("color"),
                         bar.value_of_css_property("background-color")) >= 4.5


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_ui_errors_are_pages_with_a_way_back(
    api: Api, browser: webdriver.Chrome, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = api.ingest(make_email(subject="fine"))

    def broken(*args: object) -> None:
        raise RuntimeError("the database went away")

    with running(api.app) as base:
        browser.set_window_size(WIDTH, HEIGHT)
        browser.get(f"{base}/ui/login")
        browser.find_element(By.ID, "token").send_keys("mtk_wrong")
        browser.find_element(By.ID, "sign-in").click()
        assert "not valid" in browser.find_element(By.ID, "login-error").text  # 401, a page
        _sign_in(browser, base, api.tokens["read"])
        monkeypatch.setattr("mailticket.api.web.queries.attachments_of", broken)
        pages = {
            "404-ticket": ("/ui/tickets/TKT-20991231-999", "Not Found"),
            "404-path": ("/ui/no-such-page", "Not Found"),
            "422": ("/ui/emails/abc/raw", "Unprocessable"),
            "500": (f"/ui/tickets/{out.ticket_number}", "Internal Server Error"),
        }
        for name, (path, title) in pages.items():
            browser.get(f"{base}{path}")
            browser.save_screenshot(str(tmp_path / f"error-{name}.png"))
            assert browser.execute_script("return document.contentType") == "text/html", name
            assert title in browser.find_element(By.ID, "error-title").text, name
            assert "the database went away" not in browser.page_source
            browser.find_element(By.ID, "error-back").click()
            WebDriverWait(browser, 10).until(expected_conditions.url_to_be(f"{base}/ui/tickets"))


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_a_huge_body_is_shown_in_part_and_whole_in_the_eml(
    api: Api, browser: webdriver.Chrome, tmp_path: Path
) -> None:
    # A pasted log of 300,000 characters and a body of one endless line: each page shows
    # the start (BODY_SHOWN characters at most), says how much is left out and links the
    # whole mail. A browser lays out a few megabytes of such text for minutes.
    log = "".join(f"2025-12-15 10:00:{i % 60:02d} worker {i}: retrying\n" for i in range(7000))
    endless = "A" * 300_000
    logged = api.ingest(make_email(subject="the log", body=log))
    one_line = api.ingest(make_email(subject="one line", body=endless))
    with running(api.app) as base:
        _sign_in(browser, base, api.tokens["read"])
        cookie = browser.get_cookie("mailticket_token")
        assert cookie is not None
        for out, text in ((logged, log), (one_line, endless)):
            browser.get(f"{base}/ui/tickets/{out.ticket_number}")
            browser.save_screenshot(str(tmp_path / f"{out.ticket_number}.png"))
            mail = f"#mail-{out.email_log_id}"
            shown = browser.find_element(By.CSS_SELECTOR, f"{mail} .body").get_attribute(
                "textContent") or ""
            assert 0 < len(shown) <= BODY_SHOWN and text.startswith(shown.rstrip("\n"))
            if "\n" in text:
                assert shown.rstrip("\n").endswith("retrying"), "cut at a line break"
            notice = browser.find_element(By.ID, f"cut-{out.email_log_id}")
            hidden = len(text.rstrip("\n")) - len(shown.rstrip("\n"))
            assert f"{hidden:,} more characters" in notice.text, notice.text
            link = notice.find_element(By.LINK_TEXT, "original .eml").get_attribute("href")
            assert link is not None
            whole = api.client.get(link.removeprefix(base),
                                   headers={"Cookie": f"mailticket_token={cookie['value']}"})
            assert whole.status_code == 200
            message = message_from_bytes(whole.content, policy=policy.default)
            assert isinstance(message, EmailMessage)
            assert message.get_content().strip() == text.strip()
        _fits(browser)


def _raw_from(sender: str, subject: str) -> bytes:
    # An SMTPUTF8 header: the address itself written in UTF-8, as such mail arrives.
    return (f"From: {sender}\r\nTo: support@example.com\r\nSubject: {subject}\r\n"
            f"Message-ID: <{subject}@client.example>\r\nDate: Mon, 15 Dec 2025 10:00:00 +0000\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n\r\nPlease pay the invoice today.\r\n"
            ).encode()


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_look_alike_addresses_are_read_out_in_ascii(
    api: Api, browser: webdriver.Chrome, tmp_path: Path
) -> None:
    # "example.com" with a Cyrillic a (U+0430), and "ceo" with a Cyrillic c (U+0441): on
    # screen both read like the real ceo@example.com, which writes to us too.
    domain = api.ingest(_raw_from("CEO <ceo@ex\u0430mple.com>", "domain"))
    local = api.ingest(_raw_from("\u0441eo@example.com", "local"))
    real = api.ingest(_raw_from("CEO <ceo@example.com>", "real"))
    readings = {
        domain.ticket_number: "(ceo@xn--exmple-4nf.com)",
        local.ticket_number: "([U+0441]eo@example.com)",
    }
    with running(api.app) as base:
        _sign_in(browser, base, api.tokens["read"])
        browser.save_screenshot(str(tmp_path / "list.png"))
        rows = {
            row.find_element(By.CSS_SELECTOR, "td a").text:
                row.find_element(By.CSS_SELECTOR, "td.requester").text
            for row in browser.find_elements(By.CSS_SELECTOR, "#tickets tbody tr")
        }
        for number, reading in readings.items():
            assert reading in rows[number], rows
        assert rows[real.ticket_number] == "ceo@example.com", "an ASCII address stands alone"
        for out in (domain, local, real):
            browser.get(f"{base}/ui/tickets/{out.ticket_number}")
            browser.save_screenshot(str(tmp_path / f"{out.ticket_number}.png"))
            sender = browser.find_element(By.CSS_SELECTOR, f"#mail-{out.email_log_id} .sender")
            meta = browser.find_element(By.CSS_SELECTOR, "#ticket-title + .meta").text
            if out is real:
                assert sender.text == "CEO <ceo@example.com>" and "(" not in meta
            else:
                assert sender.text.endswith(readings[out.ticket_number]), sender.text
                assert readings[out.ticket_number] in meta, meta
        _fits(browser)


class _Counter(http.server.BaseHTTPRequestHandler):
    """Another origin on loopback that counts every request a page makes to it."""

    seen: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        self.seen.append(self.path)
        self.send_response(200)
        self.send_header("Content-Type", "image/gif")
        self.end_headers()

    do_POST = do_GET

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def _counter() -> Iterator[tuple[str, list[str]]]:
    seen: list[str] = []
    handler = type("Counter", (_Counter,), {"seen": seen})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


def _html_mail(n: int, subject: str, html: str, sender: str = "Eve <eve@x.example>") -> bytes:
    return (f"From: {sender}\r\nTo: support@example.com\r\nSubject: {subject}\r\n"
            f"Message-ID: <hostile-{n}@x.example>\r\nDate: Mon, 15 Dec 2025 10:00:00 +0000\r\n"
            f"MIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n\r\n{html}\r\n"
            ).encode()


def _hostile_bodies(beacon: str) -> list[str]:
    """Script and remote content in the forms HTML mail carries them; each runs `alert` or
    sets window.pwned when executed, and each remote load asks the beacon."""
    return [
        f"<script>window.pwned=1;alert(1);fetch('{beacon}/script')</script>",
        f"<img src=x onerror=\"window.pwned=2;alert(2)\"><img src='{beacon}/tracker.gif'>",
        "<a id=js href='javascript:window.pwned=3'>open</a>"
        "<a href='data:text/html,<script>alert(3)</script>'>data</a>"
        "<a href='vbscript:msgbox(3)'>vb</a>",
        f"<svg onload=\"window.pwned=4\"><script>alert(4)</script><image href='{beacon}/svg'/></svg>",
        f"<iframe srcdoc='<script>parent.pwned=5</script>'></iframe><iframe src='{beacon}/frame'></iframe>",
        f"<meta http-equiv=refresh content='0;url={beacon}/refresh'>",
        f"<base href='{beacon}/base/'><a href='x'>relative</a><img src='relative.gif'>",
        f"<style>@import '{beacon}/import.css'; body{{background:url({beacon}/css)}}</style>"
        f"<div style=\"background:url('{beacon}/inline');width:expression(alert(6))\">css</div>",
        "<form action='/ui/tickets/TKT-20251215-001/notes' method=post><input name=body "
        "value=forged><button id=forge>Send</button></form><form action='/ui/logout' "
        "method=post><button>out</button></form>",
        "<noscript><p title=\"</noscript><img src=x onerror=window.pwned=7>\"></noscript>"
        "<template><img src=x onerror=window.pwned=8></template>"
        "<!--><img src=x onerror=window.pwned=9>--><math><mtext><table><mglyph><style>"
        "<img src=x onerror=window.pwned=10>",
        f"<link rel=stylesheet href='{beacon}/link.css'><video poster='{beacon}/poster'></video>"
        f"<object data='{beacon}/object'></object><embed src='{beacon}/embed'>",
    ]


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_hostile_html_mail_neither_runs_nor_loads_anything(
    api: Api, browser: webdriver.Chrome, tmp_path: Path
) -> None:
    # Opened by an agent whose token may write: a script would act with their session.
    with _counter() as (beacon, seen):
        outs = [
            api.ingest(_html_mail(n, f"hostile {n} <img src=x onerror=window.pwned=11>", html))
            for n, html in enumerate(_hostile_bodies(beacon))
        ]
        # Encoded words decode to markup in Subject and in the sender's name.
        outs.append(api.ingest(_html_mail(
            99, "=?utf-8?b?PGltZyBzcmM9eCBvbmVycm9yPXdpbmRvdy5wd25lZD0xMj4=?=", "<p>hi</p>",
            sender="=?utf-8?q?=3Cscript=3Ewindow.pwned=3D13=3C/script=3E?= <a@x.example>")))
        with running(api.app) as base:
            _sign_in(browser, base, api.tokens["write"])
            for out in outs:
                browser.get(f"{base}/ui/tickets/{out.ticket_number}")
                for link in browser.find_elements(By.CSS_SELECTOR, "#thread a, #thread button"):
                    assert link.get_attribute("id") not in ("js", "forge"), "mail markup is live"
                with pytest.raises(NoAlertPresentException):
                    browser.switch_to.alert.dismiss()
                assert browser.execute_script("return window.pwned === undefined"), out
                assert browser.current_url == f"{base}/ui/tickets/{out.ticket_number}"
            browser.save_screenshot(str(tmp_path / "last.png"))
            # The markup is on screen as text.
            assert "<img src=x onerror=window.pwned=12>" in browser.find_element(
                By.ID, "ticket-title").text
            assert "window.pwned=13" in browser.find_element(
                By.CSS_SELECTOR, "#thread .sender").text
        assert seen == [], "opening a mail loaded remote content"
    with api.runtime.session_factory() as session:
        assert session.scalar(select(func.count()).select_from(Comment)) == 0


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_huge_header_fields_are_shown_in_part(
    api: Api, browser: webdriver.Chrome, tmp_path: Path
) -> None:
    # A Subject of 100,000 characters and a sender's name of 50,000: each mail of a thread
    # shows its own, and a page of a hundred such mails would be tens of megabytes.
    raw = (b"From: " + b"N" * 50_000 + b" <a@x.example>\r\nTo: support@example.com\r\n"
           b"Subject: " + b"S" * 100_000 + b"\r\nMessage-ID: <long-headers@x.example>\r\n\r\nhi\r\n")
    out = api.ingest(raw)
    stored = next(m for m in api.get(f"/api/v1/tickets/{out.ticket_id}/emails").json()["emails"]
                  if m["id"] == out.email_log_id)
    assert len(stored["email_subject"]) == 100_000, "the API gives the whole field"
    with running(api.app) as base:
        _sign_in(browser, base, api.tokens["read"])
        browser.get(f"{base}/ui/tickets/{out.ticket_number}")
        browser.save_screenshot(str(tmp_path / "thread.png"))
        mail = f"#mail-{out.email_log_id}"
        subject = browser.find_element(By.CSS_SELECTOR, f"{mail} .subject").text
        assert subject == "S" * FIELD_SHOWN + "… 99,000 more characters", subject[-60:]
        sender = browser.find_element(By.CSS_SELECTOR, f"{mail} .sender").text
        assert sender == "N" * FIELD_SHOWN + "… 49,000 more characters <a@x.example>", sender[-60:]
        _fits(browser)


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_pages_are_styled_under_a_policy_without_inline_style(
    api: Api, browser: webdriver.Chrome
) -> None:
    # 'unsafe-inline' in style-src would let markup that ever slipped through style the
    # page or read it out (attribute selectors with url()): the stylesheet is a file.
    out = api.ingest(make_email(subject="styled"))
    with running(api.app) as base:
        policy = httpx.get(f"{base}/ui/login").headers["content-security-policy"]
        assert "unsafe-inline" not in policy and "style-src 'self'" in policy, policy
        sheet = httpx.get(f"{base}/ui/style.css")
        assert sheet.status_code == 200 and sheet.headers["content-type"].startswith("text/css")
        _sign_in(browser, base, api.tokens["read"])
        browser.get(f"{base}/ui/tickets/{out.ticket_number}")
        bar = browser.find_element(By.CSS_SELECTOR, "body > header")
        assert bar.value_of_css_property("background-color") == "rgba(35, 49, 63, 1)"
        body = browser.find_element(By.CSS_SELECTOR, f"#mail-{out.email_log_id} .body")
        assert body.value_of_css_property("white-space") == "pre-wrap"
        refused = [e["message"] for e in browser.get_log("browser")
                   if "Content Security Policy" in e["message"]]
        assert refused == [], refused
