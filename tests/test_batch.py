"""One path: the batch size changes no row, and a batch redoes itself when it must.

The harness runs the same messages in batches of 1, 7 and 500 on the same database, each
run in one transaction that is rolled back afterwards. Ids differ between the runs
(sequences are not transactional), so the comparison is by ticket number and Message-ID.
"""

from __future__ import annotations

import hashlib
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event, select
from sqlalchemy.orm import Session

from mailticket import metrics
from mailticket.runtime import Runtime
from mailticket.store.batch import Batch
from mailticket.store.models import (
    Attachment,
    Comment,
    EmailLog,
    RawMessage,
    ThreadRef,
    Ticket,
    WorkflowExecution,
)
from mailticket.store.outbox_models import OutboxItem
from mailticket.types import Outcome
from mailticket.workflows import registry
from mailticket.workflows.registry import ActionContext, ActionError, NoParams
from tests.mailfactory import make_email

DAY = "TKT-20251215"


def _scenario() -> list[tuple[bytes, str]]:
    """Every way a message can relate to another, several of them inside the batch itself."""
    mails: list[bytes] = []
    add = mails.append
    add(make_email(message_id="<root1@c.example>", subject="Printer broken #printer"))
    add(make_email(message_id="<root2@c.example>", subject="URGENT: server down",
                   sender="ops@d.example"))
    # Replies to messages earlier in the same batch: In-Reply-To, References only, subject.
    add(make_email(message_id="<r1@c.example>", subject="Re: Printer broken",
                   in_reply_to="<root1@c.example>", references="<root1@c.example>"))
    add(make_email(message_id="<r2@d.example>", references="<x@nowhere> <root2@c.example>",
                   sender="ops@d.example"))
    add(make_email(message_id="<r3@c.example>", subject=f"Re: [{DAY}-001] still broken"))
    # A reply naming our outgoing Message-ID (only the number inside it is known here).
    add(make_email(message_id="<r4@c.example>", in_reply_to=f"<{DAY}-002-0a1b2c@example.com>"))
    # Ghost parent: two mails sharing an unknown parent join one ticket.
    add(make_email(message_id="<g1@e.example>", references="<ghost@e.example>",
                   sender="g@e.example"))
    add(make_email(message_id="<g2@e.example>", references="<ghost@e.example>",
                   sender="g@e.example"))
    # A reply that arrives before its parent; the parent then joins (and merges) its ticket.
    add(make_email(message_id="<late-child@f.example>", in_reply_to="<late-parent@f.example>",
                   sender="f@f.example"))
    add(make_email(message_id="<other@f.example>", sender="f@f.example",
                   references="<late-child@f.example>"))
    add(make_email(message_id="<late-parent@f.example>", sender="f@f.example"))
    # Two tickets, then one mail whose References name both: they merge.
    add(make_email(message_id="<ma@m.example>", sender="m@m.example", subject="part a"))
    add(make_email(message_id="<mb@m.example>", sender="m@m.example", subject="part b"))
    add(make_email(message_id="<mc@m.example>", sender="m@m.example",
                   references="<ma@m.example> <mb@m.example>"))
    add(make_email(message_id="<md@m.example>", sender="m@m.example",
                   in_reply_to="<ma@m.example>"))
    # The same Message-ID twice in one batch, and automated mail of each kind.
    add(make_email(message_id="<dup@c.example>", subject="twice"))
    add(make_email(message_id="<dup@c.example>", subject="twice"))
    add(make_email(message_id="<ooo@c.example>", subject="Out of office",
                   in_reply_to="<root1@c.example>", headers={"Auto-Submitted": "auto-replied"}))
    add(make_email(message_id="<news@list.example>", subject="Newsletter",
                   headers={"List-Id": "<news.list.example>", "Precedence": "bulk"}))
    add(make_email(message_id="<spam@s.example>", subject="cheap", headers={"X-Spam-Flag": "YES"}))
    add(make_email(message_id="<nr@c.example>", sender="noreply@c.example", subject="receipt"))
    add(make_email(message_id="<ny@c.example>", subject="Møde i morgen — spørgsmål"))
    # One sender, many new tickets: the auto-reply rate limit (10 per window) must count
    # the replies queued earlier in the same batch.
    for i in range(12):
        add(make_email(message_id=f"<flood{i}@h.example>", sender="flood@h.example",
                       subject=f"question {i}"))
    return [(raw, f"test:{n}") for n, raw in enumerate(mails)]


