"""SLA sweep and customer matching benchmark (run by hand; prints figures, asserts nothing).

Builds a fresh database with N tickets as a support desk has them: created over the last
30 days at any hour, a third of them having gone pending and back once or twice, some
resolved, priorities and customers mixed; M customers with domains and contacts. Then:

- the first sweep (every ticket computed and stored, events raised), tickets/s;
- a second sweep one minute later (only tickets whose warning/due time has come);
- the matcher: customers_involved() for messages of 1 sender + 3 recipients, messages/s.

    .venv/bin/python bench/bench_sla.py --n 20000 --db postgresql
    .venv/bin/python bench/bench_sla.py --n 5000 --db sqlite
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import random
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.dbutil import create_pg, drop_pg

from mailticket.customers.directory import sync_from_config
from mailticket.customers.loader import load_customers
from mailticket.customers.matcher import customers_involved
from mailticket.customers.shared import shared_domains
from mailticket.sla.config import load_sla
from mailticket.sla.models import TicketStatusChange
from mailticket.sla.service import sweep
from mailticket.store import migrate
from mailticket.store.db import make_engine, make_session_factory
from mailticket.store.models import Ticket

NOW = datetime(2025, 12, 15, 10, 0, tzinfo=UTC)
SLA = """
default_calendar: office
calendars:
  office:
    timezone: Europe/Berlin
    hours: {mon-fri: ["08:00-12:00", "13:00-17:00"]}
    holidays: {country: DE, subdivision: BY}
  always: {timezone: UTC, hours: 24x7}
customers:
  c0001: {calendar: always}
policies:
  - {name: Default, first_response: 8h, resolution: 40h}
  - {name: High, priority: high, first_response: 4h, resolution: 16h}
  - {name: Critical, priority: critical, first_response: 1h, resolution: 4h, calendar: always}
  - {name: Gold, customer: c0002, first_response: 2h, resolution: 8h}
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--customers", type=int, default=2000)
    ap.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    ap.add_argument("--profile", action="store_true", help="cProfile the first sweep")
    args = ap.parse_args()
    rng = random.Random(11)
    work = Path(tempfile.mkdtemp())
    pg_name = None
    if args.db == "postgresql":
        pg_name = f"mt_bench_sla_{os.getpid()}"  # unique: benches may run side by side
        url = create_pg(pg_name)
    else:
        url = f"sqlite:///{work}/bench.sqlite3"
    migrate.upgrade(url)
    engine = make_engine(url)
    factory = make_session_factory(engine)
    try:
        (work / "sla.yaml").write_text(SLA)
        (work / "customers.yaml").write_text("customers:\n" + "".join(
            f"  - {{key: c{i:04d}, name: Customer {i}, domains: [c{i}.example, "
            f"c{i}-group.example], contacts: [boss{i}@gmail.com]}}\n"
            for i in range(args.customers)
        ))
        shared = shared_domains(None)
        config = load_sla(work / "sla.yaml")
        with factory() as session, session.begin():
            sync_from_config(session, load_customers(work / "customers.yaml", shared), now=NOW)
        with factory() as session, session.begin():
            for i in range(args.n):
                created = NOW - timedelta(minutes=rng.randrange(30 * 24 * 60))
                ticket = Ticket(
                    ticket_number=f"TKT-B-{i:07d}", subject="s", status="open",
                    priority=rng.choice(["low", "normal", "normal", "high", "critical"]),
                    customer_id=rng.randrange(1, args.customers + 1) if rng.random() < 0.7 else None,
                    created_at=created,
                )
                session.add(ticket)
                session.flush()
                moment = created
                for status in rng.choice([[], [], ["pending", "open"], ["pending", "open", "pending"],
                                          ["resolved"], ["pending", "open", "resolved"]]):
                    moment += timedelta(minutes=rng.randrange(10, 3 * 24 * 60))
                    if moment >= NOW:
                        break
                    session.add(TicketStatusChange(ticket_id=ticket.id, status=status, changed_at=moment))
                    ticket.status = status

        with factory() as session, session.begin():
            profiler = cProfile.Profile() if args.profile else None
            t0 = time.perf_counter()
            if profiler:
                profiler.enable()
            report = sweep(session, config, NOW, limit=args.n)
            if profiler:
                profiler.disable()
                pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)
            first = time.perf_counter() - t0
        print(f"first sweep: {report.evaluated} tickets in {first:.2f}s "
              f"= {report.evaluated / first:.0f} tickets/s; {len(report.events)} events fired, "
              f"{len(report.breaches)} breaches")
        with factory() as session, session.begin():
            t0 = time.perf_counter()
            again = sweep(session, config, NOW + timedelta(minutes=1), limit=args.n)
            second = time.perf_counter() - t0
        print(f"sweep one minute later: {again.evaluated} tickets due in {second * 1000:.0f} ms")

        messages = [
            [f"user{j}@c{rng.randrange(args.customers)}.example",
             f"x@sub.c{rng.randrange(args.customers)}-group.example",
             rng.choice(["friend@gmail.com", f"boss{rng.randrange(args.customers)}@gmail.com"]),
             "support@support.example"]
            for j in range(2000)
        ]
        with factory() as session:
            profiler = cProfile.Profile() if args.profile else None
            t0 = time.perf_counter()
            if profiler:
                profiler.enable()
            found = sum(len(customers_involved(session, m, shared)) for m in messages)
            if profiler:
                profiler.disable()
                pstats.Stats(profiler).sort_stats("tottime").print_stats(12)
            took = time.perf_counter() - t0
        print(f"matcher: {len(messages)} messages (4 addresses each) in {took:.2f}s = "
              f"{len(messages) / took:.0f} messages/s; {found} customer matches")
    finally:
        engine.dispose()
        if pg_name:
            drop_pg(pg_name)


if __name__ == "__main__":
    main()
