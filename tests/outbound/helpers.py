"""Inbound mail, tickets and settings for outgoing-mail tests (rows written via the models)."""

from __future__ import annotations

import itertools
import weakref
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session

from mailticket.settings import Settings, load_settings
from mailticket.store.batch import Batch, open_batch
from mailticket.store.models import EmailLog, Ticket
from mailticket.types import Classification, ParsedEmail

NOW = datetime(2025, 12, 15, 10, 0, tzinfo=UTC)
_seq = itertools.count(1)
_works: weakref.WeakKeyDictionary[Session, Batch] = weakref.WeakKeyDictionary()


def work(session: Session) -> Batch:
    """The unit of work the services take, one per transaction of the test's session
    (the session's commit finishes it, a rollback drops it)."""
    current = _works.get(session)
    if current is None or current.closed:
        current = _works[session] = open_batch(session)
    return current


def parsed(
    *,
    subject: str = "Printer broken",
    from_address: str = "carla@customer.example",
    from_name: str = "Carla Customer",
    message_id: str | None = None,
    in_reply_to: list[str] | None = None,
    references: list[str] | None = None,
    reply_to: list[str] | None = None,
    headers: dict[str, str] | None = None,
    return_path: str | None = "carla@customer.example",
    synthetic: bool = False,
) -> ParsedEmail:
    n = next(_seq)
    return ParsedEmail(
        message_id=message_id or f"<inbound-{n}@customer.example>",
        message_id_synthetic=synthetic,
        in_reply_to=in_reply_to or [],
        references=references or [],
        subject=subject,
        from_address=from_address,
        from_name=from_name,
        to=["support@example.com"],
        cc=[],
        reply_to=reply_to or [],
        date=NOW,
        headers={k.lower(): [v] for k, v in (headers or {}).items()},
        text="The printer on floor 3 is broken.",
        html=None,
        attachments=[],
        content_type="text/plain",
        report_type=None,
        part_types=["text/plain"],
        return_path=return_path,
        embedded=[],
        defects=[],
        raw_size=100,
    )


def human() -> Classification:
    return Classification(label="support_request", confidence=0.9)


def make_ticket(session: Session, email: ParsedEmail, number: str | None = None) -> Ticket:
    n = next(_seq)
    ticket = Ticket(
        ticket_number=number or f"TKT-20251215-{n:03d}",
        subject=email.subject,
        description=email.text,
        status="open",
        priority="normal",
        tags=[],
        custom_fields={},
        requester_email=email.from_address,
        created_at=NOW,
        updated_at=NOW,
    )
    session.add(ticket)
    session.flush()
    session.add(
        EmailLog(
            ticket_id=ticket.id,
            email_message_id=email.message_id,
            email_subject=email.subject,
            email_from=email.from_address,
            direction="in",
            is_reply=False,
            created_at=NOW,
        )
    )
    session.flush()
    return ticket


def mail_settings(base: Settings, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": base.database_url,
        "mail_domain": "mailticket.test",
        "mail_from": "Example Support <support@example.com>",
        "smtp_host": "127.0.0.1",
        "smtp_tls": "plain",
        "smtp_timeout": 5,
    }
    values.update(overrides)
    return load_settings(_env_file=None, **values)
