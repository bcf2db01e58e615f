"""Raw message download and attachments, byte for byte."""

from __future__ import annotations

import hashlib
import re
from email.message import EmailMessage
from urllib.parse import unquote

from tests.api.conftest import Api

PDF = b"%PDF-1.4\n" + bytes(range(256)) * 8
HTML_FILE = b"<script>alert('x')</script>"


def _with_attachments() -> bytes:
    msg = EmailMessage()
    msg["From"] = "Kunde <kunde@example.com>"
    msg["To"] = "support@example.com"
    msg["Subject"] = "Invoice attached"
    msg["Message-ID"] = "<attach-1@example.com>"
    msg["Date"] = "Mon, 15 Dec 2025 10:00:00 +0000"
    msg.set_content("See the attached files.")
    msg.add_attachment(PDF, maintype="application", subtype="pdf", filename="faktura æøå.pdf")
    msg.add_attachment(HTML_FILE, maintype="text", subtype="html", filename="evil.html")
    return msg.as_bytes()


def test_raw_download_is_the_exact_message(api: Api) -> None:
    raw = _with_attachments()
    out = api.ingest(raw)
    assert out.action == "created" and out.email_log_id is not None
    r = api.get(f"/api/v1/emails/{out.email_log_id}/raw")
    assert r.status_code == 200
    assert r.headers["content-type"] == "message/rfc822"
    assert r.content == raw
    missing = api.get("/api/v1/emails/999999/raw")
    assert missing.status_code == 404 and missing.json()["detail"] == "no email 999999"


def test_attachments_listed_and_downloaded(api: Api) -> None:
    out = api.ingest(_with_attachments())
    email_id = out.email_log_id
    r = api.get(f"/api/v1/emails/{email_id}/attachments")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["email_id"] == email_id
    files = body["attachments"]
    assert [(f["filename"], f["content_type"], f["size"]) for f in files] == [
        ("faktura æøå.pdf", "application/pdf", len(PDF)),
        ("evil.html", "text/html", len(HTML_FILE)),
    ]
    assert files[0]["ticket_id"] == out.ticket_id
    assert files[0]["sha256"] == hashlib.sha256(PDF).hexdigest()
    pdf = api.get(files[0]["download_url"])
    assert pdf.status_code == 200 and pdf.content == PDF
    assert "filename*=UTF-8''faktura%20%C3%A6%C3%B8%C3%A5.pdf" in pdf.headers["content-disposition"]
    html = api.get(files[1]["download_url"])
    # Never rendered inline: an attached page must not run in the API's origin.
    assert html.content == HTML_FILE
    assert html.headers["content-type"] == "application/octet-stream"
    assert html.headers["content-disposition"].startswith("attachment;")
    assert html.headers["x-content-type-options"] == "nosniff"

    other = api.ingest(_with_attachments().replace(b"attach-1@", b"attach-2@"))
    wrong_pair = api.get(f"/api/v1/emails/{other.email_log_id}/attachments/{files[0]['id']}")
    assert wrong_pair.status_code == 404
    assert api.get("/api/v1/emails/999999/attachments").status_code == 404


def _saved_as(disposition: str) -> str:
    """The file name a client saves the download under (RFC 6266: filename* wins)."""
    found = re.search(r"filename\*=UTF-8''([^;\s]+)", disposition)
    assert found is not None, disposition
    return unquote(found.group(1))


def test_a_download_is_saved_under_a_bare_name_without_controls(api: Api) -> None:
    # The names as the mail gives them: a path (a uuencoded block keeps its "/"; a MIME
    # name has "/" and "\\" turned into "_" on intake), U+202E making
    # "Invoice\u202efdp.exe" read "Invoiceexe.pdf" in a file manager, a zero-width space,
    # a control character, a hidden file's dot.
    names = {
        "Invoice\u202efdp.exe": "Invoice_fdp.exe",
        "pay\u200bpal.pdf": "pay_pal.pdf",
        "bell\x07.txt": "bell_.txt",
        ".bashrc": "bashrc",
        "faktura æøå.pdf": "faktura æøå.pdf",
    }
    msg = EmailMessage()
    msg["From"] = "kunde@example.com"
    msg["To"] = "support@example.com"
    msg["Subject"] = "names"
    msg["Message-ID"] = "<names-1@example.com>"
    msg.set_content("begin 644 ../../tmp/uu\u202etxt.exe\n#86)C\n`\nend\n")
    for name in names:
        msg.add_attachment(b"x", maintype="application", subtype="octet-stream", filename=name)
    out = api.ingest(msg.as_bytes())
    files = api.get(f"/api/v1/emails/{out.email_log_id}/attachments").json()["attachments"]
    expected = {**names, "../../tmp/uu\u202etxt.exe": "uu_txt.exe"}
    # The list keeps the names as given.
    assert sorted(f["filename"] for f in files) == sorted(expected)
    for f in files:
        r = api.get(f["download_url"])
        assert r.status_code == 200, r.text
        disposition = r.headers["content-disposition"]
        assert disposition.startswith("attachment;")
        assert _saved_as(disposition) == expected[f["filename"]], (f["filename"], disposition)
