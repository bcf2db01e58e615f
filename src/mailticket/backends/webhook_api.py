"""POST /api/v1/webhooks/{backend}: status and comment hints from external backends.

Authenticated by the vendor's signature only (no bearer token): an unsigned or forged
delivery gets 401 and changes nothing. A redelivered id gets 200 (so the vendor stops
retrying) and is not processed again.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from mailticket.backends.errors import BackendError, Unsupported, WebhookSignatureError
from mailticket.backends.registry import BackendConfigError, UnknownBackend, registry_for
from mailticket.backends.sync import handle_webhook
from mailticket.runtime import Runtime

log = logging.getLogger(__name__)

MAX_BODY = 5 * 1024 * 1024


def _problem(status: int, title: str, detail: str) -> JSONResponse:
    return JSONResponse(
        {"type": "about:blank", "title": title, "status": status, "detail": detail},
        status_code=status,
        media_type="application/problem+json",
    )


def build_router(runtime: Runtime) -> APIRouter:
    router = APIRouter(tags=["webhooks"])

    @router.post(
        "/api/v1/webhooks/{backend}",
        summary="Receive a signed webhook delivery from an external ticket backend",
        responses={
            200: {"description": "accepted (or a duplicate delivery, ignored)"},
            401: {"description": "signature missing or wrong"},
            404: {"description": "no such backend instance, or it takes no webhooks"},
            413: {"description": "body too large"},
            503: {"description": "the backend could not be read; the vendor should retry"},
        },
    )
    async def receive(backend: str, request: Request) -> Any:
        body = await request.body()
        if len(body) > MAX_BODY:
            return _problem(413, "Payload Too Large", f"webhook bodies are limited to {MAX_BODY}")
        try:
            instance = registry_for(runtime.settings.backends_file).get(backend)
        except (UnknownBackend, BackendConfigError) as exc:
            return _problem(404, "Not Found", str(exc))
        client = instance.build()
        try:
            result = await handle_webhook(
                runtime.session_factory, client, {k.lower(): v for k, v in request.headers.items()},
                body,
            )
        except WebhookSignatureError as exc:
            log.warning("rejected webhook for %s: %s", backend, exc)
            return _problem(401, "Unauthorized", str(exc))
        except Unsupported as exc:
            return _problem(404, "Not Found", str(exc))
        except BackendError as exc:
            # Re-reading the ticket failed; the delivery is not recorded, so a retry works.
            log.warning("webhook for %s not processed: %s", backend, exc)
            return _problem(503, "Service Unavailable", str(exc))
        finally:
            await client.aclose()
        return result

    return router
