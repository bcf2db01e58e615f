"""parse_email and its helpers on small hand-written messages, one hard case each."""

from __future__ import annotations

import base64
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mailticket.reading.charsets import decode_bytes, decode_header
from mailticket.reading.htmltext import html_to_text
from mailticket.reading.parsing import (
    ParseError,
    extract_attachment,
    normalize_message_id,
    parse_email,
    parse_id_list,
    synthetic_message_id,
)

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "emails"
ID_SHAPE = re.compile(r"^<[^<>\s]+>$")

SIMPLE = (
    b"From: =?utf-8?q?Ren=C3=A9e_Dupont?= <Renee.Dupont@Example.FR>\n"
    b"To: Support <support@example.com>, other@example.com\n"
    b"Cc: boss@example.com\n"
    b"Reply-To: replies@example.fr\n"
    b"Subject: Printer on floor 3\n"
    b"Date: Mon, 13 Jan 2025 10:00:00 +0100\n"
    b"Message-ID: <abc.123@mail.example.fr>\n"
    b"Return-Path: <Renee.Dupont@Example.FR>\n"
    b"X-Custom: one\n"
    b"X-Custom: two\n"
    b"\n"
    b"The printer is broken.\n"
)


def msg(headers: str, body: bytes = b"Hello.\n") -> bytes:
    return headers.strip("\n").encode() + b"\n\n" + body


# --- Message-ID helpers --------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("<abc@example.com>", "<abc@example.com>"),
        ("  <abc@example.com>  ", "<abc@example.com>"),
        ("abc@example.com", "<abc@example.com>"),
        ("<AbC@Example.COM>", "<AbC@Example.COM>"),
        ("<9209252113.AA00975@ ebony >", "<9209252113.AA00975@ebony>"),
        ("<abc\r\n def@example.com>", "<abcdef@example.com>"),
        ("(comment) <abc@example.com> (more)", "<abc@example.com>"),
        ('"<abc@example.com>"', "<abc@example.com>"),
        ("<0000ff00-2222-0022-fffe-000000000000>", "<0000ff00-2222-0022-fffe-000000000000>"),
        ("<>", None),
        ("", None),
        ("   ", None),
        ("12223", None),
        ("garbage text here", None),
        ("<@example.com>", None),
        (None, None),
    ],
)
def test_normalize_message_id(value: str | None, expected: str | None) -> None:
    assert normalize_message_id(value) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("<a@x> <b@y>", ["<a@x>", "<b@y>"]),
        ("<a@x>,<b@y>, <a@x>", ["<a@x>", "<b@y>"]),
        ("<a@x>\n\t<b@y>", ["<a@x>", "<b@y>"]),
        ("Your message of Mon, 1 Jan 2024 10:00 <id@x.org>", ["<id@x.org>"]),
        # Jo's address is who wrote it, not which message (legacy prose, RFC 5322 4.5.4).
        ('"Jo" <jo@x.org> wrote <orig-1@mail.x.org>', ["<orig-1@mail.x.org>"]),
        # A bare value in In-Reply-To may be the person replied to: never an id there.
        ("someone@yahoo.com", []),
        ("a@x (comment c@d)", []),
        ("<broken\n  id@example.com>", ["<brokenid@example.com>"]),
        ("<foo@bar.net>, <baz@bar.net>, <invalid.   ", ["<foo@bar.net>", "<baz@bar.net>"]),
        ("<abc@x", ["<abc@x>"]),
        ("no ids at all", []),
        ("", []),
        (None, []),
    ],
)
def test_parse_id_list(value: str | None, expected: list[str]) -> None:
    assert parse_id_list(value) == expected


def test_synthetic_id_ignores_line_endings_mbox_line_and_leading_blank() -> None:
    lf = msg("From: a@example.com\nSubject: no id", b"line one\nline two\n")
    crlf = lf.replace(b"\n", b"\r\n")
    mbox = b"From a@example.com Mon Jan 13 10:00:00 2025\n" + lf
    variants = [lf, crlf, mbox, mbox.replace(b"\n", b"\r\n"), b"\n\n" + lf, lf.replace(b"\n", b"\r")]
    ids = {synthetic_message_id(v, "example.org") for v in variants}
    assert len(ids) == 1
    (only,) = ids
    assert re.fullmatch(r"<[0-9a-f]{32}@synthetic\.example\.org>", only)
    assert synthetic_message_id(lf.replace(b"two", b"three"), "example.org") != only
    # the same bytes through parse_email give the same id, flagged as synthetic
    parsed = {parse_email(v, domain="example.org").message_id for v in variants}
    assert parsed == {only}


