"""Push from Dovecot (push_notification plugin, ox driver) wakes the IMAP source: a real
Dovecot delivering over LMTP PUTs to `mailticket run`'s push listener, and the source drains
without waiting for IDLE or a poll; pushes without the secret are refused and change nothing."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from mailticket.live.config import MailboxConfig
from mailticket.live.imap_client import ImapSession
from mailticket.live.worker import Worker
from mailticket.settings import ConfigError, Settings, load_settings
from tests.live.dovecot import Dovecot, free_port
from tests.live.helpers import FakeHandler, counts, message
from tests.live.test_worker import wait_for

SECRET = "push-secret-0123456789"
HTTP_NOTIFY = "/private/vendor/vendor.dovecot/http-notify"


class PushDovecot:
    def __init__(self, server: Dovecot, port: int) -> None:
        self.server, self.port = server, port


@pytest.fixture(scope="module")
def push_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PushDovecot]:
    port = free_port()
    server = Dovecot(
        tmp_path_factory.mktemp("push-dovecot"), ssl=False,
        push_url=f"http://dovecot:{SECRET}@127.0.0.1:{port}/dovecot",
    ).start()
    yield PushDovecot(server, port)
    server.stop()


@pytest.fixture
def push(push_server: PushDovecot) -> PushDovecot:
    """Empty mailbox; the ox driver only pushes for users with the http-notify METADATA."""
    push_server.server.reset_mail()
    push_server.server.set_metadata(HTTP_NOTIFY, f"user={push_server.server.user}")
    return push_server


def push_worker(
    settings: Settings, engine: Engine, session_factory: sessionmaker[Session],
    push: PushDovecot, tmp_path: Path,
) -> Worker:
    # No IDLE and an hour between polls: only a push can bring mail in during the test.
    boxes = tmp_path / "mailboxes.yaml"
    boxes.write_text(yaml.safe_dump([{
        "host": "127.0.0.1", "port": push.server.port, "tls": "plain",
        "user": push.server.user, "password": push.server.password, "idle": False,
    }]))
    s = load_settings(
        database_url=settings.database_url, _env_file=None, mailboxes_file=str(boxes),
        imap_poll_interval=3600, smtp_host="127.0.0.1",
        imap_push_listen=f"127.0.0.1:{push.port}", imap_push_secret=SECRET,
    )
    return Worker(s, engine, session_factory, FakeHandler())


def stored(session_factory: sessionmaker[Session]) -> int:
    return counts(session_factory)["email_log"]


async def test_lmtp_delivery_push_brings_the_message_in_without_idle_or_poll(
    push: PushDovecot, settings: Settings, session_factory: sessionmaker[Session],
    engine: Engine, tmp_path: Path,
) -> None:
    worker = push_worker(settings, engine, session_factory, push, tmp_path)
    pushes: list[tuple[str, str, int]] = []
    wake = worker.wake_pushed

    def recorded(user: str, folder: str) -> int:
        woken = wake(user, folder)
        pushes.append((user, folder, woken))
        return woken

    worker.wake_pushed = recorded  # type: ignore[method-assign]
    push.server.append(message("there at start"))
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        await wait_for(lambda: stored(session_factory) == 1)
        # APPEND over IMAP fires no push (the plugin runs for LMTP only here): it waits.
        push.server.append(message("appended, no push"))
        await asyncio.sleep(1.0)
        assert stored(session_factory) == 1 and pushes == []
        # Delivered over LMTP: Dovecot pushes, the source drains both.
        await asyncio.to_thread(push.server.lmtp_deliver, message("delivered over LMTP"))
        await wait_for(lambda: stored(session_factory) == 3)
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)
    assert pushes == [(push.server.user, "INBOX", 1)]
    assert all("\\Seen" in f for f in push.server.flags().values())
    assert counts(session_factory)["pending"] == 0


async def test_bad_pushes_are_refused_and_wake_nothing(
    push: PushDovecot, settings: Settings, session_factory: sessionmaker[Session],
    engine: Engine, tmp_path: Path,
) -> None:
    worker = push_worker(settings, engine, session_factory, push, tmp_path)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    url = f"http://127.0.0.1:{push.port}/dovecot"
    doc = {"user": push.server.user, "event": "messageNew", "folder": "INBOX"}
    try:
        await wait_for(lambda: worker.imap[0].lock.name != "")  # connected and drained
        push.server.append(message("waits for a real push"))
        async with httpx.AsyncClient(timeout=10) as client:
            refused = [
                await client.put(url, json=doc),
                await client.put(url, json=doc, auth=("dovecot", "wrong-secret-0123456789")),
                await client.put(url, json=doc, headers={"Authorization": "Bearer nope"}),
                await client.put(url, json=doc, headers={"Authorization": "Basic !!notb64"}),
                await client.put(url, content=b"{not json", auth=("dovecot", SECRET)),
                await client.put(url, json=["user"], auth=("dovecot", SECRET)),
                await client.put(url, json={**doc, "user": "someone@else.test"},
                                 auth=("dovecot", SECRET)),
                await client.put(url, json={**doc, "folder": "Archive"}, auth=("dovecot", SECRET)),
                await client.put(url, content=b"x" * 70_000, auth=("dovecot", SECRET)),
                await client.get(url, auth=("dovecot", SECRET)),
            ]
            assert [r.status_code for r in refused] == [
                401, 401, 401, 401, 400, 400, 404, 404, 413, 405,
            ]
            assert refused[0].headers["www-authenticate"].startswith("Basic")
            assert all("Traceback" not in r.text for r in refused)
            await asyncio.sleep(1.0)
            assert stored(session_factory) == 0
            # The same listener takes a good push (Bearer works too): the message comes in.
            good = await client.put(url, json=doc, headers={"Authorization": f"Bearer {SECRET}"})
            assert good.status_code == 204
        await wait_for(lambda: stored(session_factory) == 1)
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


async def test_a_wake_ends_idle_at_once_and_the_session_stays_usable(
    dovecot: Dovecot, mailbox: MailboxConfig
) -> None:
    """IDLE mode: the push cuts the IDLE short (no mail at all, so no notice can end it)."""
    session = ImapSession(mailbox, timeout=10)
    await session.open()
    try:
        wake = asyncio.Event()
        waiting = asyncio.create_task(session.wait_for_news(600, wake))
        await asyncio.sleep(0.2)
        assert not waiting.done()
        wake.set()
        assert await asyncio.wait_for(waiting, 10) == "woken"
        # Set before the call: returns at once (a push that came during the drain).
        assert await asyncio.wait_for(session.wait_for_news(600, wake), 10) == "woken"
        wake.clear()
        # A message committed during the IDLE (as the push reports it): the IDLE the wake
        # ends leaves the session synced, so the drain's SEARCH sees it.
        waiting = asyncio.create_task(session.wait_for_news(600, wake))
        await asyncio.sleep(0.2)
        await asyncio.to_thread(dovecot.append, message("during the IDLE"))
        wake.set()
        assert await asyncio.wait_for(waiting, 10) in ("woken", "news")
        assert await session.search("ALL") == [1]
    finally:
        await session.close()


@pytest.mark.parametrize("secret", [None, "short"])
def test_push_listen_needs_a_secret(secret: str | None) -> None:
    with pytest.raises(ConfigError, match="IMAP_PUSH_SECRET"):
        load_settings(_env_file=None, imap_push_listen="127.0.0.1:9999", imap_push_secret=secret)


async def test_push_port_in_use_is_a_clear_error(
    push: PushDovecot, settings: Settings, engine: Engine,
    session_factory: sessionmaker[Session], tmp_path: Path,
) -> None:
    worker = push_worker(settings, engine, session_factory, push, tmp_path)
    with socket.create_server(("127.0.0.1", push.port)):
        with pytest.raises(ConfigError, match="cannot listen"):
            worker._bind_push()


@pytest.fixture(scope="module")
def two_push_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[PushDovecot, PushDovecot]]:
    """One Dovecot pushing every LMTP delivery to two workers' listeners (driver, driver2),
    as docs/scaling.md tells operators with several workers to configure it."""
    port_a, port_b = free_port(), free_port()
    server = Dovecot(
        tmp_path_factory.mktemp("push2-dovecot"), ssl=False,
        push_url=f"http://dovecot:{SECRET}@127.0.0.1:{port_a}/dovecot",
        more_push_urls=(f"http://dovecot:{SECRET}@127.0.0.1:{port_b}/dovecot",),
    ).start()
    yield PushDovecot(server, port_a), PushDovecot(server, port_b)
    server.stop()


async def test_a_standby_worker_takes_the_folder_over_at_the_next_push(
    two_push_server: tuple[PushDovecot, PushDovecot], settings: Settings,
    session_factory: sessionmaker[Session], engine: Engine, tmp_path: Path,
) -> None:
    """Two workers, one folder: the one holding its lock drains on each push; the other is
    pushed too and stays on standby without logging in to IMAP. Once the holder stops, the
    next push brings the standby in at once (no poll for an hour, no IDLE)."""
    push_a, push_b = two_push_server
    server = push_a.server
    server.reset_mail()
    server.set_metadata(HTTP_NOTIFY, f"user={server.user}")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = push_worker(settings, engine, session_factory, push_a, tmp_path / "a")
    b = push_worker(settings, engine, session_factory, push_b, tmp_path / "b")
    # Another process, as far as the folder's lock is concerned (SQLite leases are per owner).
    b.imap[0].lock.owner = "another-host:2:standby"
    b_pushes: list[int] = []
    b_wake = b.wake_pushed

    def b_recorded(user: str, folder: str) -> int:
        b_pushes.append(b_wake(user, folder))
        return b_pushes[-1]

    b.wake_pushed = b_recorded  # type: ignore[method-assign]
    b_logins = [0]
    b_open = b.imap[0].imap.open

    async def b_counted() -> None:
        b_logins[0] += 1
        await b_open()

    b.imap[0].imap.open = b_counted  # type: ignore[method-assign]
    stop_a, stop_b = asyncio.Event(), asyncio.Event()
    task_a = asyncio.create_task(a.run(stop_a))
    task_b: asyncio.Task[None] | None = None
    try:
        await wait_for(lambda: a.imap[0].lock.held)
        task_b = asyncio.create_task(b.run(stop_b))
        await wait_for(lambda: b_logins[0] == 1 and b.imap[0].lock.name != "")
        for n in range(3):
            await asyncio.to_thread(server.lmtp_deliver, message(f"while A holds it {n}"))
            await wait_for(lambda n=n: stored(session_factory) == n + 1)  # type: ignore[misc]
        await wait_for(lambda: len(b_pushes) == 3)
        await asyncio.sleep(0.3)  # B's tries after the pushes
        assert not b.imap[0].lock.held and b_logins[0] == 1  # the lock tried, IMAP left alone
        stop_a.set()
        await asyncio.wait_for(task_a, 15)
        assert not a.imap[0].lock.held
        await asyncio.to_thread(server.lmtp_deliver, message("after A stopped"))
        await wait_for(lambda: stored(session_factory) == 4)
        assert b.imap[0].lock.held
    finally:
        stop_a.set()
        stop_b.set()
        await asyncio.wait_for(task_a, 15)
        if task_b is not None:
            await asyncio.wait_for(task_b, 15)
    assert counts(session_factory)["pending"] == 0
    assert all("\\Seen" in f for f in server.flags().values())
