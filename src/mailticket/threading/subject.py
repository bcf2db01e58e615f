"""Ticket numbers in subjects: "[TKT-…]" anywhere, or "Re: TKT-…" after reply prefixes."""

from __future__ import annotations

import re

from mailticket.reading.replyprefixes import REPLY_PREFIX
from mailticket.reading.ticketnumbers import canonical_ticket_number

# Reply/forward prefixes (`reading.replyprefixes`) plus list tags like "[support]" that
# mailers put in front; "Re[2]:" and "Re:Re:" chains included.
_LEADING_NOISE = re.compile(
    rf"^(?:\s*{REPLY_PREFIX}\s*|\s*\[[^\]]*\]\s*(?=\S))*",
    re.IGNORECASE,
)
_BRACKETED = re.compile(r"\[\s*(TKT-\d{8}-\d{3,})\s*\]", re.IGNORECASE)
_LEADING_NUMBER = re.compile(r"^(TKT-\d{8}-\d{3,})(?!\w)", re.IGNORECASE)


def strip_reply_prefixes(subject: str) -> str:
    return _LEADING_NOISE.sub("", subject).strip()


def subject_ticket_number(subject: str) -> str | None:
    if not subject:
        return None
    m = _BRACKETED.search(subject)
    if m:
        return canonical_ticket_number(m.group(1))
    # "[TKT-…]" was not there; accept a bare number only right after the reply prefixes,
    # so a subject that merely mentions some ticket in passing is not hijacked.
    rest = _LEADING_NOISE.sub("", subject.strip())
    m = _LEADING_NUMBER.match(rest)
    return canonical_ticket_number(m.group(1)) if m else None