# --- framing: mbox line, line endings, NUL, blank line, not-an-email ------------------


def test_empty_input_is_a_parse_error() -> None:
    for raw in (b"", b"\n\n  \r\n", b"\x00\x00"):
        with pytest.raises(ParseError):
            parse_email(raw)
    with pytest.raises(ParseError, match="expected bytes"):
        parse_email("From: a@b\n\nhi")  # type: ignore[arg-type]


def test_mbox_from_line_is_dropped_but_from_header_spellings_are_not() -> None:
    parsed = parse_email(b"From MAILER-DAEMON Fri Apr 06 16:46:09 2001\n" + SIMPLE)
    assert parsed.message_id == "<abc.123@mail.example.fr>"
    assert parsed.from_address == "renee.dupont@example.fr"
    assert not any(k.startswith("from ") for k in parsed.headers)
    odd = parse_email(b"From  : John <john@example.com>\nSubject: odd spacing\n\nbody\n")
    assert odd.from_address == "john@example.com"
    assert odd.subject == "odd spacing"


@pytest.mark.parametrize("ending", [b"\r\n", b"\r", b"\n"])
def test_line_endings(ending: bytes) -> None:
    parsed = parse_email(SIMPLE.replace(b"\n", ending))
    assert parsed.subject == "Printer on floor 3"
    assert parsed.text == "The printer is broken."
    assert parsed.message_id == "<abc.123@mail.example.fr>"


def test_mixed_line_endings() -> None:
    raw = b"From: a@example.com\r\nSubject: mixed\rMessage-ID: <m@x>\n\r\nbody one\rbody two\r\n"
    parsed = parse_email(raw)
    assert (parsed.subject, parsed.message_id) == ("mixed", "<m@x>")
    assert parsed.text == "body one\nbody two"


def test_nul_bytes_never_reach_text_or_headers() -> None:
    raw = b"From: a@example.com\nSubject: nul\x00here\n\nbody\x00text\n\x00\n"
    parsed = parse_email(raw)
    assert parsed.subject == "nulhere"
    assert parsed.text == "bodytext"


def test_leading_blank_line() -> None:
    parsed = parse_email(b"\n\r\n" + SIMPLE)
    assert parsed.subject == "Printer on floor 3"
    assert parsed.raw_size == len(SIMPLE) + 3


def test_headerless_bytes_still_parse_as_a_body() -> None:
    parsed = parse_email(b"just some words\nand more\n")
    assert parsed.message_id_synthetic
    assert parsed.from_address == ""


# A gateway wrapped a long diagnostic field without indenting its rest (as Exchange Online's
# x-microsoft-* fields arrive in real mail): the stray line must not end the header block.
LOST_INDENT = (
    b"Received: from mx.example.net by mx.example.com; Wed, 15 Nov 2017 14:16:18 +0000\r\n"
    b"x-ms-exchange-diagnostics: 1;AM4PR01;6:1Y77VdiYZvwhWtdzFszn6F8yBYOr9DiSFIBUWJ8SQrYO+Goi\r\n"
    b"P8FxVksOO2tmFWl+LxT0Acgv7RaCFBKFmzA31fwJabrvuEaF/#DAB4FAD8-2DD7\r\n"
    b"x-forefront-antispam-report: SFV:NSPM;SFS:(10019020)(346002);PTR:InfoNoRecor\r\n"
    b"ds;MX:1;A:1;LANG:it;\r\n"
    b"From: Gianni Rossi <gianni@cliente.example>\r\n"
    b"To: support@example.com\r\n"
    b"Subject: R: stampante guasta\r\n"
    b"Message-ID: <lost-indent-1@cliente.example>\r\n"
    b"In-Reply-To: <parent-1@example.com>\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/alternative; boundary="b1"\r\n'
    b"\r\n"
    b"--b1\r\nContent-Type: text/plain; charset=iso-8859-1\r\n"
    b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
    b"La stampante non funziona pi=F9.\r\n"
    b'--b1\r\nContent-Type: text/html; charset=iso-8859-1\r\n\r\n'
    b'<div id="x"><a href="#DAB4FAD8-2DD7">La stampante</a></div>\r\n'
    b"--b1--\r\n"
)


