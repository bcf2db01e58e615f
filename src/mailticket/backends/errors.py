"""One exception tree for every backend: vendor errors are mapped into it by each adapter.

The delivery job only looks at `retryable` and `retry_after`; operators read the message,
which carries the vendor's own words.
"""

from __future__ import annotations

from typing import Any


class BackendError(Exception):
    """A remote operation failed. `raw` keeps the vendor's error body for the dead-letter list."""

    retryable: bool = False

    def __init__(
        self,
        message: str,
        *,
        backend: str = "",
        status: int | None = None,
        raw: Any = None,
    ) -> None:
        super().__init__(message)
        self.backend = backend
        self.status = status
        self.raw = raw

    def __str__(self) -> str:
        base = super().__str__()
        where = f"{self.backend}: " if self.backend else ""
        code = f" (HTTP {self.status})" if self.status is not None else ""
        return f"{where}{base}{code}"


class AuthError(BackendError):
    """Credentials rejected (401/403, or the vendor's equivalent); retrying will not help."""


class NotFound(BackendError):
    """The remote object does not exist (for a linked ticket: it was deleted remotely)."""


class ValidationError(BackendError):
    """The vendor rejected the payload (400/422 and equivalents)."""


class Conflict(BackendError):
    """The remote state forbids the change (closed ticket, stale update stamp)."""


class Unsupported(BackendError):
    """The backend lacks the capability asked for."""


class WebhookSignatureError(BackendError):
    """A webhook delivery failed signature or freshness checks."""


class Transient(BackendError):
    """5xx, timeouts, connection errors: worth retrying."""

    retryable = True


class RateLimited(Transient):
    """429 (or the vendor's equivalent); `retry_after` in seconds when the vendor said."""

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        backend: str = "",
        status: int | None = 429,
        raw: Any = None,
    ) -> None:
        super().__init__(message, backend=backend, status=status, raw=raw)
        self.retry_after = retry_after


class AmbiguousResult(Transient):
    """A create may or may not have happened (read timeout, 5xx after the body was sent).

    Delivery must look the object up by its operation key before sending the create again.
    """


__all__ = [
    "AmbiguousResult",
    "AuthError",
    "BackendError",
    "Conflict",
    "NotFound",
    "RateLimited",
    "Transient",
    "Unsupported",
    "ValidationError",
    "WebhookSignatureError",
]
