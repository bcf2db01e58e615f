"""SLA tables: each ticket's status history (what the clock is computed from), its current
SLA state (what lists filter and sort by), and the events already raised (once each)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from mailticket.store.db import Base

_DB_NOW = text("CURRENT_TIMESTAMP")
# The longest calendar name the SLA file may give (each ticket's state names its calendar).
CALENDAR_NAME_MAX = 64


class TicketStatusChange(Base):
    __tablename__ = "mailticket_ticket_status_history"
    __table_args__ = (Index("ix_ticket_status_history", "ticket_id", "changed_at", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tticket_tickets.id"), nullable=False)
    status: Mapped[str] = mapped_column(String(20), nullable=False)
    changed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    # email | api | workflow | sla | system: who changed it
    source: Mapped[str | None] = mapped_column(String(16))


class TicketSla(Base):
    __tablename__ = "mailticket_ticket_sla"

    ticket_id: Mapped[int] = mapped_column(ForeignKey("tticket_tickets.id"), primary_key=True)
    policy: Mapped[str | None] = mapped_column(Text)  # None: no policy applies
    calendar: Mapped[str | None] = mapped_column(String(CALENDAR_NAME_MAX))
    # on_track | warning | breached: the worst of the targets (the badge)
    state: Mapped[str | None] = mapped_column(String(10), index=True)
    paused: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    first_response_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    first_response_due_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), index=True
    )
    first_response_state: Mapped[str | None] = mapped_column(String(10))
    resolution_due_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), index=True)
    resolution_state: Mapped[str | None] = mapped_column(String(10))
    # NULL: stale (a status, priority, customer or first response changed since).
    computed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The next instant the state can change by itself (a warning or due time of a running
    # target); NULL while nothing ticks. The sweep only looks at tickets due for a look.
    next_check_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), index=True)


class SlaEvent(Base):
    """One row per event ever raised for a ticket; the unique key makes "once" hold even
    with two schedulers racing. `occurrence` is "" for SLA events (once per ticket and
    target for good) and the quiet period's start for ticket_idle (once per silence)."""

    __tablename__ = "mailticket_sla_events"
    __table_args__ = (
        UniqueConstraint("ticket_id", "kind", "target", "occurrence", name="uq_sla_event"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tticket_tickets.id"), nullable=False)
    kind: Mapped[str] = mapped_column(String(16), nullable=False)  # sla_warning | sla_breached | ticket_idle
    target: Mapped[str] = mapped_column(String(16), nullable=False, default="")
    occurrence: Mapped[str] = mapped_column(String(40), nullable=False, default="")
    # When the threshold was crossed (not when we noticed).
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    # False: recorded but not raised (a warning overtaken by its breach before anyone saw
    # it, or a breach of a ticket already completed): workflows never see it.
    fired: Mapped[bool] = mapped_column(Boolean, nullable=False)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=_DB_NOW
    )
