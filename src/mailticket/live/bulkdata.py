"""The DATA of an LMTP/SMTP session read in bulk, with exactly aiosmtpd's semantics.

aiosmtpd (1.4) reads DATA line by line in Python: a `readuntil(b"\\r\\n")`, a limit check
and a list append per line, about 650 lines for a 47 KB message, which was a quarter of the
receiver's time under load. Here the same bytes are read in the chunks the socket delivers,
the end is found with one search per chunk, and the per-line checks are done over whole
chunks with C-speed `bytes` operations; a line-by-line walk runs only when a limit is
exceeded, to answer exactly what aiosmtpd would have answered.

What aiosmtpd does, and this keeps (tests/live/test_bulkdata.py compares the two):

- Lines end at CRLF only; a bare LF or CR is ordinary data. The first line that is exactly
  ".\\r\\n" ends the data (also as the very first line: an empty message).
- A line starting with "." loses that one dot (RFC 5321 4.5.2); nothing else is changed.
- The stream reader's limit is `line_length_limit`: a line whose text (before CRLF) is longer
  than that overruns it and makes the answer "500 Line too long" however large the message
  is so far. A line that fits the reader but is longer than `line_length_limit` with its CRLF
  counts towards the size first, then is "too long".
- `data_size_limit` counts every line with its CRLF, before unstuffing, not the final ".":
  beyond it the answer is "552 Error: Too much mail data". Whichever of the two happens first
  in the stream decides the answer; the rest of the data is read and dropped, so the session
  stays in step, and the envelope is reset as after any DATA.
- Bytes after the final "." (a client pipelining its next command) stay in the stream for
  the session's next command.

Not aiosmtpd's: a handler with a `handle_too_large` hook is handed, for a message over
`data_size_limit`, its first `keep_head` bytes (its header block, to quarantine) and its size,
and answers it; only that head is kept past the limit. Without the hook the answer is
aiosmtpd's 552.

Also not aiosmtpd's: with a budget of bytes in flight (inflight.py), each chunk waits for room
before it is kept; a message that got none in time is read to its end, dropped and answered
451 4.3.1 (the MTA tries again later).
"""

from __future__ import annotations

import asyncio
import enum
import io
import logging
from dataclasses import dataclass
from typing import Any

from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import MISSING, SMTP

from mailticket.live.envaddr import QuickAddressMixin
from mailticket.live.inflight import InFlight, Ticket

log = logging.getLogger(__name__)

_END = b"\r\n.\r\n"  # the terminating "." line, after the CRLF of the line before it
_READ_ALL = 1 << 30  # read() hands over everything buffered, so leftovers go back in order


class DataState(enum.Enum):
    NOMINAL = "nominal"
    TOO_LONG = "too long"  # a line over the line length limit
    TOO_MUCH = "too much"  # more than data_size_limit bytes
    NO_ROOM = "no room"  # the budget of bytes in flight had no room for it in time


@dataclass
class Overflow:
    """What is kept of a message over the size limit: its first `keep` bytes (unstuffed)
    and its size as `data_size_limit` counts it (all of it, read to the end)."""

    keep: int
    head: bytes = b""
    size: int = 0


def _head(out: io.BytesIO, buf: bytearray, keep: int, at_start: bool) -> bytes:
    """The message's first `keep` bytes: what `out` holds, then what `buf` holds (not yet
    unstuffed)."""
    head = out.getbuffer()[:keep].tobytes()
    if len(head) < keep:
        more = bytes(buf[: keep - len(head)])
        head += unstuff(more) if at_start else more.replace(b"\r\n.", b"\r\n")
    return head


