from __future__ import annotations

from collections.abc import Iterator

import pytest

from mailticket.live.config import MailboxConfig
from tests.live.dovecot import Dovecot


@pytest.fixture(scope="session")
def dovecot_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dovecot]:
    server = Dovecot(tmp_path_factory.mktemp("dovecot")).start()
    yield server
    server.stop()


@pytest.fixture
def dovecot(dovecot_server: Dovecot) -> Dovecot:
    """The session's Dovecot with an empty mailbox."""
    dovecot_server.reset_mail()
    return dovecot_server


@pytest.fixture
def mailbox(dovecot: Dovecot) -> MailboxConfig:
    return MailboxConfig(
        host="127.0.0.1", port=dovecot.port, tls="plain", user=dovecot.user,
        password=dovecot.password, folder="INBOX", after="seen",
    )
