"""A real SMTP server on loopback (aiosmtpd) that records what it receives.

`SmtpSink` is reusable by any test: start it, point SMTP_HOST/SMTP_PORT at it, read
`.messages`. `reply` makes it answer DATA with another status (e.g. "451 ..." or "550 ...");
`rcpt_replies` answers RCPT TO for the given addresses with another status. Each message
records the client's address (`peer`): distinct peers are distinct connections.
"""

from __future__ import annotations

import email
import socket
import ssl
import threading
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    peer: tuple[str, int] = ("", 0)

    def message(self) -> EmailMessage:
        msg = email.message_from_bytes(self.data, policy=policy.default)
        assert isinstance(msg, EmailMessage)
        return msg


class _Handler:
    def __init__(self, sink: SmtpSink) -> None:
        self.sink = sink

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        refusal = self.sink.rcpt_replies.get(address)
        if refusal is not None:
            return refusal
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.sink.reply is not None:
            return self.sink.reply
        peer = tuple(session.peer[:2]) if session.peer else ("", 0)
        with self.sink.lock:
            self.sink.messages.append(
                Received(
                    envelope.mail_from, list(envelope.rcpt_tos), bytes(envelope.content), peer
                )
            )
        return "250 2.0.0 OK queued"


class SmtpSink:
    """`ssl_context`: implicit TLS; `starttls_context`: offers STARTTLS and requires it."""

    def __init__(
        self,
        port: int | None = None,
        *,
        ssl_context: ssl.SSLContext | None = None,
        starttls_context: ssl.SSLContext | None = None,
    ) -> None:
        self.host = "127.0.0.1"
        self.ssl_context = ssl_context
        self.starttls_context = starttls_context
        self.port = port or free_port()
        self.messages: list[Received] = []
        self.reply: str | None = None
        self.rcpt_replies: dict[str, str] = {}
        self.lock = threading.Lock()
        self._controller: Controller | None = None

    def start(self) -> SmtpSink:
        extra: dict[str, Any] = {}
        if self.starttls_context is not None:
            extra = {"tls_context": self.starttls_context, "require_starttls": True}
        self._controller = Controller(
            _Handler(self),
            hostname=self.host,
            port=self.port,
            ssl_context=self.ssl_context,
            **extra,
        )
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def connections(self) -> int:
        """How many connections delivered the messages received so far."""
        with self.lock:
            return len({m.peer for m in self.messages})

    def __enter__(self) -> SmtpSink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
