"""Tables of the live sources: the IMAP ledger and the lease that keeps one worker per mailbox."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, DateTime, Index, Integer, String, Text, func
from sqlalchemy.orm import Mapped, mapped_column

from mailticket.store.db import Base


class ImapLedgerEntry(Base):
    """One row per message a mailbox handed us, written in the pipeline's transaction.

    A row with server_done false means the message is safely stored but the server has not yet
    been told (flag/move/delete); a restart redoes that action instead of fetching it again.
    """

    __tablename__ = "mailticket_imap_ledger"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    mailbox: Mapped[str] = mapped_column(String(255), nullable=False)
    folder: Mapped[str] = mapped_column(String(255), nullable=False)
    uidvalidity: Mapped[int] = mapped_column(BigInteger, nullable=False)
    uid: Mapped[int] = mapped_column(BigInteger, nullable=False)
    message_id: Mapped[str | None] = mapped_column(Text)
    outcome: Mapped[str] = mapped_column(String(20), nullable=False)
    stored_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
    server_done: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)

    __table_args__ = (
        Index(
            "ux_imap_ledger_uid", "mailbox", "folder", "uidvalidity", "uid", unique=True
        ),
        Index("ix_imap_ledger_pending", "mailbox", "folder", "server_done"),
    )


class SourceLease(Base):
    """Who is working a source right now (SQLite; PostgreSQL uses an advisory lock)."""

    __tablename__ = "mailticket_source_leases"

    name: Mapped[str] = mapped_column(String(600), primary_key=True)
    owner: Mapped[str] = mapped_column(String(255), nullable=False)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
