"""Outgoing-mail benchmark (run by hand; prints figures, asserts nothing).

Queues N auto-replies (render + log row + thread ref + outbox row, one transaction per
reply as in the pipeline) into a fresh database, then drains them to a real aiosmtpd sink on
loopback. Prints queue rate, delivery rate and the claim rate of bare outbox rows.

    .venv/bin/python bench/bench_outbox.py --n 2000 --db postgresql
    .venv/bin/python bench/bench_outbox.py --n 2000 --db sqlite
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.dbutil import create_pg, drop_pg
from tests.outbound.helpers import NOW, make_ticket, parsed
from tests.smtp_sink import SmtpSink

from mailticket.outbound.auto_reply import queue_auto_reply
from mailticket.outbound.smtp import deliver_outgoing_mail
from mailticket.outbound.templates import MailTemplates
from mailticket.settings import load_settings
from mailticket.store import migrate, outbox
from mailticket.store.batch import open_batch
from mailticket.store.db import make_engine, make_session_factory


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    args = ap.parse_args()

    pg_name = None
    if args.db == "postgresql":
        pg_name = "mt_bench_outbox"
        url = create_pg(pg_name)
    else:
        url = f"sqlite:///{tempfile.mkdtemp()}/bench.sqlite3"
    migrate.upgrade(url)
    engine = make_engine(url)
    factory = make_session_factory(engine)
    try:
        with SmtpSink() as sink:
            settings = load_settings(
                _env_file=None,
                database_url=url,
                smtp_host="127.0.0.1",
                smtp_port=sink.port,
                smtp_tls="plain",
                mail_from="support@example.com",
            )
            templates = MailTemplates.from_settings(settings)
            t0 = time.perf_counter()
            for _ in range(args.n):
                with factory.begin() as s:
                    inbound = parsed()
                    ticket = make_ticket(s, inbound)
                    queue_auto_reply(
                        open_batch(s), settings, ticket, inbound, template="ticket_created", now=NOW,
                        templates=templates,
                    )
            queued = time.perf_counter() - t0
            t0 = time.perf_counter()
            report = asyncio.run(deliver_outgoing_mail(factory, settings))
            sent = time.perf_counter() - t0
            assert len(sink.messages) == report.done
        print(f"db={args.db} n={args.n}")
        print(f"  queue (ticket + auto-reply, one txn each): {args.n / queued:8.0f} /s")
        print(f"  deliver to loopback SMTP (conn per mail):  {report.done / sent:8.0f} /s")

        with factory.begin() as s:
            for i in range(args.n):
                outbox.enqueue(
                    s, kind="backend", target="bench", operation="noop", payload={"i": i},
                    idempotency_key=f"bench-{i}",
                )
        t0 = time.perf_counter()
        claimed = 0
        while True:
            with factory.begin() as s:
                got = outbox.claim(s, kind="backend", limit=50)
                for item in got:
                    outbox.mark_done(s, item)
            if not got:
                break
            claimed += len(got)
        took = time.perf_counter() - t0
        print(f"  claim + mark_done, batches of 50:          {claimed / took:8.0f} /s")
    finally:
        engine.dispose()
        if pg_name:
            drop_pg(pg_name)


if __name__ == "__main__":
    main()