def test_a_header_line_that_lost_its_indent_does_not_end_the_header_block() -> None:
    parsed = parse_email(LOST_INDENT)
    assert parsed.from_address == "gianni@cliente.example"
    assert parsed.subject == "R: stampante guasta"
    assert parsed.message_id == "<lost-indent-1@cliente.example>"
    assert parsed.in_reply_to == ["<parent-1@example.com>"]
    assert parsed.content_type == "multipart/alternative"
    assert parsed.text.strip() == "La stampante non funziona più."
    assert parsed.html is not None and "stampante" in parsed.html


@pytest.mark.parametrize(
    "raw",
    [
        # No blank line under the headers: the first body line stays the body's.
        b"From: jo@example.com\nSubject: hi\nHello,\nPS: call me\n\nBye\n",
        # A MIME delimiter right under the header block: the multipart is kept as it is.
        b"From: jo@example.com\nSubject: hi\nMIME-Version: 1.0\n"
        b'Content-Type: multipart/mixed; boundary="b"\n'
        b"This is a multi-part message in MIME format.\n"
        b"--b\nContent-Type: text/plain\n\nHello there\n--b--\n",
    ],
)
def test_a_body_without_its_blank_line_stays_the_body(raw: bytes) -> None:
    parsed = parse_email(raw)
    assert parsed.subject == "hi"
    assert "Hello" in parsed.text


# --- fields of an ordinary message ---------------------------------------------------


def test_ordinary_message_fields() -> None:
    p = parse_email(SIMPLE)
    assert p.message_id == "<abc.123@mail.example.fr>" and not p.message_id_synthetic
    assert (p.from_address, p.from_name) == ("renee.dupont@example.fr", "Renée Dupont")
    assert p.to == ["support@example.com", "other@example.com"]
    assert p.cc == ["boss@example.com"]
    assert p.reply_to == ["replies@example.fr"]
    assert p.date == datetime(2025, 1, 13, 9, 0, tzinfo=UTC)
    assert p.date is not None and p.date.utcoffset() is not None
    assert p.headers["x-custom"] == ["one", "two"]
    assert p.header("SUBJECT") == "Printer on floor 3"
    assert p.text == "The printer is broken."
    assert p.html is None
    assert p.content_type == "text/plain" and p.part_types == ["text/plain"]
    assert p.return_path == "renee.dupont@example.fr"
    assert p.report_type is None
    assert p.attachments == [] and p.embedded == []
    assert p.raw_size == len(SIMPLE)
    assert p.in_reply_to == [] and p.references == []


def test_return_path_null_and_absent() -> None:
    assert parse_email(msg("From: a@x.org\nReturn-Path: <>")).return_path == ""
    assert parse_email(msg("From: a@x.org")).return_path is None


def test_no_from_gives_empty_address() -> None:
    parsed = parse_email(msg("Subject: anonymous"))
    assert (parsed.from_address, parsed.from_name) == ("", "")


def test_mailer_daemon_without_domain() -> None:
    parsed = parse_email(msg("From: MAILER-DAEMON\nSubject: failure"))
    assert parsed.from_address == "mailer-daemon"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Tue, 14 Jan 2025 08:00:00 -0500", datetime(2025, 1, 14, 13, 0, tzinfo=UTC)),
        ("14 Jan 2025 08:00:00 GMT", datetime(2025, 1, 14, 8, 0, tzinfo=UTC)),
        ("Tue, 14 Jan 2025 08:00:00", datetime(2025, 1, 14, 8, 0, tzinfo=UTC)),
        ("not a date at all", None),
        ("Tue, 45 Foo 2025 99:99:99 +0000", None),
        ("", None),
    ],
)
def test_dates(value: str, expected: datetime | None) -> None:
    parsed = parse_email(msg(f"From: a@x.org\nDate: {value}"))
    assert parsed.date == expected
    if expected is None and value:
        assert any(d.startswith("Date") for d in parsed.defects)


