"""Ticket numbers TKT-YYYYMMDD-XXX: sequential per day, allocated atomically in the database."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from sqlalchemy.orm import Session

from mailticket.reading.ticketnumbers import format_ticket_number
from mailticket.store.batch import counter_upsert, current


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


__all__ = ["allocate_ticket_number"]
