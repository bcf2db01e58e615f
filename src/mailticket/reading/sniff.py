"""Is it a message at all? Bytes that are not mail are refused before they become a ticket.

Anything dropped into a Maildir or given to `ingest` used to open a "(no subject)" ticket:
a PNG, an ELF binary, a JSON file, random bytes, /etc/hostname. The rule:

1. Files that announce another format are not mail: image, archive, PDF, executable and
   office signatures; JSON; XML and HTML documents; scripts (#!).
2. A message starts with a header field ("Name: value"), as RFC 5322 has it. (None of the
   signatures above can: their first bytes are not a field name and a colon.)
3. Without one, binary data is not mail: real text has no control bytes besides tab, line
   ends, form feed and ESC (ISO-2022-JP); more than 1 in 200 of the first 8 KB means binary.
4. Real archives also hold headerless mail (a digest's text, an mbox message that lost its
   headers; the corpus has both). Those are kept when they read as something a person
   wrote: a line of at least three words. A lone word or token (a host name, an id) is not.

RFC 5322 also asks for From and Date; real mail without them (MIME fragments, forwarded
bodies, test messages) is common enough in archives that requiring them would refuse mail
that was always accepted, so they are not required here.
"""

from __future__ import annotations

import json
import re

# (signature at offset 0, what it is)
_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF87a", "a GIF image"),
    (b"GIF89a", "a GIF image"),
    (b"RIFF", "a RIFF file (WebP, WAV, AVI)"),
    (b"%PDF-", "a PDF document"),
    (b"PK\x03\x04", "a ZIP archive (or an Office document)"),
    (b"PK\x05\x06", "an empty ZIP archive"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"BZh", "a bzip2 archive"),
    (b"\xfd7zXZ\x00", "an xz archive"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
    (b"Rar!\x1a\x07", "a RAR archive"),
    (b"\x28\xb5\x2f\xfd", "a zstd archive"),
    (b"\x7fELF", "an ELF executable"),
    (b"MZ", "a Windows executable"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "an OLE2 file (old Office document)"),
    (b"SQLite format 3\x00", "an SQLite database"),
    (b"\xca\xfe\xba\xbe", "a Mach-O or Java class file"),
    (b"\xcf\xfa\xed\xfe", "a Mach-O executable"),
    (b"\x00asm", "a WebAssembly module"),
    (b"OggS", "an Ogg media file"),
    (b"ID3", "an MP3 file"),
    (b"\x00\x00\x01\x00", "an icon file"),
)
_TEXT_DOCUMENTS = (
    (re.compile(rb"\A<\?xml[\s?]", re.I), "an XML document"),
    (re.compile(rb"\A<!doctype\s", re.I), "an HTML or XML document"),
    (re.compile(rb"\A<html[\s>]", re.I), "an HTML document"),
    (re.compile(rb"\A#!\s*/"), "a script"),
)
_SAMPLE = 8192
# Control bytes that are not text: all of C0 but tab, LF, VT, FF, CR and ESC, plus DEL.
_CONTROL = re.compile(rb"[\x00-\x08\x0e-\x1a\x1c-\x1f\x7f]")
_MAX_CONTROL_SHARE = 1 / 200
# A header field name, then the colon ("From  :" is obsolete but real). RFC 5322 allows any
# printable ASCII in the name; real ones are a letter or digit and then word characters and
# hyphens, which keeps out '{"key": 1}' (JSON) and the like.
_FIELD = re.compile(rb"\A[A-Za-z0-9][A-Za-z0-9_.-]*[ \t]*:")
_WORD = re.compile(r"[^\W\d_]{1,}[\w'’-]*")
_MIN_WORDS = 3


def not_mail(data: bytes) -> str | None:
    """Why `data` (non-empty, LF line ends, no mbox From_ line) is not an email message
    (what it looks like instead), or None when it is one."""
    if _FIELD.match(data):
        return None  # stray NULs in such a message are cleaned later, not a reason to refuse
    for signature, what in _SIGNATURES:
        if data.startswith(signature):
            return f"{what} (by its first bytes)"
    sample = data[:_SAMPLE]
    controls = len(_CONTROL.findall(sample))
    if controls > max(1, len(sample) * _MAX_CONTROL_SHARE):
        return f"binary data ({controls} control bytes in the first {len(sample)})"
    for pattern, what in _TEXT_DOCUMENTS:
        if pattern.match(data):
            return what
    if data[:1] in (b"{", b"[") and _is_json(data):
        return "JSON data"
    text = sample.decode("utf-8", errors="replace")
    if any(len(_WORD.findall(line)) >= _MIN_WORDS for line in text.splitlines()):
        return None  # headerless, but text a person wrote
    first = text.strip().splitlines()[0][:60] if text.strip() else ""
    return f"no header fields (a message starts with lines like 'From: ...') and no text: {first!r}"


def _is_json(data: bytes) -> bool:
    try:
        json.loads(data)
    except ValueError:
        # JSON Lines: the first line is a JSON document of its own.
        first = data.split(b"\n", 1)[0]
        try:
            json.loads(first)
        except ValueError:
            return False
    return True