# --- Message-ID / In-Reply-To / References in messages -------------------------------


def test_missing_message_id_is_synthetic() -> None:
    parsed = parse_email(msg("From: a@x.org\nSubject: no id"), domain="tickets.example")
    assert parsed.message_id_synthetic
    assert parsed.message_id.endswith("@synthetic.tickets.example>")
    assert "Message-ID: missing or unusable" in parsed.defects


def test_garbage_message_id_is_synthetic() -> None:
    parsed = parse_email(msg("From: a@x.org\nMessage-ID: <>"))
    assert parsed.message_id_synthetic and ID_SHAPE.match(parsed.message_id)


def test_two_message_id_headers_take_first_valid() -> None:
    both = parse_email(msg("From: a@x.org\nMessage-ID: <first@x>\nMessage-ID: <second@x>"))
    assert both.message_id == "<first@x>"
    broken_first = parse_email(msg("From: a@x.org\nMessage-ID: <>\nMessage-ID: <second@x>"))
    assert broken_first.message_id == "<second@x>" and not broken_first.message_id_synthetic


def test_threading_headers() -> None:
    parsed = parse_email(
        msg(
            "From: a@x.org\n"
            "In-Reply-To: Your message of Mon, 13 Jan 2025 <parent@x.org>\n"
            "References: <root@x.org>\n <mid\n dle@x.org>,<parent@x.org> <root@x.org>"
        )
    )
    assert parsed.in_reply_to == ["<parent@x.org>"]
    assert parsed.references == ["<root@x.org>", "<middle@x.org>", "<parent@x.org>"]


# --- header decoding ------------------------------------------------------------------


def test_rfc2047_subject_variants() -> None:
    # a UTF-8 character split across two encoded words; whitespace between words dropped
    split = "=?utf-8?B?" + base64.b64encode(b"Caf" + "é".encode()[:1]).decode() + "?="
    split += " =?utf-8?B?" + base64.b64encode("é".encode()[1:] + b" ok").decode() + "?="
    assert decode_header(split) == "Café ok"
    assert decode_header("=?iso-8859-1?q?caf=E9?= =?iso-8859-1?q?_au_lait?=") == "café au lait"
    assert decode_header("Re: =?UTF-8?Q?Gr=C3=BC=C3=9Fe?= from me") == "Re: Grüße from me"
    # no whitespace around the word, missing base64 padding, lower-case q
    assert decode_header("Re:=?utf-8?b?w6k?=!") == "Re:é!"
    # unknown charset in the word: the bytes are still UTF-8, so they still come out
    assert decode_header("=?x-bogus?q?=C3=A9t=C3=A9?=") == "été"
    # a folded header is unfolded
    assert decode_header("long\n subject\r\n\tline") == "long subject line"


def test_raw_8bit_headers() -> None:
    utf8 = parse_email("From: José <jose@x.org>\nSubject: Ça va?\n\nbody\n".encode())
    assert (utf8.subject, utf8.from_name) == ("Ça va?", "José")
    latin = parse_email("Subject: Ça va?\n\nbody\n".encode("latin-1"))
    assert latin.subject == "Ça va?"
    # undeclared 8-bit header bytes in the body's charset: the body charset is the guess
    koi = parse_email(
        "Subject: Привет\nContent-Type: text/plain; charset=koi8-r\n\nТекст\n".encode("koi8-r")
    )
    assert koi.subject == "Привет"
    assert koi.text == "Текст"


def test_koi8r_fixture_has_real_cyrillic() -> None:
    parsed = parse_email((FIXTURES / "parsing_koi8r.eml").read_bytes())
    assert parsed.subject == "Ошибка входа в систему"
    assert (parsed.from_name, parsed.from_address) == ("Иван Петров", "ivan@example.ru")
    assert parsed.headers["x-raw-note"] == ["Срочно"]
    assert parsed.text.startswith("Здравствуйте!\nНе могу войти")
    assert "Ð" not in parsed.text and "\ufffd" not in parsed.text


