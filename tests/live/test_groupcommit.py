"""Group commit in the LMTP receiver (real aiosmtpd, real pipeline, SQLite and PostgreSQL):
concurrent sessions share transactions, every 250 comes after its message's commit, and a
group the database refuses is split so that only the refused message is answered 451 (a
group met by an outage is answered 451 whole: test_pg_restart)."""

from __future__ import annotations

import asyncio
import smtplib
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import insert, select, text

from mailticket.live.groupcommit import GroupCommit
from mailticket.live.lmtp import start_receiver
from mailticket.live.worker import Worker
from mailticket.runtime import Runtime
from mailticket.settings import load_settings
from mailticket.store.gate import write_gate
from mailticket.store.models import EmailLog
from mailticket.types import Outcome
from tests.live.dovecot import free_port
from tests.live.helpers import commits_held
from tests.mailfactory import make_email

COMMIT_DELAY = 0.15  # seconds every commit is held back before it reaches the database


def _mail(tag: str, i: int) -> tuple[str, bytes]:
    mid = f"<{tag}-{i}-{time.time_ns()}@client.example>"
    return mid, make_email(subject=f"{tag} {i}", sender=f"c{i}@example.com", message_id=mid)


def _stored(rt: Runtime, mid: str) -> bool:
    # A connection of its own: sees only what was committed.
    with rt.engine.connect() as conn:
        return conn.scalar(select(EmailLog.id).where(EmailLog.email_message_id == mid)) is not None


def _send(port: int, raw: bytes) -> int:
    """The LMTP reply code to this message's DATA."""
    try:
        with smtplib.LMTP("127.0.0.1", port) as client:
            client.sendmail("customer@example.com", ["support@example.test"], raw)
    except smtplib.SMTPDataError as exc:
        return exc.smtp_code
    return 250


async def test_250_comes_after_the_commit_and_sessions_share_commits(
    make_runtime: Callable[..., Runtime],
) -> None:
    rt = make_runtime()
    port = free_port()
    settings = load_settings(
        database_url=rt.settings.database_url, _env_file=None,
        lmtp_listen=f"127.0.0.1:{port}", smtp_host="127.0.0.1",
    )
    commits: list[float] = []
    # Held before the DBAPI commit: a 250 sent before the commit would find no row.
    with commits_held(rt.engine, COMMIT_DELAY, commits):
        worker = Worker(settings, rt.engine, rt.session_factory, rt.pipeline)
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(stop))
        try:
            await asyncio.sleep(0.3)
            mails = [_mail("group", i) for i in range(40)]

            def deliver(mail: tuple[str, bytes]) -> tuple[int, bool]:
                code = _send(port, mail[1])
                return code, _stored(rt, mail[0])  # looked up the moment the answer came

            def run_clients() -> list[tuple[int, bool]]:
                with ThreadPoolExecutor(8) as pool:
                    return list(pool.map(deliver, mails))

            replies = await asyncio.to_thread(run_clients)
            assert [code for code, _ in replies] == [250] * 40
            assert all(stored for _, stored in replies), "250 answered before the commit"
            # 40 messages from 8 concurrent sessions, each commit held 150 ms: shared commits.
            # (The worker's own jobs commit too: that only makes the count larger.)
            assert len(commits) < 40, f"{len(commits)} commits for 40 messages: no group commit"
        finally:
            stop.set()
            await asyncio.wait_for(task, 15)


@pytest.mark.parametrize("refusal", ["taken key", "no such table"])
def test_a_refused_message_in_a_group_does_not_lose_the_others(
    make_runtime: Callable[..., Runtime], refusal: str
) -> None:
    """"no such table": on SQLite an OperationalError that is not an outage (its result
    code is SQLITE_ERROR, not BUSY), so the group is halved too, not answered 451 whole."""
    rt = make_runtime()
    groups: list[int] = []
    hold = threading.Event()

    def store(
        items: Sequence[tuple[bytes, str]], prepared: Sequence[object] | None
    ) -> list[Outcome]:
        groups.append(len(items))
        with rt.session_factory() as session:
            outcomes = rt.pipeline.process_batch(session, items, prepared=prepared)  # type: ignore[arg-type]
            if any(b"HOLD" in raw for raw, _ in items):
                hold.wait(10)  # the other sessions queue up behind this commit meanwhile
            if any(b"REFUSED" in raw for raw, _ in items):
                # The database refusing the transaction for what it holds (not because it is
                # away: that is answered 451 for the whole group, see test_pg_restart): a
                # real refusal, a row whose key is taken, and the whole transaction is lost.
                session.flush()
                table = EmailLog.__table__
                if refusal == "taken key":
                    session.execute(
                        insert(table).from_select(list(table.c), select(*table.c).limit(1))
                    )
                else:
                    session.execute(text("SELECT * FROM no_such_table"))
            session.commit()
            return outcomes

    port = free_port()
    ctl = start_receiver(
        f"127.0.0.1:{port}", store, max_message_size=1_000_000,
        prepare=lambda raw, source: rt.pipeline.prepare([(raw, source)])[0],
    )
    try:
        first = _mail("HOLD", 0)
        mails = [_mail("REFUSED" if i == 5 else "ok", i) for i in range(1, 9)]
        with ThreadPoolExecutor(9) as pool:
            held = pool.submit(_send, port, first[1])
            while not groups:
                time.sleep(0.01)
            answers = [pool.submit(_send, port, raw) for _, raw in mails]
            time.sleep(0.5)  # all eight are queued behind the held commit
            hold.set()
            codes = [a.result(30) for a in answers]
            assert held.result(30) == 250
        assert codes == [250, 250, 250, 250, 451, 250, 250, 250]
        assert 8 in groups, f"the eight did not share a transaction: {groups}"
        for i, (mid, _) in enumerate(mails):
            assert _stored(rt, mid) == (i != 4), mid
        assert _stored(rt, first[0])
    finally:
        ctl.stop()



