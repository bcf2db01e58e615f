"""Tags and priority taken from an email (the seed's rules)."""

from __future__ import annotations

import re
from collections.abc import Iterable

from mailticket.settings import Priority

MAX_TAGS = 10
MIN_TAG_LENGTH = 3

# A hashtag starts a word: not part of an HTML entity (&#39;), a URL fragment (/#top) or
# another tag (##). It must hold a letter, so "order #12345" is a number, not a tag.
_TAG_RE = re.compile(r"(?<![\w&/#])#(\w[\w-]*)")

_PRIORITY_WORDS: dict[Priority, tuple[str, ...]] = {
    Priority.critical: ("kritisk", "critical", "down", "nede", "urgent", "akut"),
    Priority.high: ("høj", "high", "vigtig", "important", "haster"),
    Priority.low: ("lav", "low", "spørgsmål", "question", "info"),
}
_PRIORITY_RES = {
    level: re.compile(r"(?<!\w)(?:" + "|".join(map(re.escape, words)) + r")(?!\w)", re.IGNORECASE)
    for level, words in _PRIORITY_WORDS.items()
}
PRIORITY_RANK = {Priority.low: 0, Priority.normal: 1, Priority.high: 2, Priority.critical: 3}


def extract_tags(body: str, limit: int = MAX_TAGS) -> list[str]:
    tags: list[str] = []
    if "#" not in body:  # most mail: the regex (a lookbehind first) would try every position
        return tags
    for match in _TAG_RE.finditer(body):
        tag = match.group(1).strip("-_").lower()
        if len(tag) < MIN_TAG_LENGTH or not any(ch.isalpha() for ch in tag):
            continue
        if tag not in tags:
            tags.append(tag)
            if len(tags) >= limit:
                break
    return tags


def merge_tags(existing: Iterable[str], new: Iterable[str], limit: int = MAX_TAGS) -> list[str]:
    merged = list(dict.fromkeys(t.lower() for t in existing))
    for tag in new:
        tag = tag.lower()
        if len(merged) >= limit:
            break
        if tag not in merged:
            merged.append(tag)
    return merged


def detect_priority(subject: str, tags: Iterable[str], default: Priority) -> Priority:
    """Subject and tags only: a body saying "our internet is down" stays at the default."""
    haystack = " ".join([subject, *tags])
    for level in (Priority.critical, Priority.high, Priority.low):
        if _PRIORITY_RES[level].search(haystack):
            return level
    return default
