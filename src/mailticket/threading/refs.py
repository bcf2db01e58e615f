"""Recording the Message-IDs a ticket's mail carries, for later lookups."""

from __future__ import annotations

from collections.abc import Iterable

from mailticket.store.batch import Batch


def record_thread_refs(
    work: Batch, ticket_id: int, own_id: str | None, pointed_at: Iterable[str]
) -> None:
    rows: dict[str, str] = {}
    for mid in pointed_at:
        if mid:
            rows.setdefault(mid, "ref")
    if own_id:
        rows[own_id] = "self"
    if rows:
        work.add_refs(ticket_id, rows)
