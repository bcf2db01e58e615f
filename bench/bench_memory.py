"""Memory (issue 12): peak RSS storing one message with a big attachment, and RSS over a
long import. Run by hand; prints figures, asserts nothing.

    .venv/bin/python bench/bench_memory.py                       # 50 MB + 50,000 messages
    .venv/bin/python bench/bench_memory.py --mb 50 --long 1000000

Each measurement runs in a process of its own that does nothing else, so its peak RSS is the
pipeline's: the 50 MB message is written to a file first and read by the measuring process
(`pipeline.process`, one message, committed, into a fresh PostgreSQL database); the long
import reads `bench/mailmix.py`'s mix from a pipe (another process generates it) through
`ingest_many`, and prints the resident set every --every messages. Targets: peak RSS
<= 250 MB with the 50 MB attachment; RSS flat over the import.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

_PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_mb() -> float:
    """The resident set now (not the peak)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _PAGE / 2**20


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def write_big_message(path: Path, mb: int) -> str:
    """A mail with an `mb` MB attachment (random bytes, base64), written in pieces.
    Returns the attachment's SHA-256."""
    digest = hashlib.sha256()
    with path.open("wb") as f:
        f.write(
            b"From: Big Sender <big@customer.example>\r\nTo: support@example.com\r\n"
            b"Subject: Core dump attached\r\nDate: Mon, 05 Jan 2026 08:00:00 +0000\r\n"
            + f"Message-ID: <big-{uuid.uuid4().hex}@customer.example>\r\n".encode()
            + b'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b1"\r\n\r\n'
            b"--b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
            b"The service crashed, the core dump is attached.\r\n"
            b'--b1\r\nContent-Type: application/octet-stream; name="core.bin"\r\n'
            b'Content-Disposition: attachment; filename="core.bin"\r\n'
            b"Content-Transfer-Encoding: base64\r\n\r\n"
        )
        left = mb << 20
        while left:
            chunk = os.urandom(min(left, 57 * 4096))  # whole 76-character lines
            left -= len(chunk)
            digest.update(chunk)
            f.write(base64.encodebytes(chunk).replace(b"\n", b"\r\n"))
        f.write(b"--b1--\r\n")
    return digest.hexdigest()


def child_big(path: str, url: str) -> None:
    from mailticket.runtime import build_runtime
    from mailticket.settings import load_settings

    rt = build_runtime(load_settings(database_url=url, _env_file=None))
    before = peak_mb()
    raw = Path(path).read_bytes()
    t = time.perf_counter()
    outcome = rt.pipeline.process(raw, "bench")
    took = time.perf_counter() - t
    rt.close()
    print(json.dumps({"action": outcome.action, "before": before, "peak": peak_mb(),
                      "seconds": took, "raw": len(raw)}))


def _framed(stream: BinaryIO) -> Iterator[tuple[str, bytes]]:
    while head := stream.read(4):
        yield "bench", stream.read(int.from_bytes(head, "big"))


def child_long(url: str, every: int) -> None:
    from mailticket.runtime import build_runtime, settle_heap
    from mailticket.settings import load_settings

    rt = build_runtime(load_settings(database_url=url, _env_file=None))
    settle_heap()  # as `mailticket run` and `mailticket ingest` do at start-up
    t = time.perf_counter()
    print(f"{'messages':>10} {'RSS MB':>7} {'peak MB':>8} {'msg/s':>7}", flush=True)
    for i, _outcome in enumerate(rt.pipeline.ingest_many(_framed(sys.stdin.buffer)), 1):
        if i % every == 0:
            rate = i / (time.perf_counter() - t)
            print(f"{i:>10,} {rss_mb():7.0f} {peak_mb():8.0f} {rate:7.0f}", flush=True)
    rt.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=50, help="attachment size (0: skip)")
    ap.add_argument("--long", type=int, default=50_000, help="messages to import (0: skip)")
    ap.add_argument("--every", type=int, default=0, help="print RSS every this many (default n/20)")
    ap.add_argument("--child-big", nargs=2, help=argparse.SUPPRESS)
    ap.add_argument("--child-long", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child_big:
        child_big(*args.child_big)
        return
    if args.child_long:
        child_long(args.child_long, args.every)
        return

    from sqlalchemy import create_engine, text
    from tests.dbutil import create_pg, drop_pg

    from mailticket.store import migrate

    me = [sys.executable, str(Path(__file__).resolve())]
    print(f"load before: {os.getloadavg()[0]:.2f} (1 min)")
    name = f"mt_bench_memory_{uuid.uuid4().hex[:6]}"
    url = create_pg(name)
    try:
        migrate.upgrade(url)
        if args.mb:
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "big.eml"
                sha = write_big_message(path, args.mb)
                done = subprocess.run([*me, "--child-big", str(path), url], check=True,
                                      capture_output=True, text=True)
            got = json.loads(done.stdout.strip().splitlines()[-1])
            engine = create_engine(url)
            with engine.connect() as conn:
                stored = conn.execute(text(
                    "SELECT a.size, a.sha256, length(r.raw) FROM tticket_attachments a "
                    "JOIN tticket_email_log l ON l.id = a.email_log_id "
                    "JOIN mailticket_raw_messages r ON r.id = l.raw_message_id")).one()
            engine.dispose()
            ok = stored[0] == args.mb << 20 and stored[1] == sha and stored[2] == got["raw"]
            print(f"{args.mb} MB attachment ({got['raw'] / 2**20:.0f} MB message): {got['action']}"
                  f" in {got['seconds']:.1f}s, stored {'intact' if ok else 'WRONG'}")
            print(f"  peak RSS {got['peak']:.0f} MB (after start-up {got['before']:.0f} MB);"
                  f" target <= 250 MB")
        if args.long:
            every = args.every or max(1, args.long // 20)
            print(f"long import: {args.long:,} messages of the support mix, RSS every {every:,}")
            gen = subprocess.Popen(
                [sys.executable, str(Path(__file__).with_name("mailmix.py")), str(args.long),
                 "--stream", "--seed", "7"], stdout=subprocess.PIPE)
            subprocess.run([*me, "--child-long", url, "--every", str(every)], stdin=gen.stdout,
                           check=True)
            gen.wait()
        print(f"load after: {os.getloadavg()[0]:.2f} (1 min)")
    finally:
        drop_pg(name)


if __name__ == "__main__":
    main()
