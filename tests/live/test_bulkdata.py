"""The bulk DATA reader (src/mailticket/live/bulkdata.py) against aiosmtpd's own line-by-line
DATA: the same bytes sent to both servers give the same replies and the same envelope, byte for
byte, for dot-stuffing, empty messages, bare CR/LF, 8-bit data, lines at and over the length
limit, messages at and over the size limit (and which of the two limits is hit first), and a
client's next command pipelined behind the final ".". `read_data` is also fed the same bytes
cut at every point, so that an end marker or a long line split across reads is found too.
"""

from __future__ import annotations

import asyncio
import random
import socket
import tracemalloc
from collections.abc import Iterator
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import SMTP

from mailticket.live.bulkdata import (
    BulkLMTP,
    BulkSMTP,
    DataState,
    Overflow,
    _short_lines,
    read_data,
    unstuff,
)
from tests.live.dovecot import free_port

SIZE_LIMIT = 20_000
LINE = 1001  # aiosmtpd's line_length_limit (also its stream reader's limit)
FILLER = (b"p" * 98 + b"\r\n") * ((SIZE_LIMIT - 500) // 100)  # short lines, 500 B below the limit


class Recorder:
    """Keeps each envelope; answers once per recipient in LMTP, as DeliveryHandler does."""

    def __init__(self) -> None:
        self.seen: list[tuple[Any, ...]] = []

    async def handle_DATA(self, server: SMTP, session: Any, envelope: Any) -> str:
        self.seen.append((
            envelope.mail_from, list(envelope.rcpt_tos), envelope.content,
            envelope.original_content,
        ))
        status = f"250 2.0.0 got {len(envelope.original_content)}"
        if isinstance(server, LMTP):
            for rcpt in envelope.rcpt_tos[1:]:
                await server.push(f"250 2.0.0 {rcpt} too")
        return status


def start(cls: type[SMTP], handler: Recorder, decode: bool) -> Controller:
    class _Controller(Controller):
        def factory(self) -> SMTP:
            return cls(
                handler, data_size_limit=SIZE_LIMIT, enable_SMTPUTF8=True, hostname="t",
                decode_data=decode,
            )

    controller = _Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    return controller


class Client:
    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.file = self.sock.makefile("rb")
        self.replies(1)  # greeting

    def replies(self, count: int) -> list[bytes]:
        out = []
        for _ in range(count):
            reply = b""
            while True:
                line = self.file.readline()
                assert line, "connection closed"
                reply += line
                if line[3:4] != b"-":
                    break
            out.append(reply)
        return out

    def send(self, data: bytes, count: int) -> list[bytes]:
        self.sock.sendall(data)
        return self.replies(count)

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def payloads() -> Iterator[tuple[str, bytes]]:
    """(name, the bytes sent after 354, the final "." line included)."""
    end = b"\r\n.\r\n"
    yield "empty", b".\r\n"
    yield "one empty line", b"\r\n.\r\n"
    yield "plain", b"Subject: hi\r\n\r\nHello\r\n.\r\n"
    yield "no header", b"x" + end
    yield "dot-stuffed", b"..\r\n...\r\n.x\r\n..x\r\nx.\r\n. \r\n.\r\n"
    yield "dot first", b".hidden" + end
    yield "bare LF", b"a\nb\n.\nc\r\n.\n\r\n.\r\n"
    yield "bare CR", b"a\rb\r.\r\r\n\r.\r\n\r\n.\r\n"
    yield "CR before CRLF", b"a\r\r\n.\r\r\n.\r\n"
    yield "8-bit", bytes(range(256)).replace(b"\r\n", b"") + b"\r\n\xff\xfe\x00" + end
    yield "utf-8", "Grüße, ☃\r\n".encode() + end
    yield "dots only", b"..\r\n" * 50 + b".\r\n"
    for text in (LINE - 4, LINE - 3, LINE - 2, LINE - 1, LINE, LINE + 1, LINE + 2, LINE + 3):
        yield f"line of {text}", b"a" * text + end
        yield f"dot line of {text}", b"." * text + end
    yield "long line ending in CR", b"b" * 1500 + b"\r" + end
    yield "huge line", b"c" * 300_000 + end
    yield "huge line, lines after", b"c" * 50_000 + b"\r\nok\r\n" * 100 + b".\r\n"
    yield "at the size limit", b"y" * 998 + b"\r\n" + (b"z" * 998 + b"\r\n") * 19 + b".\r\n"
    yield "one over the size limit", b"y" * 999 + b"\r\n" + (b"z" * 998 + b"\r\n") * 19 + b".\r\n"
    yield "far over the size limit", b"w" * 900 + (b"\r\nw" + b"w" * 899) * 3000 + end
    yield "too much, then too long", b"q\r\n" * 7000 + b"Q" * 5000 + end
    yield "too long, then too much", b"Q" * 5000 + b"\r\n" + b"q\r\n" * 7000 + b".\r\n"
    # The line that crosses the size limit is also too long: aiosmtpd's stream reader
    # refuses a line whose text is over 1001 bytes before counting it, a line of 1000 or
    # 1001 bytes is counted (552) before its length is checked.
    for text in (LINE - 1, LINE, LINE + 1, LINE + 2):
        yield f"crossing line of {text}", FILLER + b"P" * text + end
    yield "end marker look-alikes", b"x\r\n.\r\r\n\n.\r\n.x\r\n" + end
    rng = random.Random(12)
    atoms = [b"a", b"b", b".", b"\r", b"\n", b"\r\n", b"\xff", b"\x00", b" "]
    for n in range(60):
        size = rng.choice((5, 50, 500, 2000, 8000))
        body = b"".join(rng.choice(atoms) for _ in range(size))
        if rng.random() < 0.2:
            body += b"L" * rng.choice((998, 999, 1000, 1001, 1002, 2000))
        # One transaction each: an end marker inside would start the next one early.
        while b"\r\n.\r\n" in body:
            body = body.replace(b"\r\n.\r\n", b"\r\n..\r\n")
        if body.startswith(b".\r\n"):
            body = b"." + body
        yield f"random {n}", body + (b".\r\n" if body.endswith(b"\r\n") else end)


def converse(port: int, cases: list[tuple[str, bytes]], pipelined: bool) -> list[Any]:
    client = Client(port)
    out: list[Any] = [client.send(b"LHLO t\r\n", 1)]
    for name, payload in cases:
        rcpts = 2 if name.startswith("plain") else 1
        out.append(client.send(b"MAIL FROM:<a@example.org>\r\n", 1))
        for i in range(rcpts):
            out.append(client.send(f"RCPT TO:<b{i}@example.org>\r\n".encode(), 1))
        out.append(client.send(b"DATA\r\n", 1))
        # Pipelined: the next command right behind the final ".", in the same packet.
        first = client.send(payload + b"NOOP\r\n" if pipelined else payload, 1)
        replies = first + client.replies(rcpts - 1 if first[0][:3] == b"250" else 0)
        if pipelined:
            replies += client.replies(1)
        out.append((name, replies))
    out.append(client.send(b"RSET\r\nMAIL FROM:<c@example.org>\r\nRSET\r\n", 3))
    client.close()
    return out


@pytest.mark.parametrize("decode", [False, True], ids=["bytes", "decoded"])
@pytest.mark.parametrize("pipelined", [False, True], ids=["lockstep", "pipelined"])
def test_bulk_lmtp_data_is_aiosmtpds_data(decode: bool, pipelined: bool) -> None:
    cases = list(payloads())
    results = []
    for cls in (LMTP, BulkLMTP):
        handler = Recorder()
        controller = start(cls, handler, decode)
        try:
            results.append((converse(controller.port, cases, pipelined), handler.seen))
        finally:
            controller.stop()
    (stock_replies, stock_seen), (bulk_replies, bulk_seen) = results
    assert bulk_replies == stock_replies
    assert bulk_seen == stock_seen
    # The cases do reach every outcome.
    codes = {item[1][0][:3] for item in stock_replies if isinstance(item, tuple)}
    assert {b"250", b"500", b"552"} <= codes
    assert len(stock_seen) > 40


def test_bulk_smtp_data_is_aiosmtpds_data() -> None:
    cases = [c for c in payloads() if not c[0].startswith("random")]
    results = []
    for cls in (SMTP, BulkSMTP):
        handler = Recorder()
        controller = start(cls, handler, False)
        try:
            client = Client(controller.port)
            out = [client.send(b"EHLO t\r\n", 1)]
            for _, payload in cases:
                out.append(client.send(b"MAIL FROM:<a@x.org>\r\nRCPT TO:<b@x.org>\r\n", 2))
                out.append(client.send(b"DATA\r\n", 1) + client.send(payload, 1))
            out.append(client.send(b"DATA\r\n", 1))  # no transaction: 503
            client.close()
            results.append((out, handler.seen))
        finally:
            controller.stop()
    assert results[0] == results[1]


def stock_outcome(payload: bytes) -> tuple[DataState, bytes]:
    """What aiosmtpd makes of a payload, from its answer (one server for all)."""
    handler = Recorder()
    controller = start(LMTP, handler, False)
    try:
        client = Client(controller.port)
        client.send(b"LHLO t\r\nMAIL FROM:<a@x.org>\r\nRCPT TO:<b@x.org>\r\nDATA\r\n", 4)
        code = client.send(payload, 1)[0][:3]
        client.close()
    finally:
        controller.stop()
    state = {b"250": DataState.NOMINAL, b"500": DataState.TOO_LONG, b"552": DataState.TOO_MUCH}
    return state[code], handler.seen[0][3] if handler.seen else b""


async def fed_in_pieces(pieces: list[bytes]) -> tuple[DataState, bytes, bytes]:
    reader = asyncio.StreamReader(limit=LINE)

    async def feed() -> None:
        for piece in pieces:
            reader.feed_data(piece)
            for _ in range(3):  # let read_data take it before the next piece comes
                await asyncio.sleep(0)
        reader.feed_eof()

    feeder = asyncio.create_task(feed())
    state, data = await read_data(reader, size_limit=SIZE_LIMIT, line_limit=LINE)
    await feeder
    return state, unstuff(data), await reader.read()


@pytest.mark.parametrize(
    "payload",
    [
        b".\r\n",
        b"..\r\n.\r\n",
        b"a\r\n..b\r\n\r\n.\r\n",
        b"x" * (LINE - 2) + b"\r\n.\r\n",
        b"x" * (LINE - 1) + b"\r\n.\r\n",
        b"x" * (LINE + 1) + b"\r\n.\r\n",
        b"x" * (LINE + 2) + b"\r\n.\r\n",
        b"x" * (LINE + 1) + b"\r\r\n.\r\n",
        FILLER + b"P" * (LINE - 1) + b"\r\n.\r\n",
        FILLER + b"P" * (LINE + 1) + b"\r\n.\r\n",
        FILLER + b"P" * (LINE + 2) + b"\r\n.\r\n",
        FILLER + b"P" * 600 + b"\r\n.\r\n",
    ],
    ids=lambda p: f"{len(p)}B",
)
async def test_read_data_cut_anywhere(payload: bytes) -> None:
    expected = await asyncio.to_thread(stock_outcome, payload)
    after = b"NOOP\r\n"
    cuts = range(1, len(payload) + len(after))
    if len(payload) > 4000:  # every cut near the lines that matter, a sample elsewhere
        cuts = sorted({*range(1, 30), *range(len(payload) - 2 * LINE - 20, len(payload) + 6),
                       *range(len(FILLER) - 20, len(FILLER) + 20),
                       *range(1, len(payload), 997)})
    stream = payload + after
    for cut in cuts:
        assert await fed_in_pieces([stream[:cut], stream[cut:]]) == (*expected, after), cut
    # And a byte at a time.
    if len(payload) < 4000:
        assert await fed_in_pieces([bytes([b]) for b in stream]) == (*expected, after)


@pytest.mark.parametrize("keep", [2, 40, 5000, SIZE_LIMIT])
async def test_an_overflow_keeps_the_head_and_counts_the_size(keep: int) -> None:
    """Over the size limit: the message's first `keep` bytes, unstuffed, and its size as
    the limit counts it, wherever the chunks are cut; nothing is handed back as data.
    (The head kept is at most what the limit let in, never the whole message.)"""
    body = b".dot first\r\nSubject: x\r\n\r\n" + b"..stuffed\r\n" + FILLER * 2
    message = unstuff(body)
    stream = body + b".\r\nNOOP\r\n"
    for cut in (*range(1, 40), 997, len(FILLER), len(body) - 1, len(body) + 2):
        reader = asyncio.StreamReader(limit=LINE)
        reader.feed_data(stream[:cut])
        overflow = Overflow(keep)

        async def feed(rest: bytes = stream[cut:], r: asyncio.StreamReader = reader) -> None:
            await asyncio.sleep(0)
            r.feed_data(rest)

        feeder = asyncio.create_task(feed())
        state, data = await read_data(
            reader, size_limit=SIZE_LIMIT, line_limit=LINE, unstuffed=True, overflow=overflow
        )
        await feeder
        assert (state, data) == (DataState.TOO_MUCH, b""), cut
        # `keep` bytes as sent, unstuffed: a dot fewer per stuffed line among them.
        head = overflow.head
        assert message.startswith(head) and keep - 2 <= len(head) <= keep, (cut, len(head))
        assert overflow.size == len(body), cut
        assert await reader.read(6) == b"NOOP\r\n"


async def test_connection_closed_during_data_is_a_connection_error() -> None:
    reader = asyncio.StreamReader(limit=LINE)
    reader.feed_data(b"half a message\r\n")
    reader.feed_eof()
    with pytest.raises(ConnectionResetError):
        await read_data(reader, size_limit=SIZE_LIMIT, line_limit=LINE)


@pytest.mark.parametrize(
    "line", [b"L" * (1 << 16), b"s\r\n" * (1 << 14)], ids=["one long line", "many lines"]
)
async def test_data_over_a_limit_is_dropped_as_it_comes(line: bytes) -> None:
    """20 MB over the limits: read to the end and dropped, never held (as aiosmtpd does)."""
    reader = asyncio.StreamReader(limit=LINE)

    async def feed() -> None:
        for _ in range(320):
            reader.feed_data(line)
            await asyncio.sleep(0)
        reader.feed_data(b"\r\n.\r\n")

    tracemalloc.start()
    try:
        feeder = asyncio.create_task(feed())
        state, data = await read_data(reader, size_limit=SIZE_LIMIT, line_limit=LINE)
        await feeder
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert (state, data) == (
        DataState.TOO_LONG if line.startswith(b"L") else DataState.TOO_MUCH, b""
    )
    assert peak < 2_000_000, peak


def test_the_quick_line_test_never_passes_a_long_line() -> None:
    rng = random.Random(5)
    for longest in (0, 1, 2, 7, 998, 999):
        lengths = sorted({0, 1, 2, 3, longest // 2, longest // 2 + 1, longest // 2 + 2,
                          max(longest - 1, 0), longest, longest + 1, longest + 2})
        for _ in range(2000):
            lines = bytearray(b"".join(
                b"x" * rng.choice(lengths) + rng.choice((b"", b"\r", b"\n")) + b"\r\n"
                for _ in range(rng.randint(1, 6))
            ))
            # Bytes around the lines (a previous chunk, a line still coming) are not looked at.
            before = rng.choice((b"", b"y\r\n", b"z" * 3))
            after = rng.choice((b"", b"\r\n", b"w" * 2000, b".\r\n"))
            buf = bytearray(before + lines + after)
            if _short_lines(buf, len(before), len(before) + len(lines), longest):
                assert max(map(len, lines.split(b"\r\n"))) <= longest, (longest, bytes(lines))


def test_a_client_gone_during_data_delivers_nothing_and_the_server_goes_on() -> None:
    handler = Recorder()
    controller = start(BulkLMTP, handler, False)
    try:
        client = Client(controller.port)
        client.send(b"LHLO t\r\nMAIL FROM:<a@x.org>\r\nRCPT TO:<b@x.org>\r\nDATA\r\n", 4)
        client.sock.sendall(b"Subject: half\r\n\r\nand then")
        client.close()
        client = Client(controller.port)
        replies = client.send(
            b"LHLO t\r\nMAIL FROM:<a@x.org>\r\nRCPT TO:<b@x.org>\r\nDATA\r\n", 4
        ) + client.send(b"whole\r\n.\r\n", 1)
        client.close()
    finally:
        controller.stop()
    assert replies[-1].startswith(b"250 ")
    assert [seen[3] for seen in handler.seen] == [b"whole\r\n"]


async def unstuffed_in_pieces(pieces: list[bytes]) -> tuple[DataState, bytes, bytes]:
    """fed_in_pieces, with read_data unstuffing as it reads (as the servers call it)."""
    reader = asyncio.StreamReader(limit=LINE)

    async def feed() -> None:
        for piece in pieces:
            reader.feed_data(piece)
            for _ in range(3):
                await asyncio.sleep(0)
        reader.feed_eof()

    feeder = asyncio.create_task(feed())
    got = await read_data(reader, size_limit=SIZE_LIMIT, line_limit=LINE, unstuffed=True)
    await feeder
    return (*got, await reader.read())


DOTTED_FILLER = (b".p" + b"p" * 96 + b"\r\n" + b"..q" + b"q" * 95 + b"\r\n") * 90


@pytest.mark.parametrize(
    "payload",
    [
        b".\r\n",
        b"..\r\n.\r\n",
        b"...\r\n.\r\n",
        b".hidden\r\n.\r\n",
        b"a\r\n..b\r\n\r\n.\r\n",
        b"\r\n..\r\n..x\r\n.\r\n",
        b"..\r\n...\r\n.x\r\n..x\r\nx.\r\n. \r\n.\r\n",
        b"x\r\n.\r\r\n\n.\r\n.x\r\n\r\n.\r\n",
        b"..\r\n" * 50 + b".\r\n",
        b"." * (LINE - 1) + b"\r\n.\r\n",
        b"." * (LINE + 1) + b"\r\n.\r\n",
        DOTTED_FILLER + b".\r\n",
        DOTTED_FILLER + b"." * (LINE + 1) + b"\r\n.\r\n",
    ],
    ids=lambda p: f"{len(p)}B",
)
async def test_read_data_unstuffs_as_aiosmtpd_wherever_cut(payload: bytes) -> None:
    """Unstuffed piece by piece as it is read, the message is what aiosmtpd hands over
    (unstuffed whole), however the reads cut it: a CRLF + "." split across reads, a dot at
    the very start, lines that are dots only."""
    expected = await asyncio.to_thread(stock_outcome, payload)
    after = b"NOOP\r\n"
    stream = payload + after
    cuts = range(1, len(stream))
    if len(payload) > 4000:
        cuts = sorted({*range(1, 30), *range(len(payload) - 2 * LINE - 20, len(stream)),
                       *range(1, len(payload), 97)})
    for cut in cuts:
        assert await unstuffed_in_pieces([stream[:cut], stream[cut:]]) == (*expected, after), cut
    if len(payload) < 4000:
        assert await unstuffed_in_pieces([bytes([b]) for b in stream]) == (*expected, after)
    size = 1
    while size < len(stream):  # many cuts at once: pieces of every size up to the whole
        pieces = [stream[i : i + size] for i in range(0, len(stream), size)]
        assert await unstuffed_in_pieces(pieces) == (*expected, after), size
        size = size * 2 + 1


@pytest.mark.parametrize("unstuffed", [False, True], ids=["as sent", "unstuffed"])
async def test_a_big_message_is_held_once_while_it_is_read(unstuffed: bool) -> None:
    """Memory, counted by tracemalloc (Python's own allocations, not RSS): 6 MB of DATA
    with dot-stuffed lines, read in 64 KB pieces, is in memory about once, never as the
    whole bytearray read and its bytes copy (twice), nor as the data as sent and its
    unstuffed copy."""
    lines = [b"..stuffed line %d\r\n" % i if i % 50 == 0 else b"b" * 76 + b"\r\n"
             for i in range(6 << 20 >> 6)]
    message = b"".join(lines)
    stream = message + b".\r\n"
    reader = asyncio.StreamReader(limit=LINE)

    async def feed() -> None:
        for pos in range(0, len(stream), 65536):
            # A new bytes object per piece, as the transport hands them over.
            reader.feed_data(stream[pos : pos + 65536])
            await asyncio.sleep(0)

    tracemalloc.start()
    try:
        feeder = asyncio.create_task(feed())
        # As sent: the call as it always was; unstuffed: as the servers read it.
        state, data = await (
            read_data(reader, size_limit=None, line_limit=LINE, unstuffed=True) if unstuffed
            else read_data(reader, size_limit=None, line_limit=LINE)
        )
        await feeder
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert state is DataState.NOMINAL
    assert data == (unstuff(message) if unstuffed else message)
    assert peak < 1.5 * len(message), peak
