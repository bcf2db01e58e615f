"""What is not mail is quarantined with a reason that says what it is; real mail, headerless
text from archives included, still goes through."""

from __future__ import annotations

import gzip
import io
import json
import random
import struct
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import func, select

from mailticket.live.maildir import MaildirSource
from mailticket.reading.msgids import canonical_bytes
from mailticket.reading.sniff import not_mail
from mailticket.runtime import Runtime
from mailticket.store.models import QuarantineEntry, Ticket
from tests.conftest import FIXTURES
from tests.mailfactory import make_email

ANY_WF = FIXTURES / "workflows" / "any_create.yaml"


def _png() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00\x00")) + chunk(b"IEND", b"")
    )


def _elf() -> bytes:
    # The ELF identification and a 64-bit header's fixed fields, then code-like bytes.
    ident = b"\x7fELF\x02\x01\x01\x00" + b"\x00" * 8
    rng = random.Random(7)
    return ident + struct.pack("<HHI", 2, 62, 1) + bytes(rng.randrange(256) for _ in range(4000))


def _zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("report.txt", "From: someone@example.org\n\nhello\n")
    return buffer.getvalue()


def _random(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


NOT_MAIL = {
    "random bytes": (_random(3000, 1), "binary data"),
    "short random bytes": (_random(40, 2), ""),
    "PNG image": (_png(), "a PNG image"),
    "JPEG image": (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01" + b"\x00" * 200, "a JPEG image"),
    "PDF": (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\n", "a PDF"),
    "ZIP archive": (_zip(), "a ZIP archive"),
    "gzip archive": (gzip.compress(b"From: a@b\n\nhello there my friend\n"), "a gzip archive"),
    "ELF binary": (_elf(), "an ELF executable"),
    "JSON object": (json.dumps({"From": "a@b.example", "subject": "help me please"}).encode(),
                    "JSON data"),
    "JSON array": (b'[{"id": 1, "text": "the printer is broken"}]\n', "JSON data"),
    "JSON lines": (b'{"event": "open the ticket now"}\n{"event": "close"}\n', "JSON data"),
    "XML document": (b'<?xml version="1.0"?>\n<mail><from>a b c d</from></mail>\n',
                     "an XML document"),
    "HTML page": (b"<!DOCTYPE html>\n<html><body>Hello there my friend</body></html>\n",
                  "HTML"),
    "shell script": (b"#!/bin/sh\necho this is not a message at all\n", "a script"),
    "/etc/hostname": (b"mail-gw-01\n", "no header fields"),
    "a machine id": (b"3f1c9a7e2b8d4c6f9e0a1b2c3d4e5f60\n", "no header fields"),
}


@pytest.mark.parametrize("kind", list(NOT_MAIL))
def test_not_mail_is_named(kind: str) -> None:
    data, what = NOT_MAIL[kind]
    reason = not_mail(canonical_bytes(data))
    assert reason is not None and what in reason


REAL = {
    "ordinary": make_email(subject="Printer broken"),
    # Headerless text: a digest's body (cpython's msg_19), an mbox message that lost its
    # headers (MimeKit's unmunged.mbox).
    "headerless digest text": (
        b"Send Ppp mailing list submissions to\n\tppp@zzz.org\n\n"
        b"To subscribe or unsubscribe via the World Wide Web, visit\n"
    ),
    "headerless question": b"\nWhat does Thunderbird do?\n\n",
    # Header fields but no From, Date or Message-ID (MIME fragments, test mail).
    "only an odd header": b"Year: 1963\n\nWhat did Thunderbird do this time?\n",
    "only Content-Type": (
        b"Content-Type: multipart/mixed; boundary=ABCDE\n\n--ABCDE\nContent-Type: text/plain\n\n"
        b"Blah\n--ABCDE--\n"
    ),
    "subject only": b"Subject: =?NONE?B?VEVTVA=?=\n\nTEST\n",
    "obsolete spacing": b"From  : someone@example.org\nSubject : hi\n\nhello\n",
    "mbox From_ line": b"From someone@example.org Mon Jan 13 10:00:00 2025\nFrom: s@example.org\n\nx\n",
    "8-bit headers": "From: Jürgen <j@example.de>\nSubject: Grüße\n\nHallo\n".encode("latin-1"),
}


@pytest.mark.parametrize("kind", list(REAL))
def test_real_mail_is_mail(kind: str) -> None:
    assert not_mail(canonical_bytes(REAL[kind])) is None


def _counts(rt: Runtime) -> tuple[int, int]:
    with rt.session_factory() as s:
        tickets = s.scalar(select(func.count()).select_from(Ticket)) or 0
        held = s.scalar(select(func.count()).select_from(QuarantineEntry)) or 0
    return int(tickets), int(held)


def test_ingest_quarantines_non_mail_with_its_reason(make_runtime: Callable[..., Runtime]) -> None:
    rt = make_runtime(workflows_path=ANY_WF)
    for kind, (data, what) in NOT_MAIL.items():
        outcome = rt.pipeline.process(data, f"test:{kind}")
        assert outcome.action == "quarantined", kind
        assert "not an email message" in (outcome.error or ""), (kind, outcome.error)
        assert what in (outcome.error or ""), (kind, outcome.error)
    assert _counts(rt) == (0, len(NOT_MAIL))
    with rt.session_factory() as s:
        reasons = list(s.scalars(select(QuarantineEntry.reason)))
    assert all("not an email message" in r for r in reasons)
    for kind in ("headerless digest text", "only Content-Type", "ordinary"):
        assert rt.pipeline.process(REAL[kind], f"test:{kind}").action == "created", kind


def test_maildir_drop_of_non_mail_is_quarantined_and_moves_on(
    make_runtime: Callable[..., Runtime], tmp_path: Path
) -> None:
    rt = make_runtime(workflows_path=ANY_WF)
    box = MaildirSource(tmp_path / "Maildir", rt.pipeline, rt.session_factory,
                        max_message_size=10**7)
    box.ensure()
    drops = {
        "1.png": NOT_MAIL["PNG image"][0], "2.json": NOT_MAIL["JSON object"][0],
        "3.elf": NOT_MAIL["ELF binary"][0], "4.rand": NOT_MAIL["random bytes"][0],
        "5.hostname": NOT_MAIL["/etc/hostname"][0], "6.eml": REAL["ordinary"],
    }
    for name, data in drops.items():
        (tmp_path / "Maildir" / "new" / name).write_bytes(data)
    assert box.drain() == len(drops)
    assert sorted((tmp_path / "Maildir" / "new").iterdir()) == []
    assert _counts(rt) == (1, 5)


def test_every_corpus_message_is_mail(corpus_dir: Path) -> None:
    """The rule refuses none of the real messages (every one was accepted before it)."""
    files = sorted(corpus_dir.rglob("*.eml"))
    assert len(files) > 100  # the curated set (167); ./scripts/test-corpus: all 1,226
    refused = {
        str(path.relative_to(corpus_dir)): reason
        for path in files
        if (reason := not_mail(canonical_bytes(path.read_bytes()))) is not None
    }
    assert refused == {}
