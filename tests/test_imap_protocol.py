"""LinearProtocol against aioimaplib's own protocol: the same server bytes, cut into chunks
every possible way, give the same responses, the same IDLE batches and the same order of
events; only a literal's type differs (bytes, not bytearray). The live counterpart (real
Dovecot) is tests/live/test_imap_literals.py."""

from __future__ import annotations

import asyncio
import random
import tracemalloc
from collections.abc import Callable, Iterator
from typing import Any

import aioimaplib
import pytest

from mailticket.live.imap_protocol import LinearProtocol, literal_positions


class _Transport:
    def __init__(self) -> None:
        self.written: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.written.append(bytes(data))


def _normal(lines: list[Any]) -> list[tuple[str, bytes]]:
    return [(type(x).__name__ if isinstance(x, str) else "b", bytes(x)) for x in lines]


def _fetch() -> aioimaplib.Command:
    return aioimaplib.FetchCommand("A1", "1:*", "(UID BODY.PEEK[])", prefix="UID")


TRICKY = b"line {5}\r\nabc}\r\n(unbalanced ( paren\r\nA1 OK not the end\r\n* 9 FETCH (UID 9 {3}\r\n"
EIGHT_BIT = bytes(range(256)) + b"\r\n" + bytes(range(255, -1, -1))


def _fetch_stream() -> bytes:
    parts = [
        b"* 1 FETCH (UID 11 BODY[] {%d}\r\n" % len(TRICKY) + TRICKY + b")\r\n",
        b"* 2 FETCH (UID 12 BODY[TEXT] {0}\r\n BODY[HEADER.FIELDS (X-NONE)] {2}\r\n\r\n)\r\n",
        b"* 3 FETCH (UID 13 FLAGS (\\Seen) BODY[] {%d}\r\n" % len(EIGHT_BIT) + EIGHT_BIT + b")\r\n",
        b"* 4 FETCH (UID 14 BODY[] {1}\r\n})\r\n",
        b"* 7 EXPUNGE\r\n",
        b"A1 OK Fetch completed (0.001 + 0.000 secs).\r\n",
    ]
    return b"".join(parts)


def _cuts(data: bytes) -> Iterator[list[bytes]]:
    yield [data]
    for pos in range(1, len(data)):
        yield [data[:pos], data[pos:]]
    for size in (1, 2, 3, 5, 8, 13):
        yield [data[i : i + size] for i in range(0, len(data), size)]
    rnd = random.Random(12)
    for _ in range(50):
        chunks, pos = [], 0
        while pos < len(data):
            step = rnd.randint(1, 40)
            chunks.append(data[pos : pos + step])
            pos += step
        yield chunks


def _run(
    protocol_cls: type[aioimaplib.IMAP4ClientProtocol],
    command: Callable[[], aioimaplib.Command],
    chunks: list[bytes],
) -> tuple[aioimaplib.IMAP4ClientProtocol, aioimaplib.Command]:
    proto = protocol_cls(asyncio.get_running_loop(), None)
    proto.connection_made(_Transport())
    proto.state = aioimaplib.SELECTED
    cmd = command()
    proto.pending_sync_command = cmd
    for chunk in chunks:
        proto.data_received(chunk)
    return proto, cmd


async def test_fetch_responses_match_aioimaplib_for_every_cut() -> None:
    data = _fetch_stream()
    expected = None
    for chunks in _cuts(data):
        _, theirs = _run(aioimaplib.IMAP4ClientProtocol, _fetch, chunks)
        _, ours = _run(LinearProtocol, _fetch, chunks)
        assert theirs.response.result == ours.response.result == "OK"
        assert _normal(ours.response.lines) == _normal(theirs.response.lines), chunks
        expected = expected or _normal(ours.response.lines)
        assert _normal(ours.response.lines) == expected
        # Literals are handed over as bytes; position, not type, tells them from lines.
        assert [type(ours.response.lines[j]) for _, j in literal_positions(ours.response.lines)] \
            == [bytes] * 5


