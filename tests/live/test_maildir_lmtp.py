"""Maildir source (new/ → cur/ after commit) and the LMTP/SMTP receiver (250 after commit, 451)."""

from __future__ import annotations

import logging
import os
import smtplib
import socket
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from mailticket.live import maildir
from mailticket.live.lmtp import HoldHeaders, parse_listen, start_receiver
from mailticket.live.maildir import MaildirSource, seen_name
from mailticket.store.db import make_engine, make_session_factory
from mailticket.store.models import QuarantineEntry, RawMessage
from mailticket.ticketing.quarantine import quarantine_refused
from mailticket.types import Outcome
from tests.live.dovecot import free_port
from tests.live.helpers import BatchRecorder, FakeHandler, counts, message
from tests.mailfactory import make_email


def test_maildir_moves_to_cur_after_commit(
    tmp_path: Path, session_factory: sessionmaker[Session]
) -> None:
    box = tmp_path / "Maildir"
    src = MaildirSource(box, FakeHandler(), session_factory, max_message_size=50_000)
    src.ensure()
    (box / "new" / "1.a:2,F").write_bytes(message("one"))
    (box / "new" / "2.b").write_bytes(message("two"))
    (box / "new" / "3.c").write_bytes(message("big", body="y" * 60_000))
    (box / "new" / "4.d").write_bytes(message("POISON"))
    assert src.drain() == 4
    assert os.listdir(box / "new") == []
    assert sorted(os.listdir(box / "cur")) == ["1.a:2,FS", "2.b:2,S", "4.d:2,S"]
    assert os.listdir(box / "held") == ["3.c"]  # the too-large one, whole, for an admin
    c = counts(session_factory)
    assert c["email_log"] == 2 and c["quarantine"] == 2
    assert src.drain() == 0


def test_what_is_not_a_readable_file_in_new_does_not_stop_the_maildir(
    tmp_path: Path, session_factory: sessionmaker[Session], caplog: pytest.LogCaptureFixture
) -> None:
    """A directory in new/ failed every batch it was in (IsADirectoryError), so every drain:
    the mail after it was never stored; a FIFO would block the drain for ever. Such entries
    stay where they are, with one warning each."""
    box = tmp_path / "Maildir"
    src = MaildirSource(box, FakeHandler(), session_factory, max_message_size=50_000)
    src.ensure()
    (box / "new" / "0.dir").mkdir()
    os.symlink(box / "new" / "0.loop", box / "new" / "0.loop")  # ELOOP on every read
    os.mkfifo(box / "new" / "0.pipe")  # reading it would wait for a writer for ever
    (box / "new" / "1.a").write_bytes(message("one"))
    (box / "new" / "2.b").write_bytes(message("two"))
    with caplog.at_level(logging.WARNING, logger="mailticket.live.maildir"):
        assert src.drain() == 2
        assert src.drain() == 0
    assert sorted(os.listdir(box / "cur")) == ["1.a:2,S", "2.b:2,S"]
    assert sorted(os.listdir(box / "new")) == ["0.dir", "0.loop", "0.pipe"]
    assert counts(session_factory)["email_log"] == 2
    warned = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert len(warned) == 3, warned  # once each, not at every drain
    assert any("0.dir" in w and "directory" in w for w in warned)
    assert any("0.loop" in w for w in warned)
    assert any("0.pipe" in w and "not a regular file" in w for w in warned)


def test_maildir_redelivered_file_is_a_duplicate(
    tmp_path: Path, session_factory: sessionmaker[Session]
) -> None:
    """A crash after the commit but before the rename: the file comes again, no second row."""
    box = tmp_path / "Maildir"
    handler = FakeHandler()
    src = MaildirSource(box, handler, session_factory, max_message_size=50_000)
    src.ensure()
    raw = message("again")
    (box / "new" / "x").write_bytes(raw)
    src.drain()
    (box / "new" / "x").write_bytes(raw)
    src.drain()
    assert counts(session_factory)["email_log"] == 1 and handler.calls == 2