# --- body charsets ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("charset", "text"),
    [
        ("koi8-r", "Привет, мир"),
        ("windows-1251", "Привет, мир"),
        ("iso-8859-2", "Zażółć gęślą jaźń"),
        ("iso-8859-15", "Prix: 5 € - œuvre"),
        ("iso-8859-1", "Grüße aus Köln"),
        ("utf-8", "naïve café ✓"),
        ("shift_jis", "日本語のテキスト"),
        ("euc-jp", "日本語のテキスト"),
        ("iso-2022-jp", "日本語のテキスト"),
        ("big5", "中文測試"),
        ("gb18030", "中文测试"),
        ("utf-7", "Frösche"),
    ],
)
def test_declared_charset_right_gives_no_mojibake(charset: str, text: str) -> None:
    body = text.encode(charset)
    raw = f"From: a@x.org\nContent-Type: text/plain; charset={charset}\n\n".encode() + body
    parsed = parse_email(raw)
    assert parsed.text == text
    assert not any("charset" in d for d in parsed.defects)


@pytest.mark.parametrize(
    ("label", "body", "expected"),
    [
        ("utf8", "Grüße".encode(), "Grüße"),
        ("ks_c_5601-1987", "안녕하세요".encode("cp949"), "안녕하세요"),
        ("gb2312", "镕".encode("gbk"), "镕"),  # a GBK-only character under a GB2312 label
        ("shift_jis", "①".encode("cp932"), "①"),  # a Microsoft extension under Shift_JIS
        ("iso-2022-jp", b"\x1b$B-!\x1b(B", "①"),  # NEC row 13 as Outlook writes it (CP50220)
        ("x-unknown", "été".encode(), "été"),
        ("unknown-8bit", "été".encode("cp1252"), "été"),
        ("no-such-charset", "été".encode(), "été"),
        ("us-ascii", "café".encode("latin-1"), "café"),
        ("iso-8859-1", "café ✓".encode(), "café ✓"),  # a lying latin-1 label on UTF-8
        ("iso-8859-1", "smart “quotes”".encode("cp1252"), "smart “quotes”"),
        ("iso-2022-jp", "日本語".encode("euc_jp"), "日本語"),  # wrong Japanese label
    ],
)
def test_charset_fallbacks(label: str, body: bytes, expected: str) -> None:
    raw = f"From: a@x.org\nContent-Type: text/plain; charset=\"{label}\"\n\n".encode() + body
    assert parse_email(raw).text == expected


def test_one_bad_byte_does_not_discard_the_declared_charset() -> None:
    text = "Привет, это длинное сообщение на русском языке. " * 5
    assert decode_bytes(text.encode("koi8-r") + b"\xff", "koi8-r").startswith("Привет")
    broken_utf8 = ("Юникод запрещен " * 3).encode() + b"\xf1"
    assert decode_bytes(broken_utf8, "utf-8").startswith("Юникод запрещен")
    assert decode_bytes(broken_utf8, None).startswith("Юникод запрещен")


# --- HTML ------------------------------------------------------------------------------


def test_html_only_fixture() -> None:
    parsed = parse_email((FIXTURES / "parsing_html_only.eml").read_bytes())
    assert parsed.html is not None and "<h1>" in parsed.html
    assert parsed.text == "Order № 42\n\nCafé & crème <deluxe>\n\n- one\n- two\nLine\nbreak\nTotal: 5€"
    assert (parsed.from_name, parsed.from_address) == ("Shop, The", "noreply@shop.example")


def test_html_to_text_drops_invisible_content() -> None:
    text = html_to_text(
        "<style>x{}</style><script>var a = '<p>';</script><p>A&nbsp;&lt;b&gt;</p>"
        "<table><tr><td>c1</td><td>c2</td></tr></table><pre>  keep\n  lines</pre>"
    )
    assert "var a" not in text and "x{}" not in text
    assert text.splitlines()[0] == "A <b>"
    assert "c1 c2" in text
    assert "keep\nlines" in text


def test_html_charset_from_meta_when_undeclared() -> None:
    raw = b'From: a@x.org\nContent-Type: text/html\n\n<meta charset="koi8-r"><p>' + "Да".encode(
        "koi8-r"
    )
    assert parse_email(raw).text == "Да"


# --- MIME structure -----------------------------------------------------------------