def test_a_group_waits_for_the_sessions_it_just_answered(
    make_runtime: Callable[..., Runtime],
) -> None:
    """Eight sessions each deliver over one connection (an MTA with a kept connection),
    coming back a few milliseconds apart after each answer. The committer's window alone
    would split them into a few early ones and the rest; waiting for the sessions the last
    group answered puts all eight in one transaction once the stream is going."""
    rt = make_runtime()
    groups: list[int] = []
    turn = 0.3  # seconds each group's turn takes: patience lets a group wait a quarter of it

    def store(
        items: Sequence[tuple[bytes, str]], prepared: Sequence[object] | None
    ) -> list[Outcome]:
        groups.append(len(items))
        with write_gate(rt.engine), rt.session_factory() as session:
            outcomes = rt.pipeline.process_batch(session, items, prepared=prepared)  # type: ignore[arg-type]
            time.sleep(turn)
            session.commit()
            return outcomes

    def session(c: int) -> list[str]:
        sent = []
        with smtplib.LMTP("127.0.0.1", port) as client:
            for i in range(4):
                time.sleep(0.003 * c)  # back 0-21 ms after the answer, far below turn / 4
                mid, raw = _mail(f"stream{c}", i)
                client.sendmail("customer@example.com", ["support@example.test"], raw)
                sent.append(mid)
        return sent

    port = free_port()
    ctl = start_receiver(
        f"127.0.0.1:{port}", store, max_message_size=1_000_000,
        prepare=lambda raw, source: rt.pipeline.prepare([(raw, source)])[0],
    )
    try:
        with ThreadPoolExecutor(8) as pool:
            sent = [mid for mids in pool.map(session, range(8)) for mid in mids]
    finally:
        ctl.stop()
    assert sum(groups) == 32
    assert all(_stored(rt, mid) for mid in sent)
    assert groups.count(8) >= 2, f"the sessions of a group were not waited for: {groups}"


def test_a_stream_group_starts_once_its_sessions_are_back_not_a_window_later(
    make_runtime: Callable[..., Runtime],
) -> None:
    """The window groups sessions that arrive together at an idle receiver. In a stream the
    group waits for the sessions the last one answered instead, and starts as soon as they
    are all in: the window is not added to every group's turn."""
    rt = make_runtime()
    window, turn = 0.4, 0.2  # seconds: a window far longer than the sessions take to return
    turns: list[tuple[float, float, int]] = []  # (start, end, messages) of each group

    def store(
        items: Sequence[tuple[bytes, str]], prepared: Sequence[object] | None
    ) -> list[Outcome]:
        started = time.monotonic()
        with write_gate(rt.engine), rt.session_factory() as session:
            outcomes = rt.pipeline.process_batch(session, items, prepared=prepared)  # type: ignore[arg-type]
            time.sleep(turn)
            session.commit()
        turns.append((started, time.monotonic(), len(items)))
        return outcomes

    async def deliver() -> None:
        committer = GroupCommit(
            store, prepare=lambda raw, source: rt.pipeline.prepare([(raw, source)])[0],
            window=window,
        )

        async def session(c: int) -> None:
            for i in range(3):
                await committer.submit(_mail(f"s{c}", i)[1], f"lmtp:{c}")

        try:
            await asyncio.gather(*(session(c) for c in range(4)))
        finally:
            committer.close()

    asyncio.run(deliver())
    assert [n for _, _, n in turns] == [4, 4, 4]
    waits = [start - end for (start, _, _), (_, end, _) in zip(turns[1:], turns, strict=False)]
    assert max(waits) < window / 2, f"the stream's groups waited a window: {waits}"
