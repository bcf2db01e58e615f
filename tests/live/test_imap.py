"""IMAP source against a real Dovecot: store-then-flag, ledger, UIDVALIDITY, size limit, poison."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session, sessionmaker

from mailticket.live import imap, ledger
from mailticket.live.config import MailboxConfig
from mailticket.live.imap import ImapSource
from mailticket.live.imap_client import ImapSession
from mailticket.live.models import ImapLedgerEntry
from mailticket.store.models import QuarantineEntry
from tests.live.dovecot import Dovecot
from tests.live.helpers import BatchRecorder, FakeHandler, counts, message


def source(
    box: MailboxConfig, handler: FakeHandler, session_factory: sessionmaker[Session], engine: Engine,
    **kw: int,
) -> ImapSource:
    return ImapSource(
        box, handler, session_factory, engine,
        max_message_size=kw.get("max_message_size", 1_000_000), timeout=10,
    )


async def test_new_mail_is_stored_then_flagged_seen(
    dovecot: Dovecot, mailbox: MailboxConfig, session_factory: sessionmaker[Session], engine: Engine
) -> None:
    for i in range(3):
        dovecot.append(message(f"question {i}"))
    handler = FakeHandler()
    assert await source(mailbox, handler, session_factory, engine).run_once() == 3
    assert counts(session_factory) == {
        "email_log": 3, "distinct": 3, "quarantine": 0, "ledger": 3, "pending": 0
    }
    assert all("\\Seen" in flags for flags in dovecot.flags().values())
    # A second pass finds nothing new and processes nothing again.
    assert await source(mailbox, handler, session_factory, engine).run_once() == 0
    assert handler.calls == 3


async def test_move_and_delete_actions(
    dovecot: Dovecot, mailbox: MailboxConfig, session_factory: sessionmaker[Session], engine: Engine
) -> None:
    dovecot.create("Done")
    dovecot.append(message("to move"))
    moved = mailbox.model_copy(update={"after": "move:Done"})
    assert await source(moved, FakeHandler(), session_factory, engine).run_once() == 1
    assert dovecot.count("INBOX") == 0 and dovecot.count("Done") == 1

    dovecot.append(message("to delete"))
    deleting = mailbox.model_copy(update={"after": "delete"})
    assert await source(deleting, FakeHandler(), session_factory, engine).run_once() == 1
    assert dovecot.count("INBOX") == 0
    assert counts(session_factory)["email_log"] == 2


async def test_committed_but_not_flagged_is_flagged_on_restart_not_reprocessed(
    dovecot: Dovecot, mailbox: MailboxConfig, session_factory: sessionmaker[Session], engine: Engine
) -> None:
    """The state a kill -9 between commit and STORE leaves behind."""
    dovecot.append(message("crash window"))
    handler = FakeHandler()
    src = source(mailbox, handler, session_factory, engine)
    await src.imap.open()
    uid = (await src.imap.search("UNSEEN"))[0]
    fetched = await src._fetch_prepared([uid])
    await src.imap.close()
    import asyncio
    await asyncio.to_thread(src._store, src.imap.uidvalidity, fetched)
    assert counts(session_factory)["pending"] == 1
    assert "\\Seen" not in dovecot.flags()[uid]

    assert await source(mailbox, handler, session_factory, engine).run_once() == 0
    assert handler.calls == 1
    assert "\\Seen" in dovecot.flags()[uid]
    assert counts(session_factory)["pending"] == 0


async def test_uidvalidity_change_creates_no_duplicates(
    dovecot: Dovecot, session_factory: sessionmaker[Session], engine: Engine, mailbox: MailboxConfig
) -> None:
    box = mailbox.model_copy(update={"folder": "Support", "after": "move:Archive"})
    dovecot.create("Support")
    dovecot.create("Archive")
    msgs = [message(f"m{i}") for i in range(3)]
    for raw in msgs:
        dovecot.append(raw, "Support")
    assert await source(box, FakeHandler(), session_factory, engine).run_once() == 3
    first = ImapSession(box, 10)
    await first.open()
    old_validity = first.uidvalidity
    await first.close()

    # The folder is recreated (a server migration, a restore): same mail, new UIDVALIDITY.
    dovecot.delete("Support")
    dovecot.create("Support")
    for raw in msgs:
        dovecot.append(raw, "Support")
    handler = FakeHandler()
    assert await source(box, handler, session_factory, engine).run_once() == 3
    c = counts(session_factory)
    assert c["email_log"] == 3 and c["distinct"] == 3 and c["pending"] == 0
    with session_factory() as s:
        outcomes = s.scalars(
            select(ImapLedgerEntry.outcome).where(ImapLedgerEntry.uidvalidity != old_validity)
        ).all()
    assert outcomes == ["duplicate"] * 3
    assert dovecot.count("Support") == 0


async def test_oversized_and_poison_are_quarantined_and_the_rest_flows(
    dovecot: Dovecot, mailbox: MailboxConfig, session_factory: sessionmaker[Session], engine: Engine
) -> None:
    dovecot.append(message("before"))
    dovecot.append(message("huge", body="x" * 200_000))
    dovecot.append(message("POISON pill"))
    dovecot.append(message("after"))
    src = source(mailbox, FakeHandler(), session_factory, engine, max_message_size=100_000)
    assert await src.run_once() == 4
    c = counts(session_factory)
    assert c["email_log"] == 2 and c["quarantine"] == 2 and c["pending"] == 0
    with session_factory() as s:
        reasons = sorted(s.scalars(select(QuarantineEntry.reason)).all())
        huge = s.scalars(select(QuarantineEntry).where(QuarantineEntry.reason.like("too large%"))).one()
        assert huge.message_id is not None
    assert reasons[1].startswith("too large: ") and reasons[1].endswith(" bytes")
    assert all("\\Seen" in f for f in dovecot.flags().values())


async def test_a_deleting_mailbox_keeps_an_oversized_message_flagged(
    dovecot: Dovecot, mailbox: MailboxConfig, session_factory: sessionmaker[Session], engine: Engine
) -> None:
    """Only its headers are in the database, so IMAP_AFTER=delete must not delete it: it
    stays in the folder, flagged, also when the server action is redone after a restart."""
    dovecot.append(message("huge", body="x" * 200_000))
    dovecot.append(message("after"))
    deleting = mailbox.model_copy(update={"after": "delete"})
    src = source(deleting, FakeHandler(), session_factory, engine, max_message_size=100_000)
    assert await src.run_once() == 2
    flags = list(dovecot.flags().values())
    assert len(flags) == 1 and "\\Flagged" in flags[0] and "\\Seen" in flags[0]
    c = counts(session_factory)
    assert c["email_log"] == 1 and c["quarantine"] == 1 and c["pending"] == 0
    with session_factory() as s:
        assert s.scalars(select(ImapLedgerEntry.outcome).order_by(ImapLedgerEntry.uid)).all() == [
            "too_large", "logged"
        ]
        # A crash between the commit and the server action: the action is redone on restart.
        s.execute(update(ImapLedgerEntry).values(server_done=False))
        s.commit()
    assert await source(deleting, FakeHandler(), session_factory, engine).run_once() == 0
    assert dovecot.count("INBOX") == 1
    assert counts(session_factory)["quarantine"] == 1
    # The worker's pruning of old ledger rows keeps this one: the message is still in the
    # folder, and only the ledger stops the next drain from quarantining it again.
    with session_factory() as s:
        # Nothing: "after" is the folder's newest row, which stays too (ledger.newest_uid).
        assert ledger.prune(s, datetime.now(UTC) + timedelta(days=1)) == 0
        s.commit()
    assert await source(deleting, FakeHandler(), session_factory, engine).run_once() == 0
    assert counts(session_factory)["quarantine"] == 1


async def test_a_batch_ends_at_its_byte_budget_and_a_big_one_is_not_fetched_ahead(
    dovecot: Dovecot, mailbox: MailboxConfig, session_factory: sessionmaker[Session],
    engine: Engine, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every message of a batch is held with its parse until the commit: a batch ends before
    the message that would take it over BATCH_BYTES, a bigger message is a batch of its own,
    and while such a batch is stored the next is not fetched and parsed alongside it."""
    monkeypatch.setattr(imap, "BATCH_BYTES", 6000)
    bodies = [2500, 2500, 2500, 2500, 9000, 9000, 2500, 20_000, 2500]
    for i, size in enumerate(bodies):
        dovecot.append(message(f"question {i}", body="x" * size))
    handler = BatchRecorder(big=6000)
    assert await source(mailbox, handler, session_factory, engine).run_once() == len(bodies)
    assert counts(session_factory)["email_log"] == len(bodies)
    assert [len(b) for b in handler.batches] == [2, 2, 1, 1, 1, 1, 1]
    assert all(sum(b) <= 6000 or len(b) == 1 for b in handler.batches), handler.batches
    # (On SQLite the write gate already keeps them apart: the previous batch's server action
    # waits for the store's turn. PostgreSQL shows the fetch running ahead.)
    assert handler.prepared_while_big == 0
    assert all("\\Seen" in flags for flags in dovecot.flags().values())


