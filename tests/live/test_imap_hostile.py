"""The IMAP source against a Dovecot that misbehaves the way real servers and mailboxes do:
a connection dropped in the middle of a FETCH, folders named outside ASCII."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from mailticket.live.config import MailboxConfig
from mailticket.live.imap_client import ImapSession
from tests.live.dovecot import Dovecot
from tests.live.helpers import message


async def test_a_server_gone_mid_fetch_ends_the_fetch_at_once_not_at_the_timeout(
    tmp_path: Path,
) -> None:
    """Dovecot stopped while a big message's literal is arriving: the FETCH fails as soon as
    the socket closes, and so does the next command, instead of each waiting IMAP_TIMEOUT."""
    server = Dovecot(tmp_path, ssl=False).start()
    try:
        server.append(message("big", body="x" * 30_000_000))
        box = MailboxConfig(host="127.0.0.1", port=server.port, tls="plain", user=server.user,
                            password=server.password)
        session = ImapSession(box, timeout=20)
        await session.open()
        (uid,) = await session.search("ALL")
        fetching = asyncio.ensure_future(session.fetch([uid]))
        protocol = session._c.protocol
        while protocol._literal_cmd is None:  # the literal has started to arrive
            assert not fetching.done()
            await asyncio.sleep(0.001)
        # Read no further until the server is gone: what it has not yet handed to the
        # socket (most of the 30 MB) never comes.
        protocol.transport.pause_reading()
        await asyncio.to_thread(server.halt)
        started = time.monotonic()
        protocol.transport.resume_reading()
        done, _ = await asyncio.wait({fetching}, timeout=5)
        assert done, "the FETCH waited for its timeout"
        assert isinstance(fetching.exception(), Exception)
        again = asyncio.ensure_future(session.search("ALL"))
        done, _ = await asyncio.wait({again}, timeout=5)
        assert done and isinstance(again.exception(), Exception)
        await asyncio.wait_for(session.close(), 5)
        assert time.monotonic() - started < 10
    finally:
        server.stop()
