"""API bearer tokens: only a SHA-256 of each token is stored, never the token itself."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, ForeignKey, Index, Integer, String, text
from sqlalchemy.orm import Mapped, mapped_column

from mailticket.customers import models as _customers  # noqa: F401  # the FK's target table
from mailticket.store.db import Base
from mailticket.store.models import Ticket

_DB_NOW = text("CURRENT_TIMESTAMP")


class ApiToken(Base):
    __tablename__ = "mailticket_api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    token_hash: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    # read | write | admin; each includes the ones before it
    scope: Mapped[str] = mapped_column(String(10), nullable=False)
    # Set: the token sees that customer's tickets and mail only, and no admin or ops route.
    customer_id: Mapped[int | None] = mapped_column(
        ForeignKey("mailticket_customers.id", name="fk_api_tokens_customer_id"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=_DB_NOW
    )
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


# Keyset pagination walks tickets by (created_at, id); the single-column created_at index
# cannot serve the tie-breaker.
ix_tickets_created_id = Index("ix_tickets_created_id", Ticket.created_at, Ticket.id)
