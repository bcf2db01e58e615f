"""The private Dovecot that the live tests run: stopping it must drop every client at once.

test_reconnects_after_the_server_goes_away relies on this: when halt() left the `imap`
process of a connected client alive, that process kept answering the idling client, and
whether the client noticed the outage within the test's time was up to chance.
"""

from __future__ import annotations

import imaplib
import socket
from pathlib import Path

import pytest

from tests.live.dovecot import Dovecot


def test_halt_ends_every_server_process_and_every_session(tmp_path: Path) -> None:
    server = Dovecot(tmp_path, ssl=False).start()
    try:
        session = server.client()  # a logged-in client: Dovecot forked an imap process for it
        session.select("INBOX")
        session.noop()
        server.halt()
        with pytest.raises((imaplib.IMAP4.abort, OSError)):
            session.noop()  # the connection is gone, not answered by a leftover process
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", server.port), timeout=2).close()
        server.start()  # the same mailbox comes back on the same port
        server.append(b"From: a@example.com\r\nSubject: back\r\n\r\nhello\r\n")
        assert server.count() == 1
    finally:
        server.stop()
