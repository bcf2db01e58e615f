"""Message-ID / In-Reply-To / References values as they arrive, made comparable.

Every id comes out as "<local@domain>" with no whitespace, case kept. Ids the sender
wrote without brackets, folded across lines or buried in text are recovered; values with
nothing id-like in them give None / nothing.
"""

from __future__ import annotations

import hashlib
import re

_BRACKETED = re.compile(r"<([^<>]*)>")
_COMMENT = re.compile(r"\([^()]*\)")
_BARE = re.compile(r"[^\s<>,;\"'()\[\]]+@[^\s<>,;\"'()\[\]]+")
_WS = re.compile(r"\s+")
_AROUND_AT = re.compile(r"\s*@\s*")
_EDGE_JUNK = "\"' .,;:"
# "From sender date": not "From: x", nor the odd "From  : x" header spelling.
_MBOX_FROM = re.compile(rb"From (?![\s:])")
_LEADING_BLANK = re.compile(rb"\A(?:[ \t]*\n)+")
# Ids without an "@" are only trusted inside brackets, and not when they are just a word.
_MIN_BARE_ID = 4


def _clean(inner: str, *, bracketed: bool) -> str | None:
    ident = _WS.sub("", inner).strip(_EDGE_JUNK)
    if ident.startswith("<") or ident.endswith(">") or "<" in ident or ">" in ident:
        return None
    if "@" in ident:
        local, _, domain = ident.partition("@")
        if not local or not domain:
            return None
    elif not bracketed or len(ident) < _MIN_BARE_ID:
        return None
    return f"<{ident}>"


def normalize_message_id(value: str | None) -> str | None:
    """The first usable id in a Message-ID value as "<local@domain>", else None."""
    ids = parse_id_list(value, limit=1)
    return ids[0] if ids else None


def parse_id_list(value: str | None, *, limit: int | None = None) -> list[str]:
    """Every id in an In-Reply-To / References value, normalised, first occurrence kept.

    Bracketed ids win; when there is none, bare "local@domain" tokens are taken (ids
    some mailers send without brackets), ignoring comments.
    """
    if not value:
        return []
    found: list[str] = []
    for inner in _BRACKETED.findall(value):
        ident = _clean(inner, bracketed=True)
        if ident is not None and ident not in found:
            found.append(ident)
            if limit is not None and len(found) >= limit:
                return found
    if found:
        return found
    text = _COMMENT.sub(" ", value)
    if "<" in text:
        # An unclosed bracket: "<abc@x" or "<abc @ x" folded; join what follows it.
        text = _BRACKETED.sub(" ", text)
        head, _, tail = text.partition("<")
        text = head + " " + _AROUND_AT.sub("@", tail.split(">", 1)[0])
    for token in _BARE.findall(text):
        ident = _clean(token, bracketed=False)
        if ident is not None and ident not in found:
            found.append(ident)
            if limit is not None and len(found) >= limit:
                break
    return found


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
