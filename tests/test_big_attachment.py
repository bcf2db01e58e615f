"""Big attachments: stored intact, and parsed exactly as without lifting their bodies out
of the parser's way (memory is a bench figure: bench/bench_memory.py)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import random
import re
from collections.abc import Callable
from email.message import EmailMessage

import pytest
from sqlalchemy import select

from mailticket.reading import lifting
from mailticket.reading.parsing import extract_attachment, parse_email
from mailticket.runtime import Runtime
from mailticket.store.models import Attachment, EmailLog, RawMessage
from mailticket.types import ParsedEmail

BIG = os.urandom(3 * 1024 * 1024 + 1)  # not a whole number of base64 quads: padding
SMALL = b"%PDF-1.4 small file\n" * 10


def _mail(*, crlf: bool = True) -> bytes:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "big@example.com", "support@example.com", "dump"
    msg["Message-ID"] = "<big-1@example.com>"
    msg.set_content("Core dump attached.\n\nSecond paragraph.\n")
    msg.add_attachment(BIG, maintype="application", subtype="octet-stream", filename="core.bin")
    msg.add_attachment(SMALL, maintype="application", subtype="pdf", filename="a.pdf")
    raw = msg.as_bytes()
    return raw.replace(b"\n", b"\r\n") if crlf else raw


def _forwarded() -> bytes:
    outer = EmailMessage()
    outer["From"], outer["To"], outer["Subject"] = "fw@example.com", "support@example.com", "Fw"
    outer["Message-ID"] = "<fw-1@example.com>"
    outer.set_content("See the mail below.")
    inner = EmailMessage()
    inner["From"], inner["Subject"], inner["Message-ID"] = "x@example.com", "dump", "<in@x>"
    inner.set_content("inner text")
    inner.add_attachment(BIG, maintype="image", subtype="png", filename="big.png")
    outer.add_attachment(inner)
    return outer.as_bytes()


def _unlifted(raw: bytes, monkeypatch: pytest.MonkeyPatch) -> ParsedEmail:
    with monkeypatch.context() as m:
        m.setattr(lifting, "LIFT_MIN", 1 << 60)
        assert lifting.lift(raw)[1] is None
        return parse_email(raw)


@pytest.mark.parametrize("raw", [_mail(), _mail(crlf=False), _forwarded()],
                         ids=["crlf", "lf", "forwarded"])
def test_lifted_bodies_parse_as_without_lifting(
    raw: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert lifting.lift(raw)[1] is not None
    parsed = parse_email(raw)
    assert parsed == _unlifted(raw, monkeypatch)
    assert [a.payload for a in parsed.attachments if a.size > 1000][0] == BIG
    assert extract_attachment(raw, 0).payload == BIG


def _pad(raw: bytes) -> int:
    """Where the big body's padding starts (a letter before it makes a broken quad)."""
    return raw.index(b"==\r\n", len(raw) // 2)


@pytest.mark.parametrize(
    "damage",
    [
        lambda raw: raw.replace(b"Content-Transfer-Encoding: base64", b"X-Encoding: base64", 1),
        lambda raw: raw[: _pad(raw) - 1] + raw[_pad(raw) :],
        lambda raw: raw[: len(raw) // 2] + b"*" + raw[len(raw) // 2 :],
    ],
    ids=["no-cte", "cut-quad", "junk"],
)
def test_bodies_lifting_cannot_decode_exactly_stay_with_the_parser(
    damage: Callable[[bytes], bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    raw = damage(_mail())
    assert lifting.lift(raw)[1] is None
    assert parse_email(raw) == _unlifted(raw, monkeypatch)


def test_big_attachment_is_stored_intact(make_runtime: Callable[..., Runtime]) -> None:
    rt = make_runtime()
    raw = _mail()
    outcome = rt.pipeline.process(raw, "test")
    assert outcome.action == "created"
    with rt.session_factory() as session:
        log = session.scalars(select(EmailLog).where(EmailLog.id == outcome.email_log_id)).one()
        stored = session.scalars(
            select(RawMessage.raw).where(RawMessage.id == log.raw_message_id)
        ).one()
        parts = session.scalars(
            select(Attachment).where(Attachment.email_log_id == log.id)
            .order_by(Attachment.part_index)
        ).all()
        body_text = log.body_text
    assert stored == raw
    assert [(p.filename, p.size, p.sha256) for p in parts] == [
        ("core.bin", len(BIG), hashlib.sha256(BIG).hexdigest()),
        ("a.pdf", len(SMALL), hashlib.sha256(SMALL).hexdigest()),
    ]
    assert "Core dump attached." in body_text


# The run lifting takes as a base64 body, as a regex states it (the scan that replaced it
# for speed must find the same end and the same number of letters).
_RUN = re.compile(rb"[A-Za-z0-9+/\r\n]*(?:={1,2}[\r\n]*)?")


def test_base64_run_scan_agrees_with_its_regex() -> None:
    rng = random.Random(7)
    alphabet = b"ABCXYZabcxyz0189+/" * 3 + b"\r\n" * 4 + b"=- \t*\x00\xff"
    texts = [bytes(rng.choice(alphabet) for _ in range(rng.randint(0, 400))) for _ in range(3000)]
    long_letters = base64.encodebytes(os.urandom(200_000))  # past the probe and a step
    texts += [long_letters, long_letters + b"--b--\n", long_letters[:-2] + b"=\r\n\r\n--x"]
    texts += [long_letters[:70_000] + b" " + long_letters, b"", b"=", b"==\n\n", b"\r\n"]
    for text in texts:
        for start in {0, min(1, len(text)), len(text) // 2, len(text)}:
            end = _RUN.match(text, start).end()  # type: ignore[union-attr]
            letters = end - start - text.count(b"\n", start, end) - text.count(b"\r", start, end)
            assert lifting._base64_run(text, start) == (end, letters), (text[:40], start)


def _lifted_body(data: bytes, line: int, sep: bytes) -> bytes:
    """A mail whose only body is `data` in base64 lines of `line` letters."""
    letters = base64.b64encode(data)
    body = sep.join(letters[i : i + line] for i in range(0, len(letters), line)) + sep
    head = b"Content-Type: application/octet-stream\nContent-Transfer-Encoding: base64\n"
    return (head.replace(b"\n", sep) + sep + body)


@pytest.mark.parametrize("sep", [b"\r\n", b"\n"], ids=["crlf", "lf"])
def test_a_lifted_body_decodes_as_binascii_decodes_it(sep: bytes) -> None:
    rng = random.Random(11)
    for size in (lifting.LIFT_MIN, lifting.LIFT_MIN + 1, lifting.LIFT_MIN + 2, 200_003):
        data = rng.randbytes(size)
        for line in (76, 64, 1000, 4 * size):  # a whole body on one line too
            raw = _lifted_body(data, line, sep)
            _, lifted = lifting.lift(raw)
            assert lifted is not None, (size, line)
            ((token, (start, end)),) = lifted.spans.items()
            assert lifted.payload(token) == data == base64.decodebytes(raw[start:end])
            assert lifted.payload(b"not a token") is None


@pytest.mark.parametrize(
    "body",
    [b"QUJD\r\nRA==", b"QUJD!RA==", b"QUJDRA=", b"QUJDR", b"QU=JD", b"QUJD====", b"", b"\r\n"],
)
def test_a_span_pybase64_refuses_gets_binascii_answer(body: bytes) -> None:
    """Lifting never hands over a body that is not strict base64; if it did, the answer
    (bytes or binascii.Error) must be what binascii alone gave before pybase64."""
    lifted = lifting.Lifted(b"xx" + body, {b"t": (2, 2 + len(body))})
    try:
        expected: bytes | type[Exception] = binascii.a2b_base64(body)
    except binascii.Error:
        expected = binascii.Error
    if expected is binascii.Error:
        with pytest.raises(binascii.Error):
            lifted.payload(b"t")
    else:
        assert lifted.payload(b"t") == expected
