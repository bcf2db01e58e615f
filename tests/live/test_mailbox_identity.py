"""Workers configured with different spellings of one mailbox (127.0.0.1, localhost, the
TLS port) hold one lock between them: only one drains it at a time."""

from __future__ import annotations

import asyncio

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from mailticket.live.config import MailboxConfig
from mailticket.live.imap import ImapSource
from tests.live.dovecot import Dovecot
from tests.live.helpers import FakeHandler, counts, message


async def test_one_mailbox_one_lock_whatever_the_spelling(
    dovecot: Dovecot, engine: Engine, session_factory: sessionmaker[Session]
) -> None:
    assert dovecot.cert is not None
    spellings = [
        MailboxConfig(host="127.0.0.1", port=dovecot.port, tls="plain", user=dovecot.user,
                      password=dovecot.password),
        MailboxConfig(host="localhost", port=dovecot.port, tls="plain", user=dovecot.user,
                      password=dovecot.password, folder="inbox"),
        MailboxConfig(host="localhost", port=dovecot.ssl_port, tls="ssl", user=dovecot.user,
                      password=dovecot.password, ca_file=dovecot.cert),
    ]
    sources = [
        ImapSource(box, FakeHandler(), session_factory, engine, max_message_size=10**6)
        for box in spellings
    ]
    for n, src in enumerate(sources):
        src.lock.owner = f"worker-{n}"
    holder, *others = sources
    dovecot.append(message("only once"))
    await holder.imap.open()
    try:
        assert await asyncio.to_thread(holder._lock_mailbox)
        # While the 127.0.0.1 worker holds it, neither other spelling drains the folder.
        for other in others:
            assert await other.run_once() == 0
        assert counts(session_factory)["email_log"] == 0
    finally:
        await holder.imap.close()
        await asyncio.to_thread(holder.lock.release)
    assert await others[0].run_once() == 1
    assert await others[1].run_once() == 0  # seen by then: nothing left, and no double
    assert counts(session_factory)["email_log"] == 1
