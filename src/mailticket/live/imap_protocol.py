"""aioimaplib's response framing, redone in linear time with each literal copied once.

aioimaplib 2.0.3 (`IMAP4ClientProtocol.data_received` → `_handle_responses`) recurses once
per line and copies the rest of the received chunk at every line and every literal end, so a
chunk of n small messages costs O(n × chunk); it formats every chunk into a debug string
whether or not debug logging is on; it gathers each literal in a bytearray that callers then
copy again; and `FetchCommand.wait_data` rescans the whole response at every line, which is
quadratic in the messages per FETCH.

`LinearProtocol` keeps aioimaplib's decisions line by line — the same `_handle_line` (tagged,
untagged, continuation, IDLE), the same rule for which command a line or literal belongs to,
the same IDLE flush at a chunk that ends on a line boundary — and changes only the framing:
one pass over each chunk by index, a literal handed over as one `bytes` object (a slice of the
chunk, or the buffer the chunks it spans were written into), and FETCH's parenthesis balance
kept incrementally.

A literal that spans chunks is written into an `io.BytesIO` as they come, and handed over as
its `getvalue()`: CPython's BytesIO keeps its content in a `bytes` object and getvalue() returns
that very object (trimmed in place) when nothing else shares it, so the literal is in memory
once while it arrives and once after. Keeping the chunks and joining them at the end held it
twice at the join: a 68 MB message (a 50 MB attachment) took 136 MB there.

Two differences. A literal in `Response.lines` is `bytes`, not `bytearray`, so it can no
longer be told from a line by its type; its position tells it (the line before it ends in
`{size}`), and `literal_positions` walks a response that way. And a literal announced at the
very end of a chunk by a line that leaves a FETCH's parentheses balanced is kept, where
aioimaplib forgets it and reads its bytes as lines (FetchCommand.wait_data looks only at the
parentheses).
"""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Iterator, Sequence
from typing import Any

import aioimaplib

_CRLF = b"\r\n"
# The literal's announced size, at the very end of a line (aioimaplib: `.*\{(\d+)\}$`).
_LITERAL_END = re.compile(rb"\{(\d+)\}\Z")
_FETCH_START = aioimaplib.FetchCommand.FETCH_MESSAGE_DATA_RE
_aioimaplib_log = logging.getLogger(aioimaplib.__name__ + ".aioimaplib")


def literal_size(line: bytes) -> int | None:
    """The size announced by a line ending in `{size}`, else None."""
    if not line.endswith(b"}"):
        return None
    m = _LITERAL_END.search(line)
    return int(m.group(1)) if m else None


def literal_positions(lines: Sequence[Any]) -> Iterator[tuple[int, int]]:
    """(index of the line announcing a literal, index of the literal) for a response's lines,
    skipping over each literal so its content is never taken for a line."""
    i, end = 0, len(lines)
    while i < end:
        line = lines[i]
        if isinstance(line, bytes | bytearray) and literal_size(bytes(line)) is not None:
            if i + 1 < end:
                yield i, i + 1
            i += 2
        else:
            i += 1