def test_ledger_known_uids(session_factory: sessionmaker[Session]) -> None:
    with session_factory() as s:
        for uid in (1, 2, 5):
            ledger.record(s, mailbox="m", folder="INBOX", uidvalidity=7, uid=uid,
                          message_id=None, outcome="logged")
        s.commit()
        assert ledger.known_uids(s, "m", "INBOX", 7, [1, 3, 5, 9]) == {1, 5}
        assert ledger.known_uids(s, "m", "INBOX", 8, [1, 5]) == set()
        assert len(ledger.pending(s, "m", "INBOX")) == 3


def test_ledger_record_many_returns_ids_in_row_order_and_mark_done_confirms_them(
    session_factory: sessionmaker[Session],
) -> None:
    from sqlalchemy.exc import IntegrityError

    rows = [(9, "<a@x>", "logged"), (3, None, "quarantined"), (5, "<c@x>", "duplicate")]
    with session_factory() as s:
        ids = ledger.record_many(s, mailbox="m", folder="F", uidvalidity=4, rows=rows)
        assert ledger.record_many(s, mailbox="m", folder="F", uidvalidity=4, rows=[]) == []
        s.commit()
        got = {e.id: (e.uid, e.message_id, e.outcome, e.server_done)
               for e in s.scalars(select(ImapLedgerEntry))}
        assert [got[i] for i in ids] == [(*row, False) for row in rows]
        ledger.mark_done(s, ids[:2])
        s.commit()
        assert [e.uid for e in ledger.pending(s, "m", "F")] == [5]
        # The same UID twice is refused, as with `record`: the transaction fails as a whole.
        with pytest.raises(IntegrityError):
            ledger.record_many(s, mailbox="m", folder="F", uidvalidity=4, rows=[(3, None, "logged")])
        s.rollback()


