"""What parsing in child processes would take off the worker's GIL: an experiment, not a mode.

    .venv/bin/python bench/bench_prepare_pool.py --n 2000 --children 2

The worker is one Python process, and everything it does runs under one GIL: on this 2-core
machine it uses at most one core while PostgreSQL uses part of the other. `Pipeline.prepare`
(parsing, classification, the reply split, hashing, the sender check) needs no database and is
most of the worker's CPU per message. This runs the support mix's `prepare` twice: in the main
thread, as the worker does, and in a `ProcessPoolExecutor` whose children build the same
pipeline from the same settings. It prints the main process's CPU per message both ways (the
children's CPU is not counted: it runs beside the GIL, on the other core), the bytes pickled per
message, and whether both ways gave the same results (compared by repr).
"""

from __future__ import annotations

import argparse
import logging
import pickle
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]

from mailmix import generate_mix  # noqa: E402

from mailticket.pipeline import Pipeline, Ready  # noqa: E402
from mailticket.runtime import build_runtime  # noqa: E402
from mailticket.settings import load_settings  # noqa: E402
from mailticket.store import migrate  # noqa: E402

_child: Pipeline | None = None


def _pipeline(url: str) -> Pipeline:
    logging.disable(logging.WARNING)
    return build_runtime(load_settings(database_url=url, _env_file=None)).pipeline


def _child_prepare(url: str, chunk: list[tuple[bytes, str]]) -> list[Ready]:
    global _child
    if _child is None:
        _child = _pipeline(url)
    return _child.prepare(chunk)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--children", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="mt-pool-") as tmp:
        url = f"sqlite:///{tmp}/bench.db"
        migrate.upgrade(url)
        pipeline = _pipeline(url)
        items = [(raw, "bench") for raw in generate_mix(args.n, args.seed)]
        chunks = [items[i:i + args.batch] for i in range(0, args.n, args.batch)]
        pipeline.prepare(chunks[0])  # warm-up: imports, compiled patterns

        cpu, wall = time.process_time(), time.perf_counter()
        inline = [pipeline.prepare(chunk) for chunk in chunks]
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        print(f"in the main thread: main process CPU {cpu * 1000 / args.n:.3f} ms/msg, "
              f"wall {wall * 1000 / args.n:.3f} ms/msg")
        pickled = sum(len(pickle.dumps(ready)) for ready in inline) / args.n
        print(f"pickled per message: {pickled / 1024:.1f} KiB (the raw message goes the other way)")

        with ProcessPoolExecutor(args.children) as pool:
            list(pool.map(_child_prepare, [url] * args.children, chunks[:args.children]))
            cpu, wall = time.process_time(), time.perf_counter()
            pooled = list(pool.map(_child_prepare, [url] * len(chunks), chunks))
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        print(f"in {args.children} child processes: main process CPU "
              f"{cpu * 1000 / args.n:.3f} ms/msg, wall {wall * 1000 / args.n:.3f} ms/msg")
        same = all(repr(a) == repr(b) for x, y in zip(inline, pooled, strict=True)
                   for a, b in zip(x, y, strict=True))
        print(f"same results both ways: {same}")


if __name__ == "__main__":
    main()
