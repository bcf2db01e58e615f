"""/healthz, /readyz and /metrics: unauthenticated, and free of customer data."""

from __future__ import annotations

import logging
import threading

from fastapi import APIRouter
from fastapi.responses import JSONResponse, PlainTextResponse
from sqlalchemy import func, select, text
from sqlalchemy.exc import SQLAlchemyError

from mailticket import metrics
from mailticket.api.auth import RuntimeDep
from mailticket.api.schemas import Health
from mailticket.runtime import Runtime
from mailticket.store.migrate import is_at_head
from mailticket.store.models import QuarantineEntry
from mailticket.store.outbox_models import OutboxItem

log = logging.getLogger(__name__)

router = APIRouter(tags=["health"])

QUARANTINE_SIZE = "mailticket_quarantine_held"
OUTBOX_DEPTH = "mailticket_outbox_pending"

_lock = threading.Lock()
_current: list[metrics.Collector] = []


def install_collector(runtime: Runtime) -> None:
    """One database collector per process, for the newest app: re-creating the app (tests,
    reload) replaces it instead of piling up collectors for closed databases."""

    def collect(registry: metrics.Registry) -> None:
        try:
            with runtime.session_factory() as session:
                held = session.scalar(
                    select(func.count()).select_from(QuarantineEntry)
                    .where(QuarantineEntry.status == "held")
                )
                rows = session.execute(
                    select(OutboxItem.kind, func.count())
                    .where(OutboxItem.status == "pending")
                    .group_by(OutboxItem.kind)
                )
                # a Result has .keys(), so dict() would take it for a mapping
                pending = {kind: count for kind, count in rows}
        except SQLAlchemyError as exc:
            log.warning("metrics: database unavailable: %s", exc)
            return
        registry.set(QUARANTINE_SIZE, "Quarantined messages still held.", float(held or 0))
        for kind in sorted({"smtp", "backend", *pending}):
            registry.set(
                OUTBOX_DEPTH, "Outgoing items waiting for delivery, by kind.",
                float(pending.get(kind, 0)), kind=kind,
            )

    with _lock:
        for old in _current:
            metrics.REGISTRY.remove_collector(old)
        _current[:] = [collect]
        metrics.REGISTRY.add_collector(collect)


@router.get("/healthz", response_model=Health)
def healthz() -> Health:
    """The process is up."""
    return Health(status="ok")


@router.get("/readyz", response_model=Health, responses={503: {"model": Health}})
def readyz(runtime: RuntimeDep) -> Health | JSONResponse:
    """The database answers and its schema is at the newest migration."""
    try:
        with runtime.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        at_head = is_at_head(runtime.engine)
    except SQLAlchemyError as exc:
        log.warning("readyz: database unavailable: %s", exc)
        return JSONResponse({"status": "unavailable", "detail": "database unreachable"}, 503)
    if not at_head:
        return JSONResponse(
            {"status": "unavailable", "detail": "database migrations are not at head"}, 503
        )
    return Health(status="ok")


@router.get(
    "/metrics",
    response_class=PlainTextResponse,
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format."}},
)
def metrics_endpoint() -> PlainTextResponse:
    return PlainTextResponse(
        metrics.REGISTRY.render(), media_type="text/plain; version=0.0.4; charset=utf-8"
    )
