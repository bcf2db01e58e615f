"""Where the customer's signature starts in the text they wrote.

Only the tail of the new text is examined, and a cut is made only where everything below it
looks like a signature (short lines: a name, a title, a phone number, a link). A closing like
"Best regards" opens a signature by itself; "Thanks" only when a name follows it, because
"Thanks!" alone is part of what the customer said.
"""

from __future__ import annotations

import re

from mailticket.conversation.markers import (
    REGARDS_RE,
    SENT_FROM_RE,
    SIGNOFF_WITH_NAME_RE,
    THANKS_RE,
)

# How far up from the end a signature may start (non-blank lines), and what its lines may be.
_MAX_SIG_LINES = 10
_MAX_SIG_LINE = 90
_DELIMITER = re.compile(r"^(?:--|—|––|-- ?)\s*$")
_RULE = re.compile(r"^[-_=~*─—–]{5,}\s*$")
# The characters either can open with: most lines are refused without running them.
_DELIMITER_FIRST = frozenset("-—–")
_RULE_FIRST = frozenset("-_=~*─—–")
# A capitalised word or an initial ("J."); "Svar." (a one-word answer) is no name.
_NAME_WORD = r"(?:[A-ZÀ-ÞĄĆĘŁŃÓŚŹŻ]\.|[A-ZÀ-ÞĄĆĘŁŃÓŚŹŻ][\w'-]*)"
_NAME = re.compile(
    rf"^(?:[-–—/~]\s*)?{_NAME_WORD}(?:\s+(?:{_NAME_WORD}|van|von|de|der|den|da|di|la|le)){{0,3}}$"
)
_DASH_NAME = re.compile(r"^[-–—/~]\s*\w[\w'.]*(?:\s+\w[\w'.]*){0,3}$")
_NOT_NAMES = frozenset(
    {
        "yes", "no", "ok", "okay", "thanks", "thank you", "hi", "hello", "hey", "done", "sure",
        "great", "perfect", "fine", "agreed", "confirmed", "ja", "nej", "nein", "oui", "non", "sí",
        "si", "nee", "tak", "nie", "kyllä", "ei", "sim", "não", "danke", "merci", "gracias",
        "grazie", "bedankt", "tack", "takk", "kiitos", "dziękuję", "obrigado", "regards",
        "please", "urgent", "asap", "cheers",
    }
)  # fmt: skip
# A name in Chinese or Japanese: two to five Han characters (a family and a given name).
_CJK_NAME = re.compile(r"^[\u4e00-\u9fff々]{2,5}$")
_CJK_NOT_NAMES = frozenset(
    {
        "好的",
        "是的",
        "谢谢",
        "謝謝",
        "收到",
        "可以",
        "明白",
        "了解",
        "不是",
        "没有",
        "已经",
        "拜托",
        "以上",
        "確認",
        "承知",
        "了解です",
    }
)
_SENTENCE_END = re.compile(r"[.?!:;。？！]$")


def _sig_like(lines: list[str]) -> bool:
    """Lines that can follow a closing: name, role, company, phone, address, link."""
    body = [s for s in lines if s]
    if len(body) > _MAX_SIG_LINES:
        return False
    for s in body:
        if len(s) > _MAX_SIG_LINE:
            return False
        if s.endswith("?"):
            return False
        words = s.split()
        # A sentence (many words, ends like one) is message text, not a signature line.
        if len(words) > 8 and _SENTENCE_END.search(s):
            return False
    return True


def _is_name(s: str) -> bool:
    if s.casefold().strip(" .!,") in _NOT_NAMES or s in _CJK_NOT_NAMES:
        return False
    return bool(_NAME.match(s) or _DASH_NAME.match(s) or _CJK_NAME.match(s.replace(" ", "")))


def _short_sig_line(s: str) -> bool:
    """A line of a name block: company, role, phone, address, link."""
    return len(s) <= 48 and len(s.split()) <= 6 and not _SENTENCE_END.search(s.rstrip(")"))


def _sent_from(s: str) -> bool:
    m = SENT_FROM_RE.match(s)
    if not m:
        return False
    rest = s[m.end() :].strip()
    # "Sent from my iPhone" yes; "Sent from my desk, is much easier than my phone." no.
    return (
        len(rest) <= 45 and len(rest.split()) <= 6 and not _SENTENCE_END.search(rest.rstrip(")>"))
    )


def find_signature(lines: list[str]) -> int | None:
    """Index of the first signature line in `lines` (stripped texts), or None."""
    n = len(lines)
    content = [i for i, s in enumerate(lines) if s]
    if not content:
        return None
    tail = content[-(_MAX_SIG_LINES + 2) :]
    first_content = content[0]
    # A "-- " delimiter (or a long rule) anywhere in the tail: everything below is signature.
    for i in tail:
        s = lines[i]
        if s[:1] in _DELIMITER_FIRST and _DELIMITER.match(s) and _sig_like(lines[i + 1 :]):
            return i
    for i in tail:
        s = lines[i]
        if s[:1] in _RULE_FIRST and _RULE.match(s) and i > first_content and _sig_like(lines[i + 1 :]):
            return i
    # "Sent from my iPhone" and friends, with only signature-like lines after.
    for i in tail:
        if _sent_from(lines[i]) and _sig_like(lines[i + 1 :]):
            return _with_closing_above(lines, i)
    # A closing with its name block.
    for i in tail:
        if i == first_content:
            continue
        s = lines[i]
        # What follows is copied only for a line that opens a closing (most do not).
        if REGARDS_RE.match(s) and _sig_like(lines[i + 1 :]):
            return i
        if THANKS_RE.match(s):
            after = lines[i + 1 :]
            if any(after) and _sig_like(after) and _is_name(next(x for x in after if x)):
                return i
        if SIGNOFF_WITH_NAME_RE.match(s):
            after = lines[i + 1 :]
            if not any(after[:3]) and _sig_like(after):
                return i
    # A bare name set off by a blank line, last or above a few short lines (role, company,
    # phone): "Adrian", "-Abhishek", "/B", "佐藤花子\n株式会社サンプル 経理部".
    for back in range(0, 4):
        if len(content) <= back + 1:
            break
        k = content[-1 - back]
        if k == first_content or not k or lines[k - 1]:
            continue
        below = [lines[x] for x in content[len(content) - back :]]
        if not (
            _is_name(lines[k])
            and len(lines[k].split()) <= 4
            and all(_short_sig_line(b) for b in below)
        ):
            continue
        return k
    del n
    return None


def _with_closing_above(lines: list[str], i: int) -> int:
    """Move a cut at a device tagline up over a closing/name block directly above it."""
    j = i - 1
    while j >= 0 and not lines[j]:
        j -= 1
    if j > 0 and (REGARDS_RE.match(lines[j]) or (THANKS_RE.match(lines[j]) and False)):
        return j
    if j > 0 and _is_name(lines[j]) and j - 1 >= 0:
        k = j - 1
        while k >= 0 and not lines[k]:
            k -= 1
        if k > 0 and (REGARDS_RE.match(lines[k]) or THANKS_RE.match(lines[k])):
            return k
    return i
