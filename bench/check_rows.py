"""Old against new ingest: the same mail must leave the same rows (run by hand).

Ingests the `bench/mailmix.py` support mix into a fresh PostgreSQL database once per code
tree (each in its own interpreter, `PYTHONPATH=<tree>/src`) and compares every table row by
row. The baseline runs twice: a column whose values differ between two runs of the same
code (wall-clock timestamps, random Message-IDs) is left out of the comparison, and named.

    .venv/bin/python bench/check_rows.py /tmp/base/src [--n 3000]

Prints the number of differing rows (0 means the change stored nothing differently).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Run in the child: ingest the mix with the tree on PYTHONPATH, print every table as JSON.
_CHILD = r"""
import hashlib, json, logging, os, sys
sys.path.insert(0, sys.argv[1]); sys.path.insert(0, os.path.join(sys.argv[1], "bench"))
from sqlalchemy import inspect, text
from tests.dbutil import create_pg, drop_pg
from mailmix import generate_mix
import mailticket
from mailticket.runtime import build_runtime
from mailticket.settings import load_settings
from mailticket.store import migrate
logging.disable(logging.WARNING)
def _show(v):  # bytea comes back as a memoryview, whose repr is its address
    return hashlib.sha256(bytes(v)).hexdigest() if isinstance(v, (bytes, memoryview)) else repr(v)
assert mailticket.__file__.startswith(sys.argv[3]), mailticket.__file__
name = f"mt_check_rows_{os.getpid()}"
url = create_pg(name)
try:
    migrate.upgrade(url)
    rt = build_runtime(load_settings(database_url=url, _env_file=None))
    for _ in rt.pipeline.ingest_many(("bench", raw) for raw in generate_mix(int(sys.argv[2]), 1)):
        pass
    out = {}
    with rt.engine.connect() as conn:
        for table in sorted(inspect(conn).get_table_names()):
            pk = inspect(conn).get_pk_constraint(table)["constrained_columns"] or ["1"]
            order = ", ".join(f'"{c}"' if c != "1" else c for c in pk)
            rows = conn.execute(text(f'SELECT * FROM "{table}" ORDER BY {order}')).mappings().all()
            out[table] = [{k: _show(v) for k, v in r.items()} for r in rows]
    rt.close()
    json.dump(out, sys.stdout)
finally:
    drop_pg(name)
"""


def _dump(src: Path, n: int) -> dict[str, list[dict[str, str]]]:
    env = {**os.environ, "PYTHONPATH": str(src)}
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, str(ROOT), str(n), str(src)],
        env=env, capture_output=True, text=True,
    )
    if done.returncode:
        raise SystemExit(f"ingest with {src} failed:\n{done.stderr[-3000:]}")
    data: dict[str, list[dict[str, str]]] = json.loads(done.stdout)
    return data


def _key(row: dict[str, str], skip: set[str]) -> str:
    return json.dumps({k: v for k, v in sorted(row.items()) if k not in skip})


def _unstable(a: dict[str, list[dict[str, str]]], b: dict[str, list[dict[str, str]]]) -> dict[str, set[str]]:
    """Columns whose values differ between two runs of the same code, per table."""
    out: dict[str, set[str]] = {}
    for table, rows in a.items():
        other = b.get(table, [])
        cols: set[str] = set()
        for x, y in zip(rows, other, strict=False):  # same code: same primary keys
            cols |= {k for k in x if x[k] != y.get(k)}
        out[table] = cols
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("baseline_src", type=Path)
    ap.add_argument("--n", type=int, default=3000)
    args = ap.parse_args()
    base_src = args.baseline_src.resolve()
    first, second = _dump(base_src, args.n), _dump(base_src, args.n)
    new = _dump(ROOT / "src", args.n)
    unstable = _unstable(first, second)
    differing = 0
    rows_compared = 0
    for table in sorted(set(first) | set(new)):
        skip = unstable.get(table, set())
        old_rows = Counter(_key(r, skip) for r in first.get(table, []))
        new_rows = Counter(_key(r, skip) for r in new.get(table, []))
        rows_compared += max(old_rows.total(), new_rows.total())
        diff = ((old_rows - new_rows) + (new_rows - old_rows)).total()
        if diff:
            differing += diff
            print(f"DIFF {table}: {diff} rows only on one side")
        print(f"  {table:40} {new_rows.total():>6} rows; left out (differ run to run): {sorted(skip)}")
    print(f"rows compared: {rows_compared:,}; differing rows: {differing}")
    sys.exit(1 if differing else 0)


if __name__ == "__main__":
    main()
