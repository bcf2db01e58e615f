"""`mailticket ingest PATH...`: files, directories, Maildirs and mbox files into tickets."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TextIO

from mailticket.cli.common import CliError, open_runtime, positive_int, settings_or_exit
from mailticket.live.maildir import headers_of
from mailticket.reading.msgids import header_message_id
from mailticket.reading.sources import iter_messages
from mailticket.runtime import Runtime, settle_heap
from mailticket.ticketing import quarantine
from mailticket.types import Outcome


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


def _too_large(runtime: Runtime, source: str, raw: bytes) -> Outcome:
    """Held like the worker holds it: the header block only, with the reason."""
    head = headers_of(raw)
    message_id = header_message_id(head)
    limit = runtime.settings.max_message_size
    reason = quarantine.too_large_reason(len(raw), f" (MAX_MESSAGE_SIZE={limit})")
    with runtime.session_factory() as session:
        quarantine.quarantine_raw(session, head, source, reason, message_id)
        session.commit()
    return Outcome(source=source, message_id=message_id, action="quarantined", error=reason)


def _within_limit(
    runtime: Runtime, items: Iterable[tuple[str, bytes]], held: list[Outcome], limit: int | None
) -> Iterator[tuple[str, bytes]]:
    for source, raw in items:
        if limit is not None and len(raw) > limit:
            held.append(_too_large(runtime, source, raw))
        else:
            yield source, raw


def _ingest(args: argparse.Namespace) -> int:
    settings = settings_or_exit()
    if not args.send_replies:
        # An archive import answers nobody: its senders wrote long ago, or to a list.
        settings = settings.model_copy(update={"auto_reply_enabled": False})
    runtime = open_runtime(settings)
    runtime.pipeline.backdate = args.backdate
    settle_heap()
    counts: Counter[str] = Counter()
    progress = Progress(sys.stderr)
    held: list[Outcome] = []
    limit = None if args.no_size_limit else settings.max_message_size

    def report(outcome: Outcome) -> None:
        counts[outcome.action] += 1
        progress.tick(outcome.action)
        if args.json:
            sys.stdout.write(json.dumps(outcome.as_json(), ensure_ascii=False) + "\n")
        elif outcome.action == "quarantined":
            print(f"quarantined {outcome.source}: {outcome.error}", file=sys.stderr)

    def skipped(file: Path, why: str) -> None:
        print(f"skipped {file}: {why}", file=sys.stderr)

    try:
        paths = [Path(p) for p in args.paths]
        messages = _within_limit(runtime, iter_messages(paths, skipped), held, limit)
        for outcome in runtime.pipeline.ingest_many(messages, batch_size=args.batch_size):
            while held:  # over-size messages met while this batch was read come first
                report(held.pop(0))
            report(outcome)
        while held:
            report(held.pop(0))
    except FileNotFoundError as exc:
        raise CliError(f"ingest: {exc}", code=2) from None
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
    p.add_argument("--batch-size", type=positive_int, default=None, help="messages per transaction")
    p.add_argument(
        "--backdate", action="store_true",
        help="archive import: number tickets by each mail's arrival date instead of today",
    )
    p.add_argument(
        "--no-size-limit", action="store_true",
        help="archive import: take messages larger than MAX_MESSAGE_SIZE whole",
    )
    p.add_argument(
        "--send-replies", action="store_true",
        help="queue the workflows' auto-replies (by default an import answers nobody)",
    )
    p.set_defaults(func=_ingest)
