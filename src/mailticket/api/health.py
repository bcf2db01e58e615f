"""/healthz, /readyz and /metrics: unauthenticated, and free of customer data."""

from __future__ import annotations

import logging
from collections.abc import Iterator

from fastapi import APIRouter
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from sqlalchemy import func, select, text
from sqlalchemy.exc import SQLAlchemyError

from mailticket import metrics
from mailticket.api.auth import RuntimeDep
from mailticket.api.errors import UNAVAILABLE_RETRY_AFTER
from mailticket.api.schemas import Health
from mailticket.runtime import Runtime
from mailticket.store.migrate import is_at_head
from mailticket.store.models import QuarantineEntry
from mailticket.store.outbox_models import OutboxItem

log = logging.getLogger(__name__)

router = APIRouter(tags=["health"])

QUARANTINE_SIZE = "mailticket_quarantine_held"
OUTBOX_DEPTH = "mailticket_outbox_pending"

def install_collector(runtime: Runtime) -> None:
    """The database gauges of /metrics, read from this runtime's database at scrape time."""

    def collect() -> Iterator[Metric]:
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
        yield GaugeMetricFamily(
            QUARANTINE_SIZE, "Quarantined messages still held.", value=float(held or 0)
        )
        depth = GaugeMetricFamily(
            OUTBOX_DEPTH, "Outgoing items waiting for delivery, by kind.", labels=["kind"]
        )
        for kind in sorted({"smtp", "backend", *pending}):
            depth.add_metric([kind], float(pending.get(kind, 0)))
        yield depth

    metrics.set_database_collector(collect)


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
        return JSONResponse(
            {"status": "unavailable", "detail": "database unreachable"}, 503,
            headers={"Retry-After": str(UNAVAILABLE_RETRY_AFTER)},
        )
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
    # Every worker's counts when PROMETHEUS_MULTIPROC_DIR is shared (see metrics.py).
    return PlainTextResponse(metrics.render(), media_type=metrics.CONTENT_TYPE)
