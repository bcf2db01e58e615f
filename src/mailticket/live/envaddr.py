"""MAIL FROM / RCPT TO addresses parsed as aiosmtpd parses them, the common form without
its cost.

aiosmtpd (1.4) reads the address of MAIL FROM, RCPT TO and VRFY with the email package's
header parser (`get_angle_addr`, or `get_addr_spec` without angle brackets), which builds a
token tree per address, and it defines a typing.Protocol class on every call (an ABCMeta
class creation); together about 7% of the receiver's time under load, for two addresses
per message.

Almost every MTA sends `<local@domain>`, both parts ASCII dot-atoms, maybe followed by
parameters (`SIZE=…`, `BODY=8BITMIME`): for that form the header parser's answer is known
without it. The address is the text between the brackets; after the ">" the parser skips
white space (all of Python's `str.isspace`, as `get_fws` does with `lstrip`) when the text
right after the ">" starts with a space or a tab, and the rest is the parameters. The null
sender `<>` is the address "<>" with everything after it, untouched. Anything else (quoted
local parts, comments, source routes, domain literals, non-ASCII, an RFC 2047 "=?" that the
parser would try to decode, no angle brackets, a missing ">") goes to aiosmtpd's own parser,
so what is accepted and refused stays exactly aiosmtpd's (tests/live/test_envaddr.py compares
the two over many forms).
"""

from __future__ import annotations

import re
from typing import Any

from aiosmtpd.smtp import SMTP

# RFC 5322 atext, ASCII only: what the header parser takes as a dot-atom's atoms and returns
# unchanged (no quoting: none of these is a special).
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_DOT_ATOM = rf"{_ATEXT}(?:\.{_ATEXT})*"
_ANGLE_ADDR = re.compile(rf"<(?:({_DOT_ATOM})@({_DOT_ATOM}))?>")


def plain_angle_addr(arg: str) -> tuple[str, str] | None:
    """(address, rest) as aiosmtpd's `_getaddr` returns them, before its local-part limit,
    for `<local@domain>` (dot-atoms) and `<>`; None for any other form."""
    match = _ANGLE_ADDR.match(arg)
    if match is None:
        return None
    rest = arg[match.end():]
    if match.group(1) is None:
        # get_angle_addr returns right after "<>", without skipping what follows.
        return "<>", rest
    address = match.group(0)[1:-1]
    if "=?" in address:
        return None  # the parser tries it as an encoded word (RFC 2047)
    if rest[:1] in (" ", "\t"):
        rest = rest.lstrip()
    if rest[:1] == "(":
        return None  # a comment, which the parser skips
    return address, rest


class QuickAddressMixin:
    """aiosmtpd's `_getaddr` (MAIL FROM, RCPT TO, VRFY) with `plain_angle_addr` first."""

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        server: Any = self  # only mixed into aiosmtpd's SMTP
        quick = plain_angle_addr(arg)
        if quick is None:
            return SMTP._getaddr(server, arg)
        address, rest = quick
        limit = server.local_part_limit
        # aiosmtpd's own limit check, on the part before the last "@".
        if limit and len(address.rpartition("@")[0]) > limit:
            return None, None
        return address, rest
