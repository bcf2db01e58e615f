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
            400: {"description": "a header value that is not ASCII"},
            401: {"description": "signature missing or wrong"},
            404: {"description": "no such backend instance, or it takes no webhooks"},
            413: {"description": "body too large"},
            503: {"description": "the backend could not be read; the vendor should retry"},
        },
    )
    async def receive(backend: str, request: Request) -> Any:
        # Header values reach HMAC comparisons, which refuse non-ASCII text with a TypeError.
        if not all(value.isascii() for value in request.headers.values()):
            return _problem(400, "Bad Request", "header values must be ASCII")
        try:
            instance = registry_for(runtime.settings.backends_file).get(backend)
        except (UnknownBackend, BackendConfigError) as exc:
            if isinstance(exc, BackendConfigError):
                log.warning("webhook for %r refused: %s", backend, exc)
            # Unauthenticated callers learn nothing about which instances exist.
            return _problem(404, "Not Found", f"no backend instance {backend!r} takes webhooks")
        limit = runtime.settings.api_max_body_bytes
        # Counted while it arrives: a huge delivery is refused without being held in memory.
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                return _problem(413, "Content Too Large", f"webhook bodies are limited to {limit}")
            chunks.append(chunk)
        body = b"".join(chunks)
        client = instance.build()
        try:
            result = await handle_webhook(
                runtime.session_factory, runtime.settings, client, {k.lower(): v for k, v in request.headers.items()},
                body,
            )
        except WebhookSignatureError as exc:
            log.warning("rejected webhook for %s: %s", backend, exc)
            return _problem(401, "Unauthorized", str(exc))
        except Unsupported:
            return _problem(404, "Not Found", f"no backend instance {backend!r} takes webhooks")
        except BackendError as exc:
            # Re-reading the ticket failed; the delivery is not recorded, so a retry works.
            log.warning("webhook for %s not processed: %s", backend, exc)
            return _problem(503, "Service Unavailable", str(exc))
        finally:
            await client.aclose()
        return result

    return router