def _outcome(o: Outcome) -> tuple[Any, ...]:
    return (o.source, o.message_id, o.action, o.ticket_number, o.matched_by, o.classification,
            o.workflows)


def _snapshot(s: Session) -> dict[str, Any]:
    numbers = {t.id: t.ticket_number for t in s.scalars(select(Ticket))}
    out_ids = set(s.scalars(select(EmailLog.email_message_id).where(EmailLog.direction == "out")))
    logs = {}
    for e in s.scalars(select(EmailLog).where(EmailLog.direction == "in")):
        logs[e.email_message_id] = (numbers.get(e.ticket_id), e.is_reply, e.matched_by,
                                    e.matched_value, e.action, e.classification)
    def strip_ids(value: Any) -> Any:
        if isinstance(value, dict):
            # Sorted: JSONB hands keys back in its own order, a loaded object in the caller's.
            return {k: strip_ids(value[k]) for k in sorted(value)
                    if not k.endswith("_id") and k not in ("duration_ms",)}
        if isinstance(value, list):
            return [strip_ids(v) for v in value]
        return value
    executions = sorted(
        (x.email_message_id or "", x.workflow_name, x.status, repr(strip_ids(x.steps)),
         repr(strip_ids(x.result)), x.error or "")
        for x in s.scalars(select(WorkflowExecution))
    )
    return {
        "tickets": sorted(
            (t.ticket_number, t.subject, t.status, t.priority, tuple(t.tags),
             numbers.get(t.merged_into_id), t.requester_email, t.assigned_to_user_id)
            for t in s.scalars(select(Ticket))
        ),
        "logs": logs,
        "out": sorted(
            (numbers.get(e.ticket_id), e.email_to, e.email_subject)
            for e in s.scalars(select(EmailLog).where(EmailLog.direction == "out"))
        ),
        "outbox": sorted((numbers.get(o.ticket_id), o.kind, o.status)
                         for o in s.scalars(select(OutboxItem))),
        "comments": sorted((numbers.get(c.ticket_id), c.body, c.is_internal, c.source)
                           for c in s.scalars(select(Comment))),
        "refs": sorted((r.message_id, numbers[r.ticket_id], r.kind)
                       for r in s.scalars(select(ThreadRef)) if r.message_id not in out_ids),
        "out_refs": sorted((numbers[r.ticket_id], r.kind) for r in s.scalars(select(ThreadRef))
                           if r.message_id in out_ids),
        "attachments": sorted((numbers.get(a.ticket_id), a.filename, a.size)
                              for a in s.scalars(select(Attachment))),
        "executions": executions,
    }


SIZES = (1, 7, 500)


@pytest.fixture
def engine_events() -> Iterator[list[str]]:
    """Every SQL statement any engine sends (COPY goes around this, straight to psycopg2)."""
    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement)

    event.listen(Engine, "before_cursor_execute", record)
    yield seen
    event.remove(Engine, "before_cursor_execute", record)


def _by_sizes(
    rt: Runtime, items: list[tuple[bytes, str]], sizes: tuple[int, ...] = SIZES
) -> dict[int, tuple[Any, Any]]:
    """The same messages in batches of each size, each run in one transaction rolled back
    afterwards: (outcomes, rows) per size."""
    results = {}
    for size in sizes:
        with rt.session_factory() as s:
            outcomes: list[Outcome] = []
            for start in range(0, len(items), size):
                outcomes += rt.pipeline.process_batch(s, items[start : start + size])
            results[size] = (list(map(_outcome, outcomes)), _snapshot(s))
            s.rollback()
    return results


def _fallbacks() -> float:
    return metrics.sample_value(metrics.BATCH_FALLBACKS) or 0.0


