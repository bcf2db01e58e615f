"""Ticket numbers TKT-YYYYMMDD-XXX: sequential per day, allocated atomically in the database."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from mailticket.reading.ticketnumbers import format_ticket_number
from mailticket.store.batch import Batch


def allocate_ticket_number(work: Batch, tz: ZoneInfo, now: datetime | None = None) -> str:
    """The next number of the day. The unit of work locks the day's counter row once (the
    lock serialises concurrent workers until commit) and writes the last value back when
    it is finished; a rolled-back ticket gives its number back, so numbers stay gap-free.
    """
    day = (now or datetime.now(tz)).astimezone(tz).strftime("%Y%m%d")
    return format_ticket_number(day, work.next_counter(day))


__all__ = ["allocate_ticket_number"]
