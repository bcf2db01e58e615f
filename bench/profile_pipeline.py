"""Where the ingest's CPU goes, thread by thread (run by hand; prints figures, asserts nothing).

`bench_pipeline.py` gives one CPU figure for the process. Ingest runs in two threads: the
main one handles and writes each batch while a second parses the next one, so a profile of
the main thread alone misses the parse side, and the process figure does not say which
thread to work on. This ingests the `bench/mailmix.py` support mix into a fresh PostgreSQL
database and prints:

- CPU per message of the process (in Python and libraries, and in the kernel: sending
  the rows to the server is mostly the latter) and of the main thread (the rest is the
  parse thread),
  and the main thread's wall time per message split into CPU and waiting (on the database,
  or on the parse thread when it is behind);
- the main thread's CPU and wall time in each table's COPY (the server's share shows as
  wall without CPU);
- with `--profile`, a cProfile of each thread (top functions by own time), and with
  `--dump DIR` the two profiles as pstats files.

The figures without `--profile` are the ones to compare: the profiler itself costs several
times the CPU of the small functions it counts.

    .venv/bin/python bench/profile_pipeline.py --n 10000
    .venv/bin/python bench/profile_pipeline.py --n 5000 --profile --top 30
"""

from __future__ import annotations

import argparse
import cProfile
import logging
import os
import pstats
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.dbutil import create_pg, drop_pg

from mailticket.runtime import build_runtime, settle_heap
from mailticket.settings import load_settings
from mailticket.store import bulkwrite, migrate, pgcopy

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mailmix import generate_mix

_PARSE_THREAD = "mailticket-parse"  # the prefix `Pipeline.ingest_many` names its thread with


def _count_copies(spent: dict[str, list[float]]) -> None:
    """Main-thread CPU and wall per table in `bulkwrite`'s COPY calls, into `spent`."""
    copy = pgcopy.copy_rows  # what bulkwrite calls

    def timed(connection: Any, table: Any, rows: Any) -> None:
        cpu, wall = time.thread_time(), time.perf_counter()
        try:
            copy(connection, table, rows)
        finally:
            figures = spent.setdefault(table.name, [0.0, 0.0])
            figures[0] += time.thread_time() - cpu
            figures[1] += time.perf_counter() - wall

    bulkwrite.copy_rows = timed  # type: ignore[attr-defined]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--profile", action="store_true", help="cProfile both threads")
    ap.add_argument("--top", type=int, default=25, help="functions shown per thread")
    ap.add_argument("--dump", type=Path, help="write main.prof and parse.prof here")
    args = ap.parse_args()
    logging.disable(logging.WARNING)
    print(f"load before: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} (1, 5 min)")
    messages = list(generate_mix(args.n, args.seed))
    copies: dict[str, list[float]] = {}
    _count_copies(copies)
    profiles = {"main": cProfile.Profile(), "parse": cProfile.Profile()}

    def start_parse_profile(*_: Any) -> None:
        # Runs once as the profile hook of each new thread: the parse thread swaps it for
        # its own profiler, any other thread for none.
        sys.setprofile(None)
        if threading.current_thread().name.startswith(_PARSE_THREAD):
            profiles["parse"].enable()

    name = f"mt_profile_pipeline_{os.getpid()}"
    url = create_pg(name)
    try:
        migrate.upgrade(url)
        rt = build_runtime(load_settings(database_url=url, _env_file=None))
        settle_heap()
        if args.profile:
            threading.setprofile(start_parse_profile)
            profiles["main"].enable()
        times = os.times()
        cpu, main_cpu, wall = time.process_time(), time.thread_time(), time.perf_counter()
        for _ in rt.pipeline.ingest_many(("bench", raw) for raw in messages):
            pass
        cpu = time.process_time() - cpu
        main_cpu = time.thread_time() - main_cpu
        wall = time.perf_counter() - wall
        user, system = os.times().user - times.user, os.times().system - times.system
        if args.profile:
            profiles["main"].disable()
            threading.setprofile(None)
        rt.close()
    finally:
        drop_pg(name)

    n = len(messages)
    per = 1000 / n
    print(f"messages:          {n:,} ({sum(map(len, messages)) / n / 1024:.1f} KB mean)")
    print(f"process CPU:       {cpu * per:.3f} ms/msg"
          f"{'  (profiled: not comparable)' if args.profile else ''}")
    print(f"  user / kernel:   {user * per:.3f} / {system * per:.3f} ms/msg")
    print(f"  main thread:     {main_cpu * per:.3f} ms/msg")
    print(f"  other threads:   {(cpu - main_cpu) * per:.3f} ms/msg (parsing the next batch)")
    print(f"main thread wall:  {wall * per:.3f} ms/msg, of it waiting"
          f" {(wall - main_cpu) * per:.3f} (database, parse thread, other processes)")
    print("COPY per table (main thread):   CPU ms/msg   wall ms/msg")
    for table, (copy_cpu, copy_wall) in sorted(copies.items(), key=lambda kv: -kv[1][1]):
        print(f"  {table:32} {copy_cpu * per:10.4f} {copy_wall * per:12.4f}")
    print(f"load after:  {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} (1, 5 min)")
    if not args.profile:
        return
    for thread, profile in profiles.items():
        if args.dump:
            args.dump.mkdir(parents=True, exist_ok=True)
            profile.dump_stats(args.dump / f"{thread}.prof")
        print(f"\n===== {thread} thread, by own time")
        pstats.Stats(profile).sort_stats("tottime").print_stats(args.top)


if __name__ == "__main__":
    main()
