"""Big base64 bodies kept out of the stdlib parser's way.

The stdlib parser reads a message as one str, splits it into lines and joins each part's
lines again, and decoding a part makes bytes of that str: a 50 MB attachment was held four
or five times over at once (800 MB of RSS), and pushing its million lines through the
parser cost more time than the rest of the message. So before parsing, each big body that
is nothing but base64 under a `Content-Transfer-Encoding: base64` header is replaced by a
short token that is itself base64; the parser sees a small message, and when the walk meets
a token it decodes the body straight from the original bytes (a slice of them read in
place). The tree, the text and every attachment come out as without it: only bodies
that decode exactly the same way are lifted (strict base64 alphabet and padding, ending at
a delimiter line or the end of the message).
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
from dataclasses import dataclass, field

import pybase64

# Smaller bodies cost the parser little; below this nothing is scanned at all.
LIFT_MIN = 64 * 1024

_BLANK_LINE = re.compile(rb"\r?\n\r?\n")
# A run of base64 lines: the alphabet and line breaks, then padding only at its very end.
_LETTERS = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_PADDING = re.compile(rb"(?:={1,2}[\r\n]*)?")
# What `_letter_run` looks at first: most runs (a text body's first line) end within it.
_PROBE = 256
_STEP = 64 * 1024
# After the run: a delimiter line (the run ends with its line break) or the message's end.
_RUN_END = re.compile(rb"(?<=\n)--|\s*\Z")
_PART_START = re.compile(rb"\n--[^\r\n]*\r?\n")
_HEADER_BLOCK = re.compile(rb"(?:(?:[!-9;-~]+:|[ \t])[^\n]*\n)*(?:[!-9;-~]+:|[ \t])[^\n]*")
_BASE64_CTE = re.compile(rb"^content-transfer-encoding:[ \t]*base64[ \t]*\r?$", re.I | re.M)
_CONTAINER = re.compile(rb"^content-type:[ \t]*(?:multipart|message)/", re.I | re.M)


@dataclass
class Lifted:
    """The original bytes, and where each lifted body sits in them, by its token."""

    source: bytes
    spans: dict[bytes, tuple[int, int]] = field(default_factory=dict)

    def payload(self, decoded: bytes) -> bytes | None:
        """The real body behind a token the parser decoded (None: not a token)."""
        span = self.spans.get(decoded)
        if span is None:
            return None
        start, end = span
        body = memoryview(self.source)[start:end]
        # pybase64 (SIMD) decodes about five times as fast as binascii, which was a tenth
        # of bulk ingest's parsing; like binascii's default it skips the line breaks in
        # place, without a cleaned copy of the body (a 50 MB body peaks at the decoded
        # bytes, as before). A lifted body is strict base64, which both decode alike; if
        # pybase64 refuses one all the same, binascii gives today's answer, error included.
        try:
            return pybase64.b64decode(body, validate=False)
        except ValueError:  # binascii.Error is one
            return binascii.a2b_base64(body)


def _headers_before(data: bytes, blank: int) -> bytes | None:
    """The header block that ends at the blank line at `blank` (None: what precedes it is
    body text, not a part's headers)."""
    start = 0
    delimiter = data.rfind(b"\n--", 0, blank)
    if delimiter >= 0 and (found := _PART_START.match(data, delimiter)) is not None:
        start = found.end()
    for gap in (b"\n\n", b"\n\r\n"):
        if (found_gap := data.rfind(gap, 0, blank)) >= 0:
            start = max(start, found_gap + len(gap))
    return data[start:blank] if _HEADER_BLOCK.fullmatch(data, start, blank) else None


def _letter_run(data: bytes, start: int) -> tuple[int, int]:
    """Where the run of base64 letters and line breaks from `start` ends, and how many line
    breaks it holds. One `bytes.translate` pass per slice answers both (deleting the letters
    leaves the line breaks and whatever ends the run): a regex stepping through the run and
    two counts over it cost three times as much, on bodies of megabytes."""
    pos, breaks, size = start, 0, _PROBE
    while True:
        chunk = data[pos : pos + size]
        others = chunk.translate(None, _LETTERS)
        rest = others.lstrip(b"\r\n")
        if rest:
            # The first byte of `rest` is the first one of the chunk that ends the run, so
            # its first occurrence in the chunk is where the run ends.
            return pos + chunk.find(rest[:1]), breaks + len(others) - len(rest)
        breaks += len(others)
        pos += len(chunk)
        if len(chunk) < size:
            return pos, breaks  # the end of the data
        size = _STEP


def _base64_run(data: bytes, start: int) -> tuple[int, int]:
    """The end of the base64 run at `start` (letters, line breaks, then 1-2 padding
    characters and line breaks), and how many letters and padding characters it holds."""
    letters_end, breaks = _letter_run(data, start)
    padded = _PADDING.match(data, letters_end)  # an optional group: it always matches
    end = padded.end() if padded else letters_end
    breaks += data.count(b"\n", letters_end, end) + data.count(b"\r", letters_end, end)
    return end, end - start - breaks


def _strict(letters: int) -> bool:
    """The run decodes to the same bytes by any decoder: whole quads, padding last."""
    return letters % 4 == 0 and letters > 0


def lift(raw: bytes) -> tuple[bytes, Lifted | None]:
    """`raw` with its big base64 bodies replaced by tokens, and how to get them back."""
    if len(raw) < LIFT_MIN:
        return raw, None
    lifted = Lifted(raw)
    kept: list[bytes] = []
    pos = 0
    nonce = secrets.token_hex(8).encode()
    scan = 0
    while (blank := _BLANK_LINE.search(raw, scan)) is not None:
        body = blank.end()
        end, letters = _base64_run(raw, body)
        scan = end
        if end - body < LIFT_MIN or not _RUN_END.match(raw, end):
            continue
        headers = _headers_before(raw, blank.start())
        if headers is None or not _BASE64_CTE.search(headers) or _CONTAINER.search(headers):
            continue
        if not _strict(letters):
            continue
        token = b"mailticket lifted body %d %s" % (len(lifted.spans), nonce)
        lifted.spans[token] = (body, end)
        kept += [raw[pos:body], base64.b64encode(token), b"\n"]
        pos = end
    if not lifted.spans:
        return raw, None
    kept.append(raw[pos:])
    return b"".join(kept), lifted
