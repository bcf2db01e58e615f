"""Thread endpoint benchmark (run by hand; prints figures, asserts nothing).

Builds a PostgreSQL database holding N stored emails (COPY, tickets of 1–8 mails each),
starts `mailticket serve` (a real uvicorn process) on it and measures
GET /api/v1/tickets/{id}/emails over HTTP with httpx for random tickets:

- latency: one client, one keep-alive connection, requests back to back → p50 / p99 / max;
- throughput: C concurrent clients (asyncio, one connection each) → requests/s.

    .venv/bin/python bench/bench_api.py --n 10000
    .venv/bin/python bench/bench_api.py --n 1000000 --requests 5000
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import random
import socket
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.dbutil import create_pg, drop_pg  # noqa: E402

from mailticket.api import tokens  # noqa: E402
from mailticket.store import migrate  # noqa: E402
from mailticket.store.db import make_engine, make_session_factory  # noqa: E402

CLASSES = ("support_request", "support_request", "support_request", "auto_reply", "bounce")
MATCHES = ("in_reply_to", "references", "subject", "in_reply_to")
NULL = "\\N"  # COPY's NULL


def load(url: str, n_emails: int, seed: int = 7) -> int:
    """COPY n_emails log rows into tickets of 1–8 mails; returns the number of tickets."""
    rng = random.Random(seed)
    base = datetime(2024, 1, 1, tzinfo=UTC)
    engine = make_engine(url)
    raw_conn = engine.raw_connection()
    try:
        cur = raw_conn.cursor()
        tickets, logs = io.StringIO(), io.StringIO()
        ticket_id, done = 0, 0
        while done < n_emails:
            ticket_id += 1
            size = min(rng.randint(1, 8), n_emails - done)
            opened = base + timedelta(seconds=ticket_id * 30)
            sender = f"user{rng.randint(1, n_emails // 10 + 1)}@customer{rng.randint(1, 300)}.example"
            tickets.write(
                f"{ticket_id}\tTKT-{opened:%Y%m%d}-{ticket_id:07d}\tProblem {ticket_id}\t"
                f"benchmark ticket\topen\tnormal\t[]\t{{}}\t{sender}\t{opened.isoformat()}\n"
            )
            for k in range(size):
                at = opened + timedelta(minutes=37 * k)
                out = k % 2 == 1
                matched = NULL if k == 0 else rng.choice(MATCHES)
                label = NULL if out else rng.choice(CLASSES)
                logs.write(
                    f"{ticket_id}\t<m{done}.{ticket_id}@bench.example>\t"
                    f"{'Re: ' if k else ''}Problem {ticket_id}\t"
                    f"{'support@bench.example' if out else sender}\t{at.isoformat()}\t"
                    f"{'t' if k else 'f'}\t{'out' if out else 'in'}\t{matched}\t"
                    f"{label}\t{at.isoformat()}\n"
                )
                done += 1
            if logs.tell() > 32_000_000:
                _flush(cur, tickets, logs)
                tickets, logs = io.StringIO(), io.StringIO()
        _flush(cur, tickets, logs)
        cur.execute("SELECT setval('tticket_tickets_id_seq', %s)", (ticket_id,))
        cur.execute("SELECT setval('tticket_email_log_id_seq', (SELECT max(id) FROM tticket_email_log))")
        raw_conn.commit()
        dbapi = raw_conn.driver_connection
        dbapi.autocommit = True  # type: ignore[union-attr]
        dbapi.cursor().execute("VACUUM ANALYZE")  # type: ignore[union-attr]
        return ticket_id
    finally:
        raw_conn.close()
        engine.dispose()


def _flush(cur: object, tickets: io.StringIO, logs: io.StringIO) -> None:
    tickets.seek(0)
    logs.seek(0)
    cur.copy_expert(  # type: ignore[attr-defined]
        "COPY tticket_tickets (id, ticket_number, subject, description, status, priority, "
        "tags, custom_fields, requester_email, created_at) FROM STDIN", tickets)
    cur.copy_expert(  # type: ignore[attr-defined]
        "COPY tticket_email_log (ticket_id, email_message_id, email_subject, email_from, "
        "email_received_at, is_reply, direction, matched_by, classification, created_at) "
        "FROM STDIN", logs)


def make_token(url: str) -> str:
    engine = make_engine(url)
    try:
        with make_session_factory(engine)() as session:
            _, plain = tokens.create_token(session, name="bench", scope="read")
            session.commit()
            return plain
    finally:
        engine.dispose()


def plan(url: str, ticket_id: int) -> str:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.exec_driver_sql(
                "EXPLAIN SELECT * FROM tticket_email_log WHERE ticket_id = %s "
                "ORDER BY email_received_at, id", (ticket_id,)
            ).scalars().all()
        return " | ".join(r.strip() for r in rows[:2])
    finally:
        engine.dispose()


def sql_latency(url: str, ids: list[int]) -> list[float]:
    """The thread query alone (what the endpoint runs after auth), to separate the database
    from the HTTP stack when the machine is noisy."""
    engine = make_engine(url)
    took = []
    try:
        with engine.connect() as conn:
            for tid in ids:
                t0 = time.perf_counter()
                conn.exec_driver_sql(
                    "SELECT * FROM tticket_email_log WHERE ticket_id = %s "
                    "ORDER BY email_received_at, id", (tid,)
                ).all()
                took.append(time.perf_counter() - t0)
    finally:
        engine.dispose()
    return took


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(url: str, port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "DATABASE_URL": url, "LOG_FORMAT": "text"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "mailticket.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT,
    )
    for _ in range(300):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise SystemExit("mailticket serve did not come up")


def latency(base: str, token: str, ids: list[int]) -> list[float]:
    took = []
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}) as client:
        for tid in ids:
            t0 = time.perf_counter()
            r = client.get(f"/api/v1/tickets/{tid}/emails")
            took.append(time.perf_counter() - t0)
            if r.status_code != 200:
                raise SystemExit(f"ticket {tid}: HTTP {r.status_code} {r.text[:200]}")
    return took


async def throughput(base: str, token: str, ids: list[int], concurrency: int) -> float:
    queue = list(ids)

    async def worker() -> None:
        async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {token}"}) as client:
            while queue:
                tid = queue.pop()
                r = await client.get(f"/api/v1/tickets/{tid}/emails")
                r.raise_for_status()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return len(ids) / (time.perf_counter() - t0)


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))] * 1000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=10_000, help="stored emails")
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--keep", action="store_true", help="keep the database afterwards")
    args = ap.parse_args()

    name = f"mt_bench_api_{os.getpid()}"
    url = create_pg(name)
    proc = None
    try:
        migrate.upgrade(url)
        t0 = time.perf_counter()
        n_tickets = load(url, args.n)
        print(f"loaded {args.n:,} emails in {n_tickets:,} tickets in {time.perf_counter() - t0:.1f} s")
        token = make_token(url)
        rng = random.Random(1)
        print(f"plan: {plan(url, rng.randint(1, n_tickets))}")
        sql = sql_latency(url, [rng.randint(1, n_tickets) for _ in range(args.requests)])
        print(f"sql only  n={len(sql)}: p50 {pct(sql, 50):.2f} ms, p99 {pct(sql, 99):.2f} ms")
        port = free_port()
        proc = start_server(url, port)
        base = f"http://127.0.0.1:{port}"
        latency(base, token, [rng.randint(1, n_tickets) for _ in range(300)])  # warm-up
        took = latency(base, token, [rng.randint(1, n_tickets) for _ in range(args.requests)])
        print(
            f"latency   n={len(took)} sequential: {len(took) / sum(took):,.0f} req/s, "
            f"p50 {pct(took, 50):.2f} ms, p99 {pct(took, 99):.2f} ms, max {max(took) * 1000:.2f} ms, "
            f"mean {statistics.fmean(took) * 1000:.2f} ms"
        )
        ids = [rng.randint(1, n_tickets) for _ in range(args.requests)]
        rps = asyncio.run(throughput(base, token, ids, args.concurrency))
        print(f"throughput concurrency={args.concurrency}: {rps:,.0f} req/s")
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)
        if not args.keep:
            drop_pg(name)


if __name__ == "__main__":
    main()
