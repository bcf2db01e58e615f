"""Delivering queued mail over SMTP with aiosmtplib: a few connections to the relay, each
carrying many messages, for one outbox drain at a time.

What fails is sorted by what it says about the relay, not only about the message:
- the relay itself (connection refused, DNS, no greeting within SMTP_TIMEOUT, a 4xx/5xx
  greeting, EHLO/STARTTLS/AUTH failing, a fresh connection dropping): TargetDown. The outbox
  defers every item for it with the backoff and its circuit breaker keeps the drain away
  from it until the backoff is over. `run --once` against a dead or silent relay therefore
  costs one SMTP_TIMEOUT, not one per queued message.
- one message (4xx/5xx after MAIL, RCPT or DATA): that item only, retried on 4xx, dead on
  5xx; the connection is reset and goes on with the next message.
- an established connection that breaks: the message on it is retried later, and the next
  message opens a fresh connection (which tells whether the relay is still there).

TLS is never downgraded: SMTP_TLS=starttls demands the upgrade and fails when the server
does not offer it; only SMTP_TLS=plain speaks clear text.
"""

from __future__ import annotations

import ssl
from typing import Any

import aiosmtplib
from sqlalchemy.orm import Session, sessionmaker

from mailticket.outbound.auto_reply import SEND_OPERATION, SMTP_KIND
from mailticket.settings import Settings, SmtpTls
from mailticket.store import outbox
from mailticket.store.outbox import (
    CircuitBreaker,
    DrainReport,
    PermanentError,
    RetryPolicy,
    TargetDown,
    TransientError,
)
from mailticket.store.outbox_models import OutboxItem

# 30 s doubling to 1 h: fifteen attempts span about eight hours, so a relay outage of
# that long loses nothing; jitter keeps a backlog from hitting the relay all at once.
DEFAULT_POLICY = RetryPolicy(max_attempts=15, jitter=0.1)
# Connections open at once to the relay; each sends its messages one after the other
# (aiosmtplib does not pipeline), so a few in parallel keep a loopback relay busy.
CONNECTIONS = 4
# Messages per connection before it is closed and a fresh one opened: large relays limit
# this (typically 100) and answer 421 beyond it.
MESSAGES_PER_CONNECTION = 100
# "Service not available, closing transmission channel": about the connection, not the mail.
_CLOSING = 421


