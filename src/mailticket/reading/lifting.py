"""Big base64 bodies kept out of the stdlib parser's way.

The stdlib parser reads a message as one str, splits it into lines and joins each part's
lines again, and decoding a part makes bytes of that str: a 50 MB attachment was held four
or five times over at once (800 MB of RSS), and pushing its million lines through the
parser cost more time than the rest of the message. So before parsing, each big body that
is nothing but base64 under a `Content-Transfer-Encoding: base64` header is replaced by a
short token that is itself base64; the parser sees a small message, and when the walk meets
a token it decodes the body straight from the original bytes (`binascii` reads a slice of
them in place). The tree, the text and every attachment come out as without it: only bodies
that decode exactly the same way are lifted (strict base64 alphabet and padding, ending at
a delimiter line or the end of the message).
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
from dataclasses import dataclass, field

# Smaller bodies cost the parser little; below this nothing is scanned at all.
LIFT_MIN = 64 * 1024

_BLANK_LINE = re.compile(rb"\r?\n\r?\n")
# A run of base64 lines: the alphabet, line breaks, and padding only at its very end.
_BASE64_RUN = re.compile(rb"[A-Za-z0-9+/\r\n]*(?:={1,2}[\r\n]*)?")
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
        return binascii.a2b_base64(memoryview(self.source)[start:end])


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


def _strict(data: bytes, start: int, end: int) -> bool:
    """The run decodes to the same bytes by any decoder: whole quads, padding last."""
    letters = end - start - data.count(b"\n", start, end) - data.count(b"\r", start, end)
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
        run = _BASE64_RUN.match(raw, body)
        end = run.end() if run else body
        scan = max(end, body)
        if end - body < LIFT_MIN or not _RUN_END.match(raw, end):
            continue
        headers = _headers_before(raw, blank.start())
        if headers is None or not _BASE64_CTE.search(headers) or _CONTAINER.search(headers):
            continue
        if not _strict(raw, body, end):
            continue
        token = b"mailticket lifted body %d %s" % (len(lifted.spans), nonce)
        lifted.spans[token] = (body, end)
        kept += [raw[pos:body], base64.b64encode(token), b"\n"]
        pos = end
    if not lifted.spans:
        return raw, None
    kept.append(raw[pos:])
    return b"".join(kept), lifted
