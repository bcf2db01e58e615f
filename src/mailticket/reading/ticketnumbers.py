"""The shape of a ticket number, TKT-YYYYMMDD-XXX: how one is written and found in text.

Reading, threading and ticketing all need it; allocating a new one is `ticketing.numbering`.
"""

from __future__ import annotations

import re

PREFIX = "TKT"
# Past 999 a day the counter simply grows a digit; every matcher accepts 3 or more.
TICKET_NUMBER_RE = re.compile(r"TKT-(\d{8})-(\d{3,})", re.IGNORECASE)


def format_ticket_number(day: str, value: int) -> str:
    return f"{PREFIX}-{day}-{value:03d}"


def canonical_ticket_number(text: str) -> str | None:
    """The first ticket number in `text`, written the way we issue it. The day's counter is
    a number: "-0042" and "-042" are one ticket, as are "-01100" and "-1100"."""
    # Most text (every customer's Message-ID) has none: a substring test says so in a
    # quarter of the regex's time. Exact: every string the pattern matches, lower-cased,
    # holds "tkt-" (the one other letter it takes for k, the Kelvin sign, lowers to "k").
    if "tkt-" not in text.lower():
        return None
    m = TICKET_NUMBER_RE.search(text)
    return format_ticket_number(m.group(1), int(m.group(2))) if m else None


__all__ = ["PREFIX", "TICKET_NUMBER_RE", "canonical_ticket_number", "format_ticket_number"]
