"""Classify every message of the shared corpus and print the label distribution.

    .venv/bin/python bench/classify_corpus.py                     # /work/shared/corpus
    .venv/bin/python bench/classify_corpus.py --by-folder         # plus one table per folder
    .venv/bin/python bench/classify_corpus.py --category arf_abuse_report --show

Prints: label counts over the corpus, messages the parser rejects, the rules that fired most,
and the classifier's own speed (classify calls per second on pre-parsed messages).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections import Counter, defaultdict
from pathlib import Path

from mailticket.reading.classification import Classifier, builtin_rules
from mailticket.reading.parsing import ParseError, parse_email
from mailticket.types import ParsedEmail

DEFAULT_CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("corpus", nargs="?", type=Path, default=DEFAULT_CORPUS)
    ap.add_argument("--by-folder", action="store_true")
    ap.add_argument("--category", help="only files of this hard_cases.json category")
    ap.add_argument("--show", action="store_true", help="print each file's label and reasons")
    args = ap.parse_args()
    logging.getLogger("mailparser").setLevel(logging.ERROR)

    files = sorted(args.corpus.rglob("*.eml"))
    if args.category:
        cases = json.loads((args.corpus / "hard_cases.json").read_text())
        files = [args.corpus / rel for rel in cases[args.category]]

    parsed: list[tuple[Path, ParsedEmail]] = []
    rejected: list[str] = []
    for path in files:
        try:
            parsed.append((path, parse_email(path.read_bytes())))
        except ParseError as exc:
            rejected.append(f"{path.relative_to(args.corpus)}: {exc}")

    classifier = Classifier(builtin_rules())
    started = time.perf_counter()
    results = [(path, classifier.classify(email)) for path, email in parsed]
    elapsed = time.perf_counter() - started

    labels = Counter(c.label for _p, c in results)
    rules = Counter(h.rule for _p, c in results for h in c.hits)
    print(f"{len(files)} files, {len(parsed)} parsed, {len(rejected)} rejected by the parser")
    for label, count in labels.most_common():
        print(f"  {label:<16} {count:5d}  {100 * count / max(len(results), 1):5.1f} %")
    if args.by_folder:
        folders: dict[str, Counter[str]] = defaultdict(Counter)
        for path, c in results:
            folders[path.relative_to(args.corpus).parts[0]][c.label] += 1
        for folder, counts in sorted(folders.items()):
            shown = ", ".join(f"{k} {v}" for k, v in counts.most_common())
            print(f"  {folder:<20} {shown}")
    print("rules fired:")
    for rule, count in rules.most_common():
        print(f"  {rule:<26} {count:5d}")
    for line in rejected:
        print(f"rejected {line}")
    if args.show:
        for path, c in results:
            reasons = "; ".join(f"{h.rule}({h.weight})" for h in c.hits)
            print(f"{path.relative_to(args.corpus)}  {c.label} {c.confidence:.3f}  {reasons}")
    rate = len(results) / elapsed if elapsed else float("inf")
    print(f"classify: {len(results)} messages in {elapsed * 1000:.1f} ms, {rate:,.0f} msg/s")


if __name__ == "__main__":
    main()
