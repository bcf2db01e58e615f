"""IMAP source throughput and latency against a private Dovecot.

    .venv/bin/python bench/bench_imap.py 5000            # support mix, real pipeline, fresh PG db
    .venv/bin/python bench/bench_imap.py 5000 --mix simple   # one small text mail, repeated
    .venv/bin/python bench/bench_imap.py 5000 --fake     # IMAP + ledger only (stand-in handler)
    .venv/bin/python bench/bench_imap.py 2000 --database-url sqlite:////tmp/b.db
    .venv/bin/python bench/bench_imap.py 2000 --dovecot mailbox_idle_check_interval=1s
    .venv/bin/python bench/bench_imap.py 3000 --push    # also: LMTP delivery, IDLE vs push

Prints: drain throughput (msg/s) for N queued messages of `bench/mailmix.py`'s support mix,
APPEND → stored latency with IDLE (p50/p99 over --samples appends, split into the APPEND
itself, the wait for the server's IDLE notice, and notice → committed), and the process's
peak RSS. `--push` also delivers --samples messages through Dovecot's LMTP with its
push_notification plugin (ox driver) PUTting to the source's push listener (live/push.py), and
prints LMTP → stored once with the push ignored (IDLE alone) and once with the push, split into
LMTP start → push received and push → committed. `--dovecot KEY=VALUE` adds a dovecot.conf setting. Targets (issue 12): drain
≥ 800 msg/s on the mix; APPEND → stored p50 ≤ 300 ms, p99 ≤ 1 s.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from mailmix import generate_mix  # noqa: E402
from sqlalchemy import func, select  # noqa: E402
from tests.dbutil import create_pg, drop_pg  # noqa: E402
from tests.live.dovecot import Dovecot, free_port  # noqa: E402
from tests.mailfactory import make_email  # noqa: E402

from mailticket.live import imap_client  # noqa: E402
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
    # Not the source's peak: this process also ran the drain and the latency phases and
    # built the message; bench_memory.py --worker imap measures a worker of its own.
    print(f"{mb} MB attachment: {stored} stored in {time.perf_counter() - t0:.1f}s,"
          f" peak RSS of this whole bench process {rss:.0f} MB"
          f" (see bench_memory.py --worker imap)")


PUSH_SECRET = "bench-push-secret-0123"


def p50_p99(values: list[float]) -> str:
    if not values:
        return "n/a"
    values = sorted(values)
    p99 = values[min(len(values) - 1, int(len(values) * 0.99))]
    return f"p50 {statistics.median(values) * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms"


async def lmtp_phase(dovecot, live, factory, notices, port, samples, first) -> None:  # type: ignore[no-untyped-def]
    """LMTP delivery -> stored while the source IDLEs: once with the push ignored (IDLE's
    notice alone), once with the push waking the source (live/push.py, served by uvicorn)."""
    import uvicorn

    from mailticket.live.push import build_app, wake_sources

    await asyncio.to_thread(dovecot.set_metadata, "/private/vendor/vendor.dovecot/http-notify",
                            f"user={dovecot.user}")
    armed = False
    pushes: list[float] = []

    def wake(user: str, folder: str) -> int:
        pushes.append(time.perf_counter())
        return wake_sources([live], user, folder) if armed else 1

    server = uvicorn.Server(uvicorn.Config(build_app(PUSH_SECRET, wake), host="127.0.0.1",
                                           port=port, log_config=None, access_log=False))
    serving = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        for armed in (False, True):
            totals, lmtps, to_push, push_to_stored, to_notice = [], [], [], [], []
            for i in range(samples):
                before = await asyncio.to_thread(ledger_count, factory)
                notices.clear()
                pushes.clear()
                t0 = time.perf_counter()
                await asyncio.to_thread(dovecot.lmtp_deliver, corpus_like(first + i))
                delivered = time.perf_counter()
                while await asyncio.to_thread(ledger_count, factory) == before:
                    await asyncio.sleep(0.005)
                stored = time.perf_counter()
                totals.append(stored - t0)
                lmtps.append(delivered - t0)
                if pushes:
                    to_push.append(pushes[0] - t0)
                    push_to_stored.append(stored - pushes[0])
                if notices:
                    to_notice.append(notices[0] - delivered)
                await asyncio.sleep(0.05)
            first += samples
            how = "push" if armed else "IDLE only, push ignored"
            print(f"LMTP -> stored ({how}) over {len(totals)} samples: {p50_p99(totals)}")
            print(f"  LMTP delivery itself (connect to 250):  {p50_p99(lmtps)}")
            print(f"  LMTP start -> push received:            {p50_p99(to_push)}")
            if armed:
                print(f"  push received -> committed:             {p50_p99(push_to_stored)}")
            else:
                print(f"  LMTP done -> IDLE notice:               {p50_p99(to_notice)}")
    finally:
        server.should_exit = True
        await serving


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("n", type=int, nargs="?", default=5000)
    ap.add_argument("--samples", type=int, default=50)
    ap.add_argument("--database-url")
    ap.add_argument("--fake", action="store_true", help="stand-in handler instead of the pipeline")
    ap.add_argument("--big-mb", type=int, default=50, help="one message with an attachment this big")
    ap.add_argument("--mix", choices=("support", "simple"), default="support")
    ap.add_argument("--push", action="store_true",
                    help="also deliver over LMTP with Dovecot's push_notification plugin")
    ap.add_argument("--dovecot", action="append", default=[], metavar="KEY=VALUE",
                    help="a dovecot.conf setting (repeatable)")
    args = ap.parse_args()
    print(f"load before: {os.getloadavg()[0]:.2f} (1 min)")

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
        from mailticket.runtime import build_runtime, settle_heap

        runtime = build_runtime(load_settings(database_url=url, _env_file=None))
        handler = runtime.pipeline
        settle_heap()  # as `mailticket run` does at start-up

    settings = dict(item.split("=", 1) for item in args.dovecot)
    push_port = free_port() if args.push else 0
    push_url = f"http://dovecot:{PUSH_SECRET}@127.0.0.1:{push_port}/" if args.push else None
    dovecot = Dovecot(Path(tempfile.mkdtemp(prefix="bench-dovecot-")), settings=settings,
                      push_url=push_url).start()
    try:
        t0 = time.perf_counter()
        mail = (generate_mix(args.n, 5) if args.mix == "support"
                else (corpus_like(i) for i in range(args.n)))
        if args.n > 2000:
            dovecot.deliver_many(mail)
            print(f"delivered {args.n} messages ({args.mix} mix) to the Maildir"
                  f" in {time.perf_counter() - t0:.1f}s")
        else:
            dovecot.append_many(list(mail))
            print(f"appended {args.n} messages ({args.mix} mix) in {time.perf_counter() - t0:.1f}s")
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
        # When the server's IDLE notice arrived: splits the latency into the server's part
        # and ours.
        notices: list[float] = []
        waiting = imap_client.ImapSession.wait_for_news

        async def noted(self, timeout: float, wake=None) -> str:  # type: ignore[no-untyped-def]
            news = await waiting(self, timeout, wake)
            if news == "news":
                notices.append(time.perf_counter())
            return news

        imap_client.ImapSession.wait_for_news = noted  # type: ignore[method-assign]
        task = asyncio.create_task(live.run())
        await asyncio.sleep(1.0)
        latencies, appends, idles, ours = [], [], [], []
        for i in range(args.samples):
            before = await asyncio.to_thread(ledger_count, factory)
            notices.clear()
            t0 = time.perf_counter()
            await asyncio.to_thread(dovecot.append, corpus_like(args.n + i))
            appended = time.perf_counter()
            while await asyncio.to_thread(ledger_count, factory) == before:
                await asyncio.sleep(0.005)
            stored = time.perf_counter()
            latencies.append(stored - t0)
            appends.append(appended - t0)
            if notices:
                idles.append(notices[0] - appended)
                ours.append(stored - notices[0])
        print(f"APPEND -> stored with IDLE over {len(latencies)} samples: {p50_p99(latencies)}")
        print(f"  APPEND itself (client, login to OK):  {p50_p99(appends)}")
        print(f"  APPEND done -> IDLE notice:           {p50_p99(idles)}")
        print(f"  IDLE notice -> committed:             {p50_p99(ours)}")
        if args.push:
            await lmtp_phase(dovecot, live, factory, notices, push_port, args.samples,
                             args.n + args.samples)
        live.stop.set()
        await task
        if settings:
            print(f"  dovecot settings: {settings}")
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"peak RSS: {rss:.0f} MB")
        print(f"load after: {os.getloadavg()[0]:.2f} (1 min)")
        if args.big_mb:
            await big_attachment(dovecot, box, handler, factory, engine, args.big_mb)
    finally:
        dovecot.stop()
        engine.dispose()
        if pg_name:
            drop_pg(pg_name)


if __name__ == "__main__":
    from mailticket.pipeline import short_gil_switches

    with short_gil_switches():  # as `mailticket run` holds it
        asyncio.run(main())
