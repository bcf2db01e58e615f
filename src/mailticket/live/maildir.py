"""Maildir source, the embedded default: new/ → pipeline → commit → cur/ with ":2,S".

A file over the size limit is never read whole: only its head (HEAD_BYTES) is, to quarantine
its header block; the file itself is moved to held/ beside new/ and cur/ (where no mail
reader looks), named in the quarantine reason, for an admin to take or delete.

A crash between the commit and the rename leaves the file in new/; the next pass sees it
again and the pipeline's Message-ID check reports it as a duplicate, so nothing is doubled.
An over-size file has no such check (only its headers are stored), so it gets the IMAP
source's ledger row (outcome too_large, committed with its quarantine entry): the next pass
finds the row and only moves the file, instead of quarantining it a second time.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from mailticket.live import ledger
from mailticket.live.dbgate import write_gate
from mailticket.live.imap import MessageHandler
from mailticket.reading.msgids import header_message_id
from mailticket.ticketing import quarantine

log = logging.getLogger(__name__)

BATCH = 100
# A batch also ends before the file that would take it over this many bytes (a bigger one
# is a batch of its own): every message of a batch is held, with its parse, until the
# commit. Bounded by count alone, three 50 MB attachments were one batch, and 460 MB of RSS.
BATCH_BYTES = 16 * 1024 * 1024
# What is read of an over-size file: enough for any sane header block. Reading it whole
# (to quarantine only its headers) took a 2 GB file's 2 GB of RAM, or killed the worker,
# and the next start read it again.
HEAD_BYTES = 256 * 1024
HELD = "held"
# How a held file is keyed in the IMAP ledger: one "folder" (new/) of no UIDVALIDITY, the
# file's name standing for the UID (Maildir names are unique by construction).
LEDGER_FOLDER = "new"
LEDGER_UIDVALIDITY = 0


def read_head(file: Path, limit: int = HEAD_BYTES) -> bytes:
    with file.open("rb") as f:
        return f.read(limit)


def headers_of(raw: bytes) -> bytes:
    """The header block of a message (what an over-size message is quarantined with)."""
    for sep in (b"\r\n\r\n", b"\n\n"):
        end = raw.find(sep)
        if end != -1:
            return raw[: end + len(sep)]
    return raw[:65536]


def ledger_uid(name: str) -> int:
    """The ledger "UID" of a file name: 63 bits of its SHA-256 (the column is a signed
    BIGINT); two names of one Maildir sharing it is a 1 in 2**63 chance."""
    digest = hashlib.sha256(name.encode("utf-8", "surrogateescape")).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def seen_name(name: str) -> str:
    """Maildir info for a seen message: "name:2,S", keeping flags already present."""
    base, sep, info = name.partition(":2,")
    flags = set(info) if sep else set()
    flags.add("S")
    return f"{base}:2,{''.join(sorted(flags))}"


class MaildirSource:
    def __init__(
        self,
        path: Path,
        handler: MessageHandler,
        session_factory: sessionmaker[Session],
        *,
        max_message_size: int,
    ) -> None:
        self.path = path
        bind = session_factory.kw.get("bind")
        assert isinstance(bind, Engine), "the session factory must be bound to an engine"
        self.engine = bind
        self.handler = handler
        self.session_factory = session_factory
        self.max_message_size = max_message_size
        self.stop = threading.Event()
        # Entries of new/ that are not mail we can read, warned about once each.
        self._skipped: set[str] = set()

    @property
    def name(self) -> str:
        return f"maildir:{self.path}"

    @property
    def ledger_key(self) -> str:
        # The ledger's mailbox column is 255 characters; a deeper path is cut (two Maildirs
        # sharing their first 255 characters would also need a file-name hash collision).
        return self.name[:255]

    def ensure(self) -> None:
        for sub in ("new", "cur", "tmp"):
            (self.path / sub).mkdir(parents=True, exist_ok=True)

    def drain(self) -> int:
        """Store everything in new/ (blocking; run it in a thread). Returns messages moved."""
        self.ensure()
        names = sorted(self._waiting())
        moved = 0
        while names and not self.stop.is_set():
            done, taken = self._batch(names[:BATCH])
            moved += done
            names = names[taken:]
        return moved

    def _waiting(self) -> list[str]:
        """The files in new/. A directory there is no message, and reading it failed the
        whole batch, and with it every drain after: the mailbox stopped for good; reading
        a FIFO waits for ever. Such an entry is left where it is, with a warning."""
        names: list[str] = []
        with os.scandir(self.path / "new") as entries:
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                directory = False
                try:
                    regular = entry.is_file()  # the d_type the listing carries: no stat
                    directory = not regular and entry.is_dir()
                except OSError:
                    regular = True  # unreadable: the batch finds out and says why
                if regular:
                    names.append(entry.name)
                elif directory:
                    self._skip(entry.name, "a directory, not a message")
                elif entry.is_symlink() and not os.path.exists(entry.path):
                    continue  # a link whose file went away: as a file another worker took
                else:
                    self._skip(entry.name, "not a regular file")
        return names

    def _skip(self, name: str, why: str) -> None:
        if name not in self._skipped:
            self._skipped.add(name)
            log.warning("skipped maildir=%s file=%s: %s; left in new/", self.path, name, why)

    def _batch(self, names: list[str]) -> tuple[int, int]:
        """Stores the first of `names`, up to BATCH_BYTES; returns (files moved, names
        covered: at least one)."""
        done: list[tuple[str, str]] = []
        held_files: list[str] = []
        taken = len(names)
        with write_gate(self.engine), self.session_factory() as session:
            whole: list[tuple[str, bytes, str]] = []
            held = 0
            for index, name in enumerate(names):
                file = self.path / "new" / name
                try:
                    size = file.stat().st_size
                    if size > self.max_message_size:
                        if not self._held_before(session, name):
                            self._hold(session, name, read_head(file), size)
                        held_files.append(name)
                        continue
                    if held and held + size > BATCH_BYTES:
                        taken = index  # the next batch's
                        break
                    raw = file.read_bytes()
                except FileNotFoundError:  # another worker took it
                    continue
                except OSError as exc:
                    # Unreadable (a file delivered by another user with mode 0600, an I/O
                    # error): the rest of the mailbox must still flow; the file stays for
                    # whoever can fix it, and is tried again at every drain.
                    self._skip(name, f"cannot read it: {exc.strerror or exc}")
                    continue
                if len(raw) > self.max_message_size:  # it grew since the stat
                    if not self._held_before(session, name):
                        self._hold(session, name, raw[:HEAD_BYTES], len(raw))
                    held_files.append(name)
                    continue
                whole.append((name, raw, str(file)))
                held += len(raw)
            outcomes = self.handler.process_batch(session, [(raw, src) for _, raw, src in whole])
            done += [(name, o.action) for (name, _, _), o in zip(whole, outcomes, strict=True)]
            session.commit()
        moved = 0
        if held_files:
            (self.path / HELD).mkdir(exist_ok=True)  # only made when something is held
        for name in held_files:
            try:
                os.rename(self.path / "new" / name, self.path / HELD / name)
                moved += 1
            except FileNotFoundError:
                log.info("already moved maildir=%s file=%s", self.path, name)
                continue
            log.warning("held too large maildir=%s file=%s/%s", self.path, HELD, name)
        if held_files:
            self._held_moved(held_files)
        for name, action in done:
            try:
                os.rename(self.path / "new" / name, self.path / "cur" / seen_name(name))
                moved += 1
            except FileNotFoundError:
                log.info("already moved maildir=%s file=%s", self.path, name)
                continue
            log.info("stored maildir=%s file=%s action=%s", self.path, name, action)
        return moved, taken

    def _held_before(self, session: Session, name: str) -> bool:
        """Whether this over-size file was quarantined by a pass that died before moving
        it (its ledger row is committed with the quarantine entry)."""
        uid = ledger_uid(name)
        return bool(
            ledger.known_uids(
                session, self.ledger_key, LEDGER_FOLDER, LEDGER_UIDVALIDITY, [uid]
            )
        )

    def _hold(self, session: Session, name: str, head: bytes, size: int) -> None:
        """Quarantine an over-size file's header block; the reason names where the whole
        file is kept (moved there after the commit). The ledger row says it is done, for
        the next pass if this one dies before the move."""
        headers = headers_of(head)
        mid = header_message_id(headers)
        kept = self.path / HELD / name
        quarantine.quarantine_raw(
            session, headers, str(self.path / "new" / name),
            quarantine.too_large_reason(size, f"; file kept at {kept}"), mid,
        )
        ledger.record(
            session, mailbox=self.ledger_key, folder=LEDGER_FOLDER,
            uidvalidity=LEDGER_UIDVALIDITY, uid=ledger_uid(name), message_id=mid,
            outcome=ledger.TOO_LARGE,
        )

    def _held_moved(self, names: list[str]) -> None:
        """The moves to held/ are done (the ledger's "server action"): mark the rows, as
        the IMAP source does once the server has flagged a message."""
        with write_gate(self.engine), self.session_factory() as session:
            ledger.mark_done_uids(
                session, self.ledger_key, LEDGER_FOLDER, LEDGER_UIDVALIDITY,
                [ledger_uid(n) for n in names],
            )
            session.commit()