class LinearProtocol(aioimaplib.IMAP4ClientProtocol):  # type: ignore[misc]
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # A line not yet ended by CRLF (short: protocol text, never a literal).
        self._partial = bytearray()
        # The command the next line belongs to whatever it says (after a literal, or inside
        # an unfinished FETCH), as aioimaplib's `current_cmd`.
        self._current: aioimaplib.Command | None = None
        # A literal still arriving: its command, the bytes still due, what came so far.
        self._literal_cmd: aioimaplib.Command | None = None
        self._literal_due = 0
        self._literal_buf: io.BytesIO | None = None
        # FETCH parenthesis balance: (command, lines of it scanned, balance since its last
        # "n FETCH (" line); literals are skipped, as aioimaplib skips its bytearrays.
        self._fetch_scan: tuple[aioimaplib.Command | None, int, int] = (None, 0, 0)
        # The last line handled was followed by a literal that ended it.
        self._after_literal = False

    def data_received(self, d: bytes) -> None:
        if _aioimaplib_log.isEnabledFor(logging.DEBUG):
            _aioimaplib_log.debug("Received : %s", d)
        try:
            self._receive(d)
        except Exception:
            # A protocol error (aioimaplib's Abort on an unexpected tag) ends the connection;
            # nothing half-parsed is kept for a chunk that might still be delivered.
            self._partial.clear()
            self._literal_cmd, self._literal_buf, self._current = None, None, None
            raise

    def _receive(self, d: bytes) -> None:
        pos, end = 0, len(d)
        if self._literal_cmd is not None:
            pos = self._continue_literal(d)
            if self._literal_cmd is not None:
                return
            if pos == end:
                # aioimaplib neither flushes nor forgets the command here.
                return
        if self._partial:
            if self._partial.endswith(b"\r") and d[pos : pos + 1] == b"\n":
                line = bytes(self._partial[:-1])
                pos += 1
            else:
                found = d.find(_CRLF, pos)
                if found < 0:
                    self._partial += d[pos:]
                    return
                line = bytes(self._partial) + d[pos:found]
                pos = found + 2
            self._partial.clear()
            pos = self._line(line, d, pos)
            if self._chunk_ends_in_literal(pos == end):
                return
        while pos < end:
            found = d.find(_CRLF, pos)
            if found < 0:
                self._partial += d[pos:]
                return
            pos = self._line(d[pos:found], d, found + 2)
            if self._chunk_ends_in_literal(pos == end):
                return
        # The chunk ended on a line boundary: aioimaplib flushes (IDLE hands its lines to
        # the waiter here) and forgets the current command unless it waits for more.
        self._flush()
        if self._current is not None and not self._waits(self._current):
            self._current = None

    def _flush(self) -> None:
        pending = self.pending_sync_command
        if pending is not None:
            pending.flush()

    def _chunk_ends_in_literal(self, at_end: bool) -> bool:
        """True when the chunk is used up inside or right at the end of a literal; then,
        as aioimaplib, flush only if none of the literal's bytes came in this chunk, and
        keep the literal's command for what follows."""
        if self._literal_cmd is not None:
            if self._literal_buf is None:
                self._flush()
            return True
        return at_end and self._after_literal

    def _line(self, line: bytes, d: bytes, pos: int) -> int:
        """Handle one line (and the literal it announces, as far as `d` holds it); returns
        where the next line starts in `d`."""
        self._after_literal = False
        cmd = self._handle_line(line, self._current)
        size = literal_size(line)
        if size is not None:
            if cmd is None:
                cmd = aioimaplib.Command("NIL", "unused")
            cmd._reset_timer()
            available = len(d) - pos
            if available >= size:
                self._deliver_literal(cmd, d[pos : pos + size])
                # aioimaplib ends an empty literal like a line (a chunk ending there
                # flushes and may forget the command), a non-empty one otherwise.
                self._after_literal = size > 0
                return pos + size
            self._literal_cmd, self._literal_due = cmd, size - available
            self._literal_buf = None
            if available:
                self._literal_buf = io.BytesIO()
                self._literal_buf.write(memoryview(d)[pos:])
            return len(d)
        self._current = cmd if cmd is not None and self._waits(cmd) else None
        return pos

    def _continue_literal(self, d: bytes) -> int:
        cmd = self._literal_cmd
        assert cmd is not None
        take = min(self._literal_due, len(d))
        if self._literal_buf is None:
            self._literal_buf = io.BytesIO()
        self._literal_buf.write(memoryview(d)[:take])
        self._literal_due -= take
        cmd._reset_timer()
        if self._literal_due:
            return take
        buf, self._literal_buf, self._literal_cmd = self._literal_buf, None, None
        # No copy: the buffer's own bytes object (see the module's docstring).
        self._deliver_literal(cmd, buf.getvalue())
        return take

    def _deliver_literal(self, cmd: aioimaplib.Command, data: bytes) -> None:
        if isinstance(cmd, aioimaplib.FetchCommand):
            self._scan(cmd)  # lines before the literal counted, the literal itself is not
            scanned_cmd, scanned, balance = self._fetch_scan
            cmd.append_to_resp(data)
            self._fetch_scan = (scanned_cmd, scanned + 1, balance)
        else:
            cmd.append_to_resp(data)
        # The next line belongs to this command whatever it looks like, and a chunk ending
        # right here neither flushes nor forgets it (both as aioimaplib).
        self._current = cmd
        self._after_literal = True

    def _waits(self, cmd: aioimaplib.Command) -> bool:
        if isinstance(cmd, aioimaplib.FetchCommand):
            return self._scan(cmd) != 0
        return bool(cmd.wait_data())

    def _scan(self, cmd: aioimaplib.Command) -> int:
        """FetchCommand.wait_data's parenthesis count over the lines since the last
        "n FETCH (" line, kept up to date by scanning only the lines added since last time."""
        scanned_cmd, scanned, balance = self._fetch_scan
        if scanned_cmd is not cmd:
            scanned, balance = 0, 0
        lines = cmd._resp_lines
        for line in lines[scanned:]:
            if not isinstance(line, bytes):
                continue
            if _FETCH_START.match(line):
                balance = 0
            balance += line.count(b"(") - line.count(b")")
        self._fetch_scan = (cmd, len(lines), balance)
        return balance
