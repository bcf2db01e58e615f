"""A ticket's participants as people changed them: added through the API, or removed.

Everyone else is derived from the thread itself (the requester, the From/To/Cc of customer
mail), so nothing has to be written while mail is ingested; a row here only records a
decision that mail cannot tell: "also send to this address" or "stop sending to it".
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, ForeignKey, Integer, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from mailticket.store.db import Base, ClippedString

_DB_NOW = text("CURRENT_TIMESTAMP")


class Participant(Base):
    __tablename__ = "mailticket_participants"
    __table_args__ = (UniqueConstraint("ticket_id", "address", name="uq_participant"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ticket_id: Mapped[int] = mapped_column(
        ForeignKey("tticket_tickets.id"), nullable=False, index=True
    )
    # Bare, lower-cased.
    address: Mapped[str] = mapped_column(ClippedString(320), nullable=False)
    name: Mapped[str | None] = mapped_column(Text)
    # added | removed
    state: Mapped[str] = mapped_column(String(8), nullable=False)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=_DB_NOW
    )
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=_DB_NOW
    )
