"""What every request meets before any route sees it (a plain ASGI middleware).

In this order, and without touching the body:
1. a NUL character in the path or the query string → 422 (no database column takes one);
2. /api (except the signed webhook routes) → a live bearer token, or 401;
3. a declared Content-Length over API_MAX_BODY_BYTES → 413.
Then the body is counted while a route reads it and refused (413) once it passes the limit,
so neither a huge body nor a malformed one is ever parsed for a caller without a token.

FastAPI resolves body parameters before dependencies, which is why authentication cannot be
a dependency alone: the `require(scope)` dependency only checks the scope of the principal
found here. The gate also opens the request's Session (without connecting) and closes it
when the response is out, so authentication and the handler share one pooled connection.
"""

from __future__ import annotations

import logging

from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mailticket.api import auth
from mailticket.api.errors import database_unavailable_response, problem_response, respond
from mailticket.runtime import Runtime
from mailticket.store.db import database_unavailable

log = logging.getLogger(__name__)

API_PREFIX = "/api/"
# Routes under this prefix belong to the backends feature and authenticate by signature.
WEBHOOK_PREFIX = "/api/v1/webhooks/"


class BodyTooLarge(HTTPException):
    """Raised from receive(): reaches the app's HTTP error handler like any HTTPException."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            413, detail=f"request bodies are limited to {limit} bytes (API_MAX_BODY_BYTES)"
        )


def has_nul(scope: Scope) -> bool:
    # The path arrives percent-decoded; the query string raw, so %00 is looked for too.
    query: bytes = scope.get("query_string", b"")
    return "\x00" in scope["path"] or b"\x00" in query or b"%00" in query


def _declared_length(request: Request) -> int | None:
    value = request.headers.get("content-length")
    # The server (h11/httptools) has already refused a malformed Content-Length.
    return int(value) if value is not None and value.isdigit() else None


def _counting(receive: Receive, limit: int) -> Receive:
    seen = 0

    async def counted() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise BodyTooLarge(limit)
        return message

    return counted


async def _close(session: Session) -> None:
    try:
        if session.in_transaction():
            await run_in_threadpool(session.close)
        else:
            session.close()  # never connected, or already committed: nothing to wait for
    except (DBAPIError, PoolTimeout) as exc:
        if not database_unavailable(exc):
            raise
        # The connection went away after the answer (a failover, a restart): the rollback
        # that ends the request's transaction cannot reach the server, which dropped the
        # transaction with the connection; the pool discards the connection. The client has
        # its answer: nothing to report but a line.
        log.info("session closed on a lost database connection: %s",
                 getattr(exc, "orig", None) or exc)


class Gate:
    def __init__(self, app: ASGIApp, runtime: Runtime) -> None:
        self.app = app
        self.runtime = runtime
        self.limit = runtime.settings.api_max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        session = self.runtime.session_factory()
        scope.setdefault("state", {})[auth.STATE_SESSION] = session
        try:
            request = Request(scope)  # no receive: the gate never reads the body
            if has_nul(scope):
                refusal = respond(
                    request, 422, detail="NUL characters (%00) are not allowed in the URL"
                )
                await refusal(scope, receive, send)
                return
            path: str = scope["path"]
            if path.startswith(API_PREFIX) and not path.startswith(WEBHOOK_PREFIX):
                try:
                    principal = await self._authenticate(request, session)
                except (DBAPIError, PoolTimeout) as exc:
                    # Outside the app's exception handlers (this is the middleware around
                    # them): answered here, 503 like any route meeting the same outage.
                    if not database_unavailable(exc):
                        raise
                    await database_unavailable_response(request, exc)(scope, receive, send)
                    return
                if principal is None:
                    return await self._refuse_token(request, scope, receive, send)
                scope["state"][auth.STATE_PRINCIPAL] = principal
            declared = _declared_length(request)
            if declared is not None and declared > self.limit:
                too_large = BodyTooLarge(self.limit)
                await respond(request, 413, detail=too_large.detail)(scope, receive, send)
                return
            await self.app(scope, _counting(receive, self.limit), send)
        finally:
            await _close(session)

    async def _authenticate(self, request: Request, session: Session) -> auth.Principal | None:
        plain = _bearer(request)
        return await run_in_threadpool(auth.verify, session, plain) if plain else None

    async def _refuse_token(
        self, request: Request, scope: Scope, receive: Receive, send: Send
    ) -> None:
        if _bearer(request):
            detail, challenge = "the token is unknown or revoked", 'Bearer error="invalid_token"'
        else:
            detail, challenge = "a bearer token is required", "Bearer"
        response = problem_response(
            request, 401, detail=detail, headers={"WWW-Authenticate": challenge}
        )
        await response(scope, receive, send)


def _bearer(request: Request) -> str | None:
    scheme, _, plain = request.headers.get("authorization", "").partition(" ")
    return plain.strip() or None if scheme.lower() == "bearer" else None
