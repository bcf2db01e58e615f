"""The one interface every external ticket backend implements (Dispatch's plugin-kind idea).

A backend is a class with a `name`, a pydantic `Config` (secrets as SecretStr), declared
`capabilities`, and async methods over plain httpx. Registration is by the Python entry point
group `mailticket.backends` (see registry.py), so a third party can ship one in its own package.

Every create takes an `op_key`: a stable key derived from ticket / email / operation. Backends
with native idempotency send it (Zendesk Idempotency-Key), others store it remotely where the
vendor allows (Autotask externalID, ServiceNow correlation_id, a Jira label...) so that
`find_by_op_key` can answer "did my earlier, ambiguous create actually happen?".
"""

from __future__ import annotations

import abc
import enum
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Generic, TypeVar

import httpx
from pydantic import BaseModel, ConfigDict


class Cap(enum.StrEnum):
    INTERNAL_NOTES = "internal_notes"
    ATTACHMENTS = "attachments"
    CLOSE = "close"
    NATIVE_IDEMPOTENCY = "native_idempotency"
    EXTERNAL_ID_LOOKUP = "external_id_lookup"
    WEBHOOKS = "webhooks"
    POLLING = "polling"
    HTML_BODY = "html_body"
    REFERENCE_DATA = "reference_data"


class Normalized(enum.StrEnum):
    """Where a remote status sits in the life of a ticket (Waldur's IssueStatus idea)."""

    open = "open"
    pending = "pending"
    resolved = "resolved"
    closed = "closed"
    canceled = "canceled"
    unknown = "unknown"


@dataclass(frozen=True)
class RemoteRef:
    backend: str  # the configured instance name, e.g. "jira" or "jira-emea"
    id: str  # the vendor's stable id
    key: str | None = None  # what humans see: OPS-1, ticket number, INC0010001
    url: str | None = None


@dataclass(frozen=True)
class RemoteTicket:
    ref: RemoteRef
    status_raw: str
    status: Normalized = Normalized.unknown
    updated_at: datetime | None = None
    raw: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TicketDraft:
    subject: str
    text: str
    requester_email: str | None = None
    requester_name: str | None = None
    html: str | None = None
    priority: str = "normal"  # local priority: low|normal|high|critical
    tags: tuple[str, ...] = ()
    local_number: str | None = None  # TKT-YYYYMMDD-XXX
    custom_fields: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TicketPatch:
    status: str | None = None  # local status, the backend maps it
    priority: str | None = None
    assignee: str | None = None
    fields: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CommentDraft:
    text: str
    public: bool = True
    html: str | None = None
    author_email: str | None = None


@dataclass(frozen=True)
class AttachmentDraft:
    filename: str
    content_type: str
    data: bytes


@dataclass(frozen=True)
class RemoteComment:
    ref: RemoteRef  # the ticket it belongs to
    id: str
    text: str
    public: bool
    author: str | None = None
    created_at: datetime | None = None
    # Set when the backend can tell the comment was created by us (the op key we stored
    # with it): such comments are never mirrored back.
    op_key: str | None = None


@dataclass(frozen=True)
class Page:
    items: list[RemoteTicket]
    cursor: str | None = None  # None: no further page


@dataclass(frozen=True)
class WebhookEvent:
    """A verified delivery. `delivery_id` deduplicates; `ticket_id` says what to re-read."""

    delivery_id: str
    event: str
    ticket_id: str | None = None
    status_raw: str | None = None
    comment: RemoteComment | None = None
    raw: Mapping[str, Any] = field(default_factory=dict)


def op_key(backend: str, *parts: object) -> str:
    """Stable idempotency key for one remote operation (hex, 64 chars; truncate per vendor)."""
    digest = hashlib.sha256("|".join([backend, *(str(p) for p in parts)]).encode())
    return digest.hexdigest()


