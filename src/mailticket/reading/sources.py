"""Read messages from files, directories, Maildirs and mbox files (for `mailticket ingest`).

Read-only: nothing is moved or flagged, so an ingest can be re-run and recognises what it
already stored. The live worker's sources (IMAP, Maildir new/ → cur/) live in `live/`.
"""

from __future__ import annotations

import logging
import mailbox
import os
import re
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

# An mbox separator as written by real MTAs: "From sender Day Mon dd hh:mm:ss yyyy".
_MBOX_FROM = re.compile(
    rb"^From \S+\s+(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun) (?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
    rb" +\d{1,2} \d{1,2}:\d{2}(?::\d{2})? (?:\S+ )?\d{4}\s*$",
    re.MULTILINE,
)
_MBOX_SUFFIXES = {".mbox", ".mbx"}
log = logging.getLogger(__name__)

# Files that sit beside mail in exported folders and are never messages themselves.
_NOT_MAIL = {".json", ".tsv", ".csv", ".md", ".py", ".db", ".sqlite3", ".gz", ".zip"}


def is_maildir(path: Path) -> bool:
    return path.is_dir() and all((path / sub).is_dir() for sub in ("cur", "new", "tmp"))


def looks_like_mbox(path: Path) -> bool:
    if path.suffix.lower() in _MBOX_SUFFIXES or path.name == "mbox":
        return True
    if path.suffix.lower() == ".eml":
        # One message by definition; a bounce quoting an unescaped "From " line inside the
        # original must not be split into pieces.
        return False
    with path.open("rb") as fh:
        head = fh.read(1 << 20)
    # A single message saved with its envelope line also starts with "From "; only a
    # second separator makes it a mailbox.
    return head.startswith(b"From ") and len(_MBOX_FROM.findall(head)) >= 2


def _mbox_messages(path: Path) -> Iterator[tuple[str, bytes]]:
    box = mailbox.mbox(str(path), create=False)
    try:
        for key in box.iterkeys():
            yield f"{path}#{key}", box.get_bytes(key)
    finally:
        box.close()


# Told about each entry of a folder that is left out: (the entry, why).
Skipped = Callable[[Path, str], None]


def _log_skipped(file: Path, why: str) -> None:
    log.warning("skipped %s: %s", file, why)


def _regular(file: Path, skipped: Skipped) -> bool:
    """A folder walk meets entries that hold no message: a link to nothing (it stopped the
    whole import, "No such file or directory"), a FIFO or socket (reading one waits for a
    writer that never comes). Each is left out and reported; the rest is imported."""
    try:
        mode = file.stat().st_mode
    except OSError as exc:
        skipped(file, exc.strerror or str(exc))
        return False
    if stat.S_ISREG(mode):
        return True
    if not stat.S_ISDIR(mode):
        skipped(file, "not a regular file")
    return False


def _maildir_messages(path: Path, skipped: Skipped) -> Iterator[tuple[str, bytes]]:
    for sub in ("new", "cur"):
        for name in sorted(os.listdir(path / sub)):
            file = path / sub / name
            if not name.startswith(".") and _regular(file, skipped):
                yield str(file), file.read_bytes()


def iter_messages(
    paths: list[Path], skipped: Skipped = _log_skipped
) -> Iterator[tuple[str, bytes]]:
    """Yield (source, raw bytes) for every message under the given paths, in a stable order;
    `skipped` hears of each entry of a folder that holds no message."""
    for path in paths:
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such file or directory")
        if is_maildir(path):
            yield from _maildir_messages(path, skipped)
        elif path.is_dir():
            for root, dirs, files in os.walk(path):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                root_path = Path(root)
                if is_maildir(root_path):
                    dirs[:] = []
                    yield from _maildir_messages(root_path, skipped)
                    continue
                for name in sorted(files):
                    file = root_path / name
                    if name.startswith(".") or file.suffix.lower() in _NOT_MAIL:
                        continue
                    if not _regular(file, skipped):
                        continue
                    yield from _file_messages(file)
        else:
            yield from _file_messages(path)


def _file_messages(file: Path) -> Iterator[tuple[str, bytes]]:
    if looks_like_mbox(file):
        yield from _mbox_messages(file)
    else:
        yield str(file), file.read_bytes()
