"""The IMAP source against a Dovecot that misbehaves the way real servers and mailboxes do:
a connection dropped in the middle of a FETCH, folders named outside ASCII, a folder
recreated under a running worker, mail read or expunged by another client."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from mailticket.live.config import MailboxConfig
from mailticket.live.imap import ImapSource
from mailticket.live.imap_client import ImapError, ImapSession
from mailticket.live.lock import SourceLock, mailbox_lock_name
from mailticket.types import Outcome
from tests.live.dovecot import Dovecot
from tests.live.helpers import FakeHandler, counts, message
from tests.live.test_worker import wait_for


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


async def test_folders_with_non_ascii_names_are_read_and_moved_to(
    dovecot: Dovecot, mailbox: MailboxConfig, session_factory: sessionmaker[Session],
    engine: Engine,
) -> None:
    """Configured as people write them (UTF-8); IMAP wants modified UTF-7 on the wire."""
    wire = '"&BB8EPgQ0BDQENQRABDYEOgQw- &BBoEOwQ4BDUEPQRCBEs-"'  # Поддержка Клиенты (imaplib
    dovecot.create(wire)  # quotes no names)
    for i in range(2):
        dovecot.append(message(f"вопрос {i}"), wire)
    box = mailbox.model_copy(
        update={"folder": "Поддержка Клиенты", "after": "move:Erledigt/Rückfragen & Co"}
    )
    src = ImapSource(box, FakeHandler(), session_factory, engine, max_message_size=10**6,
                     timeout=10)
    assert await src.run_once() == 2
    assert counts(session_factory)["email_log"] == 2
    assert dovecot.count(wire) == 0
    assert dovecot.count('"Erledigt/R&APw-ckfragen &- Co"') == 2


async def test_a_folder_recreated_under_an_idling_worker_is_read_again(
    dovecot: Dovecot, mailbox: MailboxConfig, session_factory: sessionmaker[Session],
    engine: Engine, caplog: pytest.LogCaptureFixture,
) -> None:
    """Deleted and created again (a restore, a client "emptying" it) while the worker IDLEs
    on it: Dovecot reports nothing, the session stays on the old folder; its mail is read
    within a poll interval, and once (the old message comes back as a duplicate)."""
    box = mailbox.model_copy(update={"folder": "Support"})
    dovecot.create("Support")
    first = message("before")
    dovecot.append(first, "Support")
    src = ImapSource(box, FakeHandler(), session_factory, engine, max_message_size=10**6,
                     timeout=5, poll_interval=1)
    task = asyncio.create_task(src.run())
    try:
        await wait_for(lambda: counts(session_factory)["email_log"] == 1)
        await asyncio.sleep(0.3)  # idling
        await asyncio.to_thread(dovecot.delete, "Support")
        await asyncio.to_thread(dovecot.create, "Support")
        await asyncio.to_thread(dovecot.append_many, [first, message("after")], "Support")
        await wait_for(lambda: counts(session_factory)["ledger"] == 3, timeout=8)
    finally:
        src.stop.set()
        await asyncio.wait_for(task, 15)
    assert counts(session_factory) == {
        "email_log": 2, "distinct": 2, "quarantine": 0, "ledger": 3, "pending": 0
    }
    assert all("\\Seen" in flags for flags in dovecot.flags("Support").values())
    assert "uidvalidity changed" in caplog.text


async def test_mail_read_by_someone_else_before_it_was_stored_is_still_taken(
    dovecot: Dovecot, mailbox: MailboxConfig, session_factory: sessionmaker[Session],
    engine: Engine,
) -> None:
    """IMAP_AFTER=seen: a person opening new mail in the shared mailbox (or reading it while
    the worker is stopped) flags it \\Seen first; UNSEEN alone then never took it. Mail read
    before the first drain is the mailbox's past and stays untouched."""
    c = dovecot.client()
    c.append("INBOX", r"(\Seen)", None, message("read long ago"))
    c.logout()
    dovecot.append(message("first"))
    src = ImapSource(mailbox, FakeHandler(), session_factory, engine, max_message_size=10**6,
                     timeout=10)
    assert await src.run_once() == 1
    dovecot.append_many([message("read by a person first"), message("unread")])
    c = dovecot.client()
    c.select("INBOX")
    c.uid("STORE", "3", "+FLAGS", r"(\Seen)")
    c.logout()
    assert await src.run_once() == 2
    assert await src.run_once() == 0
    assert counts(session_factory)["ledger"] == 3


