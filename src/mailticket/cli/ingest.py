"""`mailticket ingest PATH...`: files, directories, Maildirs and mbox files into tickets."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import TextIO

from mailticket.reading.sources import iter_messages
from mailticket.runtime import build_runtime


class Progress:
    """A one-line counter on a terminal; silent when stderr is a pipe or a file."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.enabled = stream.isatty()
        self.started = time.monotonic()
        self.count = 0
        self._last = 0.0

    def tick(self, action: str) -> None:
        self.count += 1
        now = time.monotonic()
        if self.enabled and now - self._last > 0.2:
            rate = self.count / max(now - self.started, 1e-6)
            self.stream.write(f"\r{self.count} messages  {rate:,.0f} msg/s  last: {action:<12}")
            self.stream.flush()
            self._last = now

    def done(self) -> None:
        if self.enabled:
            self.stream.write("\r" + " " * 60 + "\r")


def _ingest(args: argparse.Namespace) -> int:
    from mailticket.cli import settings_or_exit

    settings = settings_or_exit()
    runtime = build_runtime(settings)
    runtime.pipeline.backdate = args.backdate
    counts: Counter[str] = Counter()
    progress = Progress(sys.stderr)
    try:
        messages = iter_messages([Path(p) for p in args.paths])
        for outcome in runtime.pipeline.ingest_many(messages, batch_size=args.batch_size):
            counts[outcome.action] += 1
            progress.tick(outcome.action)
            if args.json:
                sys.stdout.write(json.dumps(outcome.as_json(), ensure_ascii=False) + "\n")
            elif outcome.action == "quarantined":
                print(f"quarantined {outcome.source}: {outcome.error}", file=sys.stderr)
    except FileNotFoundError as exc:
        print(f"mailticket ingest: {exc}", file=sys.stderr)
        return 2
    finally:
        progress.done()
        runtime.close()
    summary = ", ".join(f"{n} {action}" for action, n in sorted(counts.items())) or "no messages"
    print(f"ingested {sum(counts.values())} messages: {summary}", file=sys.stderr)
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("ingest", help="ingest .eml files, directories, Maildirs and mbox files")
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.add_argument("--json", action="store_true", help="one JSON object per message on stdout")
    p.add_argument("--batch-size", type=int, default=None, help="messages per transaction")
    p.add_argument(
        "--backdate", action="store_true",
        help="archive import: number tickets by each mail's arrival date instead of today",
    )
    p.set_defaults(func=_ingest)
