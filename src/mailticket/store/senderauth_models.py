"""The sender-validation evidence of each logged email (see mailticket.reading.senderauth),
beside (not inside) the seed's tticket_email_log, whose columns ops' SQL relies on."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, DateTime, ForeignKey, String, select, text
from sqlalchemy.orm import Mapped, Session, mapped_column

from mailticket.store.db import Base, ClippedString, JSONType


class EmailSenderAuth(Base):
    __tablename__ = "mailticket_email_sender_auth"

    email_log_id: Mapped[int] = mapped_column(
        ForeignKey("tticket_email_log.id"), primary_key=True
    )
    status: Mapped[str] = mapped_column(String(8), nullable=False)  # pass | fail | none
    # Under the deployment's policy when the mail arrived: the `spoofed?` label.
    suspect: Mapped[bool] = mapped_column(Boolean, nullable=False, index=True)
    from_domain: Mapped[str | None] = mapped_column(ClippedString(253))
    evidence: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=text("CURRENT_TIMESTAMP")
    )


def record_sender_auth(
    session: Session, email_log_id: int, evidence: dict[str, Any], *, suspect: bool
) -> EmailSenderAuth:
    """Store one logged email's verdict: `evidence` is Verdict.evidence(). Caller's
    session, no commit."""
    row = EmailSenderAuth(
        email_log_id=email_log_id,
        status=str(evidence.get("status") or "none"),
        suspect=suspect,
        from_domain=evidence.get("from_domain"),
        evidence=evidence,
    )
    session.add(row)
    return row


def sender_auth_of(session: Session, email_log_ids: list[int]) -> dict[int, EmailSenderAuth]:
    """Rows by email log id, for the log and thread views (one query per page)."""
    if not email_log_ids:
        return {}
    rows = session.scalars(
        select(EmailSenderAuth).where(EmailSenderAuth.email_log_id.in_(email_log_ids))
    )
    return {row.email_log_id: row for row in rows}
