"""LMTP (or SMTP) receiver: a push source for an MTA such as Postfix or Dovecot's LDA.

It answers 250 only once the message is committed; when it cannot be stored (the database
is down) it answers 451 so the MTA keeps the message and tries again later. Messages of
concurrent sessions are committed together (`groupcommit`), each answered after that commit.
The bytes of messages in flight (read, waiting for or in their commit) are bounded by a
receiver-wide budget (`inflight`): past it a session waits for room, or answers 451.

A message over the size limit is answered 552 5.3.4, and (given `hold`) its headers are
quarantined, as the IMAP and Maildir sources do with theirs, so staff see who tried to send
what: only its first HEAD_BYTES are kept past the limit, the rest is read and dropped. That
record is best effort: when it cannot be written (the database is down) it is logged and the
answer is still 552, since a 451 would have the MTA send the whole message again only to be
refused once more.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import SMTP, Envelope

from mailticket.live.bulkdata import BulkLMTP, BulkSMTP, Overflow
from mailticket.live.groupcommit import GroupCommit, PrepareOne, StoreGroup
from mailticket.live.inflight import InFlight
from mailticket.live.maildir import HEAD_BYTES, headers_of
from mailticket.reading.msgids import header_message_id
from mailticket.store.db import database_unavailable
from mailticket.ticketing.quarantine import too_large_reason

log = logging.getLogger(__name__)

# Quarantines an over-size message's headers and commits (blocking; run in a thread):
# (headers, source, reason, message_id).
HoldHeaders = Callable[[bytes, str, str, str | None], object]


def parse_listen(value: str) -> tuple[str, str, int]:
    """"lmtp://host:port", "smtp://host:port" or "host:port" (LMTP) → (protocol, host, port)."""
    proto, sep, rest = value.partition("://")
    if not sep:
        proto, rest = "lmtp", value
    if proto not in ("lmtp", "smtp"):
        raise ValueError(f"LMTP_LISTEN: unknown protocol {proto!r} (use lmtp:// or smtp://)")
    host, colon, port = rest.rpartition(":")
    if not colon or not port.isdigit() or not host:
        raise ValueError(f"LMTP_LISTEN: expected host:port, got {value!r}")
    return proto, host.strip("[]"), int(port)


class DeliveryHandler:
    """aiosmtpd handler: hand the message to the group committer, answer after the commit."""

    # How much of an over-size message is kept (bulkdata.Overflow), for its header block.
    keep_head = HEAD_BYTES

    def __init__(
        self, committer: GroupCommit, name: str, hold: HoldHeaders | None = None
    ) -> None:
        self.committer = committer
        self.name = name
        self.hold = hold

    async def handle_EHLO(
        self, server: SMTP, session: Any, envelope: Envelope, hostname: str, responses: list[str]
    ) -> list[str]:
        """LHLO/EHLO as aiosmtpd answers it, plus PIPELINING. An LMTP server must offer it
        (RFC 2033 4.1), and aiosmtpd does serve it: commands are read in turn from a
        buffered stream, so a client's MAIL, RCPT and DATA sent in one write are answered
        in order. It only does not say so, and MTAs (Postfix) pipeline only when told:
        two round trips per message instead of four."""
        session.host_name = hostname  # what aiosmtpd does itself when no hook is set
        return [*responses[:-1], "250-PIPELINING", responses[-1]]

    async def handle_too_large(
        self, server: SMTP, session: Any, envelope: Envelope, overflow: Overflow
    ) -> str:
        """A message over the size limit (bulkdata): its headers quarantined, answered 552."""
        limit = server.data_size_limit
        status = f"552 5.3.4 Message too big for this system (limit {limit} bytes)"
        source = f"{self.name}:{envelope.mail_from or '<>'}"
        headers = headers_of(overflow.head)
        message_id = header_message_id(headers)
        log.warning(
            "refused too large %s message_id=%s size=%d limit=%d",
            self.name, message_id, overflow.size, limit,
        )
        if self.hold is not None:
            reason = too_large_reason(overflow.size, f" (limit {limit})")
            try:
                await asyncio.to_thread(self.hold, headers, source, reason, message_id)
            except Exception as exc:  # noqa: BLE001 - best effort: the 552 stands
                log.warning(
                    "cannot quarantine the headers of a too large %s message error=%r%s",
                    self.name, exc, " (database unavailable)" if database_unavailable(exc) else "",
                )
        if isinstance(server, LMTP):
            for _ in envelope.rcpt_tos[1:]:
                await server.push(status)
        return status

    async def handle_DATA(self, server: SMTP, session: Any, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        source = f"{self.name}:{envelope.mail_from or '<>'}"
        try:
            outcome = await self.committer.submit(raw, source)
        except Exception as exc:  # noqa: BLE001 - the per-message boundary: tell the MTA to retry
            if database_unavailable(exc):
                # Not this message's fault: the committer logs the outage once, not per message.
                log.debug("%s message refused: database unavailable", self.name)
            else:
                log.error("cannot store %s message error=%r", self.name, exc)
            status = "451 4.3.0 Cannot store the message now; try again later"
        else:
            log.info(
                "stored %s message_id=%s action=%s", self.name, outcome.message_id, outcome.action
            )
            status = "250 2.0.0 Message stored"
        if isinstance(server, LMTP):
            # LMTP answers DATA once per recipient; the message is stored once for all.
            for _ in envelope.rcpt_tos[1:]:
                await server.push(status)
        return status


def start_receiver(
    listen: str,
    store: StoreGroup,
    *,
    max_message_size: int,
    prepare: PrepareOne | None = None,
    inflight_bytes: int = 0,
    inflight_wait: float = 60.0,
    hold: HoldHeaders | None = None,
) -> Controller:
    """`store` stores a group of messages in one transaction and commits it; `prepare`
    (optional) does a message's database-free work as soon as it arrives.
    `inflight_bytes`: the budget of message bytes in flight over all sessions (0: none); a
    session waits for room at most `inflight_wait` seconds, then answers 451. The budget is
    the controller's `inflight` attribute. `hold`: quarantines an over-size message's
    headers (None: it is only answered 552)."""
    proto, host, port = parse_listen(listen)
    committer = GroupCommit(store, prepare=prepare)
    handler = DeliveryHandler(committer, proto, hold)
    # aiosmtpd's servers with DATA read in bulk rather than line by line (bulkdata.py).
    factory_cls = BulkLMTP if proto == "lmtp" else BulkSMTP
    budget = InFlight(inflight_bytes, wait=inflight_wait) if inflight_bytes > 0 else None

    class _Controller(Controller):
        inflight = budget

        def factory(self) -> SMTP:
            server = factory_cls(
                handler, data_size_limit=max_message_size, enable_SMTPUTF8=True,
                hostname="mailticket",
            )
            server.inflight = budget
            return server

        def stop(self, no_assert: bool = False) -> None:
            super().stop(no_assert)
            committer.close()

    controller = _Controller(handler, hostname=host, port=port)
    controller.start()
    log.info("receiver listening protocol=%s host=%s port=%s", proto, host, port)
    return controller
