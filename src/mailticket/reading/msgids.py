"""Message-ID / In-Reply-To / References values as they arrive, made comparable.

Every id comes out as "<local@domain>" with no whitespace, case kept.

What counts as an id follows RFC 5322 (3.6.4, and the obsolete forms of 4.5.4: "*(phrase /
msg-id)", the phrase to be ignored) and JWZ's threading notes: an id is what stands in angle
brackets. Legacy mailers wrote prose around it, and sometimes a person's address:

    <id> (Lars's message of "Tue, 17 Nov 2009 14:00:54 -0500")        Gnus: comment ignored
    Your message of "Tue, 20 Aug 2002 17:15:22 +0200." <id>             MH
    Message from Chris <chris@example.org> of "Tue, ..." <id>          exmh: the first is a person
    <id>; from jm@example.org on Tue, Aug 20, 2002 at 10:06:20AM       old mutt
    jm@example.org's message of "Tue, 20 Aug 2002 10:06:20 +0100"      Emacs: no id at all

A false merge (two strangers' mail in one ticket) is worse than a split, so:
- comments and quoted strings never yield ids;
- a bracketed value in the place of a person's address is not an id: right after a display
  name ("Chris <chris@x> of ...", "\"Jo\" <jo@x>") or owned by a possessive ("<jm@x>'s");
- an unbracketed value counts only where nothing but an id can stand: the whole of a
  Message-ID field, or a References field that is nothing but bare ids. In In-Reply-To, a
  bare "someone@example.org" is as likely the person replied to, and is ignored;
- an unclosed bracket ("<abc@x", cut by a broken folder) still shows that an id was meant.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from email.parser import BytesHeaderParser

_WS = re.compile(r"\s+")
_EDGE_JUNK = "\"' .,;:"
# "From sender date": not "From: x", nor the odd "From  : x" header spelling.
_MBOX_FROM = re.compile(rb"From (?![\s:])")
_LEADING_BLANK = re.compile(rb"\A(?:[ \t]*\n)+")
# Ids without an "@" are only trusted inside brackets, and not when they are just a word.
_MIN_BARE_ID = 4
# A display name is words and quoted words; one with a time or a year in it is the date of
# a "Your message of <date> <id>" phrase instead.
_ATOM_TEXT = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+")
_DATE_LIKE = re.compile(r"\d:\d\d|\b(?:19|20)\d\d\b")
_POSSESSIVE = re.compile(r"\A\s*['\u2019]s\b")
_BARE_TOKEN = re.compile(r"\A[^\s<>()\"',;]+@[^\s<>()\"',;@]+\Z")


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # "id" (bracketed), "open" (unclosed bracket), "quoted", "word", "sep"
    text: str


def _tokens(value: str) -> list[_Token]:
    """The value split the RFC 5322 way: comments (nested, with escapes) dropped, quoted
    strings and bracketed ids kept whole, the rest words and separators."""
    out: list[_Token] = []
    i, n = 0, len(value)
    while i < n:
        c = value[i]
        if c.isspace():
            i += 1
        elif c == "(":
            depth = 0
            while i < n:
                if value[i] == "\\":
                    i += 2
                    continue
                if value[i] == "(":
                    depth += 1
                elif value[i] == ")":
                    depth -= 1
                    if depth == 0:
                        i += 1
                        break
                i += 1
        elif c == '"':
            j = i + 1
            while j < n and value[j] != '"':
                j += 2 if value[j] == "\\" else 1
            out.append(_Token("quoted", value[i + 1 : j]))
            i = j + 1
        elif c == "<":
            j = value.find(">", i + 1)
            nested = value.find("<", i + 1)
            if j == -1 or (nested != -1 and nested < j):
                # Unclosed: the id runs to the next bracket or the end (folded "<abc @ x").
                end = nested if nested != -1 else n
                out.append(_Token("open", value[i + 1 : end]))
                i = end
            else:
                out.append(_Token("id", value[i + 1 : j]))
                i = j + 1
        elif c in ",;":
            out.append(_Token("sep", c))
            i += 1
        elif c == ">" or c == ")":
            i += 1  # stray closer
        else:
            j = i
            while j < n and not value[j].isspace() and value[j] not in '()"<>,;':
                j += 1
            out.append(_Token("word", value[i:j]))
            i = j
    return out


def _clean(inner: str, *, bracketed: bool) -> str | None:
    ident = _WS.sub("", inner).strip(_EDGE_JUNK)
    if not ident or "<" in ident or ">" in ident:
        return None
    if "@" in ident:
        local, _, domain = ident.partition("@")
        if not local or not domain:
            return None
    elif not bracketed or len(ident) < _MIN_BARE_ID:
        return None
    return f"<{ident}>"


def _is_display_name(words: list[_Token]) -> bool:
    """Words that could stand before an address as a person's name ("Chris Garrigues",
    "\"Jo Smith\""), not a sentence with a date in it."""
    if not words:
        return False
    for token in words:
        if token.kind == "quoted":
            if _DATE_LIKE.search(token.text):
                return False
        elif token.kind != "word" or not _ATOM_TEXT.fullmatch(token.text):
            return False
        elif _DATE_LIKE.search(token.text):
            return False
    return True


def _bracketed_ids(tokens: list[_Token], limit: int | None) -> list[str]:
    found: list[str] = []
    # Each list item (between "," / ";") is read on its own, as a mailbox list would be.
    item_start = 0
    for index, token in enumerate(tokens):
        if token.kind == "sep":
            item_start = index + 1
            continue
        if token.kind not in ("id", "open"):
            continue
        before = tokens[item_start:index]
        after: list[_Token] = []
        for follower in tokens[index + 1 :]:
            if follower.kind in ("sep", "id", "open"):
                break
            after.append(follower)
        if after and after[0].kind == "word" and _POSSESSIVE.match(after[0].text):
            continue  # "<jm@example.org>'s message of ...": whose message, not which
        if _is_display_name(before) and not any(t.kind in ("id", "open") for t in before):
            continue  # "Chris Garrigues <chris@example.org> ...": a person
        if token.kind == "open":
            if "@" not in token.text:
                continue  # "<invalid." cut off: too little to go on
            inner = re.sub(r"\s*@\s*", "@", token.text)
        else:
            inner = token.text
        ident = _clean(inner, bracketed=True)
        if ident is not None and ident not in found:
            found.append(ident)
            if limit is not None and len(found) >= limit:
                break
    return found


def _bare_ids(tokens: list[_Token]) -> list[str]:
    """Unbracketed ids, only when the value is nothing but them (no prose around)."""
    words = [t for t in tokens if t.kind != "sep"]
    if not words or any(t.kind != "word" for t in words):
        return []
    found: list[str] = []
    for token in words:
        if not _BARE_TOKEN.match(token.text):
            return []
        ident = _clean(token.text, bracketed=False)
        if ident is None:
            return []
        if ident not in found:
            found.append(ident)
    return found


def parse_id_list(
    value: str | None, *, bare: bool = False, limit: int | None = None
) -> list[str]:
    """Every id in an In-Reply-To / References value, normalised, first occurrence kept.

    `bare`: also accept unbracketed ids when the value holds nothing else (References, whose
    every entry is an id; never In-Reply-To, where a bare value may be the person replied to).
    """
    if not value:
        return []
    tokens = _tokens(value)
    found = _bracketed_ids(tokens, limit)
    if found or not bare or any(t.kind in ("id", "open") for t in tokens):
        return found
    return _bare_ids(tokens)[:limit]


def normalize_message_id(value: str | None) -> str | None:
    """The id of a Message-ID field as "<local@domain>", else None. The field holds one id
    and nothing else, so an unbracketed (or quoted) one is taken too."""
    if not value:
        return None
    text = value.strip()
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        text = text[1:-1]
    ids = parse_id_list(text, bare=True, limit=1)
    return ids[0] if ids else None


def canonical_bytes(raw: bytes) -> bytes:
    """The message as the parser sees it: LF line ends, no BOM, no mbox "From " line, no leading
    blank lines, no trailing whitespace. Equal for every re-delivery of the same mail."""
    data = raw
    if b"\r" in data:
        data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    if data[:1] in (b" ", b"\t", b"\n"):
        data = _LEADING_BLANK.sub(b"", data, count=1)
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    if _MBOX_FROM.match(data):
        _, _, data = data.partition(b"\n")
    return data.rstrip() + b"\n"


def synthetic_message_id(raw: bytes, domain: str) -> str:
    """A stable id for a message that has no usable Message-ID of its own."""
    digest = hashlib.sha256(canonical_bytes(raw)).hexdigest()[:32]
    return f"<{digest}@synthetic.{domain}>"


def header_message_id(head: bytes) -> str | None:
    """The Message-ID field of a header block as written (stripped; None when absent or
    empty): what an over-size message, of which only the headers are kept, is held under."""
    value = BytesHeaderParser().parsebytes(head).get("Message-ID")
    if value is None:
        return None
    return str(value).strip() or None