async def test_literal_positions_skip_literal_content() -> None:
    _, ours = _run(LinearProtocol, _fetch, [_fetch_stream()])
    lines = ours.response.lines
    found = [(bytes(lines[i]), lines[j]) for i, j in literal_positions(lines)]
    assert found[0] == (b"1 FETCH (UID 11 BODY[] {%d}" % len(TRICKY), TRICKY)
    assert found[1] == (b"2 FETCH (UID 12 BODY[TEXT] {0}", b"")
    assert found[3][1] == EIGHT_BIT
    assert found[4][1] == b"}"
    assert len(found) == 5


def _idle_queue() -> asyncio.Queue[Any]:
    return asyncio.Queue()


async def test_idle_batches_and_tagged_end_match_aioimaplib() -> None:
    data = (
        b"+ idling\r\n* 4 EXISTS\r\n* 1 RECENT\r\n* 2 FETCH (FLAGS (\\Seen))\r\n"
        b"* 3 FETCH (UID 7 BODY[] {3}\r\nabc)\r\n* 4 FETCH (UID 8 BODY[] {0}\r\n)\r\n"
        b"* 5 EXISTS\r\nA1 OK Idle completed (0.001 + 1.000 secs).\r\n"
    )
    for chunks in _cuts(data):
        got = []
        for cls in (aioimaplib.IMAP4ClientProtocol, LinearProtocol):
            queue = _idle_queue()
            proto, cmd = _run(cls, lambda q=queue: aioimaplib.IdleCommand("A1", q), chunks)
            batches = []
            while not queue.empty():
                batches.append(queue.get_nowait())
            got.append((proto._idle_event.is_set(), batches, cmd.response.result,
                        _normal(cmd.response.lines)))
        assert got[0] == got[1], chunks
        assert got[1][0] is True and got[1][2] == "OK"


async def test_untagged_literal_without_command_and_other_commands_match() -> None:
    data = (
        b"* LIST () \"/\" {7}\r\nIN}BOX\r\n\r\n* OK [UIDVALIDITY 42] UIDs valid\r\n"
        b"* LIST () \"/\" {0}\r\n* 2 RECENT\r\n"
        b"* 3 EXISTS\r\nA1 OK [READ-WRITE] Select completed.\r\n"
    )
    for chunks in _cuts(data):
        results = []
        for cls in (aioimaplib.IMAP4ClientProtocol, LinearProtocol):
            _, cmd = _run(cls, lambda: aioimaplib.Command("SELECT", "A1", "INBOX"), chunks)
            results.append((cmd.response.result, _normal(cmd.response.lines)))
        assert results[0] == results[1], chunks


async def test_big_literal_in_many_chunks_is_one_bytes_object() -> None:
    body = bytes(random.Random(3).getrandbits(8) for _ in range(1 << 16)) * 64  # 4 MB
    data = b"* 1 FETCH (UID 5 BODY[] {%d}\r\n" % len(body) + body + b")\r\nA1 OK done\r\n"
    chunks = [data[i : i + 65536 + 7] for i in range(0, len(data), 65536 + 7)]
    _, ours = _run(LinearProtocol, _fetch, chunks)
    assert ours.response.result == "OK"
    assert type(ours.response.lines[1]) is bytes and ours.response.lines[1] == body


async def test_a_fetch_left_open_keeps_waiting_for_its_lines() -> None:
    """Inside an unfinished FETCH (parentheses open) a line goes to the FETCH whatever it
    starts with, as in aioimaplib; the tagged line still ends it."""
    data = b"* 1 FETCH (UID 5 BODY[] {2}\r\nab FLAGS (\r\n* \\Seen))\r\nA1 OK done\r\n"
    for chunks in _cuts(data):
        _, theirs = _run(aioimaplib.IMAP4ClientProtocol, _fetch, chunks)
        _, ours = _run(LinearProtocol, _fetch, chunks)
        assert _normal(ours.response.lines) == _normal(theirs.response.lines)


@pytest.mark.parametrize("size", [0, 1, 4096])
async def test_literal_ending_exactly_at_chunk_end(size: int) -> None:
    body = b"x" * size
    head = b"* 1 FETCH (UID 5 BODY[] {%d}\r\n" % size
    chunks = [head + body, b")\r\n", b"A1 OK done\r\n"]
    _, theirs = _run(aioimaplib.IMAP4ClientProtocol, _fetch, chunks)
    _, ours = _run(LinearProtocol, _fetch, chunks)
    assert _normal(ours.response.lines) == _normal(theirs.response.lines)
    assert ours.response.lines[1] == body


