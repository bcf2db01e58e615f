"""Damaged variants of every corpus message (tests/fixtures' curated corpus, or the whole
shared one with ./scripts/test-corpus): parsing degrades, it never crashes.

Real mail arrives truncated, with bit errors, NUL bytes and mangled MIME headers; the parser
must still give a usable value (or ParseError when nothing is left), and never text that
PostgreSQL would refuse (NUL)."""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterator
from pathlib import Path

from mailticket.reading.parsing import ParseError, parse_email
from mailticket.runtime import Runtime


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
                      *email.to, *email.references, *email.in_reply_to, *email.part_types,
                      *(a.content_type for a in email.attachments),
                      *(a.filename for a in email.attachments)]
            if any("\x00" in v for v in values):
                failures.append(f"{path.name} [{name}]: NUL in parsed text")
    assert not failures, "\n".join(failures[:20])


def test_damaged_mail_through_the_pipeline_is_stored_not_quarantined(
    corpus_dir: Path, make_runtime: Callable[..., Runtime]
) -> None:
    """Every 8th corpus message, damaged, through the whole pipeline on both databases.
    Message-IDs are removed so each variant is processed, not dropped as a duplicate: what
    parses must also store (PostgreSQL refuses what SQLite lets through)."""
    rt = make_runtime(email_unmatched_action="create_ticket")
    rng = random.Random(3)
    items = (
        (f"{path.name}[{name}]", re.sub(rb"(?im)^message-id:", b"X-Old-Id:", raw))
        for path in sorted(corpus_dir.rglob("*.eml"))[::8]
        for name, raw in _variants(path.read_bytes(), rng)
    )
    held = [f"{o.source}: {o.error}" for o in rt.pipeline.ingest_many(items)
            if o.action == "quarantined" and not (o.error or "").startswith("ParseError")]
    assert not held, "\n".join(held[:10])
