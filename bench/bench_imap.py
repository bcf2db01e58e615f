"""IMAP source throughput and latency against a private Dovecot.

    .venv/bin/python bench/bench_imap.py 5000            # real pipeline, fresh PostgreSQL db
    .venv/bin/python bench/bench_imap.py 5000 --fake     # IMAP + ledger only (stand-in handler)
    .venv/bin/python bench/bench_imap.py 2000 --database-url sqlite:////tmp/b.db

Prints: drain throughput (msg/s) for N queued messages, APPEND → stored latency with IDLE
(p50/p99 over --samples appends), and the process's peak RSS. Targets: ≥500 msg/s, p50 ≤ 1 s.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import func, select  # noqa: E402
from tests.dbutil import create_pg, drop_pg  # noqa: E402
from tests.live.dovecot import Dovecot  # noqa: E402
from tests.mailfactory import make_email  # noqa: E402

from mailticket.live.config import MailboxConfig  # noqa: E402
from mailticket.live.imap import ImapSource, MessageHandler  # noqa: E402
from mailticket.live.models import ImapLedgerEntry  # noqa: E402
from mailticket.settings import load_settings  # noqa: E402
from mailticket.store import migrate  # noqa: E402
from mailticket.store.db import make_engine, make_session_factory  # noqa: E402


def corpus_like(i: int) -> bytes:
    body = "Hello,\n\nour invoice export fails with error 500 since this morning.\n" * 8
    return make_email(
        subject=f"Export broken #{i}", sender=f"customer{i % 300}@example.com", body=body,
        message_id=f"<bench-{i}-{uuid.uuid4().hex[:8]}@client.example>",
    )


def ledger_count(factory) -> int:  # type: ignore[no-untyped-def]
    with factory() as s:
        return int(s.scalar(select(func.count()).select_from(ImapLedgerEntry)) or 0)


async def send_auto_replies(runtime) -> None:  # type: ignore[no-untyped-def]
    """Deliver the queued auto-replies to a local aiosmtpd sink and time it."""
    from tests.smtp_sink import SmtpSink

    from mailticket.outbound.smtp import deliver_outgoing_mail

    with SmtpSink() as sink:
        settings = runtime.settings.model_copy(
            update={"smtp_host": "127.0.0.1", "smtp_port": sink.port, "smtp_tls": "plain"}
        )
        t0 = time.perf_counter()
        total = 0
        while True:
            report = await deliver_outgoing_mail(runtime.session_factory, settings, batch=200)
            total += report.done
            if report.total == 0:
                break
        took = time.perf_counter() - t0
        print(f"auto-replies: {total} sent in {took:.2f}s = {total / max(took, 1e-9):.0f} msg/s"
              f" (sink received {len(sink.messages)})")


async def big_attachment(dovecot, box, handler, factory, engine, mb: int) -> None:  # type: ignore[no-untyped-def]
    from email.message import EmailMessage

    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "big@example.com", "support@example.com", "dump"
    msg["Message-ID"] = f"<big-{uuid.uuid4().hex}@example.com>"
    msg.set_content("Core dump attached.")
    msg.add_attachment(b"\x5a" * (mb << 20), maintype="application", subtype="octet-stream",
                       filename="core.bin")
    raw = msg.as_bytes()
    await asyncio.to_thread(dovecot.append, raw)
    del raw, msg
    src = ImapSource(box, handler, factory, engine, max_message_size=(mb + 32) << 20)
    t0 = time.perf_counter()
    stored = await src.run_once()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{mb} MB attachment: {stored} stored in {time.perf_counter() - t0:.1f}s,"
          f" peak RSS now {rss:.0f} MB")


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("n", type=int, nargs="?", default=5000)
    ap.add_argument("--samples", type=int, default=50)
    ap.add_argument("--database-url")
    ap.add_argument("--fake", action="store_true", help="stand-in handler instead of the pipeline")
    ap.add_argument("--big-mb", type=int, default=50, help="one message with an attachment this big")
    args = ap.parse_args()

    pg_name = None
    url = args.database_url
    if url is None:
        pg_name = f"mt_bench_imap_{uuid.uuid4().hex[:6]}"
        url = create_pg(pg_name)
    migrate.upgrade(url)
    engine = make_engine(url)
    factory = make_session_factory(engine)
    handler: MessageHandler
    if args.fake:
        from tests.live.helpers import FakeHandler

        handler = FakeHandler()
    else:
        from mailticket.runtime import build_runtime

        runtime = build_runtime(load_settings(database_url=url, _env_file=None))
        handler = runtime.pipeline

    dovecot = Dovecot(Path(tempfile.mkdtemp(prefix="bench-dovecot-"))).start()
    try:
        t0 = time.perf_counter()
        if args.n > 2000:
            dovecot.deliver_many(corpus_like(i) for i in range(args.n))
            print(f"delivered {args.n} messages to the Maildir in {time.perf_counter() - t0:.1f}s")
        else:
            dovecot.append_many([corpus_like(i) for i in range(args.n)])
            print(f"appended {args.n} messages in {time.perf_counter() - t0:.1f}s")
        box = MailboxConfig(host="127.0.0.1", port=dovecot.port, tls="plain", user=dovecot.user,
                            password=dovecot.password)

        src = ImapSource(box, handler, factory, engine, max_message_size=25 << 20)
        t0 = time.perf_counter()
        stored = await src.run_once()
        drain = time.perf_counter() - t0
        print(f"drain: {stored} messages in {drain:.2f}s = {stored / drain:.0f} msg/s")
        if not args.fake:
            await send_auto_replies(runtime)

        live = ImapSource(box, handler, factory, engine, max_message_size=25 << 20,
                          poll_interval=3600)
        task = asyncio.create_task(live.run())
        await asyncio.sleep(1.0)
        latencies = []
        for i in range(args.samples):
            before = await asyncio.to_thread(ledger_count, factory)
            t0 = time.perf_counter()
            await asyncio.to_thread(dovecot.append, corpus_like(args.n + i))
            while await asyncio.to_thread(ledger_count, factory) == before:
                await asyncio.sleep(0.005)
            latencies.append(time.perf_counter() - t0)
        live.stop.set()
        await task
        latencies.sort()
        p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
        print(
            f"APPEND -> stored with IDLE over {len(latencies)} samples: "
            f"p50 {statistics.median(latencies) * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms"
        )
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"peak RSS: {rss:.0f} MB")
        if args.big_mb:
            await big_attachment(dovecot, box, handler, factory, engine, args.big_mb)
    finally:
        dovecot.stop()
        engine.dispose()
        if pg_name:
            drop_pg(pg_name)


if __name__ == "__main__":
    asyncio.run(main())