async def test_literal_announced_at_a_chunk_end_inside_a_balanced_fetch_is_kept() -> None:
    """Where aioimaplib differs, on purpose: its FetchCommand.wait_data looks only at the
    parentheses, so a literal announced by a balanced line at the very end of a chunk is
    forgotten and its bytes are read as a line (here: dropped as unknown data).
    LinearProtocol keeps the literal."""
    chunks = [b'* LIST () "/" {3}\r\n', b"a(b\r\n* 1 FETCH (UID 5 BODY[] {1}\r\nx)\r\n",
              b"A1 OK done\r\n"]
    _, theirs = _run(aioimaplib.IMAP4ClientProtocol, _fetch, chunks)
    _, ours = _run(LinearProtocol, _fetch, chunks)
    expected = [b'LIST () "/" {3}', b"a(b", b"1 FETCH (UID 5 BODY[] {1}", b"x", b")", b"done"]
    assert [bytes(x) for x in theirs.response.lines] == expected[:1] + expected[2:]
    assert [bytes(x) for x in ours.response.lines] == expected


def _small_cuts(data: bytes, rng: random.Random, fixed: tuple[int, ...]) -> list[bytes]:
    """`data` in reads of 1 byte to 16 KB, as a slow link or TLS records deliver it, also
    cut at each position in `fixed`."""
    cuts = set(fixed)
    pos = 0
    while pos < len(data):
        pos += rng.randint(1, 16384)
        cuts.add(pos)
    edges = sorted(c for c in cuts if 0 < c < len(data))
    return [data[a:b] for a, b in zip([0, *edges], [*edges, len(data)], strict=True)]


async def test_six_mb_literal_in_many_small_chunks_is_handed_over_exactly() -> None:
    """The literal, and the one after it in the same FETCH, come out as the exact bytes
    (and as aioimaplib gives them), whether the literal starts a read of its own or shares
    one with the line announcing it."""
    rng = random.Random(9)
    big = rng.randbytes(6 << 20)
    small = b"Subject: after\r\n\r\n"
    head = b"* 1 FETCH (UID 5 BODY[] {%d}\r\n" % len(big)
    data = (head + big + b" BODY[HEADER] {%d}\r\n" % len(small) + small
            + b")\r\nA1 OK done\r\n")
    for fixed in ((len(head),), (len(head) - 1, len(head) + len(big)), ()):
        chunks = _small_cuts(data, rng, fixed)
        assert len(chunks) > 700
        _, ours = _run(LinearProtocol, _fetch, chunks)
        assert ours.response.result == "OK"
        found = [ours.response.lines[j] for _, j in literal_positions(ours.response.lines)]
        assert [type(x) for x in found] == [bytes, bytes]
        assert found[0] == big and found[1] == small
        if not fixed:
            _, theirs = _run(aioimaplib.IMAP4ClientProtocol, _fetch, chunks)
            assert _normal(ours.response.lines) == _normal(theirs.response.lines)


async def test_a_literal_over_many_chunks_is_held_once_while_it_arrives() -> None:
    """Memory, counted by tracemalloc (Python's own allocations, not RSS): the chunks a
    literal spans are not kept until its end to be joined there, which held it twice (a
    68 MB message took 136 MB in the reader)."""
    body = random.Random(4).randbytes(6 << 20)
    data = b"* 1 FETCH (UID 5 BODY[] {%d}\r\n" % len(body) + body + b")\r\nA1 OK done\r\n"
    proto = LinearProtocol(asyncio.get_running_loop(), None)
    proto.connection_made(_Transport())
    proto.state = aioimaplib.SELECTED
    cmd = _fetch()
    proto.pending_sync_command = cmd
    tracemalloc.start()
    try:
        for pos in range(0, len(data), 65536):
            # A new bytes object per read, dropped after the call, as a transport hands them.
            proto.data_received(data[pos : pos + 65536])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert cmd.response.result == "OK" and cmd.response.lines[1] == body
    assert peak < 1.5 * len(body), peak