class _ExpungingHandler(FakeHandler):
    """Another client expunges UID 2 while the batch is stored: after the commit, before
    the server action."""

    def __init__(self, dovecot: Dovecot) -> None:
        super().__init__()
        self.dovecot = dovecot

    def process_batch(
        self, session: Session, items: Sequence[tuple[bytes, str]], *,
        prepared: Sequence[Any] | None = None,
    ) -> list[Outcome]:
        other = self.dovecot.client()
        other.select("INBOX")
        other.uid("STORE", "2", "+FLAGS", r"(\Deleted)")
        other.expunge()
        other.logout()
        return super().process_batch(session, items, prepared=prepared)


async def test_a_message_expunged_by_another_client_does_not_fail_the_move_of_the_rest(
    dovecot: Dovecot, mailbox: MailboxConfig, session_factory: sessionmaker[Session],
    engine: Engine,
) -> None:
    dovecot.create("Done")
    dovecot.append_many([message(f"m{i}") for i in range(4)])
    box = mailbox.model_copy(update={"after": "move:Done"})
    src = ImapSource(box, _ExpungingHandler(dovecot), session_factory, engine,
                     max_message_size=10**6, timeout=10)
    assert await src.run_once() == 4
    assert dovecot.count("INBOX") == 0 and dovecot.count("Done") == 3
    assert counts(session_factory)["pending"] == 0


async def test_a_server_that_never_greets_is_named_in_the_error() -> None:
    """A port that accepts and stays silent (a wrong port, a stuck proxy) used to be logged
    as error=TimeoutError(), which says nothing of what was waited for."""
    with socket.create_server(("127.0.0.1", 0)) as silent:
        port = silent.getsockname()[1]
        box = MailboxConfig(host="127.0.0.1", port=port, tls="plain", user="u", password="p")
        session = ImapSession(box, timeout=0.5)
        with pytest.raises(ImapError, match=rf"no IMAP greeting from 127\.0\.0\.1:{port}"):
            await session.open()
        await session.close()


async def test_a_recreated_folder_is_not_drained_while_another_worker_holds_its_lock(
    dovecot: Dovecot, mailbox: MailboxConfig, session_factory: sessionmaker[Session],
    engine: Engine,
) -> None:
    """The lock is named by the folder's UIDVALIDITY: after the SELECT that finds a new one,
    the worker takes the new lock before it drains, and waits while another holds it."""
    box = mailbox.model_copy(update={"folder": "Support"})
    dovecot.create("Support")
    dovecot.append(message("before"), "Support")
    src = ImapSource(box, FakeHandler(), session_factory, engine, max_message_size=10**6,
                     timeout=5, poll_interval=3)
    task = asyncio.create_task(src.run())
    other = None
    try:
        await wait_for(lambda: counts(session_factory)["email_log"] == 1)
        # All of this well within the 3 s before the worker's next SELECT.
        await asyncio.to_thread(dovecot.delete, "Support")
        await asyncio.to_thread(dovecot.create, "Support")
        await asyncio.to_thread(dovecot.append, message("after"), "Support")
        probe = ImapSession(box, 5)
        await probe.open()
        await probe.close()
        other = SourceLock(engine, mailbox_lock_name(box.user, "Support", probe.uidvalidity),
                           owner="another-worker")
        assert await asyncio.to_thread(other.acquire)
        await asyncio.sleep(4)  # past the worker's next SELECT
        assert counts(session_factory)["email_log"] == 1
        await asyncio.to_thread(other.release)
        await wait_for(lambda: counts(session_factory)["email_log"] == 2, timeout=8)
    finally:
        if other is not None:
            await asyncio.to_thread(other.release)
        src.stop.set()
        await asyncio.wait_for(task, 15)