NESTED = b"""From: a@x.org
Subject: nested
Message-ID: <nested@x.org>
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="outer"

preamble
--outer
Content-Type: multipart/alternative; boundary="alt"

--alt
Content-Type: text/plain; charset=utf-8

Plain wins.
--alt
Content-Type: multipart/related; boundary="rel"

--rel
Content-Type: text/html; charset=utf-8

<p>HTML <img src="cid:logo@x"></p>
--rel
Content-Type: image/png
Content-ID: <logo@x>
Content-Transfer-Encoding: base64

iVBORw0KGgo=
--rel--
--alt--
--outer
Content-Type: application/pdf; name="=?utf-8?q?R=C3=A9sum=C3=A9.pdf?="
Content-Disposition: attachment
Content-Transfer-Encoding: base64

JVBERi0xLjQK
--outer
Content-Type: text/plain
Content-Disposition: attachment; filename*=utf-8''%E2%82%AC%20report.txt

euro report
--outer
Content-Type: message/rfc822

From: Inner Person <Inner@Example.org>
Subject: =?utf-8?q?inner_=C3=A9?=
Message-ID: <inner-1@example.org>
In-Reply-To: <inner-parent@example.org>
References: <inner-root@example.org> <inner-parent@example.org>

Inner body is not the message text.
--outer--
"""


def test_nested_multipart() -> None:
    p = parse_email(NESTED)
    assert p.content_type == "multipart/mixed"
    assert p.part_types == [
        "multipart/mixed",
        "multipart/alternative",
        "text/plain",
        "multipart/related",
        "text/html",
        "image/png",
        "application/pdf",
        "text/plain",
        "message/rfc822",
        "text/plain",
    ]
    assert p.text == "Plain wins."
    assert p.html is not None and "cid:logo@x" in p.html
    files = [(a.index, a.filename, a.content_type, a.size) for a in p.attachments]
    assert files == [
        (0, "", "image/png", 8),
        (1, "Résumé.pdf", "application/pdf", 9),
        (2, "€ report.txt", "text/plain", 11),  # the CRLF before a boundary is not content
    ]
    assert p.attachments[0].content_id == "<logo@x>" and p.attachments[0].inline
    assert p.attachments[1].payload == b"%PDF-1.4\n" and not p.attachments[1].inline
    (inner,) = p.embedded
    assert inner.message_id == "<inner-1@example.org>"
    assert inner.in_reply_to == ("<inner-parent@example.org>",)
    assert inner.references == ("<inner-root@example.org>", "<inner-parent@example.org>")
    assert (inner.subject, inner.from_address) == ("inner é", "inner@example.org")


def test_extract_attachment_matches_parse_numbering() -> None:
    for part in parse_email(NESTED).attachments:
        again = extract_attachment(NESTED, part.index)
        assert (again.filename, again.payload, again.index) == (
            part.filename,
            part.payload,
            part.index,
        )
    with pytest.raises(LookupError, match="attachment 3 not found: the message has 3"):
        extract_attachment(NESTED, 3)
    with pytest.raises(LookupError):
        extract_attachment(NESTED, -1)


def test_forward_with_only_embedded_text_uses_it() -> None:
    raw = (
        b"From: a@x.org\nContent-Type: multipart/mixed; boundary=b\n\n--b\n"
        b"Content-Type: message/rfc822\n\nFrom: c@y.org\nSubject: orig\n\nOriginal words.\n--b--\n"
    )
    assert parse_email(raw).text == "Original words."


DSN = b"""From: Mail Delivery System <MAILER-DAEMON@mx.example.net>
To: a@x.org
Subject: Undelivered Mail Returned to Sender
Return-Path: <>
Message-ID: <dsn-1@mx.example.net>
Content-Type: multipart/report; report-type="Delivery-Status"; boundary="rep"

--rep
Content-Type: text/plain

Your message could not be delivered.
--rep
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.net

Final-Recipient: rfc822; nobody@example.net
Action: failed
Status: 5.1.1
--rep
Content-Type: text/rfc822-headers

From: a@x.org
Message-ID: <orig-42@x.org>
Subject: =?utf-8?q?Ticket_=C3=A9?=
References: <TKT-1@x.org>
--rep--
"""