def _payload(item: OutboxItem) -> tuple[str, list[str], bytes]:
    data = item.payload
    if item.operation != SEND_OPERATION:
        raise PermanentError(f"unknown smtp operation {item.operation!r}")
    try:
        sender = str(data["mail_from"])
        recipients = [str(r) for r in data["rcpt_to"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise PermanentError(f"malformed send_mail payload: {exc!r}") from exc
    raw = item.message
    if not recipients or not raw:
        raise PermanentError("malformed send_mail payload: no recipients or no message")
    return sender, recipients, bytes(raw)


class _Connection:
    def __init__(self, client: aiosmtplib.SMTP) -> None:
        self.client = client
        self.sent = 0

    @property
    def usable(self) -> bool:
        return self.client.is_connected and self.sent < MESSAGES_PER_CONNECTION

    async def close(self) -> None:
        if self.client.is_connected:
            try:
                await self.client.quit()
            except (aiosmtplib.SMTPException, OSError, TimeoutError):
                self.client.close()


class SmtpRelay:
    """The configured relay for one drain: `send` is the outbox handler; `aclose` at the end."""

    def __init__(self, settings: Settings, tls_context: ssl.SSLContext | None = None) -> None:
        self.settings = settings
        self.tls_context = tls_context
        self.where = f"{settings.smtp_host}:{settings.smtp_port_or_default}"
        self._idle: list[_Connection] = []
        self.opened = 0  # connections opened (the benchmark and tests read it)

    def _client(self) -> aiosmtplib.SMTP:
        s = self.settings
        password = s.smtp_password.get_secret_value() if s.smtp_password else None
        return aiosmtplib.SMTP(
            hostname=s.smtp_host,
            port=s.smtp_port_or_default,
            username=s.smtp_username or None,
            password=password if s.smtp_username else None,
            timeout=s.smtp_timeout,
            use_tls=s.smtp_tls is SmtpTls.ssl,
            # True, never None: None would mean "upgrade if offered", a silent downgrade.
            start_tls=s.smtp_tls is SmtpTls.starttls,
            tls_context=self.tls_context,
        )

    async def _connect(self) -> _Connection:
        client = self._client()
        self.opened += 1
        try:
            await client.connect()  # greeting, EHLO, STARTTLS and AUTH as configured
        except aiosmtplib.SMTPNotSupported as exc:
            client.close()
            raise TargetDown(f"{self.where}: {exc} (SMTP_TLS={self.settings.smtp_tls.value})") from exc
        except aiosmtplib.SMTPResponseException as exc:
            client.close()
            raise TargetDown(f"{self.where}: SMTP {exc.code} {exc.message}".strip()) from exc
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            # refused, DNS, timeouts, disconnects, TLS failures
            client.close()
            raise TargetDown(f"{self.where}: {type(exc).__name__}: {exc}") from exc
        return _Connection(client)

    async def send(self, item: OutboxItem) -> dict[str, Any]:
        """Send one queued message; raises TargetDown, TransientError or PermanentError."""
        sender, recipients, raw = _payload(item)
        conn = self._idle.pop() if self._idle else await self._connect()
        fresh = conn.sent == 0
        try:
            errors, reply = await conn.client.sendmail(sender, recipients, raw)
        except aiosmtplib.SMTPRecipientsRefused as exc:
            await self._release(conn)
            codes = [r.code for r in exc.recipients]
            text = "; ".join(f"{r.recipient}: {r.code} {r.message}" for r in exc.recipients)
            if all(500 <= c < 600 for c in codes):
                raise PermanentError(f"recipients refused by {self.where}: {text}") from exc
            raise TransientError(f"recipients deferred by {self.where}: {text}") from exc
        except aiosmtplib.SMTPResponseException as exc:
            text = f"{self.where}: SMTP {exc.code} {exc.message}".strip()
            if exc.code == _CLOSING or not conn.client.is_connected:
                await self._drop(conn)
                raise (TargetDown if fresh else TransientError)(text) from exc
            await self._release(conn)
            if 500 <= exc.code < 600:
                raise PermanentError(text) from exc
            raise TransientError(text) from exc
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            # The connection broke or went silent mid-message: a fresh one tells whether the
            # relay is gone (TargetDown) or that connection only (this message is retried).
            await self._drop(conn)
            text = f"{self.where}: {type(exc).__name__}: {exc}"
            raise (TargetDown if fresh else TransientError)(text) from exc
        conn.sent += 1
        await self._release(conn)
        refused = {rcpt: f"{r.code} {r.message}" for rcpt, r in errors.items()}
        return {
            "smtp": self.where,
            "reply": reply,
            "message_id": item.payload.get("message_id"),
            "refused": refused,
        }

    async def _release(self, conn: _Connection) -> None:
        if conn.usable:
            self._idle.append(conn)
        else:
            await conn.close()  # over its message budget, or the server hung up

    async def _drop(self, conn: _Connection) -> None:
        conn.client.close()

    async def aclose(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            await conn.close()


async def deliver_outgoing_mail(
    session_factory: sessionmaker[Session],
    settings: Settings,
    *,
    policy: RetryPolicy = DEFAULT_POLICY,
    tls_context: ssl.SSLContext | None = None,
    batch: int = 200,
    breaker: CircuitBreaker | None = None,
    connections: int = CONNECTIONS,
) -> DrainReport:
    """One drain of the smtp outbox: every due message is tried once, unless the relay is
    down (then they wait for the breaker). Pass the worker's `breaker` to span drains."""
    relay = SmtpRelay(settings, tls_context)
    try:
        return await outbox.drain(
            session_factory, kind=SMTP_KIND, handler=relay.send, policy=policy, batch=batch,
            lanes=connections, ordered=False, breaker=breaker,
        )
    finally:
        await relay.aclose()
