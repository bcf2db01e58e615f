"""Recording the Message-IDs a ticket's mail carries, for later lookups."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from mailticket.models import ThreadRef


def record_thread_refs(
    session: Session, ticket_id: int, own_id: str | None, pointed_at: Iterable[str]
) -> None:
    rows: dict[str, str] = {}
    for mid in pointed_at:
        if mid:
            rows.setdefault(mid, "ref")
    if own_id:
        rows[own_id] = "self"
    if not rows:
        return
    values = [{"message_id": m, "ticket_id": ticket_id, "kind": k} for m, k in rows.items()]
    dialect = session.get_bind().dialect.name
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    stmt = insert(ThreadRef)
    # A ref that later turns out to be a message we hold upgrades to "self".
    stmt = stmt.on_conflict_do_update(
        index_elements=[ThreadRef.message_id, ThreadRef.ticket_id],
        set_={"kind": stmt.excluded.kind},
        where=stmt.excluded.kind == "self",
    )
    # Parameters apart from the statement: one cached compiled form, whatever the row count.
    session.execute(stmt, values)
