"""End-to-end ingest benchmark (run by hand; prints figures, asserts nothing).

Generates N realistic support emails — new threads and replies by every linkage kind
(In-Reply-To to the customer's mail, In-Reply-To to our TKT Message-ID, References only,
subject only, ghost parents, replies that arrive before their parent) — and ingests them
through the whole pipeline into a fresh PostgreSQL database. Prints msg/s, the parse-only
rate as the ceiling, and peak RSS. `--preload M` first bulk-loads M stored emails (COPY)
so the lookup cost on a big table shows.

`--mix support` ingests `bench/mailmix.py`'s support mailbox instead (out-of-order replies
and their merges, long threads, duplicates, bounces, auto-replies, attachments, legacy
charsets, HTML-only, subject-only replies) and prints the end-to-end rate, the parse-only
rate of the same messages through the same parser, their ratio, and the merges done.
Targets (issue 12): >= 1,000 msg/s, >= 0.5 x parse-only, the same within 10% with 1M stored.

    .venv/bin/python bench/bench_pipeline.py --n 20000
    .venv/bin/python bench/bench_pipeline.py --n 20000 --preload 1000000
    .venv/bin/python bench/bench_pipeline.py --mix support --n 20000
    .venv/bin/python bench/bench_pipeline.py --mix support --n 20000 --preload 1000000
    .venv/bin/python bench/bench_pipeline.py --mix support --n 20000 --storage  # bytes/table
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import resource
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from typing import IO

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import event, text
from tests.dbutil import create_pg, drop_pg

from mailticket import metrics
from mailticket.reading.parsing import parse_email
from mailticket.runtime import build_runtime, settle_heap
from mailticket.settings import load_settings
from mailticket.store import bulkwrite, pgcopy
from mailticket.store.db import make_engine

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mailmix import generate_mix

WORDS = ("printer network invoice login password vpn outlook server backup license "
         "laptop screen slow error crash update install access account billing").split()


def _body(rng: random.Random) -> str:
    lines = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 14))) for _ in range(rng.randint(2, 8))]
    if rng.random() < 0.3:
        lines.append(f"#{rng.choice(WORDS)} #{rng.choice(WORDS)}")
    return "Hello,\n\n" + "\n".join(lines) + "\n\nBest regards\nA customer\n"


def generate(n: int, seed: int = 1) -> Iterator[bytes]:
    """Yield n messages; about 40% start threads, the rest reply in one of six ways."""
    rng = random.Random(seed)
    base = datetime(2025, 12, 15, 8, tzinfo=UTC)
    threads: list[tuple[str, str, str]] = []  # (root id, sender, subject)
    held_back: list[bytes] = []
    for i in range(n):
        msg = EmailMessage()
        kind = "new" if not threads or rng.random() < 0.4 else rng.choice(
            ["irt", "refs", "ghost", "subject", "early", "irt"])
        mid = f"<m{i}.{seed}@client{rng.randint(1, 500)}.example>"
        if kind == "new":
            sender = f"user{rng.randint(1, 5000)}@customer{rng.randint(1, 300)}.example"
            subject = " ".join(rng.choice(WORDS) for _ in range(4)).capitalize()
            threads.append((mid, sender, subject))
            if rng.random() < 0.05:
                msg["In-Reply-To"] = f"<ghost{i}@elsewhere.example>"
        else:
            root, sender, subject = rng.choice(threads[-2000:])
            subject = "Re: " + subject
            if kind == "irt":
                msg["In-Reply-To"] = root
                msg["References"] = root
            elif kind == "refs":
                msg["References"] = f"<unrelated{i}@x.example> {root}"
            elif kind == "ghost":
                msg["References"] = f"<ghost-root-{root.strip('<>')}>"
            elif kind == "subject":
                subject = f"Re: [TKT-20251215-{rng.randint(1, max(1, len(threads))):03d}] {subject}"
            elif kind == "early":
                msg["In-Reply-To"] = root
        msg["From"] = sender
        msg["To"] = "support@example.com"
        msg["Subject"] = subject
        msg["Date"] = format_datetime(base + timedelta(seconds=i))
        msg["Message-ID"] = mid
        msg.set_content(_body(rng))
        raw = msg.as_bytes()
        if kind == "early" and rng.random() < 0.5:
            held_back.append(raw)  # arrives later, after messages that came after it
            continue
        yield raw
        if held_back and rng.random() < 0.2:
            yield held_back.pop()
    yield from held_back


def preload(url: str, count: int) -> None:
    """Store `count` emails in tickets of 4 mails each (with their thread refs), generated
    by the server itself: nothing is built in Python or sent over the wire, so a million
    takes a minute or two, most of it index maintenance."""
    engine = make_engine(url)
    tickets = max(1, count // 4)
    statements = [
        "SET LOCAL synchronous_commit = off",
        "INSERT INTO tticket_tickets (id, ticket_number, subject, description, status,"
        " priority, tags, custom_fields, requester_email)"
        " SELECT t, 'TKT-20200101-' || lpad(t::text, 7, '0'), 'preloaded', '', 'open',"
        " 'normal', '[]', '{}', 'u' || t || '@old.example'"
        " FROM generate_series(1, :tickets) AS t",
        "INSERT INTO tticket_email_log (ticket_id, email_message_id, email_subject, email_from,"
        " email_received_at, is_reply, direction)"
        " SELECT i / 4 + 1, '<old' || i || '@old.example>', 'preloaded',"
        " 'u' || (i / 4 + 1) || '@old.example', '2020-01-01 00:00:00+00', i % 4 <> 0, 'in'"
        " FROM generate_series(0, :count - 1) AS i",
        "INSERT INTO tticket_thread_refs (message_id, ticket_id, kind)"
        " SELECT '<old' || i || '@old.example>', i / 4 + 1, 'self'"
        " FROM generate_series(0, :count - 1) AS i",
        "SELECT setval('tticket_tickets_id_seq', :tickets)",
    ]
    try:
        with engine.begin() as conn:
            for statement in statements:
                conn.execute(text(statement), {"tickets": tickets, "count": count})
        with engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT").execute(text("VACUUM ANALYZE"))
    finally:
        engine.dispose()


_SIZES = text("""
    SELECT c.relname, c.reltuples::bigint,
           pg_relation_size(c.oid),
           COALESCE(pg_total_relation_size(NULLIF(c.reltoastrelid, 0)), 0),
           pg_indexes_size(c.oid),
           pg_total_relation_size(c.oid)
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind = 'r' AND n.nspname = 'public' AND c.relname <> 'alembic_version'
    ORDER BY pg_total_relation_size(c.oid) DESC
