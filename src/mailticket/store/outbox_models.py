"""Tables of the durable outbox (outgoing mail and backend pushes) and outgoing-mail indexes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime, ForeignKey, Index, Integer, LargeBinary, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from mailticket.store.db import Base, JSONType
from mailticket.store.models import EmailLog, Ticket

# CURRENT_TIMESTAMP works as a column default on both SQLite and PostgreSQL (now() does not
# exist in SQLite); rows written from Python also carry an explicit UTC value.
_DB_NOW = text("CURRENT_TIMESTAMP")


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(moment: datetime) -> datetime:
    # SQLite keeps no zone: every stored and compared time must be UTC to sort correctly.
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


class OutboxItem(Base):
    """One side effect to perform outside the database (send a mail, call a backend).

    Written in the same transaction as the ticket change that caused it, so the effect is
    neither lost (crash after commit) nor performed for a rolled-back change.
    """

    __tablename__ = "mailticket_outbox"
    __table_args__ = (Index("ix_outbox_due", "status", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # smtp | backend
    kind: Mapped[str] = mapped_column(String(16), nullable=False)
    target: Mapped[str] = mapped_column(String(64), nullable=False)
    operation: Mapped[str] = mapped_column(String(64), nullable=False)
    idempotency_key: Mapped[str] = mapped_column(String(255), nullable=False, unique=True)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False)
    # The exact bytes an outgoing mail is sent as (bytea / BLOB, not base64 in the JSON): a
    # retry sends the identical message. None for items that are not a message.
    message: Mapped[bytes | None] = mapped_column(LargeBinary)
    # pending | in_flight | done | dead
    status: Mapped[str] = mapped_column(String(10), nullable=False, default="pending")
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, default=utcnow
    )
    last_error: Mapped[str | None] = mapped_column(Text)
    ticket_id: Mapped[int | None] = mapped_column(ForeignKey("tticket_tickets.id"), index=True)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, default=utcnow, server_default=_DB_NOW
    )
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True),
        nullable=False,
        default=utcnow,
        onupdate=utcnow,
        server_default=_DB_NOW,
    )
    done_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    # Never read: orders the INSERTs when a batch flushes a ticket and its outbox item together.
    ticket_row: Mapped[Ticket | None] = relationship(
        "Ticket", foreign_keys=[ticket_id], lazy="raise", viewonly=False, cascade=""
    )


# The auto-reply rate limit counts our recent mail to one recipient; without this index that
# is a scan of the whole log on every inbound message.
ix_email_log_out_to = Index(
    "ix_email_log_out_to",
    EmailLog.email_to,
    EmailLog.created_at,
    postgresql_where=text("direction = 'out'"),
    sqlite_where=text("direction = 'out'"),
)
