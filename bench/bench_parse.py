"""Parse throughput over the shared corpus: msg/s and MB/s (run by hand, prints figures).

    .venv/bin/python bench/bench_parse.py [corpus_dir] [--rounds N]

Sets: every corpus message; messages under 20 KiB; "typical support mail" (the real
client replies and helpdesk/mailing-list messages under 20 KiB). Each set is parsed once
to warm caches, then timed over N rounds.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from mailticket.reading.parsing import parse_email

DEFAULT_CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"
SMALL = 20 * 1024
TYPICAL_FOLDERS = ("talon", "django-helpdesk", "notmuch-default")


def measure(label: str, messages: list[bytes], rounds: int) -> None:
    for raw in messages:
        parse_email(raw)
    started = time.perf_counter()
    for _ in range(rounds):
        for raw in messages:
            parse_email(raw)
    elapsed = time.perf_counter() - started
    count = len(messages) * rounds
    size = sum(map(len, messages)) * rounds
    print(
        f"{label:<28} {len(messages):>5} msgs  {count / elapsed:>8.0f} msg/s"
        f"  {size / elapsed / 1e6:>6.2f} MB/s  (avg {size / count / 1024:.1f} KiB)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("corpus", nargs="?", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    files = sorted(args.corpus.rglob("*.eml"))
    if not files:
        raise SystemExit(f"no .eml files under {args.corpus}")
    everything = [(f, f.read_bytes()) for f in files]
    measure("whole corpus", [raw for _, raw in everything], args.rounds)
    measure("corpus < 20 KiB", [raw for _, raw in everything if len(raw) < SMALL], args.rounds)
    typical = [
        raw
        for f, raw in everything
        if len(raw) < SMALL and f.relative_to(args.corpus).parts[0] in TYPICAL_FOLDERS
    ]
    measure("typical support mail", typical, args.rounds)


if __name__ == "__main__":
    main()
