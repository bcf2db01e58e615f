"""Outlook's conversation index (the Thread-Index header, [MS-OXOMSG] 2.2.1.3).

Outlook and Exchange thread by it, and keep it when they drop In-Reply-To and References:
a 22-byte header block (6 bytes of FILETIME, then a 16-byte conversation GUID) and one 5-byte
child block per answer, base64 in the header. Every answer in one conversation, whoever
writes it, carries the same GUID.

We answer with a child of the customer's index (their Outlook keeps our answer in their
conversation), or with a new index whose GUID is made from the ticket when their mail had
none. Either way the ticket records the GUID as a thread reference (`conversation_ref`), and
an Outlook answer that lost every other sign of its ticket finds it by that (see resolver).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import secrets
from datetime import UTC, datetime

from mailticket.settings import Settings
from mailticket.store.models import Ticket

_HEADER = 22
_CHILD = 5
# 100 ns intervals from 1601-01-01 to 1970-01-01 (FILETIME's epoch to Unix's).
_EPOCH_OFFSET = 116_444_736_000_000_000
# More child blocks than this is no index a client wrote.
_MAX_CHILDREN = 200
# Our answer's index stays well inside one header line (RFC 5322 §2.1.1: 998 characters; an
# index cannot be folded): past this, it continues from the header block alone.
_MAX_ANSWER_BYTES = 600
# A made-up domain (RFC 2606 ".invalid"): this id can never be a real message's.
_REF_DOMAIN = "thread-index.invalid"


def _decode(value: str | None) -> bytes | None:
    if not value:
        return None
    try:
        raw = base64.b64decode("".join(value.split()), validate=True)
    except (binascii.Error, ValueError):
        return None
    if len(raw) < _HEADER or (len(raw) - _HEADER) % _CHILD:
        return None
    if (len(raw) - _HEADER) // _CHILD > _MAX_CHILDREN or not any(raw[6:_HEADER]):
        return None
    return raw


def conversation_ref(thread_index: str | None) -> str | None:
    """The conversation's GUID as a Message-ID-shaped key for the thread references, or None
    for a missing or malformed index."""
    raw = _decode(thread_index)
    return None if raw is None else f"<{raw[6:_HEADER].hex()}@{_REF_DOMAIN}>"


def ticket_seed(ticket: Ticket, settings: Settings) -> str:
    """What a ticket's own conversation GUID is made from: its number and our mail domain."""
    return f"{ticket.ticket_number}@{settings.mail_domain}"


def _filetime(moment: datetime) -> int:
    return int(moment.astimezone(UTC).timestamp() * 10_000_000) + _EPOCH_OFFSET


def answer_index(parent: str | None, seed: str, now: datetime) -> str:
    """The Thread-Index of our answer: a child block appended to the parent's index, or a new
    header block whose GUID is made from `seed` (the ticket) when the parent had none."""
    raw = _decode(parent)
    stamp = _filetime(now)
    if raw is None:
        guid = hashlib.sha256(seed.encode()).digest()[:16]
        return base64.b64encode((stamp >> 16).to_bytes(6, "big") + guid).decode("ascii")
    # Child block: a 1-bit code and 31 bits of time since the header's FILETIME (in units of
    # 2**18 ticks, or 2**23 with the code bit set when that does not fit), then 4 random bits
    # and a 4-bit sequence.
    if len(raw) + _CHILD > _MAX_ANSWER_BYTES:
        raw = raw[:_HEADER]
    delta = max(0, stamp - (int.from_bytes(raw[:6], "big") << 16))
    if delta >> 18 < 1 << 31:
        head = (delta >> 18) & 0x7FFF_FFFF
    else:
        head = (1 << 31) | ((delta >> 23) & 0x7FFF_FFFF)
    child = head.to_bytes(4, "big") + bytes([secrets.randbelow(256)])
    return base64.b64encode(raw + child).decode("ascii")
