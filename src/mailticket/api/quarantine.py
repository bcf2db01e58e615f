"""/api/v1/quarantine: held messages, why they were held, and retry."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Query
from sqlalchemy import select

from mailticket.api.auth import ReadPrincipal, RuntimeDep, SessionDep, require
from mailticket.api.errors import Problem
from mailticket.api.schemas import OutcomeOut, QuarantineDetail, QuarantineList, QuarantineOut
from mailticket.api.tokens import scope_allows
from mailticket.store.models import QuarantineEntry, RawMessage
from mailticket.ticketing import quarantine as service

router = APIRouter(prefix="/api/v1/quarantine", tags=["quarantine"])

EntryId = Annotated[int, Path(ge=1, le=2_147_483_647)]


def _out(entry: QuarantineEntry, raw: RawMessage) -> QuarantineOut:
    return QuarantineOut(
        id=entry.id, raw_message_id=entry.raw_message_id, source=entry.source,
        message_id=entry.message_id, reason=entry.reason, error_type=entry.error_type,
        status=entry.status, attempts=entry.attempts, size=raw.size,
        created_at=entry.created_at, updated_at=entry.updated_at,
    )


@router.get("", response_model=QuarantineList, dependencies=[Depends(require("read"))])
def list_entries(
    session: SessionDep,
    status: Literal["held", "released", "all"] = "held",
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> QuarantineList:
    query = (
        select(QuarantineEntry, RawMessage)
        .join(RawMessage, RawMessage.id == QuarantineEntry.raw_message_id)
        .order_by(QuarantineEntry.id.desc())
        .limit(limit)
    )
    if status != "all":
        query = query.where(QuarantineEntry.status == status)
    return QuarantineList(entries=[_out(q, raw) for q, raw in session.execute(query)])


@router.get("/{entry_id}", response_model=QuarantineDetail)
def show_entry(
    entry_id: EntryId,
    session: SessionDep,
    principal: ReadPrincipal,
) -> QuarantineDetail:
    """One entry; the traceback is included for admin tokens only."""
    entry = session.get(QuarantineEntry, entry_id)
    if entry is None:
        raise Problem(404, f"no quarantine entry {entry_id}")
    raw = session.get_one(RawMessage, entry.raw_message_id)
    return QuarantineDetail(
        **_out(entry, raw).model_dump(),
        sha256=raw.sha256,
        traceback=entry.traceback if scope_allows(principal.scope, "admin") else None,
    )


@router.post(
    "/{entry_id}/retry", response_model=OutcomeOut, dependencies=[Depends(require("write"))],
    responses={409: {"description": "The entry holds only the headers of a message too large "
                                    "to take whole: take the whole message instead"}},
)
def retry_entry(entry_id: EntryId, runtime: RuntimeDep) -> OutcomeOut:
    """Run the held message through the pipeline again; released when that works."""
    try:
        outcome = service.retry(runtime.pipeline, entry_id)
    except service.QuarantineNotFound:
        raise Problem(404, f"no quarantine entry {entry_id}") from None
    except service.QuarantineNotRetryable as exc:
        raise Problem(409, str(exc)) from None
    return OutcomeOut(
        source=outcome.source, message_id=outcome.message_id, action=outcome.action,
        ticket_id=outcome.ticket_id, ticket_number=outcome.ticket_number,
        matched_by=outcome.matched_by, classification=outcome.classification,
        confidence=outcome.confidence, error=outcome.error,
    )
