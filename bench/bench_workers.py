"""Many `mailticket run` workers on one PostgreSQL: throughput and exactly-once under kill -9.

    .venv/bin/python bench/bench_workers.py                     # 1, 2, 4 workers; 2,000 messages
    .venv/bin/python bench/bench_workers.py --workers 1 2 --n 4000 --kills 4

For each worker count: a fresh PostgreSQL database, a private Dovecot with 4 mailboxes (INBOX
and three folders, one MAILBOXES_FILE) and every worker's LMTP receiver. Half of the messages
(bench/mailmix.py) are delivered into the 4 mailboxes (files into the Maildirs, as a local
delivery agent does; the workers hear of them by IDLE), the other half are sent by 8 LMTP
clients spread over the workers' receivers. Two runs per count:

- clean: no kills; the aggregate throughput, the machine's CPU, the workers' CPU seconds, and
  what PostgreSQL's sessions were waiting on (pg_stat_activity, sampled every 100 ms);
- kill: every few seconds a random worker is killed with SIGKILL and started again; LMTP
  clients retry what was not answered 250 (as an MTA does).

After each run: every Message-ID stored exactly once (in the log or in quarantine; what was
delivered into the mailboxes and every message answered 250), no ticket opened twice, the
metrics of all the workers added up (PROMETHEUS_MULTIPROC_DIR).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]

import yaml  # noqa: E402
from mailmix import generate_mix  # noqa: E402
from sqlalchemy import Engine, func, select, text  # noqa: E402
from tests.dbutil import drop_pg  # noqa: E402
from tests.live.dovecot import Dovecot, free_port  # noqa: E402
from tests.smtp_sink import SmtpSink  # noqa: E402
from workerkit import (  # noqa: E402
    LmtpFeed,
    Workers,
    fresh_pg,
    integrity,
    load,
    percentile,
    wait_for,
)

from mailticket.live.models import ImapLedgerEntry  # noqa: E402
from mailticket.store.db import make_engine  # noqa: E402

FOLDERS = ("INBOX", "box1", "box2", "box3")
DB = f"mt_bench_workers_{os.getpid()}"  # unique: benches may run side by side


def maildir_new(dovecot: Dovecot, folder: str) -> Path:
    base = dovecot.home / dovecot.user / "Maildir"
    return (base if folder == "INBOX" else base / f".{folder}") / "new"


def prepare_mailboxes(dovecot: Dovecot) -> None:
    dovecot.reset_mail()
    for folder in FOLDERS[1:]:
        dovecot.create(folder)
    dovecot.count("INBOX")  # makes Dovecot create the Maildir


def deliver(dovecot: Dovecot, messages: list[bytes]) -> None:
    """Into the 4 mailboxes in turn, as an LDA writes them: new/ then indexed by Dovecot."""
    for i, raw in enumerate(messages):
        new = maildir_new(dovecot, FOLDERS[i % len(FOLDERS)])
        tmp = new.parent / "tmp" / f"{time.time_ns()}.{i}.bench"
        tmp.write_bytes(raw)
        shutil.chown(tmp, "dovecot", "dovecot")
        tmp.rename(new / tmp.name)


class Sampler(threading.Thread):
    """What PostgreSQL's sessions of the bench database wait on, and the machine's CPU."""

    def __init__(self, engine: Engine) -> None:
        super().__init__(daemon=True)
        self.engine = engine
        self.waits: Counter[str] = Counter()
        self.blocked: Counter[str] = Counter()
        self.samples = 0
        self.stop = threading.Event()
        self.cpu0 = _cpu()

    def run(self) -> None:
        with self.engine.connect() as conn:
            while not self.stop.wait(0.1):
                rows = conn.execute(text(
                    "SELECT coalesce(wait_event_type || ':' || wait_event, 'CPU'),"
                    " wait_event_type = 'Lock', left(regexp_replace(query, '\\s+', ' ', 'g'), 70)"
                    " FROM pg_stat_activity WHERE datname = current_database()"
                    " AND pid <> pg_backend_pid() AND state = 'active'"
                )).all()
                conn.rollback()
                self.samples += 1
                for wait, on_lock, query in rows:
                    self.waits[wait] += 1
                    if on_lock:  # which statement waits for another transaction's lock
                        self.blocked[query] += 1

    def cpu_busy(self) -> float:
        busy0, total0 = self.cpu0
        busy1, total1 = _cpu()
        return (busy1 - busy0) / max(total1 - total0, 1)


def _cpu() -> tuple[int, int]:
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def _cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def processed_total(prom: Path) -> float:
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry, str(prom))  # type: ignore[no-untyped-call]
    return sum(
        s.value for family in registry.collect() for s in family.samples
        if s.name == "mailticket_emails_processed_total"
    )


def one_run(
    dovecot: Dovecot, sink: SmtpSink, messages: list[bytes], n_workers: int, kills: int,
    workdir: Path, rng: random.Random,
) -> dict[str, object]:
    url = fresh_pg(DB)
    engine = make_engine(url)
    prepare_mailboxes(dovecot)
    prom = workdir / "prom"
    shutil.rmtree(prom, ignore_errors=True)
    prom.mkdir()
    boxes = workdir / "mailboxes.yaml"
    boxes.write_text(yaml.safe_dump([
        {"name": folder, "host": "127.0.0.1", "port": dovecot.port, "tls": "plain",
         "user": dovecot.user, "password": dovecot.password, "folder": folder}
        for folder in FOLDERS
    ]))
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("IMAP_", "MAILDIR", "LMTP", "MAILBOXES", "API_"))}
    env.update(
        DATABASE_URL=url, MAILBOXES_FILE=str(boxes), EMAIL_UNMATCHED_ACTION="create_ticket",
        # a worker waiting for a mailbox's lock looks again every second (kill -9 takeover)
        IMAP_POLL_INTERVAL="1", SMTP_HOST="127.0.0.1", SMTP_PORT=str(sink.port),
        SMTP_TLS="plain", LOG_FORMAT="text", PROMETHEUS_MULTIPROC_DIR=str(prom),
    )
    imap_share, lmtp_share = messages[0::2], messages[1::2]
    logdir = workdir / f"logs-{n_workers}-{kills}"
    shutil.rmtree(logdir, ignore_errors=True)
    logdir.mkdir()
    workers = Workers(env, logdir, [free_port() for _ in range(n_workers)])
    workers.start_all()
    cpu: dict[int, float] = {}
    try:
        workers.wait_started()
        wait_for(lambda: workers.all_logs().count("connected mailbox=") >= len(FOLDERS),
                 60, "every mailbox connected")
        sampler = Sampler(engine)
        feed = LmtpFeed(workers.ports, lmtp_share, clients=8)
        print(f"  start: {load()}", flush=True)
        t0 = time.monotonic()
        sampler.start()
        deliver(dovecot, imap_share)
        feed.start()
        killer = None
        if kills:
            killer = threading.Thread(
                target=_kill_at_random, args=(workers, kills, rng), daemon=True
            )
            killer.start()

        def done() -> bool:
            with engine.connect() as conn:
                ledger = conn.scalar(select(func.count()).select_from(ImapLedgerEntry)) or 0
            return ledger >= len(imap_share) and not any(t.is_alive() for t in feed.threads)

        t1 = wait_for(done, 1800, "every message stored", poll=0.1)
        took = t1 - t0
        sampler.stop.set()
        busy = sampler.cpu_busy()
        if killer is not None:
            killer.join()
        for proc in workers.procs:
            if proc is not None:
                cpu[proc.pid] = _cpu_seconds(proc.pid)
        print(f"  end:   {load()}", flush=True)
    finally:
        workers.stop_all()
    # What the system must have: everything in the mailboxes, and what it answered 250 to.
    check = integrity(engine, [*imap_share, *feed.accepted])
    engine.dispose()
    drop_pg(DB)
    total_waits = sum(sampler.waits.values()) or 1
    return {
        "workers": n_workers, "kills": workers.kills, "messages": len(messages),
        "seconds": took, "msg_per_s": len(messages) / took, "machine_cpu_busy": busy,
        "worker_cpu_s": sum(cpu.values()), "lmtp_p50_ms": 1000 * percentile(feed.latencies, 0.5),
        "lmtp_p99_ms": 1000 * percentile(feed.latencies, 0.99), "lmtp_retries": feed.retries,
        "lmtp_not_accepted": len(lmtp_share) - len(feed.accepted),
        "pg_active_avg": sum(sampler.waits.values()) / max(sampler.samples, 1),
        "pg_waits": {k: round(v / total_waits, 2) for k, v in sampler.waits.most_common(5)},
        "blocked_statements": dict(sampler.blocked.most_common(3)),
        "processed_by_all_workers": processed_total(prom),
        **check,
    }


def _kill_at_random(workers: Workers, kills: int, rng: random.Random) -> None:
    for _ in range(kills):
        time.sleep(rng.uniform(1.5, 4.0))
        i = rng.randrange(len(workers.ports))
        workers.kill(i)
        time.sleep(0.2)
        workers.start(i)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--kills", type=int, default=3, help="kill -9s in the kill run (0: none)")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    messages = list(generate_mix(args.n, args.seed))
    rng = random.Random(args.seed)
    results = []
    with tempfile.TemporaryDirectory(prefix="mt-workers-") as tmp, SmtpSink() as sink:
        workdir = Path(tmp)
        dovecot = Dovecot(workdir / "dovecot", ssl=False)
        (workdir / "dovecot").mkdir()
        dovecot.start()
        try:
            for n_workers in args.workers:
                for kills in (0, args.kills) if args.kills else (0,):
                    label = "clean" if not kills else f"{kills} kill -9s"
                    print(f"{n_workers} worker(s), {label}:", flush=True)
                    result = one_run(
                        dovecot, sink, messages, n_workers, kills, workdir, rng
                    )
                    print(f"  {result}", flush=True)
                    results.append(result)
        finally:
            dovecot.stop()
    base = next((r["msg_per_s"] for r in results if r["workers"] == 1 and not r["kills"]), None)
    print("\nworkers  kills   msg/s  vs 1   cpu busy  worker cpu s  lost  dup  tickets")
    for r in results:
        ratio = f"{float(r['msg_per_s']) / float(base):.2f}" if base else "-"  # type: ignore[arg-type]
        dup = int(r["duplicated_log"]) + int(r["in_log_and_quarantine"])  # type: ignore[call-overload]
        print(f"{r['workers']:>7}  {r['kills']:>5}  {float(r['msg_per_s']):6.0f}  {ratio:>4}"  # type: ignore[arg-type]
              f"  {100 * float(r['machine_cpu_busy']):7.0f}%  {float(r['worker_cpu_s']):12.1f}"  # type: ignore[arg-type]
              f"  {r['lost']:>4}  {dup:>3}  {r['tickets']}")
    print(f"({load()})")


if __name__ == "__main__":
    main()