def _short_lines(buf: bytearray, start: int, end: int, longest: int) -> bool:
    """True only if no line of buf[start:end] (whole lines) has more than `longest` bytes of
    text.

    A quick test that may say False for lines that do fit (then the caller measures them):
    every `step` bytes there is a CRLF, so two CRLFs are never more than 2 * step - 1 bytes
    apart. For mail that is several times fewer `find` calls than there are lines."""
    step = max((longest + 3) // 2, 1)
    find = buf.find
    for at in range(start, end - 2, step):
        if find(b"\r\n", at, min(at + step + 1, end)) < 0:
            return False
    return True


class _Lines:
    """The checks aiosmtpd applies line by line, applied to runs of whole lines."""

    def __init__(self, size_limit: int | None, line_limit: int, reader_limit: int) -> None:
        self.size_limit = size_limit or None  # aiosmtpd: 0 and None both mean no limit
        self.line_limit = line_limit
        self.reader_limit = reader_limit
        self.size = 0
        self.state = DataState.NOMINAL

    def check(self, buf: bytearray, start: int, end: int) -> None:
        """buf[start:end]: whole lines (each ending in CRLF) that follow those checked before
        (passed as bounds: the message is not copied for the check)."""
        if self.state is not DataState.NOMINAL or end <= start:
            return
        size = self.size + end - start
        # The longest text a line may have (before its CRLF) for both of aiosmtpd's checks.
        longest = min(self.line_limit - 2, self.reader_limit)
        if (self.size_limit is None or size <= self.size_limit) and (
            end - start <= longest
            or _short_lines(buf, start, end, longest)
            # The split's last piece, after the final CRLF, is empty.
            or max(map(len, buf[start:end].split(b"\r\n"))) <= longest
        ):
            self.size = size
            return
        self._walk(bytes(buf[start:end]))

    def _walk(self, lines: bytes) -> None:
        # aiosmtpd's order of checks for one line, only for the runs that break a limit.
        start = 0
        while start < len(lines):
            end = lines.index(b"\r\n", start) + 2
            length = end - start
            if length - 2 > self.reader_limit:  # the stream reader refuses it first
                self.state = DataState.TOO_LONG
                return
            self.size += length
            if self.size_limit is not None and self.size > self.size_limit:
                self.state = DataState.TOO_MUCH
                return
            if length > self.line_limit:
                self.state = DataState.TOO_LONG
                return
            start = end

    def too_much(self) -> bool:
        # A method, not `state is ...` at the call site: there mypy keeps the state it
        # narrowed before `check` changed it.
        return self.state is DataState.TOO_MUCH

    def check_partial(self, tail: int) -> None:
        """`tail`: the length of the start of a line whose CRLF has not come yet."""
        # Its text is at least tail - 1 bytes long (the last byte may be the CR).
        if self.state is DataState.NOMINAL and tail - 1 > self.reader_limit:
            self.state = DataState.TOO_LONG


async def read_data(
    reader: asyncio.StreamReader,
    *,
    size_limit: int | None,
    line_limit: int,
    reader_limit: int | None = None,
    unstuffed: bool = False,
    ticket: Ticket | None = None,
    overflow: Overflow | None = None,
) -> tuple[DataState, bytes]:
    """Reads DATA up to and with its final "." line. Returns the state and, when NOMINAL,
    the message as sent (dot-stuffed, without the final "." line); otherwise b"".

    `reader_limit`: the stream reader's line limit (aiosmtpd makes it `line_length_limit`).
    `unstuffed`: the message as `unstuff` makes it instead, unstuffed piece by piece as it
    is read: unstuffing it whole afterwards holds the message twice.
    `ticket`: the message's share of the budget of bytes in flight; each chunk takes room
    in it before it is kept (closed here when no room came in time).
    `overflow`: filled in when the message is over `size_limit` (TOO_MUCH), with its head
    and size; the rest of it is not kept.
    """
    checks = _Lines(size_limit, line_limit, line_limit if reader_limit is None else reader_limit)
    # NOMINAL: the message is written into `out` as its lines are checked, and handed over as
    # out.getvalue(), which is the buffer's own bytes object, not a copy (CPython's BytesIO).
    # Gathering it all in one bytearray and copying that into bytes at the end held it
    # twice: 136 MB for a 68 MB message (a 50 MB attachment).
    out = io.BytesIO()
    buf = bytearray()  # what is not in `out`: from the CRLF of the last line written on
    at_start = True  # buf[0] is the message's first byte
    checked = 0  # buf[:checked] is whole lines, checked
    received = 0  # bytes of DATA read so far (for an overflow's size)
    while True:
        chunk = await reader.read(_READ_ALL)
        received += len(chunk)
        if not chunk:
            # aiosmtpd's stream reader would raise IncompleteReadError (its session is
            # cancelled on EOF first); the session is over either way.
            raise ConnectionResetError("connection closed during DATA")
        if (
            ticket is not None
            and checks.state is DataState.NOMINAL
            and not await ticket.take(len(chunk))
        ):
            # Dropped like a message over a limit (below); what it held goes back now, not
            # after the rest of it has been read.
            checks.state = DataState.NO_ROOM
            ticket.close()
        searched = max(len(buf) - len(_END) + 1, 0)
        buf += chunk
        if at_start and buf[:3] == b".\r\n":
            end, rest = 0, 3
        else:
            found = buf.find(_END, searched)
            end, rest = (found + 2, found + len(_END)) if found >= 0 else (-1, -1)
        if end >= 0:
            if rest < len(buf):
                # The client's next command(s), pipelined: back in the stream, in order
                # (read() took everything buffered, and nothing runs in between).
                reader.feed_data(bytes(buf[rest:]))
            if checks.state is DataState.NOMINAL:
                checks.check(buf, checked, end)
                if overflow is not None and checks.too_much():
                    overflow.head = _head(out, buf, overflow.keep, at_start)
            if checks.state is not DataState.NOMINAL:
                if overflow is not None:
                    # What follows the end (its "." line, pipelined commands) is not data.
                    overflow.size = received - (len(buf) - end)
                return checks.state, b""
            _move(buf, end, out, unstuffed, at_start)
            return DataState.NOMINAL, out.getvalue()
        if checks.state is DataState.NOMINAL:
            last = buf.rfind(b"\r\n", checked)
            if last >= 0:
                checks.check(buf, checked, last + 2)
                checked = last + 2
            checks.check_partial(len(buf) - checked)
            if overflow is not None and checks.too_much():
                overflow.head = _head(out, buf, overflow.keep, at_start)
        if checks.state is DataState.NOMINAL:
            # The lines checked go to `out`, all but the last one's CRLF: the end marker
            # starts with it.
            if checked > 2:
                _move(buf, checked - 2, out, unstuffed, at_start)
                checked = 2
                at_start = False
        else:
            # Over a limit: what remains is only read to find the end. Keep enough of the
            # end of it to find an end marker that is split across two chunks.
            out = io.BytesIO()
            if len(buf) > len(_END) - 1:
                del buf[: len(buf) - (len(_END) - 1)]
                at_start = False
            checked = 0


def _move(buf: bytearray, size: int, out: io.BytesIO, unstuffed: bool, first: bool) -> None:
    """buf[:size] appended to `out` (unstuffed if asked) and removed from `buf`.

    buf[:size] starts at the message's start (`first`) or at the CRLF that ends the line
    before it, and is followed by a CRLF or by the final ".": each CRLF + "." that unstuffing
    removes a dot after lies whole inside one piece."""
    if unstuffed and (buf.find(b"\r\n.", 0, size) >= 0 or (first and buf[:1] == b".")):
        out.write(unstuff(bytes(buf[:size])) if first else buf[:size].replace(b"\r\n.", b"\r\n"))
    else:
        with memoryview(buf) as view:
            out.write(view[:size])
    del buf[:size]


def unstuff(data: bytes) -> bytes:
    """RFC 5321 4.5.2: a line that starts with "." loses that dot."""
    out = data.replace(b"\r\n.", b"\r\n")
    return out[1:] if out[:1] == b"." else out


class BulkDataMixin:
    """smtp_DATA for aiosmtpd's SMTP and LMTP that reads the data with `read_data`."""

    # The receiver's budget of bytes in flight, shared by its sessions (None: no budget).
    inflight: InFlight | None = None

    async def smtp_DATA(self, arg: str | None) -> None:
        server: Any = self  # aiosmtpd is untyped; this mixin is only used on its SMTP
        if "DATA" not in server._handle_hooks:
            # The deprecated process_message API: aiosmtpd's own code serves it.
            await super().smtp_DATA(arg)  # type: ignore[misc]
            return
        if await server.check_helo_needed():
            return
        if await server.check_auth_needed("DATA"):
            return
        assert server.envelope is not None
        if not server.envelope.rcpt_tos:
            await server.push("503 Error: need RCPT command")
            return
        if arg:
            await server.push("501 Syntax: DATA")
            return
        await server.push("354 End data with <CR><LF>.<CR><LF>")
        ticket = self.inflight.open() if self.inflight is not None else None
        try:
            await self._data(server, ticket)
        finally:
            # Stored, refused or dropped: the message's room goes back.
            if ticket is not None:
                ticket.close()

    async def _data(self, server: Any, ticket: Ticket | None) -> None:
        too_large = getattr(server.event_handler, "handle_too_large", None)
        overflow = (
            Overflow(server.event_handler.keep_head) if too_large is not None else None
        )
        try:
            state, original_content = await read_data(
                server._reader,
                size_limit=server.data_size_limit,
                line_limit=server.line_length_limit,
                unstuffed=True,
                ticket=ticket,
                overflow=overflow,
            )
        except asyncio.CancelledError:
            log.info("Connection lost during DATA")
            server._writer.close()
            raise
        if state is DataState.TOO_LONG:
            await server.push("500 Line too long (see RFC5321 4.5.3.1.6)")
            server._set_post_data_state()
            return
        if state is DataState.TOO_MUCH and too_large is not None:
            assert overflow is not None
            # The hook answers the extra LMTP recipients itself, as the DATA hook does.
            status = await too_large(server, server.session, server.envelope, overflow)
            server._set_post_data_state()
            await server.push(status)
            return
        if state is DataState.TOO_MUCH:
            await server.push("552 Error: Too much mail data")
            server._set_post_data_state()
            return
        if state is DataState.NO_ROOM:
            log.info("message refused: no room in LMTP_INFLIGHT_BYTES in time")
            status = "451 4.3.1 Too much mail in progress; try again later"
            # LMTP answers DATA once per recipient (RFC 2033 4.2).
            envelope = server.envelope
            assert envelope is not None
            recipients = len(envelope.rcpt_tos) if isinstance(server, LMTP) else 1
            for _ in range(recipients - 1):
                await server.push(status)
            server._set_post_data_state()
            await server.push(status)
            return
        content: str | bytes
        if server._decode_data:
            if server.enable_SMTPUTF8:
                content = original_content.decode("utf-8", errors="surrogateescape")
            else:
                try:
                    content = original_content.decode("ascii", errors="strict")
                except UnicodeDecodeError:
                    # The server refuses non-ASCII and the client sent it anyway.
                    await server.push("500 Error: strict ASCII mode")
                    return
        else:
            content = original_content
        server.envelope.content = content
        server.envelope.original_content = original_content
        status = await server._call_handler_hook("DATA")
        server._set_post_data_state()
        await server.push("250 OK" if status is MISSING else status)


class BulkSMTP(BulkDataMixin, QuickAddressMixin, SMTP):
    """aiosmtpd's SMTP server with the bulk DATA reader and the quick envelope addresses."""


class BulkLMTP(BulkDataMixin, QuickAddressMixin, LMTP):
    """aiosmtpd's LMTP server with the bulk DATA reader and the quick envelope addresses."""
