"""The one interface every external ticket backend implements (Dispatch's plugin-kind idea).

A backend is a class with a `name`, a pydantic `Config` (secrets as SecretStr), declared
`capabilities`, and async methods over plain httpx. Registration is by the Python entry point
group `mailticket.backends` (see registry.py), so a third party can ship one in its own package.

Every create takes an `op_key`: a stable key derived from ticket / email / operation. Backends
with native idempotency send it (Zendesk Idempotency-Key), others store it remotely where the
vendor keeps data anyway on a stock install (Autotask externalID, ServiceNow correlation_id, a
Jira label, or a footer line `[mailticket TKT-… ref m2t-…]` in the description or comment text)
so that `find_by_op_key` and `find_comment_by_op_key` can answer "did my earlier, ambiguous
create actually happen?". The same footer shows the vendor's users which local ticket it is.
"""

from __future__ import annotations

import abc
import enum
import hashlib
import html
import re
from collections.abc import Mapping, Sequence
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
    # The vendor's resolution text (iTop solution, ServiceNow close_notes...), when it has one.
    resolution: str | None = None


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
    # Set when the backend can tell the comment was created by us (the op key, or the
    # marker, we stored with it): such comments are never mirrored back.
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


# --- the footer: our ticket number and operation marker, in text the vendor keeps --------
# Only letters and digits, so a marker is safe inside OQL, JQL, sysparm queries and filters.
_UNSAFE = re.compile(r"[^0-9A-Za-z]")
_FOOTER = re.compile(r"\[mailticket(?: (?P<number>[^\s\]]+))? ref (?P<marker>m2t-[0-9A-Za-z]+)\]")
MARKER_LENGTH = 20  # hex characters: 80 bits, unique enough among one vendor's tickets


def op_marker(op_key: str) -> str:
    """The short, query-safe form of an op key that goes into text (m2t-<20 hex>)."""
    return "m2t-" + _UNSAFE.sub("", op_key)[:MARKER_LENGTH]


def footer(op_key: str, number: str | None = None) -> str:
    """`[mailticket TKT-… ref m2t-…]`: says which local ticket and which operation it was."""
    return f"[mailticket{' ' + number if number else ''} ref {op_marker(op_key)}]"


def marker_in(text: str | None) -> str | None:
    """The marker of the last footer in `text` (the one we appended), or None."""
    found = list(_FOOTER.finditer(text or ""))
    return found[-1].group("marker") if found else None


def number_in(text: str | None) -> str | None:
    found = list(_FOOTER.finditer(text or ""))
    return found[-1].group("number") if found else None


def text_with_footer(text: str, op_key: str, number: str | None = None) -> str:
    return f"{text.rstrip()}\n\n{footer(op_key, number)}"


def html_with_footer(body: str, op_key: str, number: str | None = None) -> str:
    return f"{body}<p>{html.escape(footer(op_key, number))}</p>"


ReferenceData = dict[str, dict[str, str]]  # kind ("queues") -> vendor id -> label


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
    # How often the poll checks that linked remote tickets still exist (seconds; 0: never),
    # and how many it asks about per request. A deletion is otherwise only seen on a write.
    existence_check_interval: float = 3600.0
    existence_check_batch: int = 50


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
        """Remote id of a comment created with this key; None when absent.

        The default looks for the marker in the ticket's listed comments, which is where
        every backend without a native key puts it."""
        wanted = op_marker(op_key)
        for comment in await self.list_comments(ref):
            if comment.op_key in (op_key, wanted):
                return comment.id
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

    async def missing_tickets(self, refs: Sequence[RemoteRef]) -> set[str]:
        """Ids among `refs` (one batch) the vendor says no longer exist.

        The default reads each ticket; backends with a batch query override it. A caller
        still confirms each one with `get_ticket` before believing it."""
        from mailticket.backends.errors import NotFound, Unsupported

        gone = set()
        for ref in refs:
            try:
                await self.get_ticket(ref)
            except NotFound:
                gone.add(ref.id)
            except Unsupported:
                return set()
        return gone

    async def refresh_reference_data(self) -> ReferenceData:
        """Re-read vendor reference data (queues, groups, states...): kind -> id -> label.

        Implementations also check that the ids the instance is configured with exist, and
        raise ValidationError naming the setting when one does not."""
        return {}

    def default_statuses(self) -> Mapping[str, Normalized]:
        """The backend's own remote-status table (before the instance's status_map)."""
        return {}

    def normalize_status(self, status_raw: str, defaults: Mapping[str, Normalized]) -> Normalized:
        mapped = self.config.status_map.get(status_raw)
        if mapped is not None:
            return Normalized(mapped)
        return defaults.get(status_raw, defaults.get(status_raw.lower(), Normalized.unknown))
