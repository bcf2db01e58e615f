"""Every message of a mail corpus goes through the whole pipeline without an unhandled
exception, and header threading agrees with notmuch.

The corpus is the curated copy in tests/fixtures (default) or the whole shared corpus
(`./scripts/test-corpus`)."""

from __future__ import annotations

import json
import random
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import select

from mailticket.reading.sources import iter_messages
from mailticket.runtime import Runtime
from mailticket.store.models import EmailLog, QuarantineEntry, Ticket
from tests.conftest import FIXTURES

ANY_WF = FIXTURES / "workflows" / "any_create.yaml"
ACTIONS = {"created", "linked", "reopened", "followup", "duplicate", "logged", "quarantined"}


def _hard_cases(corpus: Path) -> dict[str, list[str]]:
    return json.loads((corpus / "hard_cases.json").read_text())


def test_whole_corpus_ingests(make_runtime: Callable[..., Runtime], corpus_dir: Path) -> None:
    rt = make_runtime(clock=None)  # the shipped default workflows
    outcomes = list(rt.pipeline.ingest_many(iter_messages([corpus_dir])))
    sources = {o.source for o in outcomes}
    eml = sorted(str(p) for p in corpus_dir.rglob("*.eml"))
    assert sorted(sources) == eml, "every .eml yields exactly one outcome"
    by_action = Counter(o.action for o in outcomes)
    assert set(by_action) <= ACTIONS
    for o in outcomes:
        if o.action == "quarantined":
            assert o.error, f"{o.source}: quarantined without a reason"
    # Nothing silently dropped: every non-duplicate is logged or held with its bytes.
    with rt.session_factory() as s:
        logged = s.scalar(select(EmailLog.id).order_by(EmailLog.id.desc()).limit(1)) or 0
        held = len(s.scalars(select(QuarantineEntry)).all())
    assert logged + held >= by_action["created"] + by_action["linked"] + by_action["logged"]
    # Mail parses: quarantine is for the truly broken, not for the hard cases.
    assert by_action["quarantined"] <= 5, [o for o in outcomes if o.action == "quarantined"]

    hard = _hard_cases(corpus_dir)
    result = {Path(o.source).relative_to(corpus_dir).as_posix(): o for o in outcomes}
    dsn = hard["dsn_bounce(multipart/report delivery-status)"]
    for name in dsn:
        o = result[name]
        if o.action != "duplicate":
            assert o.classification == "bounce", f"{name}: {o.classification}"
            assert o.action != "created", f"{name}: a bounce opened a ticket"
    for name in hard["auto_submitted_auto_replied"]:
        o = result[name]
        if o.action != "duplicate":
            assert o.action != "created", f"{name}: an auto-reply opened a ticket"


def _ticket_of(rt: Runtime) -> dict[str, str]:
    """Message-ID (without brackets) -> live ticket number."""
    with rt.session_factory() as s:
        rows = s.execute(
            select(EmailLog.email_message_id, Ticket.ticket_number, Ticket.merged_into_id, Ticket.id)
            .join(Ticket, Ticket.id == EmailLog.ticket_id)
        ).all()
        live = {t.id: t.ticket_number for t in s.scalars(select(Ticket))}
    return {mid.strip("<>"): live[tid] for mid, _num, _merged, tid in rows}


@pytest.mark.parametrize("order", ["sorted", "reversed", "shuffled"])
def test_notmuch_threads_become_one_ticket_each(
    make_runtime: Callable[..., Runtime], corpus_dir: Path, order: str
) -> None:
    folder = corpus_dir / "notmuch-default"
    threads: dict[str, str] = json.loads((folder / "threads.json").read_text())
    messages = list(iter_messages([folder]))
    if order == "reversed":
        messages.reverse()
    elif order == "shuffled":
        random.Random(20251215).shuffle(messages)
    rt = make_runtime(workflows_path=ANY_WF)
    outcomes = list(rt.pipeline.ingest_many(messages, batch_size=7))
    assert not [o for o in outcomes if o.action == "quarantined"]
    ticket_of = _ticket_of(rt)
    tickets_per_thread: dict[str, set[str]] = defaultdict(set)
    threads_per_ticket: dict[str, set[str]] = defaultdict(set)
    for mid, thread in threads.items():
        assert mid in ticket_of, f"{mid} has no ticket"
        tickets_per_thread[thread].add(ticket_of[mid])
        threads_per_ticket[ticket_of[mid]].add(thread)
    split = {t: n for t, n in tickets_per_thread.items() if len(n) != 1}
    joined = {t: n for t, n in threads_per_ticket.items() if len(n) != 1}
    assert not split, f"notmuch threads split over several tickets: {split}"
    assert not joined, f"tickets holding several notmuch threads: {joined}"
