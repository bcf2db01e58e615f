"""Tables of the backend feature: remote links, remote comment ids, webhook dedupe, cursors."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from mailticket.store.db import Base, ClippedString
from mailticket.store.outbox_models import _DB_NOW, utcnow

LINK_STATES = ("pending", "linked", "broken")


class RemoteLink(Base):
    """A local ticket's twin in one backend instance.

    `pending` from the moment push_to_backend queued the create (so follow-up mail already
    knows it must become a comment), `linked` once the remote id is known, `broken` when the
    remote ticket vanished: kept for audit, and every further operation on it is refused.
    """

    __tablename__ = "mailticket_remote_links"
    __table_args__ = (
        UniqueConstraint("backend", "remote_id", name="uq_remote_link_remote"),
        Index("ix_remote_link_ticket", "ticket_id", "backend"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tticket_tickets.id"), nullable=False)
    backend: Mapped[str] = mapped_column(String(64), nullable=False)  # instance name
    remote_id: Mapped[str | None] = mapped_column(String(255))
    remote_key: Mapped[str | None] = mapped_column(String(255))
    remote_url: Mapped[str | None] = mapped_column(Text)
    # pending | linked | broken
    state: Mapped[str] = mapped_column(String(10), nullable=False, default="pending")
    broken_reason: Mapped[str | None] = mapped_column(Text)
    last_status_raw: Mapped[str | None] = mapped_column(ClippedString(255))
    last_status: Mapped[str | None] = mapped_column(String(16))  # Normalized value
    # The local status the remote twin should be in: set when we queue a status change
    # and when a remote change is applied here. A local status that differs from it (a
    # customer's reply reopening a resolved ticket) is a change still to send.
    expected_status: Mapped[str | None] = mapped_column(String(20))
    last_synced_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
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


class RemoteCommentRef(Base):
    """Remote comment ids we know: ours (never mirrored back) and mirrored ones (once only)."""

    __tablename__ = "mailticket_remote_comments"
    __table_args__ = (
        UniqueConstraint("link_id", "remote_comment_id", name="uq_remote_comment"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    link_id: Mapped[int] = mapped_column(
        ForeignKey("mailticket_remote_links.id"), nullable=False
    )
    remote_comment_id: Mapped[str] = mapped_column(String(255), nullable=False)
    # out: we created it remotely; in: mirrored from the backend into a local comment
    direction: Mapped[str] = mapped_column(String(3), nullable=False)
    comment_id: Mapped[int | None] = mapped_column(ForeignKey("tticket_comments.id"))
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, default=utcnow, server_default=_DB_NOW
    )


class WebhookDelivery(Base):
    """Each accepted webhook delivery id, so a redelivery is acknowledged but not replayed."""

    __tablename__ = "mailticket_webhook_deliveries"
    __table_args__ = (UniqueConstraint("backend", "delivery_id", name="uq_webhook_delivery"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    backend: Mapped[str] = mapped_column(String(64), nullable=False)
    delivery_id: Mapped[str] = mapped_column(String(255), nullable=False)
    event: Mapped[str] = mapped_column(String(64), nullable=False, default="")
    received_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, default=utcnow, server_default=_DB_NOW
    )


class SyncCursor(Base):
    """Where polling of one backend instance got to."""

    __tablename__ = "mailticket_backend_cursors"

    backend: Mapped[str] = mapped_column(String(64), primary_key=True)
    updated_since: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    polled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # When the poll last checked that every linked remote ticket still exists.
    checked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
