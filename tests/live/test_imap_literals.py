"""FETCH literals through LinearProtocol against a real Dovecot, with the server's bytes cut
into chunks of every small size (so every literal and line boundary falls at a chunk edge):
tricky literal text, 8-bit, empty and multi-megabyte literals, and IDLE still working.
The oracle is the standard library's imaplib reading the same messages."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import aioimaplib
import pytest

from mailticket.live import imap_client
from mailticket.live.config import MailboxConfig
from mailticket.live.imap_client import ImapSession
from tests.live.dovecot import Dovecot

TRICKY = (
    b"From: a@example.com\r\nSubject: braces\r\nMessage-ID: <tricky@example.com>\r\n\r\n"
    b"a line that looks like a literal {123}\r\n"
    b"* 9 FETCH (UID 9 BODY[] {3}\r\n"
    b"ends with a brace}\r\n"
    b"A1 OK Fetch completed.\r\n"
    b"(unbalanced ( parentheses\r\n"
    b"last {5}\r\n"
)
EIGHT_BIT = (
    b"From: b@example.com\r\nSubject: 8bit\r\nMessage-ID: <8bit@example.com>\r\n"
    b"Content-Type: text/plain; charset=latin-1\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
    + bytes(b for b in range(1, 256) if b not in (10, 13)) + b"\r\n" + "Grüße {2}".encode() + b"\r\n"
)
EMPTY_BODY = b"From: c@example.com\r\nSubject: empty\r\nMessage-ID: <empty@example.com>\r\n\r\n"


def _big(mb: int) -> bytes:
    line = b"".join(b"%c" % (33 + i % 90) for i in range(76)) + b"}\r\n"
    body = line * ((mb << 20) // len(line))
    return b"From: d@example.com\r\nSubject: big\r\nMessage-ID: <big@example.com>\r\n\r\n" + body


def _split_protocol(size: int) -> type[imap_client._Protocol]:
    class Split(imap_client._Protocol):
        """Hands the server's bytes on in pieces of `size` bytes."""

        def data_received(self, d: bytes) -> None:
            for start in range(0, len(d), size):
                super().data_received(d[start : start + size])

    return Split


def _oracle(dovecot: Dovecot, part: str = "BODY.PEEK[]") -> dict[int, bytes]:
    imap = dovecot.client()
    try:
        imap.select("INBOX")
        typ, data = imap.uid("fetch", "1:*", f"(UID {part})")
        assert typ == "OK"
        out = {}
        for item in data:
            if isinstance(item, tuple):
                uid = re.search(rb"UID (\d+)", item[0])
                assert uid is not None
                out[int(uid.group(1))] = item[1]
        return out
    finally:
        imap.logout()


async def _fetch_all(box: MailboxConfig, part: str = "BODY.PEEK[]") -> dict[int, bytes]:
    session = ImapSession(box, timeout=30)
    await session.open()
    try:
        uids = await session.search("ALL")
        return {f.uid: f.data for f in await session.fetch(uids, part)}
    finally:
        await session.close()


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64, 4093, 0])
async def test_literals_cut_at_every_boundary_come_out_whole(
    dovecot: Dovecot, mailbox: MailboxConfig, monkeypatch: pytest.MonkeyPatch, size: int
) -> None:
    for raw in (TRICKY, EIGHT_BIT, EMPTY_BODY, TRICKY):
        dovecot.append(raw)
    if size:
        monkeypatch.setattr(imap_client, "_Protocol", _split_protocol(size))
    whole = await _fetch_all(mailbox)
    assert whole == _oracle(dovecot)
    assert whole[1] == TRICKY and whole[2] == EIGHT_BIT and whole[4] == TRICKY
    # Empty literals ({0}) and two literals in one FETCH response.
    texts = await _fetch_all(mailbox, "BODY.PEEK[TEXT] BODY.PEEK[HEADER.FIELDS (SUBJECT)]")
    assert texts == _oracle(dovecot, "BODY.PEEK[TEXT]")
    assert texts[3] == b""


@pytest.mark.parametrize("size", [4093, 0])
async def test_multi_megabyte_literals(
    dovecot: Dovecot, mailbox: MailboxConfig, monkeypatch: pytest.MonkeyPatch, size: int
) -> None:
    big = _big(6)
    dovecot.append(TRICKY)
    dovecot.append(big)
    dovecot.append(EIGHT_BIT)
    if size:
        monkeypatch.setattr(imap_client, "_Protocol", _split_protocol(size))
    got = await _fetch_all(mailbox)
    assert got == {1: TRICKY, 2: big, 3: EIGHT_BIT}


async def test_fetched_body_is_the_literal_itself_not_a_copy(
    dovecot: Dovecot, mailbox: MailboxConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    dovecot.append(_big(1))
    responses: list[Any] = []
    uid = aioimaplib.IMAP4.uid

    async def recording(self: aioimaplib.IMAP4, *args: Any, **kw: Any) -> Any:
        resp = await uid(self, *args, **kw)
        responses.append(resp)
        return resp

    monkeypatch.setattr(aioimaplib.IMAP4, "uid", recording)
    session = ImapSession(mailbox, timeout=30)
    await session.open()
    try:
        (fetched,) = await session.fetch([1])
    finally:
        await session.close()
    assert type(fetched.data) is bytes
    assert any(fetched.data is line for line in responses[-1].lines)


@pytest.mark.parametrize("size", [1, 5])
async def test_idle_still_reports_news_with_cut_chunks(
    dovecot: Dovecot, mailbox: MailboxConfig, monkeypatch: pytest.MonkeyPatch, size: int
) -> None:
    monkeypatch.setattr(imap_client, "_Protocol", _split_protocol(size))
    session = ImapSession(mailbox, timeout=10)
    await session.open()
    try:
        waiting = asyncio.ensure_future(session.wait_for_news(20))
        await asyncio.sleep(0.3)
        await asyncio.to_thread(dovecot.append, TRICKY)
        assert await asyncio.wait_for(waiting, 15) == "news"
        # The session is usable after DONE: the new message comes out whole.
        assert [f.data for f in await session.fetch(await session.search("ALL"))] == [TRICKY]
    finally:
        await session.close()