def test_dsn_report_and_returned_headers() -> None:
    p = parse_email(DSN)
    assert p.content_type == "multipart/report" and p.report_type == "delivery-status"
    assert p.return_path == ""
    assert p.part_types == [
        "multipart/report",
        "text/plain",
        "message/delivery-status",
        "text/rfc822-headers",
    ]
    assert p.text == "Your message could not be delivered."
    assert p.attachments == []
    (returned,) = p.embedded
    assert returned.message_id == "<orig-42@x.org>"
    assert returned.subject == "Ticket é"
    assert returned.references == ("<TKT-1@x.org>",)
    assert returned.from_address == "a@x.org"


def test_tnef_is_kept_as_attachment() -> None:
    raw = (
        b"From: a@x.org\nContent-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: text/plain\n\n"
        b"See attached.\n--b\nContent-Type: application/ms-tnef; name=\"winmail.dat\"\n"
        b"Content-Transfer-Encoding: base64\n\neJ8+IhAAAQ==\n--b--\n"
    )
    (tnef,) = parse_email(raw).attachments
    assert (tnef.filename, tnef.content_type) == ("winmail.dat", "application/ms-tnef")
    assert tnef.payload.startswith(b"\x78\x9f\x3e\x22")


def test_uuencoded_body_becomes_attachment() -> None:
    payload = bytes(range(256)) * 2
    lines = [b"begin 644 data file.bin"]
    lines += [__import__("binascii").b2a_uu(payload[i : i + 45]).rstrip(b"\n") for i in range(0, len(payload), 45)]
    lines += [b"`", b"end"]
    raw = b"From: a@x.org\nSubject: uu\n\nHere it is:\n" + b"\n".join(lines) + b"\nThanks.\n"
    p = parse_email(raw)
    (att,) = p.attachments
    assert (att.filename, att.payload, att.index) == ("data file.bin", payload, 0)
    assert att.content_type == "application/octet-stream"
    assert "begin 644" not in p.text
    assert p.text.startswith("Here it is:") and p.text.endswith("Thanks.")


def test_missing_boundary_is_recovered_from_delimiters() -> None:
    raw = (
        b"From: a@x.org\nContent-Type: multipart/mixed;\n\tbo\n\npreamble\n--zz\n"
        b"Content-Type: text/plain\n\nfirst\n--zz\nContent-Type: image/gif\n\nGIF89a\n--zz--\n"
    )
    p = parse_email(raw)
    assert p.text == "first"
    assert [a.content_type for a in p.attachments] == ["image/gif"]
    assert "boundary recovered from the body's delimiter lines" in p.defects


def test_defects_are_short_strings() -> None:
    raw = b"From: a@x.org\nContent-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: text/plain\n\nx\n"
    p = parse_email(raw)
    assert "CloseBoundaryNotFoundDefect" in p.defects
    assert all(isinstance(d, str) and len(d) <= 200 for d in p.defects)


