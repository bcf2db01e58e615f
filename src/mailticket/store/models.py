"""Core tables. Names and the seed's columns are fixed: ops run the seed's SQL against them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from mailticket.store.db import Base, ClippedString, JSONType


def _now() -> Any:
    return func.now()


def _written_after(target: str, column: str) -> Any:
    """A relationship nobody reads. It exists for the unit of work: when one flush writes a
    row and the row it points at (a batch does, see `mailticket.store.batch`), the ORM orders
    statements by relationships, not by foreign keys, and would otherwise be free to
    write the pointing row first."""
    return relationship(target, foreign_keys=column, lazy="raise", viewonly=False, cascade="")


class Ticket(Base):
    __tablename__ = "tticket_tickets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ticket_number: Mapped[str] = mapped_column(String(32), unique=True, nullable=False)
    subject: Mapped[str] = mapped_column(Text, nullable=False, default="")
    description: Mapped[str] = mapped_column(Text, nullable=False, default="")
    status: Mapped[str] = mapped_column(String(20), nullable=False, default="open")
    priority: Mapped[str] = mapped_column(String(10), nullable=False, default="normal")
    customer_id: Mapped[int | None] = mapped_column(Integer, index=True)
    assigned_to_user_id: Mapped[int | None] = mapped_column(Integer, index=True)
    tags: Mapped[list[str]] = mapped_column(JSONType, nullable=False, default=list)
    custom_fields: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False, default=dict)
    # Lower-cased address of whoever opened the ticket; by-email lookups and the
    # `participants` subject policy use it without scanning the log.
    requester_email: Mapped[str | None] = mapped_column(ClippedString(320), index=True)
    merged_into_id: Mapped[int | None] = mapped_column(ForeignKey("tticket_tickets.id"))
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=_now(), index=True
    )
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=_now(), onupdate=_now()
    )
    resolved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # When it last went from being worked on to resolved or closed (None while open): the
    # reopen window of a customer's reply is measured from here.
    closed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The closed ticket this one continues (a reply after the reopen window).
    followup_of_id: Mapped[int | None] = mapped_column(
        ForeignKey("tticket_tickets.id"), index=True
    )

    comments: Mapped[list[Comment]] = relationship(
        back_populates="ticket", order_by="Comment.id", foreign_keys="Comment.ticket_id"
    )


class Comment(Base):
    __tablename__ = "tticket_comments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ticket_id: Mapped[int] = mapped_column(
        ForeignKey("tticket_tickets.id"), nullable=False, index=True
    )
    body: Mapped[str] = mapped_column(Text, nullable=False, default="")
    author_email: Mapped[str | None] = mapped_column(ClippedString(320))
    is_internal: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    # email | api | backend | system | customer (a customer-scoped token: the customer wrote it)
    source: Mapped[str] = mapped_column(String(16), nullable=False, default="email")
    email_log_id: Mapped[int | None] = mapped_column(ForeignKey("tticket_email_log.id"))
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=_now()
    )

    ticket: Mapped[Ticket] = relationship(back_populates="comments", foreign_keys=[ticket_id])
    email_log_row: Mapped[EmailLog | None] = _written_after("EmailLog", "Comment.email_log_id")


class RawMessage(Base):
    """The exact bytes of every ingested message: replay, quarantine and raw download."""

    __tablename__ = "mailticket_raw_messages"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), nullable=False, index=True)
    size: Mapped[int] = mapped_column(Integer, nullable=False)
    raw: Mapped[bytes] = mapped_column(LargeBinary, nullable=False, deferred=True)
    source: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=_now()
    )


class EmailLog(Base):
    __tablename__ = "tticket_email_log"
    __table_args__ = (
        # One inbound row per Message-ID: the database, not a check-then-insert race,
        # is what guarantees a redelivered message never creates anything twice.
        Index(
            "uq_email_log_inbound_message_id",
            "email_message_id",
            unique=True,
            postgresql_where=text("direction = 'in'"),
            sqlite_where=text("direction = 'in'"),
        ),
        Index("ix_email_log_message_id", "email_message_id"),
        Index("ix_email_log_ticket_received", "ticket_id", "email_received_at", "id"),
        Index("ix_email_log_from", "email_from"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # NULL for mail that belongs to no ticket (bounces to nobody, ignored mail): every
    # message is logged, even when no ticket results.
    ticket_id: Mapped[int | None] = mapped_column(ForeignKey("tticket_tickets.id"))
    email_message_id: Mapped[str] = mapped_column(Text, nullable=False)
    email_subject: Mapped[str | None] = mapped_column(Text)
    email_from: Mapped[str] = mapped_column(ClippedString(320), nullable=False, default="")
    email_from_name: Mapped[str | None] = mapped_column(Text)
    email_to: Mapped[str | None] = mapped_column(Text)
    email_received_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    is_reply: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    thread_data: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    direction: Mapped[str] = mapped_column(String(3), nullable=False, default="in")
    matched_by: Mapped[str | None] = mapped_column(String(32))
    matched_value: Mapped[str | None] = mapped_column(Text)
    classification: Mapped[str | None] = mapped_column(String(64))
    confidence: Mapped[float | None] = mapped_column(Float)
    # created | linked | logged (what the pipeline did with it)
    action: Mapped[str | None] = mapped_column(String(16))
    body_text: Mapped[str | None] = mapped_column(Text, deferred=True)
    raw_message_id: Mapped[int | None] = mapped_column(ForeignKey("mailticket_raw_messages.id"))
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=_now()
    )

    ticket_row: Mapped[Ticket | None] = _written_after("Ticket", "EmailLog.ticket_id")
    raw_row: Mapped[RawMessage | None] = _written_after("RawMessage", "EmailLog.raw_message_id")


class Attachment(Base):
    """Attachment metadata; the bytes stay in the raw message and are cut out on demand."""

    __tablename__ = "tticket_attachments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ticket_id: Mapped[int | None] = mapped_column(ForeignKey("tticket_tickets.id"), index=True)
    email_log_id: Mapped[int] = mapped_column(
        ForeignKey("tticket_email_log.id"), nullable=False, index=True
    )
    part_index: Mapped[int] = mapped_column(Integer, nullable=False)
    filename: Mapped[str] = mapped_column(Text, nullable=False)
    content_type: Mapped[str] = mapped_column(ClippedString(255), nullable=False)
    size: Mapped[int] = mapped_column(Integer, nullable=False)
    sha256: Mapped[str] = mapped_column(String(64), nullable=False)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=_now()
    )

    ticket_row: Mapped[Ticket | None] = _written_after("Ticket", "Attachment.ticket_id")
    email_log_row: Mapped[EmailLog] = _written_after("EmailLog", "Attachment.email_log_id")


class ThreadRef(Base):
    """Every Message-ID a ticket's mail carries or points at (own id, In-Reply-To, References).

    A lookup of any id a new message carries finds the ticket, which gives JWZ-style
    ghost-parent joining and makes threading independent of arrival order.
    """

    __tablename__ = "tticket_thread_refs"
    __table_args__ = (UniqueConstraint("message_id", "ticket_id", name="uq_thread_ref"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    message_id: Mapped[str] = mapped_column(Text, nullable=False, index=True)
    ticket_id: Mapped[int] = mapped_column(
        ForeignKey("tticket_tickets.id"), nullable=False, index=True
    )
    # self: a message of the ticket has this id; ref: a message of the ticket points at it
    kind: Mapped[str] = mapped_column(String(8), nullable=False)


class EmailTicket(Base):
    """A message that belongs to more than one ticket (multi-ticket threading): the log keeps
    one row per message and its `ticket_id` names the first ticket, as the seed's SQL
    expects; each further ticket is a row here. A ticket's thread is the mail whose
    `ticket_id` is the ticket plus the mail linked to it here."""

    __tablename__ = "mailticket_email_tickets"

    email_log_id: Mapped[int] = mapped_column(
        ForeignKey("tticket_email_log.id"), primary_key=True
    )
    ticket_id: Mapped[int] = mapped_column(
        ForeignKey("tticket_tickets.id"), primary_key=True, index=True
    )
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=_now()
    )

    email_log_row: Mapped[EmailLog] = _written_after("EmailLog", "EmailTicket.email_log_id")
    ticket_row: Mapped[Ticket] = _written_after("Ticket", "EmailTicket.ticket_id")


class TicketCounter(Base):
    """Per-day sequence behind TKT-YYYYMMDD-XXX, bumped with one atomic upsert."""

    __tablename__ = "tticket_number_counters"

    day: Mapped[str] = mapped_column(String(8), primary_key=True)
    last_value: Mapped[int] = mapped_column(Integer, nullable=False)


class WorkflowExecution(Base):
    __tablename__ = "email_workflow_executions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    workflow_name: Mapped[str] = mapped_column(Text, nullable=False, index=True)
    email_log_id: Mapped[int | None] = mapped_column(ForeignKey("tticket_email_log.id"), index=True)
    email_message_id: Mapped[str | None] = mapped_column(Text)
    classification: Mapped[str | None] = mapped_column(String(64))
    confidence: Mapped[float | None] = mapped_column(Float)
    # ok | failed | skipped
    status: Mapped[str] = mapped_column(String(10), nullable=False, index=True)
    steps: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, nullable=False, default=list)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    error: Mapped[str | None] = mapped_column(Text)
    duration_ms: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=_now(), index=True
    )
    # NULL for a run a message triggered (`classification` names its label); for a run an
    # event triggered, the event: `sla_warning:first_response`, `ticket_idle:7d` ...
    trigger: Mapped[str | None] = mapped_column(String(48), index=True)
    # The ticket an event run was about (a mail-triggered run's ticket is its email's).
    ticket_id: Mapped[int | None] = mapped_column(ForeignKey("tticket_tickets.id"), index=True)

    email_log_row: Mapped[EmailLog | None] = _written_after(
        "EmailLog", "WorkflowExecution.email_log_id"
    )
    ticket_row: Mapped[Ticket | None] = _written_after("Ticket", "WorkflowExecution.ticket_id")


class QuarantineEntry(Base):
    """A message that could not be processed: raw bytes kept, reason given, retryable."""

    __tablename__ = "mailticket_quarantine"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    raw_message_id: Mapped[int] = mapped_column(
        ForeignKey("mailticket_raw_messages.id"), nullable=False
    )
    source: Mapped[str | None] = mapped_column(Text)
    message_id: Mapped[str | None] = mapped_column(Text)
    reason: Mapped[str] = mapped_column(Text, nullable=False)
    error_type: Mapped[str | None] = mapped_column(String(200))
    traceback: Mapped[str | None] = mapped_column(Text)
    # held | released (retried successfully)
    status: Mapped[str] = mapped_column(String(10), nullable=False, default="held", index=True)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=_now()
    )
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=_now(), onupdate=_now()
    )

    raw_row: Mapped[RawMessage] = _written_after("RawMessage", "QuarantineEntry.raw_message_id")