def _assert_identical(results: dict[int, tuple[Any, Any]]) -> tuple[Any, Any]:
    first, *others = results
    for size in others:
        assert results[size][0] == results[first][0], f"outcomes differ: batch of {size}"
        for table, rows in results[first][1].items():
            assert results[size][1][table] == rows, f"{table} differs: batch of {size}"
    return results[first]


def test_batch_size_changes_no_row(make_runtime: Callable[..., Runtime]) -> None:
    rt = make_runtime()
    # Something stored before the batch, so lookups hit old rows as well as new ones.
    old = rt.pipeline.process(make_email(message_id="<old@c.example>", subject="old one"), "pre")
    items = [
        *_scenario(),
        (make_email(message_id="<o1@c.example>", in_reply_to="<old@c.example>"), "x:1"),
        (make_email(message_id="<old@c.example>"), "x:2"),  # redelivery of a stored mail
        (make_email(message_id="<att@c.example>", sender="att@c.example", subject="see attached",
                    in_reply_to="<root1@c.example>", body="log attached",
                    attachments=[(b"\x00\x01log", "application/octet-stream", "log.bin")]),
         "x:3"),
        # A merge into a ticket that is itself merged later in the same batch.
        (make_email(message_id="<mz@m.example>", sender="m@m.example",
                    references="<mc@m.example> <late-parent@f.example>"), "x:4"),
        (make_email(message_id="<sub@c.example>", subject=f"Re: [{DAY}-005] after the merges",
                    sender="f@f.example"), "x:5"),
    ]
    before = _fallbacks()
    got = _assert_identical(_by_sizes(rt, items))
    assert _fallbacks() == before, "no batch may need redoing"
    outcomes = {o[1]: o for o in got[0]}
    # Spot checks that the scenario exercised what it claims to.
    assert outcomes["<r1@c.example>"][2:5] == ("linked", f"{DAY}-002", "in_reply_to")
    assert outcomes["<o1@c.example>"][3] == old.ticket_number
    assert [o[2] for o in got[0] if o[1] == "<dup@c.example>"] == ["created", "duplicate"]
    assert got[1]["logs"]["<g2@e.example>"][0] == got[1]["logs"]["<g1@e.example>"][0]
    assert len([o for o in got[1]["out"] if o[1] == "flood@h.example"]) == 10
    merged = [t for t in got[1]["tickets"] if t[5] is not None]
    assert len(merged) >= 2, "merges happened, one of them onto a ticket merged later"
    assert got[1]["attachments"][0][0] == f"{DAY}-002"


def test_merges_are_written_in_bulk(
    make_runtime: Callable[..., Runtime], engine_events: list[str]
) -> None:
    """Replies that arrive before their parents cause merges; the batch still writes its
    log rows with one statement (COPY on PostgreSQL), not one per merge."""
    rt = make_runtime()
    items: list[tuple[bytes, str]] = []
    for n in range(6):
        items.append((make_email(message_id=f"<c{n}@o.example>", sender=f"u{n}@o.example",
                                 in_reply_to=f"<p{n}@o.example>"), f"c{n}"))
        items.append((make_email(message_id=f"<x{n}@o.example>", sender=f"u{n}@o.example"),
                      f"x{n}"))
        items.append((make_email(message_id=f"<p{n}@o.example>", sender=f"u{n}@o.example",
                                 references=f"<x{n}@o.example>"), f"p{n}"))
    engine_events.clear()
    with rt.session_factory() as s:
        outcomes = rt.pipeline.process_batch(s, items)
        s.commit()
    assert [o.matched_by for o in outcomes[2::3]] == ["references"] * 6
    with rt.session_factory() as s:
        assert len(list(s.scalars(select(Ticket).where(Ticket.merged_into_id.is_not(None))))) == 6
    inserts = [q for q in engine_events if q.startswith("INSERT INTO tticket_email_log")]
    assert len(inserts) <= 1, inserts