def test_a_maildir_batch_ends_at_its_byte_budget(
    tmp_path: Path, session_factory: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every file of a batch is held with its parse until the commit: a batch ends before
    the file that would take it over BATCH_BYTES, a bigger file is a batch of its own; an
    over-size file (quarantined, headers only) does not count."""
    monkeypatch.setattr(maildir, "BATCH_BYTES", 6000)
    box = tmp_path / "Maildir"
    handler = BatchRecorder(big=6000)
    src = MaildirSource(box, handler, session_factory, max_message_size=30_000)
    src.ensure()
    bodies = [2500, 2500, 2500, 2500, 9000, 40_000, 2500, 2500, 20_000, 2500]
    for i, size in enumerate(bodies):
        (box / "new" / f"{i:02}.m").write_bytes(message(f"q{i}", body="x" * size))
    assert src.drain() == len(bodies)
    assert [len(b) for b in handler.batches] == [2, 2, 1, 2, 1, 1]
    assert all(sum(b) <= 6000 or len(b) == 1 for b in handler.batches), handler.batches
    c = counts(session_factory)
    assert c["email_log"] == len(bodies) - 1 and c["quarantine"] == 1
    assert os.listdir(box / "new") == []


def test_a_crash_before_an_oversized_file_is_moved_does_not_quarantine_it_again(
    tmp_path: Path, session_factory: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pass commits the quarantine entry, then dies moving the file to held/: the next
    pass moves it without a second quarantine (no Message-ID check can see headers-only
    mail; the ledger row committed with the entry does)."""
    box = tmp_path / "Maildir"
    src = MaildirSource(box, FakeHandler(), session_factory, max_message_size=50_000)
    src.ensure()
    (box / "new" / "1.big").write_bytes(message("big", body="y" * 60_000))
    real_rename = os.rename

    def crash_on_hold(src_path: os.PathLike[str], dst: os.PathLike[str]) -> None:
        if Path(dst).parent.name == maildir.HELD:
            raise KeyboardInterrupt("killed between the commit and the move")
        real_rename(src_path, dst)

    with monkeypatch.context() as m:
        m.setattr(os, "rename", crash_on_hold)
        with pytest.raises(KeyboardInterrupt):
            src.drain()
    assert os.listdir(box / "new") == ["1.big"]
    assert counts(session_factory)["quarantine"] == 1  # committed before the crash
    restarted = MaildirSource(box, FakeHandler(), session_factory, max_message_size=50_000)
    assert restarted.drain() == 1
    assert os.listdir(box / "new") == [] and os.listdir(box / "held") == ["1.big"]
    with session_factory() as s:
        entries = s.scalars(select(QuarantineEntry)).all()
        assert [(e.attempts, e.status) for e in entries] == [(1, "held")]
    c = counts(session_factory)
    assert c["quarantine"] == 1 and c["ledger"] == 1 and c["pending"] == 0


# Run in a child so that its peak RSS (VmHWM) is its own, and under an address-space limit
# well below the file's size: reading the file whole fails there at once (MemoryError)
# instead of taking 3 GB of the machine.
_DRAIN_CHILD = """
import resource, sys
from pathlib import Path
limit = 1536 * 1024 * 1024
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
from mailticket.live.maildir import MaildirSource
from mailticket.store.db import make_engine, make_session_factory
from mailticket.store.models import QuarantineEntry, RawMessage
from mailticket.ticketing.quarantine import quarantine_refused
from tests.live.helpers import FakeHandler
engine = make_engine(sys.argv[1])
src = MaildirSource(Path(sys.argv[2]), FakeHandler(), make_session_factory(engine),
                    max_message_size=1_000_000)
moved = src.drain()
hwm = next(l for l in open("/proc/self/status") if l.startswith("VmHWM:")).split()[1]
print(moved, int(hwm) * 1024)
"""


def test_a_huge_maildir_file_is_held_without_reading_it_whole(
    tmp_path: Path, db_url: str, session_factory: sessionmaker[Session]
) -> None:
    """A 3 GB (sparse) file in new/: only its head is read, its headers are quarantined,
    the file is moved whole to held/ (named in the reason), and the next message is stored;
    the worker's peak RSS stays modest."""
    box = tmp_path / "Maildir"
    (box / "new").mkdir(parents=True)
    huge = box / "new" / "1.huge"
    huge.write_bytes(message("attachment", body="x" * 1000))
    size = 3 * 1024**3
    os.truncate(huge, size)  # a hole: costs no disk
    (box / "new" / "2.next").write_bytes(message("the next one"))
    done = subprocess.run(
        [sys.executable, "-c", _DRAIN_CHILD, db_url, str(box)],
        capture_output=True, text=True, timeout=120, cwd=Path(__file__).parents[2],
    )
    assert done.returncode == 0, done.stderr[-2000:]
    moved, peak = map(int, done.stdout.split())
    assert moved == 2
    assert peak < 200 * 1024 * 1024, f"peak RSS {peak / 2**20:.0f} MB"
    assert os.listdir(box / "new") == []
    assert os.listdir(box / "cur") == ["2.next:2,S"]
    assert (box / "held" / "1.huge").stat().st_size == size
    c = counts(session_factory)
    assert c["email_log"] == 1 and c["quarantine"] == 1
    with session_factory() as s:
        reason = s.scalars(select(QuarantineEntry.reason)).one()
    assert reason == f"too large: {size} bytes; file kept at {box / 'held' / '1.huge'}"


def test_seen_name_keeps_flags() -> None:
    assert seen_name("abc") == "abc:2,S"
    assert seen_name("abc:2,RF") == "abc:2,FRS"
    assert seen_name("abc:2,S") == "abc:2,S"


def _processor(factory: sessionmaker[Session]):  # type: ignore[no-untyped-def]
    handler = FakeHandler()

    def store(
        items: Sequence[tuple[bytes, str]], prepared: Sequence[object] | None
    ) -> list[Outcome]:
        with factory() as session:
            outcomes = handler.process_batch(session, items, prepared=prepared)
            session.commit()
            return outcomes

    return store


@pytest.mark.parametrize("proto", ["lmtp", "smtp"])
def test_receiver_answers_250_after_commit(
    proto: str, session_factory: sessionmaker[Session]
) -> None:
    port = free_port()
    ctl = start_receiver(f"{proto}://127.0.0.1:{port}", _processor(session_factory),
                         max_message_size=100_000)
    try:
        client = smtplib.LMTP("127.0.0.1", port) if proto == "lmtp" else smtplib.SMTP("127.0.0.1", port)
        with client:
            refused = client.sendmail("customer@example.com", ["support@example.test"], message("hi"))
        assert refused == {}
        # The reply came only after the commit: the row is visible to a new session now.
        assert counts(session_factory)["email_log"] == 1
    finally:
        ctl.stop()


def test_lmtp_answers_once_per_recipient(session_factory: sessionmaker[Session]) -> None:
    """RFC 2033: after DATA, one reply per accepted recipient (smtplib.LMTP reads only one)."""
    port = free_port()
    ctl = start_receiver(f"127.0.0.1:{port}", _processor(session_factory), max_message_size=100_000)
    try:
        replies = _send_raw(port, [b"s@example.test", b"h@example.test"], message("two rcpts"))
        assert all(r.startswith(b"250 ") for r in replies), replies
        assert counts(session_factory)["email_log"] == 1
    finally:
        ctl.stop()


@pytest.mark.parametrize("proto", ["lmtp", "smtp"])
def test_pipelined_sessions_are_offered_and_served_in_order(
    session_factory: sessionmaker[Session], proto: str
) -> None:
    """RFC 2033 4.1 / RFC 2920: PIPELINING is in the LHLO (EHLO) answer, and a client that
    sends MAIL, RCPT and DATA in one write, as Postfix does, gets their replies in order; the
    first message's dot-stuffed content, the final "." and the next message's commands come
    in one write too."""
    port = free_port()
    ctl = start_receiver(f"{proto}://127.0.0.1:{port}", _processor(session_factory),
                         max_message_size=100_000)
    greeting = b"LHLO" if proto == "lmtp" else b"EHLO"
    envelope = b"MAIL FROM:<a@example.com>\r\nRCPT TO:<s@example.test>\r\nDATA\r\n"
    bodies = [message(f"pipelined {i}").replace(b"\n", b"\r\n") + b"\r\n..dot\r\n"
              for i in range(3)]
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            f = sock.makefile("rb")
            f.readline()
            sock.sendall(greeting + b" test\r\n")
            offered = [f.readline()]
            while not offered[-1].startswith(b"250 "):
                offered.append(f.readline())
            assert b"250-PIPELINING\r\n" in offered, offered
            sock.sendall(envelope)
            replies = []
            for i, body in enumerate(bodies):
                replies += [f.readline()[:3] for _ in range(3)]  # MAIL, RCPT, DATA
                # the content, its end, and (but for the last) the next envelope at once
                sock.sendall(body + b".\r\n" + (envelope if i < 2 else b"QUIT\r\n"))
                replies.append(f.readline()[:3])
            replies.append(f.readline()[:3])
        assert replies == [b"250", b"250", b"354", b"250"] * 3 + [b"221"], replies
        assert counts(session_factory)["email_log"] == 3
    finally:
        ctl.stop()


def test_receiver_answers_451_when_the_database_is_down() -> None:
    dead = make_engine(f"postgresql+psycopg2://postgres@127.0.0.1:{free_port()}/nowhere")
    port = free_port()
    ctl = start_receiver(f"127.0.0.1:{port}", _processor(make_session_factory(dead)),
                         max_message_size=100_000)
    try:
        with smtplib.LMTP("127.0.0.1", port) as client:
            with pytest.raises(smtplib.SMTPDataError) as err:
                client.sendmail("a@example.com", ["support@example.test"], message("x"))
        assert err.value.smtp_code == 451
    finally:
        ctl.stop()
        dead.dispose()


def _hold(factory: sessionmaker[Session]) -> HoldHeaders:
    """What the worker passes as the receiver's `hold` (Worker._hold_pushed)."""

    def hold(headers: bytes, source: str, reason: str, message_id: str | None) -> None:
        with factory() as session:
            quarantine_refused(session, headers, source, reason, message_id)
            session.commit()

    return hold


def _send_raw(port: int, rcpts: Sequence[bytes], raw: bytes) -> list[bytes]:
    """One LMTP transaction; the replies to its DATA (one per recipient)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        f = sock.makefile("rb")
        f.readline()
        sock.sendall(b"LHLO test\r\n")
        while not f.readline().startswith(b"250 "):
            pass
        for line in [b"MAIL FROM:<big@example.com>", *(b"RCPT TO:<%s>" % r for r in rcpts),
                     b"DATA"]:
            sock.sendall(line + b"\r\n")
            assert f.readline()[:1] in (b"2", b"3")
        sock.sendall(raw.replace(b"\n", b"\r\n") + b"\r\n.\r\n")
        return [f.readline() for _ in rcpts]


def test_lmtp_quarantines_the_headers_of_an_oversized_message(
    session_factory: sessionmaker[Session],
) -> None:
    """552 5.3.4 to each recipient, and the headers (not the body) quarantined with the
    size and the limit, as IMAP and Maildir do; the same Message-ID sent again (new
    Received line) bumps that entry, a new Message-ID gets its own."""
    port = free_port()
    ctl = start_receiver(f"127.0.0.1:{port}", _processor(session_factory),
                         max_message_size=50_000, hold=_hold(session_factory))
    big = make_email(subject="huge scan", body="z" * 80_000, message_id="<scan@example.com>")
    try:
        replies = _send_raw(port, [b"s@example.test", b"h@example.test"], big)
        assert all(r.startswith(b"552 5.3.4 ") for r in replies), replies
        with session_factory() as s:
            entry = s.scalars(select(QuarantineEntry)).one()
            headers = s.get_one(RawMessage, entry.raw_message_id).raw
            reason, attempts, mid, source = (
                entry.reason, entry.attempts, entry.message_id, entry.source
            )
        size = len(big.replace(b"\n", b"\r\n")) + 2  # counted with the last CRLF
        assert reason == f"too large: {size} bytes (limit 50000)"
        assert (attempts, mid, source) == (1, "<scan@example.com>", "lmtp:big@example.com")
        assert b"Subject: huge scan" in headers and b"zzz" not in headers
        assert headers.endswith(b"\r\n\r\n")
        again = b"Received: from relay2 by mx; retry\n" + big
        assert _send_raw(port, [b"s@example.test"], again)[0].startswith(b"552 5.3.4 ")
        other = make_email(subject="huge too", body="z" * 80_000, message_id="<other@x.org>")
        assert _send_raw(port, [b"s@example.test"], other)[0].startswith(b"552 5.3.4 ")
        with session_factory() as s:
            rows = s.execute(
                select(QuarantineEntry.message_id, QuarantineEntry.attempts)
                .order_by(QuarantineEntry.id)
            ).all()
        assert [tuple(r) for r in rows] == [("<scan@example.com>", 2), ("<other@x.org>", 1)]
        assert counts(session_factory)["email_log"] == 0
    finally:
        ctl.stop()


def test_lmtp_answers_552_to_an_oversized_message_when_the_database_is_down(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Its record is best effort: logged, and still 552, not 451 (which would have the MTA
    send it all again, to be refused again)."""
    dead = make_engine(f"postgresql+psycopg2://postgres@127.0.0.1:{free_port()}/nowhere")
    factory = make_session_factory(dead)
    port = free_port()
    ctl = start_receiver(f"127.0.0.1:{port}", _processor(factory), max_message_size=50_000,
                         hold=_hold(factory))
    try:
        big = make_email(subject="huge", body="z" * 80_000)
        assert _send_raw(port, [b"s@example.test"], big)[0].startswith(b"552 5.3.4 ")
        assert "cannot quarantine the headers" in caplog.text
        assert "database unavailable" in caplog.text
    finally:
        ctl.stop()
        dead.dispose()


def test_parse_listen() -> None:
    assert parse_listen("127.0.0.1:2424") == ("lmtp", "127.0.0.1", 2424)
    assert parse_listen("smtp://[::1]:25") == ("smtp", "::1", 25)
    with pytest.raises(ValueError, match="host:port"):
        parse_listen("lmtp://nowhere")
