"""Delivering queued mail over SMTP with aiosmtplib, one outbox drain at a time.

TLS is never downgraded: SMTP_TLS=starttls demands the upgrade and fails when the server does
not offer it; only SMTP_TLS=plain speaks clear text. Failures are sorted for the outbox:
network trouble, timeouts and 4xx replies are retried; 5xx replies are permanent.
"""

from __future__ import annotations

import base64
import binascii
import ssl
from typing import Any

import aiosmtplib
from sqlalchemy.orm import Session, sessionmaker

from mailticket.outbound.auto_reply import SEND_OPERATION, SMTP_KIND
from mailticket.settings import Settings, SmtpTls
from mailticket.store import outbox
from mailticket.store.outbox import DrainReport, PermanentError, RetryPolicy, TransientError
from mailticket.store.outbox_models import OutboxItem

# 30 s doubling to 1 h: fifteen attempts span about eight hours, so a relay outage of
# that long loses nothing; jitter keeps a backlog from hitting the relay all at once.
DEFAULT_POLICY = RetryPolicy(max_attempts=15, jitter=0.1)


def _payload(item: OutboxItem) -> tuple[str, list[str], bytes]:
    data = item.payload
    if item.operation != SEND_OPERATION:
        raise PermanentError(f"unknown smtp operation {item.operation!r}")
    try:
        sender = str(data["mail_from"])
        recipients = [str(r) for r in data["rcpt_to"]]
        raw = base64.b64decode(data["message_b64"], validate=True)
    except (KeyError, TypeError, ValueError, binascii.Error) as exc:
        raise PermanentError(f"malformed send_mail payload: {exc!r}") from exc
    if not recipients or not raw:
        raise PermanentError("send_mail payload has no recipients or no message")
    return sender, recipients, raw


def _classify_response(exc: aiosmtplib.SMTPResponseException) -> Exception:
    text = f"SMTP {exc.code} {exc.message}".strip()
    if 500 <= exc.code < 600:
        return PermanentError(text)
    return TransientError(text)


def _client(settings: Settings, tls_context: ssl.SSLContext | None) -> aiosmtplib.SMTP:
    password = settings.smtp_password.get_secret_value() if settings.smtp_password else None
    return aiosmtplib.SMTP(
        hostname=settings.smtp_host,
        port=settings.smtp_port_or_default,
        username=settings.smtp_username or None,
        password=password if settings.smtp_username else None,
        timeout=settings.smtp_timeout,
        use_tls=settings.smtp_tls is SmtpTls.ssl,
        # True, never None: None would mean "upgrade if offered", a silent downgrade.
        start_tls=settings.smtp_tls is SmtpTls.starttls,
        tls_context=tls_context,
    )


async def send_item(
    item: OutboxItem, settings: Settings, tls_context: ssl.SSLContext | None = None
) -> dict[str, Any]:
    """Send one queued message; raises TransientError or PermanentError on failure."""
    sender, recipients, raw = _payload(item)
    client = _client(settings, tls_context)
    where = f"{settings.smtp_host}:{settings.smtp_port_or_default}"
    try:
        async with client:
            errors, reply = await client.sendmail(sender, recipients, raw)
    except aiosmtplib.SMTPRecipientsRefused as exc:
        codes = [r.code for r in exc.recipients]
        text = "; ".join(f"{r.recipient}: {r.code} {r.message}" for r in exc.recipients)
        if all(500 <= c < 600 for c in codes):
            raise PermanentError(f"recipients refused by {where}: {text}") from exc
        raise TransientError(f"recipients deferred by {where}: {text}") from exc
    except aiosmtplib.SMTPResponseException as exc:
        raise _classify_response(exc) from exc
    except aiosmtplib.SMTPNotSupported as exc:
        raise TransientError(f"{where}: {exc} (SMTP_TLS={settings.smtp_tls.value})") from exc
    except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
        # connection refused, DNS, timeouts, disconnects, STARTTLS not offered, TLS failures
        raise TransientError(f"{where}: {type(exc).__name__}: {exc}") from exc
    refused = {rcpt: f"{r.code} {r.message}" for rcpt, r in errors.items()}
    return {
        "smtp": where,
        "reply": reply,
        "message_id": item.payload.get("message_id"),
        "refused": refused,
    }


async def deliver_outgoing_mail(
    session_factory: sessionmaker[Session],
    settings: Settings,
    *,
    policy: RetryPolicy = DEFAULT_POLICY,
    tls_context: ssl.SSLContext | None = None,
    batch: int = 50,
) -> DrainReport:
    """One drain of the smtp outbox: every due message is tried once."""

    async def handler(item: OutboxItem) -> dict[str, Any]:
        return await send_item(item, settings, tls_context)

    return await outbox.drain(
        session_factory, kind=SMTP_KIND, handler=handler, policy=policy, batch=batch
    )
