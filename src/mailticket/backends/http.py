"""Shared httpx plumbing for backends: vendor responses and transport failures -> error tree.

Each adapter passes its own `extract_message` (the vendor's error shape) and lets
`raise_for_vendor` choose the class from the status code. `request` wraps one call so that
timeouts and dropped connections become Transient, or AmbiguousResult when a write may
already have happened on the far side.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, NoReturn

import httpx

from mailticket.backends.errors import (
    AmbiguousResult,
    AuthError,
    BackendError,
    Conflict,
    NotFound,
    RateLimited,
    Transient,
    ValidationError,
)

MessageExtractor = Callable[[Any], str | None]

_MAX_MESSAGE = 500
# Writes whose request may have reached the vendor although we saw no answer.
_WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Retry-After as seconds: either delta-seconds or an HTTP-date; None when absent/garbled."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def _iso_reset(value: str | None, now: datetime | None) -> float | None:
    """Jira's X-RateLimit-Reset is an ISO time stamp."""
    if not value:
        return None
    try:
        when = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def retry_after_of(headers: Mapping[str, str], *, now: datetime | None = None) -> float | None:
    found = parse_retry_after(headers.get("retry-after"), now=now)
    if found is None:
        found = _iso_reset(headers.get("x-ratelimit-reset"), now)
    return found


def body_of(resp: httpx.Response) -> Any:
    """The decoded JSON body, or the text when it is not JSON."""
    try:
        return resp.json()
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError):
        return resp.text


def default_message(body: Any) -> str | None:
    """Common shapes: {"error": ...}, {"message": ...}, {"errorMessages": [...]}, plain text."""
    if isinstance(body, str):
        return body.strip() or None
    if not isinstance(body, dict):
        return None
    for key in ("error_human", "message", "error", "description", "detail"):
        value = body.get(key)
        if isinstance(value, str) and value:
            return value
        if isinstance(value, dict):
            inner = default_message(value)
            if inner:
                return inner
    messages = body.get("errorMessages")
    parts = [str(m) for m in messages] if isinstance(messages, list) else []
    errors = body.get("errors")
    if isinstance(errors, dict):
        parts += [f"{k}: {v}" for k, v in errors.items()]
    elif isinstance(errors, list):
        parts += [str(e) for e in errors]
    return "; ".join(parts) or None


def raise_for_vendor(
    resp: httpx.Response,
    backend: str,
    extract_message: MessageExtractor | None = None,
    *,
    ambiguous: bool | None = None,
) -> None:
    """Return quietly on 2xx/3xx; otherwise raise the matching BackendError.

    `ambiguous`: whether a 5xx means "the write may have happened" (default: True for POST).
    """
    status = resp.status_code
    if status < 400:
        return
    body = body_of(resp)
    message = (extract_message or default_message)(body) or resp.reason_phrase or "error"
    message = message[:_MAX_MESSAGE]
    kw: dict[str, Any] = {"backend": backend, "status": status, "raw": body}
    if status == 429:
        raise RateLimited(message, retry_after=retry_after_of(resp.headers), **kw)
    if status in (401, 403):
        raise AuthError(f"credentials rejected: {message}", **kw)
    if status in (404, 410):
        raise NotFound(message, **kw)
    if status == 409 or status == 412:
        raise Conflict(message, **kw)
    if status in (400, 413, 415, 422):
        raise ValidationError(message, **kw)
    if status == 408:
        raise Transient(message, **kw)
    if status >= 500:
        if status == 503 and "retry-after" in resp.headers:
            # An overloaded vendor that says when to come back did not take the request.
            raise RateLimited(message, retry_after=retry_after_of(resp.headers), **kw)
        method = resp.request.method if _has_request(resp) else "GET"
        if ambiguous if ambiguous is not None else method == "POST":
            raise AmbiguousResult(message, **kw)
        raise Transient(message, **kw)
    raise ValidationError(message, **kw)


def _has_request(resp: httpx.Response) -> bool:
    try:
        resp.request  # noqa: B018 - raises when the response was built without one
    except RuntimeError:
        return False
    return True


def transport_error(exc: httpx.HTTPError, backend: str, method: str) -> BackendError:
    """Map an httpx exception: before sending -> Transient; maybe after -> AmbiguousResult."""
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout):
        return Transient(f"cannot connect: {text}", backend=backend)
    if method.upper() in _WRITE_METHODS and isinstance(
        exc, httpx.ReadTimeout | httpx.RemoteProtocolError | httpx.ReadError | httpx.WriteError
    ):
        return AmbiguousResult(f"no answer after sending: {text}", backend=backend)
    return Transient(text, backend=backend)


async def request(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    *,
    backend: str,
    extract_message: MessageExtractor | None = None,
    ambiguous: bool | None = None,
    **kwargs: Any,
) -> httpx.Response:
    """One vendor call: transport errors and non-2xx answers come back as BackendErrors."""
    try:
        resp = await client.request(method, url, **kwargs)
    except httpx.HTTPError as exc:
        raise transport_error(exc, backend, method) from exc
    raise_for_vendor(resp, backend, extract_message, ambiguous=ambiguous)
    return resp


def fail(message: str, backend: str, resp: httpx.Response | None = None) -> NoReturn:
    """A 2xx answer that does not say what the contract promises."""
    raise BackendError(
        message,
        backend=backend,
        status=resp.status_code if resp is not None else None,
        raw=body_of(resp) if resp is not None else None,
    )


__all__ = [
    "MessageExtractor",
    "body_of",
    "default_message",
    "fail",
    "parse_retry_after",
    "raise_for_vendor",
    "request",
    "retry_after_of",
    "transport_error",
]