""")


def storage_report(conn, messages: int, preloaded: int) -> None:  # type: ignore[no-untyped-def]
    """Bytes per ingested message for each table: heap, TOAST, indexes, all together."""
    conn.execute(text("ANALYZE"))
    rows = [r for r in conn.execute(_SIZES).all() if r[5] > 8192 * 3 or r[1] > 0]
    n = messages + preloaded
    print(f"storage per message ({n:,} stored; bytes = table size / messages):")
    print(f"  {'table':34} {'rows':>9} {'heap':>8} {'toast':>8} {'indexes':>8} {'total':>8}")
    totals = [0, 0, 0, 0]
    for name, count, heap, toast, indexes, total in rows:
        sizes = (heap, toast, indexes, total)
        totals = [a + b for a, b in zip(totals, sizes, strict=True)]
        print(f"  {name:34} {max(count, 0):>9,} " + " ".join(f"{v / n:8,.0f}" for v in sizes))
    print(f"  {'all tables':34} {'':>9} " + " ".join(f"{v / n:8,.0f}" for v in totals))


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def spooled(spool: IO[bytes]) -> Iterator[bytes]:
    spool.seek(0)
    while head := spool.read(4):
        yield spool.read(int.from_bytes(head, "big"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--preload", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=None, help="default: INGEST_BATCH_SIZE")
    ap.add_argument("--mix", choices=("simple", "support"), default="simple",
                    help="simple: the kind mail above; support: bench/mailmix.py")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--storage", action="store_true", help="print bytes per message per table")
    args = ap.parse_args()
    logging.disable(logging.WARNING)
    print(f"load before: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} (1, 5 min)")

    # Messages are generated once into a spool file and streamed from it, so neither the
    # generator's cost nor a list of N messages shows in the figures.
    spool = tempfile.TemporaryFile()
    mail = generate_mix(args.n, args.seed) if args.mix == "support" else generate(args.n, args.seed)
    size = 0
    for raw in mail:
        spool.write(len(raw).to_bytes(4, "big") + raw)
        size += len(raw)
    print(f"mix:               {args.mix}, {args.n:,} messages, {size / args.n / 1024:.1f} KB mean")
    t, cpu = time.perf_counter(), time.process_time()
    n_parsed = sum(1 for raw in spooled(spool) if parse_email(raw))
    parse_rate = n_parsed / (time.perf_counter() - t)
    parse_cpu_rate = n_parsed / (time.process_time() - cpu)

    name = f"mt_bench_pipeline_{os.getpid()}"  # unique: benches may run side by side
    url = create_pg(name)
    try:
        from mailticket.store import migrate

        migrate.upgrade(url)
        if args.preload:
            t = time.perf_counter()
            preload(url, args.preload)
            print(f"preloaded {args.preload:,} emails in {time.perf_counter() - t:.0f}s")
        rt = build_runtime(load_settings(database_url=url, _env_file=None))
        settle_heap()  # as `mailticket run` and `mailticket ingest` do at start-up
        # What reaches the database, by kind: merges must not bring back per-row INSERTs.
        statements: dict[str, int] = {}

        def count(_conn, _cursor, statement, _params, _context, executemany) -> None:  # type: ignore[no-untyped-def]
            kind = statement.lstrip().split(None, 1)[0].upper()
            statements[kind] = statements.get(kind, 0) + 1

        event.listen(rt.engine, "before_cursor_execute", count)
        fallbacks = [0]
        counted = metrics.count_batch_fallback

        def fallback() -> None:
            fallbacks[0] += 1
            counted()

        metrics.count_batch_fallback = fallback  # type: ignore[assignment]
        copies = [0]
        cursor_copy = pgcopy.copy_rows

        def copy(*a, **k) -> None:  # type: ignore[no-untyped-def]
            copies[0] += 1
            cursor_copy(*a, **k)

        bulkwrite.copy_rows = copy  # type: ignore[assignment]
        cpu = time.process_time()
        rss_before = peak_rss_mb()
        t = time.perf_counter()
        actions: dict[str, int] = {}
        for i, outcome in enumerate(
            rt.pipeline.ingest_many(
                (("bench", raw) for raw in spooled(spool)), batch_size=args.batch_size
            )
        ):
            actions[outcome.action] = actions.get(outcome.action, 0) + 1
            if i and i % 10_000 == 0:
                print(f"  {i:>8,} msgs  {i / (time.perf_counter() - t):7.0f} msg/s  peak RSS {peak_rss_mb():.0f} MB")
        elapsed = time.perf_counter() - t
        cpu = time.process_time() - cpu
        with rt.engine.connect() as conn:
            merged = conn.execute(
                text("SELECT count(*) FROM tticket_tickets WHERE merged_into_id IS NOT NULL")
            ).scalar_one()
            if args.storage:
                storage_report(conn, args.n, args.preload)
        rt.close()
        total = sum(actions.values())
        rate = total / elapsed
        print(f"messages:          {total:,}  {actions}")
        print(f"tickets merged:    {merged:,}")
        print(f"stored beforehand: {args.preload:,}")
        print(f"end to end:        {rate:,.0f} msg/s  ({elapsed:.1f}s)")
        print(f"parse only:        {parse_rate:,.0f} msg/s (same messages, same parser)")
        print(f"ratio:             {rate / parse_rate:.2f} x parse-only")
        print(f"CPU of this process: {cpu * 1000 / total:.2f} ms/msg ingest,"
              f" {1000 / parse_cpu_rate:.2f} ms/msg parse only")
        print(f"statements:        {dict(sorted(statements.items()))}, COPY {copies[0]},"
              f" batches redone {fallbacks[0]}")
        print(f"peak RSS:          {peak_rss_mb():.0f} MB (before ingest {rss_before:.0f} MB)")
        print(f"load after:        {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} (1, 5 min)")
    finally:
        drop_pg(name)


if __name__ == "__main__":
    main()