def test_a_batch_that_begins_its_transaction_sends_no_savepoint(
    make_runtime: Callable[..., Runtime], engine_events: list[str]
) -> None:
    """A receiver's group or an ingest batch begins the transaction: a failure rolls back
    the transaction itself, so no SAVEPOINT round trips. Inside a caller's transaction the
    batch still gets one. Either way the mail tables are asked once for the whole batch."""
    rt = make_runtime()
    items = _scenario()
    engine_events.clear()
    with rt.session_factory() as s:
        rt.pipeline.process_batch(s, items[:4])
        s.commit()
    assert not [q for q in engine_events if q.startswith(("SAVEPOINT", "RELEASE"))]
    mail_lookups = [q for q in engine_events if "tticket_thread_refs.message_id IN" in q
                    or "tticket_email_log.email_message_id IN" in q]
    assert len(mail_lookups) == 1, mail_lookups
    engine_events.clear()
    with rt.session_factory() as s:
        s.scalars(select(Ticket)).all()  # the caller's transaction is under way
        rt.pipeline.process_batch(s, items[4:8])
        s.commit()
    assert [q for q in engine_events if q.startswith("SAVEPOINT")]


def test_a_failing_workflow_stays_inside_the_batch(
    make_runtime: Callable[..., Runtime], tmp_path: Path
) -> None:
    wf = tmp_path / "wf.yaml"
    wf.write_text(
        "workflows:\n"
        "  - name: tickets\n"
        "    classification_trigger: support_request\n"
        "    workflow_steps:\n"
        "      - action: create_ticket\n"
        "      - action: send_auto_reply\n"
        "        on_error: continue\n"
        "  - name: newsletters to a ticket that does not exist\n"
        "    classification_trigger: bulk\n"
        "    workflow_steps:\n"
        "      - action: add_tags\n"
        "        params: {tags: [never]}\n"
        "      - action: link_email_to_ticket\n"
        "        params: {ticket_number: TKT-20200101-999}\n"
    )
    rt = make_runtime(workflows_path=wf)
    items = _scenario()
    items.insert(5, (make_email(message_id="<news2@list.example>", subject="Newsletter 2",
                                in_reply_to="<root1@c.example>",
                                headers={"List-Id": "<news.list.example>"}), "news2"))
    before = _fallbacks()
    got = _assert_identical(_by_sizes(rt, items))
    assert _fallbacks() == before, "a workflow failure is undone in memory, not by a redo"
    failed = [x for x in got[1]["executions"] if x[2] == "failed"]
    assert [x[0] for x in failed] == ["<news2@list.example>", "<news@list.example>"]
    assert "TKT-20200101-999 does not exist" in failed[0][5]
    assert "'rolled_back'" in failed[0][3]
    # The tag of the rolled-back workflow is not on the ticket the newsletter replied to.
    assert all("never" not in t[4] for t in got[1]["tickets"])


@registry.action("test_batch_write_then_fail", NoParams)
def _write_then_fail(ctx: ActionContext, params: NoParams) -> dict[str, Any]:
    """Not a `through_work` action: writes through the session itself."""
    assert ctx.ticket is not None
    ctx.session.add(Comment(ticket_id=ctx.ticket.id, body="doomed", source="api"))
    ctx.session.flush()
    raise ActionError("wrote, then failed")


@registry.action("test_batch_query_then_fail", NoParams, through_work=True)
def _query_then_fail(ctx: ActionContext, params: NoParams) -> dict[str, Any]:
    """Claims to work through the unit of work, but queries the session: the batch's rows
    are written first, which a checkpoint kept in memory cannot undo."""
    ctx.session.scalars(select(Ticket).limit(1)).all()
    if ctx.email.subject.startswith("question 3"):
        raise ActionError("queried, then failed")
    return {}


@pytest.mark.parametrize("action", ["test_batch_write_then_fail", "test_batch_query_then_fail"])
def test_actions_that_bypass_the_unit_of_work_give_the_same_rows(
    make_runtime: Callable[..., Runtime], tmp_path: Path, action: str
) -> None:
    wf = tmp_path / "wf.yaml"
    wf.write_text(
        "workflows:\n"
        "  - name: tickets\n"
        "    classification_trigger: support_request\n"
        "    stop: false\n"
        "    workflow_steps:\n"
        "      - action: create_ticket\n"
        "  - name: bypass\n"
        "    classification_trigger: support_request\n"
        "    workflow_steps:\n"
        "      - action: add_tags\n"
        "        params: {tags: [bypassed]}\n"
        f"      - action: {action}\n"
    )
    rt = make_runtime(workflows_path=wf)
    got = _assert_identical(_by_sizes(rt, _scenario()))
    failed = [x for x in got[1]["executions"] if x[2] == "failed"]
    assert failed, "the failing workflow was recorded"
    assert all("doomed" not in c[1] for c in got[1]["comments"])
    assert all("bypassed" not in t[4] for t in got[1]["tickets"] if t[1].startswith("question 3"))


