"""Recording the Message-IDs a ticket's mail carries, for later lookups."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy.orm import Session

from mailticket.store.batch import current, upsert_refs


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
    batch = current(session)
    if batch is not None:
        batch.add_refs(ticket_id, rows)
        return
    upsert_refs(
        session, [{"message_id": m, "ticket_id": ticket_id, "kind": k} for m, k in rows.items()]
    )
