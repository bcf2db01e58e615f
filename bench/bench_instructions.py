"""The store path's cost in instructions: a figure that does not move with the machine's load.

    .venv/bin/python bench/bench_instructions.py --batch 8            # CPU ms/msg, statements
    .venv/bin/python bench/bench_instructions.py --batch 8 --callgrind    # + instructions/msg
    .venv/bin/python bench/bench_instructions.py --stage parse --callgrind   # the parse thread's
    PYTHONPATH=/tmp/base/src .venv/bin/python bench/bench_instructions.py --callgrind   # A/B

Wall clock and even CPU time vary by a fifth from run to run on a shared 2-core machine, more
than most single changes to the store path. Instructions do not: under valgrind's callgrind,
runs of the same code agree within about 0.4 %. The mix (bench/mailmix.py) is generated and
parsed first (`Pipeline.prepare`, the parse thread's work); what is measured is what the
batch's thread does: `process_batch` and the commit per batch, as `ingest_many` does, on a
fresh PostgreSQL database. Collection is switched on after a warm-up batch, so start-up,
imports and first-statement caches are left out. Batches of 8 look like the LMTP receiver's
groups, batches of 100 like the IMAP drain's. Needs valgrind (`apt-get install valgrind`) for
`--callgrind`; PostgreSQL on 127.0.0.1 as the tests use it.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]

from mailmix import generate_mix  # noqa: E402
from sqlalchemy import event  # noqa: E402
from tests.dbutil import create_pg, drop_pg  # noqa: E402

from mailticket.runtime import build_runtime, settle_heap  # noqa: E402
from mailticket.settings import load_settings  # noqa: E402
from mailticket.store import migrate  # noqa: E402

UNDER_VALGRIND = "MT_BENCH_UNDER_CALLGRIND"


def _switch(collect: bool, state: str) -> None:
    """Turn callgrind's collection on or off for this process (nothing outside valgrind)."""
    if collect:
        subprocess.run(["callgrind_control", "-i", state, str(os.getpid())],
                       check=True, capture_output=True)


def measure(n: int, batch: int, warm: int, seed: int, collect: bool, stage: str) -> None:
    logging.disable(logging.WARNING)
    messages = list(generate_mix(n + warm, seed))
    name = f"mt_bench_instr_{os.getpid()}"
    url = create_pg(name)
    try:
        migrate.upgrade(url)
        runtime = build_runtime(load_settings(database_url=url, _env_file=None))
        settle_heap()
        pipeline = runtime.pipeline
        statements = [0]

        def count(*_: object) -> None:
            statements[0] += 1

        event.listen(runtime.engine, "before_cursor_execute", count)
        items = [(raw, "bench") for raw in messages]
        chunks = [items[:warm]] + [items[i:i + batch] for i in range(warm, warm + n, batch)]
        if stage == "parse":
            # The parse thread's share alone (`Pipeline.prepare`: parsing, classification,
            # extraction), so the two stages can be compared in the same unit.
            pipeline.prepare(chunks[0])
            _switch(collect, "on")
            cpu = time.process_time()
            for chunk in chunks[1:]:
                pipeline.prepare(chunk)
            cpu = time.process_time() - cpu
            _switch(collect, "off")
            runtime.close()
            note = " (slowed by valgrind)" if collect else ""
            print(f"{n} messages parsed in batches of {batch}: CPU {cpu * 1000 / n:.3f} ms/msg{note}")
            return
        prepared = [pipeline.prepare(chunk) for chunk in chunks]
        session = pipeline.session_factory()

        def store(chunk: list[tuple[bytes, str]], ready: object) -> None:
            pipeline.process_batch(session, chunk, prepared=ready)  # type: ignore[arg-type]
            session.commit()
            session.expunge_all()

        store(chunks[0], prepared[0])  # warm-up: caches and first statements
        before = statements[0]
        _switch(collect, "on")
        cpu = time.process_time()
        for chunk, ready in zip(chunks[1:], prepared[1:], strict=True):
            store(chunk, ready)
        cpu = time.process_time() - cpu
        _switch(collect, "off")
        session.close()
        runtime.close()
        note = " (slowed by valgrind)" if collect else ""
        print(f"{n} messages in batches of {batch}: CPU {cpu * 1000 / n:.3f} ms/msg{note}, "
              f"{statements[0] - before} statements")
    finally:
        drop_pg(name)


def under_callgrind(argv: list[str], n: int) -> None:
    if shutil.which("valgrind") is None or shutil.which("callgrind_annotate") is None:
        sys.exit("--callgrind needs valgrind (apt-get install valgrind)")
    with tempfile.TemporaryDirectory(prefix="mt-instr-") as tmp:
        out = Path(tmp) / "callgrind.out"
        # A fixed hash seed: set and dict orders, and so the instructions, repeat exactly.
        env = {**os.environ, UNDER_VALGRIND: "1", "PYTHONHASHSEED": "0"}
        subprocess.run(
            ["valgrind", "--tool=callgrind", "--instr-atstart=no",
             f"--callgrind-out-file={out}", sys.executable, __file__, *argv],
            env=env, check=True, stderr=subprocess.DEVNULL,
        )
        totals = subprocess.run(["callgrind_annotate", str(out)], check=True,
                                capture_output=True, text=True).stdout
        found = re.search(r"^([\d,]+) .*PROGRAM TOTALS", totals, re.MULTILINE)
        if found is None:
            sys.exit("callgrind_annotate printed no PROGRAM TOTALS")
        instructions = int(found.group(1).replace(",", ""))
        print(f"instructions: {instructions / n / 1e6:.3f} M per message")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=400, help="messages measured (after the warm-up)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--warm", type=int, default=40, help="messages of the warm-up batch")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--stage", choices=("store", "parse"), default="store",
                    help="store: process_batch + commit (default); parse: Pipeline.prepare")
    ap.add_argument("--callgrind", action="store_true",
                    help="run under valgrind and print instructions per message")
    args = ap.parse_args()
    if args.callgrind and not os.environ.get(UNDER_VALGRIND):
        argv = [a for a in sys.argv[1:] if a != "--callgrind"]
        under_callgrind(argv, args.n)
        return
    measure(args.n, args.batch, args.warm, args.seed, collect=bool(os.environ.get(UNDER_VALGRIND)), stage=args.stage)


if __name__ == "__main__":
    main()
