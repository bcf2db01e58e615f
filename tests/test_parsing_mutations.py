"""Damaged variants of every corpus message: parsing degrades, it never crashes.

Real mail arrives truncated, with bit errors, NUL bytes and mangled MIME headers; the parser
must still give a usable value (or ParseError when nothing is left), and never text that
PostgreSQL would refuse (NUL)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

from mailticket.parsing import ParseError, parse_email


def _variants(raw: bytes, rng: random.Random) -> Iterator[tuple[str, bytes]]:
    yield "truncated", raw[: len(raw) // 2]
    yield "nul-in-headers", raw.replace(b"\n", b"\x00\n", 5)
    yield "boundary-param-lost", raw.replace(b"boundary=", b"boundery=")
    flipped = bytearray(raw)
    for _ in range(20):
        flipped[rng.randrange(len(flipped))] = rng.randrange(256)
    yield "bit-errors", bytes(flipped)
    yield "8bit-subject", raw.replace(b"\nSubject: ", b"\nSubject: caf\xe9 \xff\xfe ", 1)


def test_damaged_corpus_messages_parse(corpus_dir: Path) -> None:
    rng = random.Random(20251215)
    failures: list[str] = []
    for path in sorted(corpus_dir.rglob("*.eml")):
        for name, raw in _variants(path.read_bytes(), rng):
            try:
                email = parse_email(raw)
            except ParseError:
                continue
            except Exception as exc:  # noqa: BLE001 - collected: one run reports every case
                failures.append(f"{path.name} [{name}]: {type(exc).__name__}: {exc}")
                continue
            values = [email.subject, email.text, email.from_address, email.message_id,
                      *email.to, *email.references, *email.in_reply_to]
            if any("\x00" in v for v in values):
                failures.append(f"{path.name} [{name}]: NUL in parsed text")
    assert not failures, "\n".join(failures[:20])
