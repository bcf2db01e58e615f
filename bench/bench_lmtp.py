"""LMTP receiver throughput: concurrent LMTP clients into one `mailticket run` on PostgreSQL.

    .venv/bin/python bench/bench_lmtp.py                 # 3,000 messages of the mix, 8 clients
    .venv/bin/python bench/bench_lmtp.py --n 5000 --clients 8 --mail plain --workers 2

Every message is answered 250 only after its commit; concurrent sessions share commits (group
commit, src/mailticket/live/groupcommit.py). Prints msg/s over all clients, the reply latency
(p50/p99), and PostgreSQL transactions per message, which shows the grouping. Target: 8
clients ≥ 500 msg/s in total (issue 12). Mail: bench/mailmix.py.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]

from mailmix import generate_mix  # noqa: E402
from sqlalchemy import func, select  # noqa: E402
from tests.dbutil import drop_pg  # noqa: E402
from tests.live.dovecot import free_port  # noqa: E402
from tests.smtp_sink import SmtpSink  # noqa: E402
from workerkit import (  # noqa: E402
    LmtpFeed,
    Workers,
    fresh_pg,
    group_sizes,
    integrity,
    load,
    percentile,
    xact_commits,
)

from mailticket.store.db import make_engine  # noqa: E402
from mailticket.store.models import EmailLog, QuarantineEntry  # noqa: E402


def workers_cpu(workers: Workers) -> float:
    """Seconds of CPU (user + system) the worker processes have used so far."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for proc in workers.procs:
        if proc is not None:
            fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--workers", type=int, default=1, help="`mailticket run` processes")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument(
        "--mail", choices=("mix", "plain"), default="mix",
        help="mix: bench/mailmix.py (mean 50 KB); plain: bench_pipeline.py's small text mail",
    )
    ap.add_argument("--keep", action="store_true", help="keep the database (mt_bench_lmtp_<pid>)")
    ap.add_argument(
        "--pipelining", action="store_true",
        help="clients pipeline MAIL/RCPT/DATA as Postfix does (2 round trips, not smtplib's 4)",
    )
    args = ap.parse_args()
    if args.mail == "mix":
        messages = list(generate_mix(args.n, args.seed))
    else:
        from bench_pipeline import generate

        messages = list(generate(args.n, args.seed))
    mean_kb = sum(map(len, messages)) / len(messages) / 1024
    name = f"mt_bench_lmtp_{__import__('os').getpid()}"  # unique: benches may run side by side
    url = fresh_pg(name)
    engine = make_engine(url)
    with tempfile.TemporaryDirectory(prefix="mt-lmtp-") as tmp, SmtpSink() as sink:
        prom = Path(tmp) / "prom"
        prom.mkdir()
        env = {
            **{k: v for k, v in __import__("os").environ.items()
               if not k.startswith(("IMAP_", "MAILDIR", "LMTP", "MAILBOXES", "API_"))},
            "DATABASE_URL": url, "EMAIL_UNMATCHED_ACTION": "create_ticket",
            # auto-replies are delivered, to a local sink
            "SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(sink.port), "SMTP_TLS": "plain",
            "LOG_FORMAT": "text", "PROMETHEUS_MULTIPROC_DIR": str(prom),
        }
        workers = Workers(env, Path(tmp), [free_port() for _ in range(args.workers)])
        workers.start_all()
        try:
            workers.wait_started()
            feed = LmtpFeed(workers.ports, messages, args.clients, args.pipelining)
            commits0 = xact_commits(engine)
            cpu0 = workers_cpu(workers)
            print(f"before: {load()}")
            t0 = time.perf_counter()
            feed.start()
            if not feed.join(1800):
                raise RuntimeError("the clients did not finish")
            took = time.perf_counter() - t0
            cpu = workers_cpu(workers) - cpu0
            commits = xact_commits(engine) - commits0
            print(f"after:  {load()}")
        finally:
            workers.stop_all()
        stored = {
            "email_log": int(engine.connect().scalar(
                select(func.count()).select_from(EmailLog)) or 0),
            "quarantine": int(engine.connect().scalar(
                select(func.count()).select_from(QuarantineEntry)) or 0),
        }
        check = integrity(engine, feed.accepted)  # what was answered 250 must be there
        groups = group_sizes(prom)
    engine.dispose()
    if not args.keep:
        drop_pg(name)
    lat = feed.latencies
    print(f"LMTP, {args.clients} {'pipelining ' if args.pipelining else ''}clients,"
          f" {args.n} messages ({args.mail}, mean {mean_kb:.1f} KB),"
          f" {args.workers} `mailticket run`, PostgreSQL: {args.n / took:.0f} msg/s ({took:.1f} s)")
    print(f"reply latency p50 {1000 * percentile(lat, 0.5):.0f} ms, "
          f"p99 {1000 * percentile(lat, 0.99):.0f} ms; retries {feed.retries}, "
          f"errors {len(feed.errors)}")
    print(f"group commit: {groups[0]:.0f} transactions, {groups[1] / max(groups[0], 1):.1f}"
          f" messages each; PostgreSQL commits during the run (all jobs): {commits}")
    print(f"CPU of the `mailticket run` processes during the run: {1000 * cpu / args.n:.2f} ms/msg"
          " (less load-dependent than the rate)")
    print(f"stored {stored}; check {check}")
    for error in sorted(set(feed.errors))[:5]:
        print("refused:", error[:200])


if __name__ == "__main__":
    main()
