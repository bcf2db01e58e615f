"""Outgoing-mail benchmark (run by hand; prints figures, asserts nothing).

Queues N auto-replies (render + log row + thread ref + outbox row, one transaction per
reply as in the pipeline) into a fresh database, then drains them to a real aiosmtpd on
loopback: by default in a process of its own, as a relay would be (`--sink thread` runs it
in this process, as the test suite's sink does, which shares the GIL with the sender).
Prints queue rate, delivery rate, connections used, bytes per outbox row, and the claim
rate of bare outbox rows.

    .venv/bin/python bench/bench_outbox.py --n 2000 --db postgresql
    .venv/bin/python bench/bench_outbox.py --n 2000 --db sqlite --sink thread
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import Engine, inspect, text
from tests.dbutil import create_pg, drop_pg
from tests.outbound.helpers import NOW, make_ticket, parsed
from tests.smtp_sink import SmtpSink, free_port

from mailticket.outbound.auto_reply import queue_auto_reply
from mailticket.outbound.smtp import deliver_outgoing_mail
from mailticket.outbound.templates import MailTemplates
from mailticket.settings import load_settings
from mailticket.store import migrate, outbox
from mailticket.store.batch import open_batch
from mailticket.store.db import make_engine, make_session_factory


def _sink_process(port: int, count: Any, peers: Any, ready: Any, stop: Any) -> None:
    """aiosmtpd in its own process: counts messages and distinct connections."""
    from aiosmtpd.controller import Controller

    seen: set[tuple[str, int]] = set()

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            with count.get_lock():
                count.value += 1
            if session.peer not in seen:
                seen.add(session.peer)
                with peers.get_lock():
                    peers.value += 1
            return "250 2.0.0 OK queued"

    controller = Controller(Handler(), hostname="127.0.0.1", port=port)
    controller.start()
    ready.set()
    stop.wait()
    controller.stop()


class ProcessSink:
    def __init__(self) -> None:
        self.port = free_port()
        self.count = multiprocessing.Value("i", 0)
        self.peers = multiprocessing.Value("i", 0)
        self._ready = multiprocessing.Event()
        self._stop = multiprocessing.Event()
        self._proc = multiprocessing.Process(
            target=_sink_process,
            args=(self.port, self.count, self.peers, self._ready, self._stop),
            daemon=True,
        )

    def __enter__(self) -> ProcessSink:
        self._proc.start()
        self._ready.wait(30)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._proc.join(10)

    def received(self) -> tuple[int, int]:
        return self.count.value, self.peers.value


class ThreadSink:
    def __init__(self) -> None:
        self.sink = SmtpSink()
        self.port = self.sink.port

    def __enter__(self) -> ThreadSink:
        self.sink.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.sink.stop()

    def received(self) -> tuple[int, int]:
        return len(self.sink.messages), self.sink.connections()


def bytes_per_row(engine: Engine) -> str:
    """What one queued auto-reply costs in the outbox table, as the database stores it."""
    # Also runs against an outbox from before migration 0006 (base64 in the payload), to
    # compare the two.
    has_message = "message" in {c["name"] for c in inspect(engine).get_columns("mailticket_outbox")}
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("ANALYZE mailticket_outbox"))
            message_size = "avg(pg_column_size(message))" if has_message else "0"
            row, payload, message = conn.execute(text(
                "SELECT avg(pg_column_size(o.*)), avg(pg_column_size(payload)),"
                f" coalesce({message_size}, 0) FROM mailticket_outbox o WHERE kind = 'smtp'"
            )).one()
            total = conn.execute(text(
                "SELECT pg_total_relation_size('mailticket_outbox') / count(*)"
                " FROM mailticket_outbox"
            )).scalar()
            return (
                f"row {row:.0f} B (payload {payload:.0f}, message {message:.0f});"
                f" table+toast+indexes {total} B/row"
            )
        message_size = "avg(length(message))" if has_message else "0"
        payload, message = conn.execute(text(
            f"SELECT avg(length(CAST(payload AS BLOB))), coalesce({message_size}, 0)"
            " FROM mailticket_outbox WHERE kind = 'smtp'"
        )).one()
        pages = conn.execute(text(
            "SELECT sum(pgsize) / (SELECT count(*) FROM mailticket_outbox) FROM dbstat"
            " WHERE name = 'mailticket_outbox'"
        )).scalar()
        return f"payload {payload:.0f} B, message {message:.0f} B; table pages {pages} B/row"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    ap.add_argument("--sink", choices=("process", "thread"), default="process")
    ap.add_argument("--connections", type=int, default=None, help="default: the relay's")
    args = ap.parse_args()

    pg_name = None
    if args.db == "postgresql":
        pg_name = f"mt_bench_outbox_{os.getpid()}"  # unique: benches may run side by side
        url = create_pg(pg_name)
    else:
        url = f"sqlite:///{tempfile.mkdtemp()}/bench.sqlite3"
    migrate.upgrade(url)
    engine = make_engine(url)
    factory = make_session_factory(engine)
    sink: ProcessSink | ThreadSink = ProcessSink() if args.sink == "process" else ThreadSink()
    try:
        with sink:
            settings = load_settings(
                _env_file=None, database_url=url, smtp_host="127.0.0.1", smtp_port=sink.port,
                smtp_tls="plain", mail_from="support@example.com",
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
            size = bytes_per_row(engine)
            extra = {} if args.connections is None else {"connections": args.connections}
            t0 = time.perf_counter()
            report = asyncio.run(deliver_outgoing_mail(factory, settings, **extra))
            sent = time.perf_counter() - t0
            time.sleep(0.2)
            received, connections = sink.received()
        print(f"db={args.db} n={args.n} sink={args.sink}")
        print(f"  queue (ticket + auto-reply, one txn each): {args.n / queued:8.0f} /s")
        print(
            f"  deliver to loopback SMTP:                  {report.done / sent:8.0f} /s"
            f"  ({received} received over {connections} connections,"
            f" done={report.done} retried={report.retried} dead={report.dead})"
        )
        print(f"  bytes per outbox row: {size}")

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