def test_ledger_prune_forgets_only_old_confirmed_rows(session_factory: sessionmaker[Session]) -> None:
    from datetime import UTC, datetime, timedelta

    with session_factory() as s:
        old_done = ledger.record(s, mailbox="m", folder="F", uidvalidity=1, uid=1,
                                 message_id=None, outcome="logged")
        old_pending = ledger.record(s, mailbox="m", folder="F", uidvalidity=1, uid=2,
                                    message_id=None, outcome="logged")
        ledger.record(s, mailbox="m", folder="F", uidvalidity=1, uid=3, message_id=None,
                      outcome="logged").server_done = True
        s.flush()
        old_done.server_done = True
        long_ago = datetime.now(UTC) - timedelta(days=100)
        old_done.stored_at = old_pending.stored_at = long_ago
        s.commit()
        assert ledger.prune(s, datetime.now(UTC) - timedelta(days=90)) == 1
        s.commit()
        assert ledger.known_uids(s, "m", "F", 1, [1, 2, 3]) == {2, 3}


@pytest.mark.parametrize("after", ["sideways", "move:", "move:  "])
def test_bad_after_action_is_a_clear_error(after: str) -> None:
    with pytest.raises(ValueError, match="after must be"):
        MailboxConfig(host="localhost", user="u", password="p", after=after)


async def test_real_pipeline_creates_tickets_and_idle_delivers_within_seconds(
    dovecot: Dovecot, mailbox: MailboxConfig, make_runtime, engine: Engine  # type: ignore[no-untyped-def]
) -> None:
    import asyncio
    import time

    from mailticket.store.models import EmailLog, Ticket

    runtime = make_runtime(email_unmatched_action="create_ticket")
    box = mailbox.model_copy(update={"after": "move:Processed"})
    first = message("Printer on fire", sender="alice@example.com")
    dovecot.append(first)
    src = ImapSource(box, runtime.pipeline, runtime.session_factory, runtime.engine,
                     max_message_size=1_000_000, timeout=10, poll_interval=3600)
    task = asyncio.create_task(src.run())

    def tickets() -> int:
        with runtime.session_factory() as s:
            return len(s.scalars(select(Ticket.id)).all())

    try:
        started = time.monotonic()
        while tickets() < 1:
            assert time.monotonic() - started < 20
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)
        dovecot.append(message("Second problem", sender="bob@example.com"))
        started = time.monotonic()
        while tickets() < 2:
            assert time.monotonic() - started < 5, "IDLE did not deliver within 5 s"
            await asyncio.sleep(0.05)
    finally:
        src.stop.set()
        await asyncio.wait_for(task, 15)
    with runtime.session_factory() as s:
        numbers = s.scalars(select(Ticket.ticket_number)).all()
        assert all(n.startswith("TKT-") for n in numbers)
        assert len(s.scalars(select(EmailLog.id).where(EmailLog.direction == "in")).all()) == 2
    assert dovecot.count("INBOX") == 0 and dovecot.count("Processed") == 2
