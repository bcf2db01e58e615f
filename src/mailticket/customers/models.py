"""Customer tables: organisations, their contact addresses and domains, and which
customer each ticket belongs to and why."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, DateTime, ForeignKey, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from mailticket.store.db import Base, ClippedString

_DB_NOW = text("CURRENT_TIMESTAMP")


class Customer(Base):
    __tablename__ = "mailticket_customers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    name: Mapped[str] = mapped_column(Text, nullable=False)
    # An inactive customer keeps its id (tickets point at it) but matches no mail.
    active: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    # yaml | api: who wrote the row; in YAML mode the API refuses to change any of them.
    source: Mapped[str] = mapped_column(String(8), nullable=False)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=_DB_NOW
    )
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=_DB_NOW
    )


class CustomerContact(Base):
    """An exact address: it maps to its customer even on a shared domain like gmail.com."""

    __tablename__ = "mailticket_customer_contacts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    customer_id: Mapped[int] = mapped_column(
        ForeignKey("mailticket_customers.id"), nullable=False, index=True
    )
    # Normalised (see reading.senderauth.domains.normalise_address); one customer each.
    address: Mapped[str] = mapped_column(ClippedString(320), nullable=False, unique=True)
    name: Mapped[str | None] = mapped_column(Text)


class CustomerDomain(Base):
    """A domain (and its subdomains) whose senders belong to the customer."""

    __tablename__ = "mailticket_customer_domains"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    customer_id: Mapped[int] = mapped_column(
        ForeignKey("mailticket_customers.id"), nullable=False, index=True
    )
    domain: Mapped[str] = mapped_column(String(253), nullable=False, unique=True)


class TicketCustomer(Base):
    """Why a ticket belongs to its customer: the evidence behind tticket_tickets.customer_id.

    matched_by: address | domain (detected from mail), workflow (a workflow's explicit
    customer_id), api (set by hand). matched_value: the address or domain that matched, or
    the workflow's name.
    """

    __tablename__ = "mailticket_ticket_customers"

    ticket_id: Mapped[int] = mapped_column(ForeignKey("tticket_tickets.id"), primary_key=True)
    customer_id: Mapped[int] = mapped_column(
        ForeignKey("mailticket_customers.id"), nullable=False, index=True
    )
    matched_by: Mapped[str] = mapped_column(String(16), nullable=False)
    matched_value: Mapped[str | None] = mapped_column(Text)
    email_log_id: Mapped[int | None] = mapped_column(ForeignKey("tticket_email_log.id"))
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=_DB_NOW
    )
