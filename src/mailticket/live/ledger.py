"""The IMAP ledger: which UIDs of a mailbox folder are stored, and whether the server knows.

Service functions: they take a Session and never commit; the IMAP source commits a ledger
row in the same transaction as the message it describes. The Maildir source keeps its
over-size files here too (outcome too_large, the file's name hashed for a UID; maildir.py):
their "server action" is the move to held/.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import cast

from sqlalchemy import Table, delete, func, insert, select, update
from sqlalchemy.orm import Session, aliased

from mailticket.live.models import ImapLedgerEntry

# The outcome of a message over the size limit, of which only the headers were taken: a
# mailbox that deletes stored mail keeps this one in the folder (`ImapSession.hold`).
TOO_LARGE = "too_large"
# Keeps IN (...) lists well under every driver's parameter limit.
_CHUNK = 500
# For the batch statements that go through the table rather than the ORM (see below).
_TABLE = cast(Table, ImapLedgerEntry.__table__)


def known_uids(
    session: Session, mailbox: str, folder: str, uidvalidity: int, uids: Sequence[int]
) -> set[int]:
    """The subset of `uids` already in the ledger for this UIDVALIDITY."""
    found: set[int] = set()
    for start in range(0, len(uids), _CHUNK):
        chunk = list(uids[start : start + _CHUNK])
        found.update(
            session.scalars(
                select(ImapLedgerEntry.uid).where(
                    ImapLedgerEntry.mailbox == mailbox,
                    ImapLedgerEntry.folder == folder,
                    ImapLedgerEntry.uidvalidity == uidvalidity,
                    ImapLedgerEntry.uid.in_(chunk),
                )
            )
        )
    return found


def newest_uid(session: Session, mailbox: str, folder: str, uidvalidity: int) -> int | None:
    """The highest UID stored from this folder under this UIDVALIDITY, if any."""
    return session.scalar(
        select(func.max(ImapLedgerEntry.uid)).where(
            ImapLedgerEntry.mailbox == mailbox,
            ImapLedgerEntry.folder == folder,
            ImapLedgerEntry.uidvalidity == uidvalidity,
        )
    )


def record(
    session: Session,
    *,
    mailbox: str,
    folder: str,
    uidvalidity: int,
    uid: int,
    message_id: str | None,
    outcome: str,
) -> ImapLedgerEntry:
    entry = ImapLedgerEntry(
        mailbox=mailbox,
        folder=folder,
        uidvalidity=uidvalidity,
        uid=uid,
        message_id=message_id,
        outcome=outcome,
        server_done=False,
    )
    session.add(entry)
    return entry


def record_many(
    session: Session,
    *,
    mailbox: str,
    folder: str,
    uidvalidity: int,
    rows: Sequence[tuple[int, str | None, str]],
) -> list[int]:
    """`record` for a batch of (uid, message_id, outcome); returns the rows' ids in order.

    One INSERT ... RETURNING for the batch through the table, not the ORM: the source never
    uses the entries as objects, and per row the ORM's unit of work cost more than the
    insert itself."""
    if not rows:
        return []
    table = _TABLE
    result = session.execute(
        insert(table).returning(table.c.uid, table.c.id),
        [
            {
                "mailbox": mailbox, "folder": folder, "uidvalidity": uidvalidity, "uid": uid,
                "message_id": message_id, "outcome": outcome, "server_done": False,
            }
            for uid, message_id, outcome in rows
        ],
    )
    # Matched by uid (unique per mailbox, folder and uidvalidity), so the order the
    # database returns the rows in does not matter.
    ids = {int(uid): int(row_id) for uid, row_id in result}
    return [ids[uid] for uid, _, _ in rows]


def pending(session: Session, mailbox: str, folder: str) -> list[ImapLedgerEntry]:
    """Stored messages whose server action (flag/move/delete) has not been confirmed."""
    return list(
        session.scalars(
            select(ImapLedgerEntry)
            .where(
                ImapLedgerEntry.mailbox == mailbox,
                ImapLedgerEntry.folder == folder,
                ImapLedgerEntry.server_done.is_(False),
            )
            .order_by(ImapLedgerEntry.uid)
        )
    )


def mark_done(session: Session, ids: Iterable[int]) -> None:
    id_list = list(ids)
    # Through the table: the ORM's bulk UPDATE would first look for the rows in the
    # session to synchronise them, and the source keeps none there.
    table = _TABLE
    for start in range(0, len(id_list), _CHUNK):
        session.execute(
            update(table)
            .where(table.c.id.in_(id_list[start : start + _CHUNK]))
            .values(server_done=True)
        )


def mark_done_uids(
    session: Session, mailbox: str, folder: str, uidvalidity: int, uids: Sequence[int]
) -> None:
    """`mark_done` by UID, for a source that does not keep the rows' ids (Maildir)."""
    table = _TABLE
    for start in range(0, len(uids), _CHUNK):
        session.execute(
            update(table)
            .where(
                table.c.mailbox == mailbox,
                table.c.folder == folder,
                table.c.uidvalidity == uidvalidity,
                table.c.uid.in_(list(uids[start : start + _CHUNK])),
            )
            .values(server_done=True)
        )


def prune(session: Session, before: datetime) -> int:
    """Forget confirmed rows stored before `before`; returns how many.

    Safe because a message coming back anyway (marked unread again, copied back) is caught by
    the pipeline's Message-ID check as a duplicate; the ledger only saves that work. Not for
    an over-size message: it is only in the quarantine, so no Message-ID check would catch
    it, and a deleting mailbox keeps it in the folder, where the next drain would take it
    again and quarantine it once more. Its row stays for as long as the ledger knows the
    folder (one per such message). Nor the newest row of a folder (see `newest_uid`).
    """
    newer = aliased(ImapLedgerEntry)
    result = session.execute(
        delete(ImapLedgerEntry).where(
            ImapLedgerEntry.server_done.is_(True),
            ImapLedgerEntry.stored_at < before,
            ImapLedgerEntry.outcome != TOO_LARGE,
            # The newest row of a folder stays: `newest_uid` is where a drain of a
            # seen-flagging mailbox starts taking read mail too (imap.py).
            select(newer.id)
            .where(
                newer.mailbox == ImapLedgerEntry.mailbox,
                newer.folder == ImapLedgerEntry.folder,
                newer.uidvalidity == ImapLedgerEntry.uidvalidity,
                newer.uid > ImapLedgerEntry.uid,
            )
            .exists(),
        )
    )
    return int(getattr(result, "rowcount", 0) or 0)
