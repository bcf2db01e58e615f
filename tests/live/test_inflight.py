"""The LMTP receiver's budget of bytes in flight (LMTP_INFLIGHT_BYTES), against the real
receiver: concurrent big messages wait for room or are answered 451, and every one ends up
stored exactly once; small mail goes on meanwhile."""

from __future__ import annotations

import smtplib
import threading
import time
from collections.abc import Sequence

from sqlalchemy.orm import Session, sessionmaker

from mailticket.live.lmtp import start_receiver
from mailticket.types import Outcome
from tests.live.dovecot import free_port
from tests.live.helpers import FakeHandler, counts, message

BIG = 600_000  # bytes of a big message (well over the per-message free bytes set below)


def big(subject: str) -> bytes:
    # CRLF: smtplib sends bytes as they are, and a bare LF does not end an SMTP line.
    return message(subject, body=("x" * 76 + "\n") * (BIG // 78)).replace(b"\n", b"\r\n")


class SlowStore:
    """The group store of the worker, over FakeHandler, slowed down so that messages pile up
    while a group is committed; records each group's big messages and every outcome."""

    def __init__(self, factory: sessionmaker[Session], delay: float) -> None:
        self.factory = factory
        self.delay = delay
        self.handler = FakeHandler()
        self.bigs_per_group: list[int] = []
        self.actions: list[str] = []
        self.lock = threading.Lock()

    def __call__(
        self, items: Sequence[tuple[bytes, str]], prepared: Sequence[object] | None
    ) -> list[Outcome]:
        time.sleep(self.delay)
        with self.factory() as session:
            outcomes = self.handler.process_batch(session, items, prepared=prepared)
            session.commit()
        with self.lock:
            self.bigs_per_group.append(sum(len(raw) > BIG // 2 for raw, _ in items))
            self.actions += [o.action for o in outcomes]
        return outcomes


def _send(port: int, raw: bytes, answers: list[tuple[int, float]], retry: bool) -> None:
    """One message, sent again after a 451 (as an MTA would, sooner); records each answer
    and when it came."""
    for _ in range(40):
        with smtplib.LMTP("127.0.0.1", port, timeout=60) as client:
            client.ehlo_or_helo_if_needed()
            client.mail("customer@example.com")
            client.rcpt("support@example.test")
            try:
                code, _ = client.data(raw)
            except smtplib.SMTPDataError as exc:
                code = exc.smtp_code
        answers.append((code, time.monotonic()))
        if code == 250 or not retry or code // 100 != 4:
            return
        time.sleep(0.2)


def _run(port: int, bigs: int, smalls: int, retry: bool) -> tuple[list[list[tuple[int, float]]],
                                                                   list[list[tuple[int, float]]]]:
    big_answers: list[list[tuple[int, float]]] = [[] for _ in range(bigs)]
    small_answers: list[list[tuple[int, float]]] = [[] for _ in range(smalls)]
    threads = [
        threading.Thread(target=_send, args=(port, big(f"big {i}"), got, retry))
        for i, got in enumerate(big_answers)
    ]
    for t in threads:
        t.start()
    time.sleep(0.1)  # the big ones are under way (and some waiting for room)
    smalls_sent = [
        threading.Thread(target=_send, args=(port, message(f"small {i}"), got, retry))
        for i, got in enumerate(small_answers)
    ]
    for t in smalls_sent:
        t.start()
    for t in threads + smalls_sent:
        t.join(120)
    return big_answers, small_answers


def test_concurrent_big_messages_wait_for_room_and_small_ones_go_on(
    session_factory: sessionmaker[Session],
) -> None:
    """A budget just under two big messages: six sent at once are never more than two in a
    group (the eldest, which never waits, and one more); each is answered 250 after a wait;
    the small ones sent meanwhile are not queued behind them."""
    store = SlowStore(session_factory, delay=0.4)
    size = len(big("big"))
    port = free_port()
    ctl = start_receiver(
        f"127.0.0.1:{port}", store, max_message_size=10 * size,
        inflight_bytes=2 * size - 1, inflight_wait=60,
    )
    try:
        ctl.inflight.free_bytes = 16 * 1024  # type: ignore[attr-defined]
        bigs, smalls = _run(port, 6, 3, retry=False)
    finally:
        ctl.stop()
    assert [[code for code, _ in got] for got in bigs] == [[250]] * 6
    assert [[code for code, _ in got] for got in smalls] == [[250]] * 3
    assert max(store.bigs_per_group) <= 2, store.bigs_per_group
    # Not starved: every small one is answered before the last big one.
    assert max(got[-1][1] for got in smalls) < max(got[-1][1] for got in bigs)
    assert sorted(store.actions) == ["logged"] * 9
    assert counts(session_factory)["email_log"] == 9


def test_a_session_that_waits_too_long_is_answered_451_and_the_retry_is_stored_once(
    session_factory: sessionmaker[Session],
) -> None:
    store = SlowStore(session_factory, delay=0.6)
    size = len(big("big"))
    port = free_port()
    ctl = start_receiver(
        f"127.0.0.1:{port}", store, max_message_size=10 * size,
        inflight_bytes=2 * size, inflight_wait=0.2,
    )
    try:
        ctl.inflight.free_bytes = 16 * 1024  # type: ignore[attr-defined]
        bigs, smalls = _run(port, 4, 2, retry=True)
        refused = ctl.inflight.refused  # type: ignore[attr-defined]
    finally:
        ctl.stop()
    codes = [code for got in bigs + smalls for code, _ in got]
    assert all(got[-1][0] == 250 for got in bigs + smalls), codes
    assert set(codes) == {250, 451} and refused == codes.count(451), codes  # never a 5xx
    # Each stored exactly once: no retry came after its message was committed.
    assert sorted(store.actions) == ["logged"] * 6
    assert counts(session_factory)["email_log"] == 6


def test_a_message_bigger_than_the_whole_budget_still_goes_through(
    session_factory: sessionmaker[Session],
) -> None:
    """Alone, it is the eldest message in flight, which never waits."""
    store = SlowStore(session_factory, delay=0)
    port = free_port()
    ctl = start_receiver(
        f"127.0.0.1:{port}", store, max_message_size=10 * BIG,
        inflight_bytes=1024, inflight_wait=0.2,
    )
    try:
        answers: list[tuple[int, float]] = []
        _send(port, big("alone"), answers, retry=False)
    finally:
        ctl.stop()
    assert [code for code, _ in answers] == [250]
    assert store.actions == ["logged"]
