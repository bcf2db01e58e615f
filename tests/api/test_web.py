"""The thread view's server side: login cookie, redirects, escaping, filters (both DBs)."""

from __future__ import annotations

from tests.api.conftest import Api
from tests.mailfactory import make_email


def _login(api: Api, scope: str = "read") -> None:
    r = api.client.post("/ui/login", data={"token": api.tokens[scope]}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/ui/tickets"
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/ui" in cookie


def test_login_cookie_and_logout(api: Api) -> None:
    assert api.client.get("/ui/tickets", follow_redirects=False).headers["location"] == "/ui/login"
    bad = api.client.post("/ui/login", data={"token": "mtk_nope"}, follow_redirects=False)
    assert bad.status_code == 401 and "not valid" in bad.text
    assert "set-cookie" not in bad.headers
    _login(api)
    assert api.client.get("/ui/tickets").status_code == 200
    out = api.client.post("/ui/logout", follow_redirects=False)
    assert out.status_code == 303
    assert api.client.get("/ui/tickets", follow_redirects=False).status_code == 303


def test_cross_site_login_is_refused(api: Api) -> None:
    r = api.client.post("/ui/login", data={"token": api.tokens["read"]},
                        headers={"Origin": "https://evil.example"}, follow_redirects=False)
    assert r.status_code == 403 and "set-cookie" not in r.headers
    fetch = api.client.post("/ui/login", data={"token": api.tokens["read"]},
                            headers={"Sec-Fetch-Site": "cross-site"}, follow_redirects=False)
    assert fetch.status_code == 403
    same = api.client.post("/ui/login", data={"token": api.tokens["read"]},
                           headers={"Origin": "http://testserver", "Sec-Fetch-Site": "same-origin"},
                           follow_redirects=False)
    assert same.status_code == 303


def test_revoked_token_logs_the_browser_out(api: Api) -> None:
    plain = api.token("read", "browser")
    api.client.post("/ui/login", data={"token": plain})
    assert api.client.get("/ui/tickets", follow_redirects=False).status_code == 200
    from sqlalchemy import update

    from mailticket.api.models import ApiToken

    with api.runtime.session_factory() as s:
        s.execute(update(ApiToken).where(ApiToken.name == "browser").values(revoked_at=ApiToken.created_at))
        s.commit()
    assert api.client.get("/ui/tickets", follow_redirects=False).status_code == 303


def test_thread_page_escapes_mail_and_lists_filters(api: Api) -> None:
    evil = api.ingest(make_email(subject='<script>alert("s")</script> printer',
                                 sender="mallory@example.com",
                                 body='<img src=x onerror="alert(1)"> hello #printer'))
    calm = api.ingest(make_email(subject="Invoice question", sender="bob@example.com"))
    _login(api)
    page = api.client.get(f"/ui/tickets/{evil.ticket_number}")
    assert page.status_code == 200
    assert "<script>alert" not in page.text and "&lt;script&gt;alert(&#34;s&#34;)" in page.text
    assert "<img src=x" not in page.text and "&lt;img src=x onerror=" in page.text
    assert page.headers["content-security-policy"].startswith("default-src 'none'")
    assert page.headers["x-content-type-options"] == "nosniff"

    listing = api.client.get("/ui/tickets", params={"search": "invoice"})
    assert calm.ticket_number in listing.text and evil.ticket_number not in listing.text
    by_tag = api.client.get("/ui/tickets", params={"tag": "printer"})
    assert evil.ticket_number in by_tag.text and calm.ticket_number not in by_tag.text
    assert api.client.get("/ui/tickets/TKT-20991231-999").status_code == 404
