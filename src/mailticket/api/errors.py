"""Every error leaves as RFC 9457 problem+json (an HTML page under /ui); a stack trace never
leaves the process."""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from mailticket.api import pages
from mailticket.api.headers import add_defaults
from mailticket.api.routing import allowed_methods
from mailticket.store.db import database_unavailable

log = logging.getLogger(__name__)

PROBLEM_TYPE = "application/problem+json"
# Seconds a client waits before asking again while the database is away: a restart or a
# failover takes seconds, and the pool finds the new server on the next request.
UNAVAILABLE_RETRY_AFTER = 5


class Problem(Exception):
    """Raised by handlers; becomes a problem+json response."""

    def __init__(
        self,
        status: int,
        detail: str | None = None,
        *,
        title: str | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(detail or title or str(status))
        self.status = status
        self.title = title or HTTPStatus(status).phrase
        self.detail = detail
        self.headers = headers
        self.extra = extra or {}


def problem_response(
    request: Request,
    status: int,
    *,
    title: str | None = None,
    detail: str | None = None,
    headers: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": title or HTTPStatus(status).phrase,
        "status": status,
        "instance": request.url.path,
    }
    if detail:
        body["detail"] = detail
    body.update(extra or {})
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_TYPE)


def respond(
    request: Request,
    status: int,
    *,
    title: str | None = None,
    detail: str | None = None,
    headers: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> Response:
    """The error as the caller reads it: a page with a way back for the browser (/ui),
    problem+json for everyone else."""
    if not pages.is_ui(request.url.path):
        return problem_response(
            request, status, title=title, detail=detail, headers=headers, extra=extra
        )
    response = pages.page(
        request, "error.html", status_code=status, status=status,
        title=title or HTTPStatus(status).phrase, detail=detail,
    )
    response.headers.update(headers or {})
    return response


def database_unavailable_response(request: Request, exc: BaseException) -> Response:
    """503 for a request the database could not serve now (down, restarting): the request
    was not at fault and works again once it is back."""
    log.warning(
        "database unavailable on %s %s: %s", request.method, request.url.path,
        getattr(exc, "orig", None) or exc,
    )
    return respond(
        request, 503, detail="the database is unavailable; try again shortly",
        headers={"Retry-After": str(UNAVAILABLE_RETRY_AFTER)},
    )


def jsonable_errors(errors: Any) -> list[dict[str, Any]]:
    # Pydantic's error dicts may carry the offending exception in "ctx"; keep only text.
    out = []
    for err in errors:
        out.append(
            {
                "loc": [str(part) for part in err.get("loc", ())],
                "msg": str(err.get("msg", "")),
                "type": str(err.get("type", "")),
            }
        )
    return out


def install(app: FastAPI) -> None:
    async def on_problem(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, Problem)
        return respond(
            request, exc.status, title=exc.title, detail=exc.detail, headers=exc.headers,
            extra=exc.extra,
        )

    async def on_http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        detail: str | None = exc.detail if isinstance(exc.detail, str) else None
        if detail == HTTPStatus(exc.status_code).phrase:
            detail = None
        headers = dict(getattr(exc, "headers", None) or {})
        if exc.status_code == 405:
            headers["Allow"] = ", ".join(allowed_methods(request.app, request.url.path))
        return respond(request, exc.status_code, detail=detail, headers=headers or None)

    async def on_validation(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return respond(
            request, 422, detail="the request is not valid",
            extra={"errors": jsonable_errors(exc.errors())},
        )

    async def on_crash(request: Request, exc: Exception) -> Response:
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        response = respond(request, 500, detail="an internal error occurred; see the server log")
        # Starlette answers an unhandled error outside the middleware that adds these.
        add_defaults(response.headers)
        return response

    async def on_database(request: Request, exc: Exception) -> Response:
        if database_unavailable(exc):
            return database_unavailable_response(request, exc)
        return await on_crash(request, exc)

    app.add_exception_handler(Problem, on_problem)
    app.add_exception_handler(DBAPIError, on_database)
    app.add_exception_handler(PoolTimeout, on_database)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(Exception, on_crash)
