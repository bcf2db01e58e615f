"""Ticket numbers TKT-YYYYMMDD-XXX: sequential per day, allocated atomically in the database."""

from __future__ import annotations

import re
from datetime import datetime
from zoneinfo import ZoneInfo

from sqlalchemy.orm import Session

from mailticket.batch import counter_upsert, current

PREFIX = "TKT"
# Past 999 a day the counter simply grows a digit; every matcher accepts 3 or more.
TICKET_NUMBER_RE = re.compile(r"TKT-(\d{8})-(\d{3,})", re.IGNORECASE)


def format_ticket_number(day: str, value: int) -> str:
    return f"{PREFIX}-{day}-{value:03d}"


def canonical_ticket_number(text: str) -> str | None:
    m = TICKET_NUMBER_RE.search(text)
    return f"{PREFIX}-{m.group(1)}-{m.group(2)}" if m else None


def allocate_ticket_number(session: Session, tz: ZoneInfo, now: datetime | None = None) -> str:
    """Bump today's counter with one upsert; the row lock serialises concurrent workers.

    The counter lives in the caller's transaction, so a rolled-back ticket gives its
    number back and numbers stay gap-free.
    """
    day = (now or datetime.now(tz)).astimezone(tz).strftime("%Y%m%d")
    batch = current(session)
    if batch is not None:
        # The batch locks the row once and writes the last value back when it ends.
        return format_ticket_number(day, batch.next_counter(day))
    value = session.execute(counter_upsert(session, day, 1)).scalar_one()
    return format_ticket_number(day, int(value))


__all__ = [
    "TICKET_NUMBER_RE",
    "allocate_ticket_number",
    "canonical_ticket_number",
    "format_ticket_number",
]