def test_address_fast_path_agrees_with_the_stdlib_parser(corpus_dir: Path) -> None:
    """The regex shortcut for common address shapes must give exactly what getaddresses
    gives, on every address header of the corpus and on the shapes at its edges."""
    import email as stdlib_email
    from email.utils import getaddresses

    from mailticket.reading import headerfields

    def reference(values: list[str]) -> list[tuple[str, str]]:
        out = []
        for value in values:
            text = headerfields._FOLD.sub(" ", headerfields.unescape_surrogates(value, None))
            try:
                pairs = [(n, a) for n, a in getaddresses([text]) if "@" in a or a == text.strip()]
            except RecursionError:
                pairs = []
            if not pairs:
                pairs = [("", a) for a in headerfields._ADDRESS.findall(text)]
            out += [(headerfields.decode_header(n, None).strip("\"' "), a.strip().strip("<>").lower())
                    for n, a in pairs]
        return out

    cases = [[v] for v in (
        "a@b.c", "John Doe <J@X.y>", '"Doe, John" <j@x.y>', '"Doe,  John"  <j@x.y>',
        "J. Doe <j@x.y>", "=?utf-8?q?J=C3=B8rn?= <j@x.y>", "<j@x.y>", "Mr  Big <b@c.d>",
        "x <a..b@c.d>", '"" <a@b.c>', "Jörn <j@x.y>", "a@b.c, d@e.f", "(comment) a@b.c",
    )]
    for path in sorted(p for p in corpus_dir.rglob("*") if p.is_file()):
        msg = stdlib_email.message_from_bytes(path.read_bytes())
        for name in ("from", "to", "cc", "reply-to", "sender"):
            values = msg.get_all(name)
            if values:
                cases.append([str(v) for v in values])
    fast = sum(1 for c in cases if len(c) == 1 and headerfields._SIMPLE.fullmatch(c[0]))
    assert fast > len(cases) // 2, "the shortcut should cover the common shapes"
    for values in cases:
        if any(headerfields._AT_IN_NAME.search(v) and '"' not in v and "(" not in v
               for v in values):
            continue  # an unquoted name with an "@": read as mail clients read it, see below
        if any(" " in address for _, address in reference(values)):
            continue  # a name before a bare address: split off, see below
        assert headerfields.addresses(values, None) == reference(values), values


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        # Exchange wrote this one: the name is the address cut short, unquoted.
        ("jang.abcdef@xyzlinu <Jang.Abcdef@xyzlinux.example>",
         [("jang.abcdef@xyzlinu", "jang.abcdef@xyzlinux.example")]),
        ("Jo Doe jo@old.example <jo@new.example>", [("Jo Doe jo@old.example", "jo@new.example")]),
        ("=?utf-8?q?j=C3=B8@x.example?= <r@y.example>", [("jø@x.example", "r@y.example")]),
        ("a@b.example, jo@x.example <jo@y.example>, Ann <ann@z.example>",
         [("", "a@b.example"), ("jo@x.example", "jo@y.example"), ("Ann", "ann@z.example")]),
    ],
)
def test_an_unquoted_name_holding_an_at_is_the_name_not_a_mailbox(
    value: str, expected: list[tuple[str, str]]
) -> None:
    """The mailbox is the angle-addr, as every mail client reads it; getaddresses made the
    name a mailbox of its own, listed first, so it became the requester and got the reply."""
    def message(sender: str, to: str) -> bytes:
        return (f"From: {sender}\nTo: {to}\nSubject: hi\n"
                f"Message-ID: <at-name@x.example>\n\nhello\n").encode()

    parsed = parse_email(message(value, "support@example.com"))
    assert (parsed.from_name, parsed.from_address) == expected[0]
    assert parse_email(message("s@x.example", value)).to == [address for _, address in expected]


def test_a_name_before_a_bare_address_is_not_part_of_the_address() -> None:
    """'From: Big Bug bb@bug.example' (no angle brackets): the requester and the auto-reply's
    recipient were 'big bug bb@bug.example', an address with spaces no server delivers to."""
    parsed = parse_email(b"From: Big Bug bb@bug.example\nTo: support@example.com\n"
                         b"Subject: hi\nMessage-ID: <bare-name@bug.example>\n\nhello\n")
    assert (parsed.from_name, parsed.from_address) == ("Big Bug", "bb@bug.example")


def test_date_shortcut_agrees_with_mail_parser_first(corpus_dir: Path) -> None:
    """parse_date tries the stdlib first; on every corpus Date it must give what trying
    mail-parser first gave."""
    import email as stdlib_email
    from datetime import UTC
    from email.utils import parsedate_to_datetime

    from mailparser.dates import parse_mail_date

    from mailticket.reading import headerfields

    def mail_parser_first(raw: str) -> object:
        when = parse_mail_date(raw).value
        if when is None:
            try:
                when = parsedate_to_datetime(headerfields.unescape_surrogates(raw).strip())
            except (TypeError, ValueError, IndexError, OverflowError):
                return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        try:
            return when.astimezone(UTC)
        except (OverflowError, ValueError):
            return None

    dates = ["Mon, 15 Dec 2025 08:00:00 +0000", "Thu 29 Apr 2010 23:34:45 +0900",
             "15 Dec 2025 08:00:00", "not a date", "Mon, 15 Dec 2025 08:00:00 GMT"]
    for path in sorted(p for p in corpus_dir.rglob("*") if p.is_file()):
        msg = stdlib_email.message_from_bytes(path.read_bytes())
        dates += [str(v) for v in (msg.get_all("date") or [])[:1]]
    for raw in dates:
        assert headerfields.parse_date([raw])[0] == mail_parser_first(raw), raw