class BackendConfig(BaseModel):
    """Base for each backend's own settings; secrets are SecretStr so they never print."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    timeout: float = 30.0
    # Remote status name -> local status (open|pending|resolved|closed|canceled); names not
    # listed fall back to the backend's defaults, and unknown ones are reported, not guessed.
    status_map: dict[str, str] = {}
    # Local field -> remote field, applied to TicketDraft.custom_fields (Synqly's mappings).
    custom_field_mappings: dict[str, str] = {}
    # Client-side request budget for this instance (token bucket; None: unthrottled),
    # e.g. Autotask's tenant-wide 10,000 requests/hour.
    max_requests_per_hour: float | None = None
    max_burst: int = 10


C = TypeVar("C", bound=BackendConfig)


class TicketBackend(abc.ABC, Generic[C]):
    """Subclasses set `kind`, `Config` and `capabilities`, and implement the abstract methods.

    `instance` is the configured name (several instances of one kind may exist). The httpx
    client is injected so tests can point it anywhere; `aclose` closes what we opened.
    """

    kind: ClassVar[str]
    Config: ClassVar[type[BackendConfig]]
    capabilities: ClassVar[frozenset[Cap]] = frozenset()

    def __init__(
        self, instance: str, config: C, *, client: httpx.AsyncClient | None = None
    ) -> None:
        self.name = instance
        self.config = config
        self._own_client = client is None
        self.client = client or httpx.AsyncClient(timeout=config.timeout)

    async def aclose(self) -> None:
        if self._own_client:
            await self.client.aclose()

    def supports(self, cap: Cap) -> bool:
        return cap in self.capabilities

    @abc.abstractmethod
    async def test_connection(self) -> str:
        """Check URL and credentials with one cheap call; return a human description."""

    @abc.abstractmethod
    async def create_ticket(self, draft: TicketDraft, *, op_key: str) -> RemoteRef: ...

    @abc.abstractmethod
    async def find_by_op_key(self, op_key: str) -> RemoteRef | None:
        """Did a create with this key already happen? None when the vendor cannot tell."""

    @abc.abstractmethod
    async def get_ticket(self, ref: RemoteRef) -> RemoteTicket: ...

    @abc.abstractmethod
    async def patch_ticket(self, ref: RemoteRef, patch: TicketPatch) -> RemoteTicket: ...

    @abc.abstractmethod
    async def close_ticket(self, ref: RemoteRef, resolution: str | None = None) -> RemoteTicket:
        ...

    @abc.abstractmethod
    async def create_comment(
        self, ref: RemoteRef, comment: CommentDraft, *, op_key: str
    ) -> str:
        """Returns the remote comment id."""

    async def create_attachment(
        self, ref: RemoteRef, attachment: AttachmentDraft, *, public: bool, op_key: str
    ) -> str:
        from mailticket.backends.errors import Unsupported

        raise Unsupported("attachments are not supported", backend=self.name)

    async def list_comments(self, ref: RemoteRef) -> list[RemoteComment]:
        """Comments on a remote ticket (for mirroring back); [] when the vendor cannot list."""
        return []

    async def find_comment_by_op_key(self, ref: RemoteRef, op_key: str) -> str | None:
        """Remote id of a comment created with this key; None when absent or unknowable."""
        return None

    async def find_attachment_by_op_key(
        self, ref: RemoteRef, op_key: str, attachment: AttachmentDraft
    ) -> str | None:
        """Remote id of an attachment an earlier, ambiguous try already added; None: unknown."""
        return None

    async def query_tickets(
        self, *, updated_since: datetime | None, cursor: str | None = None, limit: int = 100
    ) -> Page:
        from mailticket.backends.errors import Unsupported

        raise Unsupported("polling is not supported", backend=self.name)

    def parse_webhook(self, headers: Mapping[str, str], body: bytes) -> WebhookEvent:
        """Verify the delivery's signature and decode it; raise WebhookSignatureError."""
        from mailticket.backends.errors import Unsupported

        raise Unsupported("webhooks are not supported", backend=self.name)

    async def refresh_reference_data(self) -> dict[str, int]:
        """Re-read vendor reference data (queues, sources...); returns counts by kind."""
        return {}

    def default_statuses(self) -> Mapping[str, Normalized]:
        """The backend's own remote-status table (before the instance's status_map)."""
        return {}

    def normalize_status(self, status_raw: str, defaults: Mapping[str, Normalized]) -> Normalized:
        mapped = self.config.status_map.get(status_raw)
        if mapped is not None:
            return Normalized(mapped)
        return defaults.get(status_raw, defaults.get(status_raw.lower(), Normalized.unknown))
