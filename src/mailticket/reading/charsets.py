"""Bytes → str for mail: declared charsets, the lies mailers tell about them, and RFC 2047.

Fallback chain: declared charset (through an alias table of names mailers really use) →
UTF-8 → cp1252 → latin-1. When the declared charset decodes the bytes strictly it wins,
so correctly labelled text never turns into mojibake.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import re
from functools import lru_cache

# Names seen in the wild that Python does not know, or knows as a narrower charset than
# what senders actually put in the bytes (GB2312 labels carry GBK, Shift_JIS labels carry
# Microsoft's cp932 extensions, ks_c_5601 is Windows' cp949).
_ALIASES: dict[str, str] = {
    "utf8": "utf-8",
    "utf-8": "utf-8",
    "unicode-1-1-utf-7": "utf-7",
    "ks_c_5601-1987": "cp949",
    "ks_c_5601": "cp949",
    "ks_c_5601_1987": "cp949",
    "euc-kr": "cp949",
    "x-windows-949": "cp949",
    "gb2312": "gb18030",
    "gb_2312-80": "gb18030",
    "gbk": "gb18030",
    "x-gbk": "gb18030",
    "cp936": "gb18030",
    "chinese": "gb18030",
    "shift_jis": "cp932",
    "shift-jis": "cp932",
    "sjis": "cp932",
    "x-sjis": "cp932",
    "ms_kanji": "cp932",
    "windows-31j": "cp932",
    "x-euc-jp": "euc_jp",
    "iso-8859-8-i": "iso-8859-8",
    "iso-8859-6-i": "iso-8859-6",
    "windows-874": "cp874",
    "x-mac-roman": "mac_roman",
    "macintosh": "mac_roman",
    "big5": "big5hkscs",
    # A latin-1 label on 8-bit text almost always means Windows' superset (as HTML5 decides).
    "iso-8859-1": "cp1252",
    "latin1": "cp1252",
    "latin-1": "cp1252",
    "us-ascii": "cp1252",
    "ascii": "cp1252",
}

# Labels that say "no idea": decode by the generic chain straight away.
_UNKNOWN = frozenset(
    {"", "x-unknown", "unknown", "unknown-8bit", "x-user-defined", "default", "charset", "none"}
)

# Variants tried in turn for ISO-2022-JP labels: senders put JIS X 0212 / 2004 characters in it.
# The last one is Microsoft's CP50220: JIS escapes around NEC/IBM extension rows (circled
# digits, roman numerals) that Outlook writes; Python has no codec for it, see _cp50220.
_CP50220 = "x-cp50220"
_ISO2022JP = (
    "iso2022_jp", "iso2022_jp_2", "iso2022_jp_ext", "iso2022_jp_2004", "iso2022_jp_3", _CP50220,
)

# When a label from one script is wrong, the text is most often in a sibling encoding.
_JAPANESE = ("euc_jp", "cp932")
_FAMILY: dict[str, tuple[str, ...]] = {
    **{name: _JAPANESE for name in (*_ISO2022JP, "euc_jp", "cp932", "shift_jis")},
    "cp949": ("iso2022_kr",),
    "gb18030": ("big5hkscs",),
    "big5hkscs": ("gb18030",),
}

# Single-byte Western labels: when such bytes are valid multi-byte UTF-8, the label is wrong.
_WESTERN = frozenset({"cp1252", "iso8859-15", "iso8859-1", "ascii"})

# How much damage a strict decode failure may have before the declared charset is dropped.
_MAX_REPLACED_RATIO = 0.01


@lru_cache(maxsize=512)
def resolve_charset(declared: str | None) -> tuple[str, ...]:
    """Python codec names to try, in order, for a declared charset label ("" → none)."""
    label = (declared or "").strip().strip("\"'").lower()
    label = label.split("*", 1)[0]  # RFC 2231 language suffix: utf-8*en
    if label in _UNKNOWN:
        return ()
    if label.startswith("iso-2022-jp") or label.startswith("iso2022jp"):
        return _ISO2022JP
    name = _ALIASES.get(label, label)
    try:
        return (codecs.lookup(name).name,)
    except (LookupError, ValueError):  # ValueError: a label with a NUL in it
        return ()


def _stateful(names: tuple[str, ...]) -> bool:
    """Codecs whose text is pure 7-bit: an ASCII-only payload still needs them."""
    return any(n.startswith(("utf-7", "utf-16", "utf-32", "iso2022", "hz")) for n in names)


def decode_bytes(data: bytes, declared: str | None, *, hint: str | None = None) -> str:
    """Decode mail bytes to str; never raises. `hint` is a second guess (e.g. a body charset)."""
    return decode_bytes_noted(data, declared, hint=hint)[0]


def decode_bytes_noted(
    data: bytes, declared: str | None, *, hint: str | None = None
) -> tuple[str, str | None]:
    """Like decode_bytes, plus a note when the declared charset could not be used as is."""
    names = resolve_charset(declared)
    if data.isascii():
        if b"\x1b" in data and not names:
            names = _ISO2022JP  # undeclared JIS escape sequences: old Japanese mailers
        if not _stateful(names):
            return data.decode("ascii"), None
    for name in names:
        if name in _WESTERN:
            try:
                return data.decode("utf-8"), None
            except UnicodeDecodeError:
                pass
        try:
            return _decode(data, name), None
        except UnicodeError:
            continue
    note = f"charset {declared!r} did not fit" if names else None
    if declared and not names:
        note = f"unknown charset {declared!r}"
    try:
        return data.decode("utf-8"), note
    except UnicodeDecodeError:
        pass
    hinted = resolve_charset(hint)
    siblings = _FAMILY.get(names[0], ()) if names else ()
    for name in (*siblings, *hinted):
        try:
            return _decode(data, name), note
        except UnicodeError:
            continue
    for name in (*names[:1], *hinted[:1]):
        # A damaged byte or two must not throw away a charset that fits the rest.
        try:
            text = _decode(data, name, "replace")
        except UnicodeError:
            continue
        if text.count("\ufffd") <= max(1, len(text) * _MAX_REPLACED_RATIO):
            return text, note
    if _mostly_utf8(data):
        return data.decode("utf-8", "replace"), note
    try:
        return data.decode("cp1252"), note
    except UnicodeDecodeError:
        return data.decode("latin-1"), note


def _decode(data: bytes, name: str, errors: str = "strict") -> str:
    if name == _CP50220:
        return _cp50220(data).decode("cp932", errors)
    return data.decode(name, errors)


_JIS_ESCAPE = re.compile(rb"\x1b(\$@|\$B|\(B|\(J|\(I)")


def _cp50220(data: bytes) -> bytes:
    """ISO-2022-JP (with Microsoft's extension rows) re-encoded as cp932 bytes.

    Each two-byte JIS X 0208 code maps arithmetically onto Shift_JIS, and cp932 knows the
    NEC and IBM rows that the strict iso2022 codecs reject."""
    out = bytearray()
    mode = b"(B"
    pos = 0
    for match in [*_JIS_ESCAPE.finditer(data), None]:
        end = match.start() if match else len(data)
        chunk = data[pos:end]
        if mode in (b"$@", b"$B"):
            if len(chunk) % 2:
                raise UnicodeDecodeError("x-cp50220", data, pos, end, "odd JIS double-byte run")
            for i in range(0, len(chunk), 2):
                j1, j2 = chunk[i], chunk[i + 1]
                if not (0x21 <= j1 <= 0x7E and 0x21 <= j2 <= 0x7E):
                    raise UnicodeDecodeError("x-cp50220", data, pos + i, pos + i + 2, "not JIS")
                s1 = ((j1 + 1) >> 1) + (0x70 if j1 <= 0x5E else 0xB0)
                if j1 % 2:
                    s2 = j2 + 0x1F + (1 if j2 >= 0x60 else 0)
                else:
                    s2 = j2 + 0x7E
                out += bytes((s1, s2))
        elif mode == b"(I":
            out += bytes(b + 0x80 if 0x21 <= b <= 0x5F else b for b in chunk)
        else:
            out += chunk
        if match is None:
            break
        mode = match.group(1)
        pos = match.end()
    return bytes(out)


def _mostly_utf8(data: bytes) -> bool:
    """UTF-8 with a stray bad byte: many valid multi-byte characters, few broken ones.
    Latin-1 text ("caf\xe9") has no valid multi-byte sequence at all, so it never passes."""
    text = data.decode("utf-8", "replace")
    broken = text.count("\ufffd")
    valid = sum(1 for ch in text if ord(ch) > 0x7F) - broken
    return valid >= 3 * broken


def unescape_surrogates(value: str, hint: str | None = None) -> str:
    """The stdlib parser keeps raw 8-bit header bytes as surrogate escapes; decode them."""
    try:
        value.encode("utf-8")
        return value
    except UnicodeEncodeError:
        raw = value.encode("utf-8", "surrogateescape")
        return decode_bytes(raw, None, hint=hint)


_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([QqBb])\?(.*?)\?=", re.DOTALL)
_BETWEEN_WORDS = re.compile(r"[ \t\r\n]*")
_QP_ESCAPE = re.compile(rb"=([0-9A-Fa-f]{2})")
_FOLD = re.compile(r"\r?\n[ \t]*")


def _word_bytes(encoding: str, text: str) -> bytes:
    if encoding in "Bb":
        compact = re.sub(r"[^A-Za-z0-9+/]", "", text)
        compact += "=" * (-len(compact) % 4)
        try:
            return base64.b64decode(compact)
        except (binascii.Error, ValueError):
            return text.encode("ascii", "replace")
    raw = text.replace("_", " ").encode("utf-8", "surrogateescape")
    return _QP_ESCAPE.sub(lambda m: bytes([int(m.group(1), 16)]), raw)


def decode_header(value: str, hint: str | None = None) -> str:
    """Decode one header value: unfold, raw 8-bit bytes, RFC 2047 words (also malformed ones).

    Adjacent encoded words in one charset are joined as bytes before decoding, because
    mailers split multi-byte characters across words.
    """
    if "\n" in value:
        value = _FOLD.sub(" ", value)
    value = unescape_surrogates(value, hint)
    if "=?" not in value:
        return value.replace("\x00", "").strip()
    out: list[str] = []
    pending = b""
    pending_charset = ""
    pos = 0
    for match in _ENCODED_WORD.finditer(value):
        gap = value[pos : match.start()]
        charset = match.group(1)
        # Whitespace between two encoded words is not text (RFC 2047 section 6.2).
        joins = bool(pending) and not gap.strip()
        if pending and not (joins and charset.lower() == pending_charset.lower()):
            out.append(decode_bytes(pending, pending_charset, hint=hint))
            pending = b""
        if not joins:
            out.append(gap)
        pending_charset = charset
        pending += _word_bytes(match.group(2), match.group(3))
        pos = match.end()
    if pending:
        out.append(decode_bytes(pending, pending_charset, hint=hint))
    out.append(value[pos:])
    return "".join(out).replace("\x00", "").strip()