def test_a_message_id_stored_meanwhile_by_another_worker_is_a_duplicate(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another worker commits the same Message-ID after the batch looked: the batch's INSERT
    fails, and the redo reports the message as a duplicate of the other worker's row.
    (PostgreSQL only: SQLite admits one writer at a time, so there is no race to lose.)"""
    from mailticket.pipeline import Pipeline
    from mailticket.runtime import build_runtime
    from mailticket.settings import load_settings
    from tests.conftest import SEED_DAY

    rt = build_runtime(load_settings(database_url=pg_url, _env_file=None))
    rt.pipeline.clock = lambda: SEED_DAY
    real = Pipeline._prefetch
    stored: list[Outcome] = []
    raced: list[bool] = []

    def prefetch_then_race(self: Pipeline, work: Batch, ready: Any) -> None:
        real(self, work, ready)
        if not raced:
            raced.append(True)
            stored.append(rt.pipeline.process(make_email(message_id="<race@c.example>"), "w2"))

    monkeypatch.setattr(Pipeline, "_prefetch", prefetch_then_race)
    items = [(make_email(message_id=f"<ok{i}@c.example>", sender=f"u{i}@c.example"), f"s{i}")
             for i in range(3)]
    items.insert(1, (make_email(message_id="<race@c.example>"), "us"))
    before = _fallbacks()
    try:
        with rt.session_factory() as s:
            outcomes = rt.pipeline.process_batch(s, items)
            s.commit()
    finally:
        rt.close()
    assert _fallbacks() > before
    assert [o.action for o in outcomes] == ["created", "duplicate", "created", "created"]
    assert outcomes[1].ticket_number == stored[0].ticket_number


def test_a_message_that_breaks_before_storage_is_quarantined_alone(
    make_runtime: Callable[..., Runtime], monkeypatch: pytest.MonkeyPatch
) -> None:
    rt = make_runtime()
    classify = rt.pipeline.classifier.classify

    def picky(email: Any) -> Any:
        if email.message_id == "<poison@c.example>":
            raise ValueError("classifier bug")
        return classify(email)

    monkeypatch.setattr(rt.pipeline.classifier, "classify", picky)
    items = [(make_email(message_id=f"<ok{i}@c.example>", sender=f"u{i}@c.example"), f"s{i}")
             for i in range(5)]
    items.insert(2, (make_email(message_id="<poison@c.example>"), "poison"))
    before = _fallbacks()
    with rt.session_factory() as s:
        outcomes = rt.pipeline.process_batch(s, items)
        s.commit()
    assert _fallbacks() == before
    assert [o.action for o in outcomes] == ["created"] * 2 + ["quarantined"] + ["created"] * 3
    assert "classifier bug" in (outcomes[2].error or "")
    assert [o.ticket_number for o in outcomes if o.ticket_number] == [
        f"{DAY}-{n:03d}" for n in range(1, 6)
    ]


def test_concurrent_batches_never_share_a_ticket_number(pg_url: str) -> None:
    # PostgreSQL only: SQLite admits one writer at a time, so there is no race to lose.
    from mailticket.runtime import build_runtime
    from mailticket.settings import load_settings
    from tests.conftest import SEED_DAY

    rt = build_runtime(load_settings(database_url=pg_url, _env_file=None))
    rt.pipeline.clock = lambda: SEED_DAY
    results: dict[int, list[Outcome]] = {}
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            msgs = (
                (f"w{n}", make_email(message_id=f"<w{n}-{i}@c.example>", sender=f"w{n}.{i}@c.example"))
                for i in range(120)
            )
            results[n] = list(rt.pipeline.ingest_many(msgs, batch_size=40))
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rt.close()
    assert not errors
    numbers = [o.ticket_number for outs in results.values() for o in outs]
    assert sorted(numbers) == [f"{DAY}-{n:03d}" for n in range(1, 361)]


def test_ingest_batches_are_capped_by_count_and_bytes() -> None:
    from mailticket.pipeline import _chunked

    small = [(b"x" * 400, f"s{i}") for i in range(10)]
    assert [len(c) for c in _chunked(iter(small), 500, 1000)] == [2, 2, 2, 2, 2]
    assert [len(c) for c in _chunked(iter(small), 3, 10**9)] == [3, 3, 3, 1]
    # A message bigger than the budget still goes, alone.
    big = [(b"x" * 5000, "big"), (b"y", "a"), (b"z", "b")]
    assert [len(c) for c in _chunked(iter(big), 500, 1000)] == [1, 2]


def test_ingest_many_with_tiny_batches_gives_the_same_tickets(
    make_runtime: Callable[..., Runtime],
) -> None:
    rt = make_runtime(ingest_batch_bytes=2048)
    items = [(src, raw) for raw, src in _scenario()]
    outcomes = list(rt.pipeline.ingest_many(items))
    assert [o.source for o in outcomes] == [src for src, _ in items]
    created = [o for o in outcomes if o.action == "created"]
    assert [o.ticket_number for o in created] == [f"{DAY}-{n:03d}" for n in range(1, len(created) + 1)]
    by_id = {o.message_id: o for o in outcomes}
    assert by_id["<r1@c.example>"].ticket_number == by_id["<root1@c.example>"].ticket_number


def test_ingest_many_shortens_the_gil_switch_interval_while_it_runs(
    make_runtime: Callable[..., Runtime],
) -> None:
    """The writer must not wait 5 ms for the parser thread at every COPY callback; the
    process's interval is given back when the ingest ends."""
    from mailticket.pipeline import SWITCH_INTERVAL

    rt = make_runtime(ingest_batch_bytes=2048)
    before = sys.getswitchinterval()
    assert before > SWITCH_INTERVAL, "the interpreter's default is longer"
    during = [sys.getswitchinterval() for _ in rt.pipeline.ingest_many(
        (src, raw) for raw, src in _scenario()
    )]
    assert set(during) == {SWITCH_INTERVAL}
    assert sys.getswitchinterval() == before


def test_a_batch_of_only_unparseable_messages_is_quarantined_without_retries(
    make_runtime: Callable[..., Runtime], monkeypatch: pytest.MonkeyPatch
) -> None:
    rt = make_runtime()

    def broken(email: Any) -> Any:
        raise ValueError("classifier bug")

    monkeypatch.setattr(rt.pipeline.classifier, "classify", broken)
    before = _fallbacks()
    with rt.session_factory() as s:
        outcomes = rt.pipeline.process_batch(s, _scenario()[:6])
        s.commit()
    assert [o.action for o in outcomes] == ["quarantined"] * 6
    assert _fallbacks() == before


def test_assign_is_undone_with_its_checkpoint_and_reaches_stored_rows(
    session_factory: Callable[[], Session],
) -> None:
    from mailticket.store.db import new_row

    with session_factory() as session:
        work = Batch(session)
        log = work.add(new_row(EmailLog, email_message_id="<a@x>", direction="in"))
        work.assign(log, is_reply=True)
        mark = work.checkpoint()
        work.assign(log, is_reply=False, email_subject="changed")
        assert (log.is_reply, log.email_subject) == (False, "changed")
        work.rollback_to(mark)
        # Back as before the checkpoint: a value it had, and no value where it had none.
        assert log.is_reply is True and "email_subject" not in log.__dict__
        work.flush()  # now written and held by the session: set through its attributes
        with pytest.raises(TypeError):
            work.assign(log, subject="not a column")
        work.assign(log, email_subject="stored")
        assert log in session.dirty
        work.finish()
        assert session.scalars(select(EmailLog.email_subject)).one() == "stored"
        session.rollback()


def test_a_merge_moves_the_mail_of_its_ticket_and_looks_at_nothing_else(
    session_factory: Callable[[], Session],
) -> None:
    """What a merge moves: the source ticket's mail, comments and attachments made in the
    batch. A workflow run keeps its ticket, and the merge does not even look at it: each
    merge walks the batch's movable rows, which must not include raw messages, workflow
    runs and tickets (over half a batch's rows, walked once per merge)."""
    from mailticket.store.db import new_row

    with session_factory() as session:
        work = Batch(session)
        src, dst = (
            work.add(new_row(Ticket, ticket_number=f"{DAY}-90{i}", subject="s", status="open"))
            for i in (1, 2)
        )
        log = work.add(new_row(EmailLog, email_message_id="<m@x>", direction="in",
                               ticket_id=src.id))
        comment = work.add(new_row(Comment, body="b", ticket_id=src.id))
        other = work.add(new_row(Comment, body="c", ticket_id=dst.id))
        run = work.add(new_row(WorkflowExecution, workflow_name="w", status="ok", steps=[],
                               ticket_id=src.id))
        work.merge(src, dst)
        assert (log.ticket_id, comment.ticket_id, other.ticket_id) == (dst.id, dst.id, dst.id)
        assert run.ticket_id == src.id
        assert {type(row) for row in work._mine} == {EmailLog, Comment}
        work.close()
        session.rollback()


def test_the_raw_digest_is_taken_in_the_parse_thread_and_stored(
    make_runtime: Callable[..., Runtime],
) -> None:
    """The raw row's SHA-256 is computed while the message is parsed (off the thread that
    writes the batch), and it is the digest of the bytes stored."""
    rt = make_runtime()
    raw = make_email(message_id="<h1@c.example>", subject="hash me", body="x" * 5000)
    (ready,) = rt.pipeline.prepare([(raw, "t")])
    assert not isinstance(ready, Exception)
    assert ready[0].raw_sha256 == hashlib.sha256(raw).hexdigest()
    with rt.session_factory() as s:
        (outcome,) = rt.pipeline.process_batch(s, [(raw, "t")], prepared=[ready])
        s.commit()
        stored = s.scalars(
            select(RawMessage).join(EmailLog, EmailLog.raw_message_id == RawMessage.id)
            .where(EmailLog.email_message_id == "<h1@c.example>")
        ).one()
        assert (stored.sha256, stored.raw) == (hashlib.sha256(raw).hexdigest(), raw)


def test_the_parse_thread_hashes_attachments_and_splits_replies_ahead(
    make_runtime: Callable[..., Runtime],
) -> None:
    """The work on a message alone (its attachments' digests, the reply without the quoted
    mail) is done while it is parsed, off the thread that holds the batch's transaction;
    what is stored is what the batch's thread computed before (same digests, same
    comment). A new message and a bounce have nothing to split."""
    rt = make_runtime()
    first = make_email(message_id="<w1@c.example>", subject="Printer broken", body="It jams.")
    payload = bytes(range(256)) * 40
    reply = make_email(
        message_id="<w2@c.example>", subject="Re: Printer broken", in_reply_to="<w1@c.example>",
        body="Here is the log.\n\nOn Mon, Jo wrote:\n> It jams.\n",
        attachments=[(payload, "application/octet-stream", "log.bin")],
    )
    ready = rt.pipeline.prepare([(first, "t"), (reply, "t")])
    assert not isinstance(ready[0], Exception) and not isinstance(ready[1], Exception)
    assert ready[0][0].reply is None
    assert ready[1][0].reply == "Here is the log."
    assert [p.sha256 for p in ready[1][0].attachments] == [hashlib.sha256(payload).hexdigest()]
    with rt.session_factory() as s:
        rt.pipeline.process_batch(s, [(first, "t"), (reply, "t")], prepared=ready)
        s.commit()
        (comment,) = s.scalars(select(Comment)).all()
        assert comment.body == "Here is the log."
        (attachment,) = s.scalars(select(Attachment)).all()
        assert attachment.sha256 == hashlib.sha256(payload).hexdigest()


def test_tickets_changed_in_different_columns_go_out_as_one_update(
    make_runtime: Callable[..., Runtime], engine_events: list[str]
) -> None:
    """Replies to three tickets, the middle one adding a tag: each ticket changes other
    columns (updated_at; tags and updated_at), and the ORM would send one UPDATE per run of
    equal column sets in key order, three here. Aligned, they are one statement, and each
    ticket holds what it would have held."""
    rt = make_runtime()
    roots = [(make_email(message_id=f"<t{n}@o.example>", sender=f"u{n}@o.example",
                         subject=f"Problem {n}"), f"t{n}") for n in range(3)]
    with rt.session_factory() as s:
        rt.pipeline.process_batch(s, roots)
        s.commit()
    replies = [(make_email(message_id=f"<re{n}@o.example>", sender=f"u{n}@o.example",
                           subject=f"Re: Problem {n}",
                           body="Still broken.\n#printer" if n == 1 else "Still broken.",
                           in_reply_to=f"<t{n}@o.example>"), f"re{n}") for n in range(3)]
    engine_events.clear()
    with rt.session_factory() as s:
        outcomes = rt.pipeline.process_batch(s, replies)
        s.commit()
    assert [o.action for o in outcomes] == ["linked"] * 3
    updates = [q for q in engine_events if q.startswith("UPDATE tticket_tickets")]
    assert len(updates) == 1, updates
    with rt.session_factory() as s:
        tags = [t.tags for t in s.scalars(select(Ticket).order_by(Ticket.id))]
    assert tags[0] == tags[2] and "printer" in tags[1] and "printer" not in tags[0], tags


def test_a_chain_of_merged_tickets_is_loaded_with_the_ticket_asked_for(
    session_factory: Callable[[], Session], engine_events: list[str]
) -> None:
    """Mail that arrives before its parent leaves tickets merged into tickets that were
    merged in turn. The batch loads the whole chain with the ticket asked for, in one query
    (not one per hop), and resolves the first ticket to the last without asking again."""
    with session_factory() as session:
        chain = [Ticket(ticket_number=f"{DAY}-7{i:02d}", subject="s") for i in range(4)]
        session.add_all(chain)
        session.flush()
        for ticket, into in zip(chain, chain[1:], strict=False):
            ticket.merged_into_id, ticket.status = into.id, "merged"
        session.commit()
        ids = [ticket.id for ticket in chain]
    with session_factory() as session:
        work = Batch(session)
        engine_events.clear()
        work.prefetch_tickets(ids=[ids[0]])
        asked = [q for q in engine_events if "tticket_tickets" in q]
        assert len(asked) == 1, asked
        assert set(ids) <= work.tickets.keys()
        assert work.live(work.ticket(ids[0])).id == ids[-1]
        assert [q for q in engine_events if "tticket_tickets" in q] == asked
        # The chain's tickets are known by number too: asking for one asks nothing.
        work.prefetch_tickets(numbers=[f"{DAY}-703"])
        assert [q for q in engine_events if "tticket_tickets" in q] == asked
        work.close()
        session.rollback()


def test_outlook_conversation_ids_are_asked_with_the_batch(
    make_runtime: Callable[..., Runtime], engine_events: list[str]
) -> None:
    """A new mail from Outlook carries a Thread-Index that no ticket knows yet; its lookup
    is one of the batch's prefetch, not a query per message."""
    from mailticket.threading.threadindex import answer_index
    from tests.conftest import SEED_DAY

    rt = make_runtime()

    runs = iter(range(100))

    def batch(indexed: bool) -> int:
        run = next(runs)
        items = []
        for i in range(6):
            headers = (
                {"Thread-Index": answer_index(None, f"seed-{run}-{i}", SEED_DAY)}
                if indexed else {}
            )
            items.append((make_email(subject=f"new {run} {i}", sender=f"o{i}@c.example",
                                     headers=headers), "x"))
        before = len(engine_events)
        with rt.session_factory() as s:
            outcomes = rt.pipeline.process_batch(s, items)
            s.commit()
        assert [o.action for o in outcomes] == ["created"] * 6
        return len(engine_events) - before

    batch(False)  # warm-up: the day's counter row, first-statement caches
    plain = batch(False)
    assert batch(True) == plain
