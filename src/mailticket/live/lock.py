"""One worker per mailbox folder: a PostgreSQL advisory lock, or a lease row on SQLite.

The advisory lock lives on a dedicated connection held for the whole session with the
mailbox, so it vanishes with the process (kill -9 included). SQLite has no such lock; a lease
row with an expiry is renewed while the worker runs and taken over once it has expired.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import Connection, Engine, delete, insert, text, update
from sqlalchemy.exc import DBAPIError, IntegrityError

from mailticket.live.dbgate import write_gate
from mailticket.live.models import SourceLease

log = logging.getLogger(__name__)

LEASE = timedelta(minutes=15)
OWNER = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def mailbox_lock_name(login: str, folder: str, uidvalidity: int) -> str:
    """The lock name of one IMAP folder, whichever way a worker reaches it.

    Not the host or port as configured: "127.0.0.1" and "localhost", a CNAME, port 993 and
    143, or another frontend of a provider behind round-robin DNS all reach the same folder,
    and must share one lock. What identifies it is what the server says about it: the
    folder's UIDVALIDITY (fixed when the folder was created; RFC 3501 2.3.1.1), with the login
    and the folder name (INBOX is case-insensitive). Two different servers could share a
    UIDVALIDITY only by chance, and then merely take turns.
    """
    name = "INBOX" if folder.upper() == "INBOX" else folder
    return f"imap-folder:{login.casefold()}/{name};UIDVALIDITY={uidvalidity}"


def lock_key(name: str) -> int:
    """A signed 64-bit key for pg_try_advisory_lock, stable across processes."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


class SourceLock:
    def __init__(self, engine: Engine, name: str, owner: str = OWNER) -> None:
        self.engine = engine
        self.name = name
        self.owner = owner
        self._conn: Connection | None = None
        self.held = False

    def acquire(self) -> bool:
        """True when this worker now holds (or renewed) the lock."""
        if self.engine.dialect.name == "postgresql":
            return self._advisory()
        self.held = self._lease()
        return self.held

    def _advisory(self) -> bool:
        if self.held and self._conn is not None:
            try:
                self._conn.execute(text("SELECT 1"))
                self._conn.commit()
                return True
            except DBAPIError as exc:
                # The session holding the lock is gone, and the lock with it: take it anew.
                log.warning("advisory lock connection lost lock=%s error=%r", self.name, exc)
                self._conn.invalidate()
                self._conn.close()
                self._conn, self.held = None, False
        conn = self.engine.connect()
        got = bool(
            conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": lock_key(self.name)})
            .scalar()
        )
        # Commit the implicit transaction so the idle session holds only the lock.
        conn.commit()
        if got:
            self._conn, self.held = conn, True
        else:
            conn.close()
        return got

    def _lease(self) -> bool:
        with write_gate(self.engine):
            return self._take_lease()

    def _take_lease(self) -> bool:
        now = datetime.now(UTC)
        with self.engine.begin() as conn:
            taken = conn.execute(
                update(SourceLease)
                .where(
                    SourceLease.name == self.name,
                    (SourceLease.owner == self.owner) | (SourceLease.expires_at < now),
                )
                .values(owner=self.owner, expires_at=now + LEASE)
            ).rowcount
        if taken:
            return True
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    insert(SourceLease).values(
                        name=self.name, owner=self.owner, expires_at=now + LEASE
                    )
                )
        except IntegrityError:
            return False
        return True

    def release(self) -> None:
        if self._conn is not None:
            try:
                self._conn.execute(
                    text("SELECT pg_advisory_unlock(:k)"), {"k": lock_key(self.name)}
                )
                self._conn.commit()
            finally:
                self._conn.close()
                self._conn = None
        elif self.held:
            with write_gate(self.engine), self.engine.begin() as conn:
                conn.execute(
                    delete(SourceLease).where(
                        SourceLease.name == self.name, SourceLease.owner == self.owner
                    )
                )
        self.held = False
