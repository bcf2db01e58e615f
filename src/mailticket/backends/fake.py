"""An in-memory backend shipped for tests and demos (`kind: fake`).

Tickets live in a process-wide store named by the config's `store`, so every instance built
from one config sees the same tickets. `fail_next` lets a test script outages: each entry is
consumed by the next operation and raises the named error (`ambiguous` performs the change
first, then fails, like a dropped connection after the vendor processed the request).
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar

from pydantic import SecretStr

from mailticket.backends.base import (
    AttachmentDraft,
    BackendConfig,
    Cap,
    CommentDraft,
    Normalized,
    Page,
    RemoteComment,
    RemoteRef,
    RemoteTicket,
    TicketBackend,
    TicketDraft,
    TicketPatch,
    WebhookEvent,
)
from mailticket.backends.errors import (
    AmbiguousResult,
    AuthError,
    BackendError,
    NotFound,
    RateLimited,
    Transient,
    WebhookSignatureError,
)

STATUSES: dict[str, Normalized] = {
    "new": Normalized.open,
    "open": Normalized.open,
    "waiting": Normalized.pending,
    "resolved": Normalized.resolved,
    "closed": Normalized.closed,
    "canceled": Normalized.canceled,
}
_LOCAL_TO_FAKE = {"open": "open", "pending": "waiting", "resolved": "resolved", "closed": "closed"}


@dataclass
class FakeTicket:
    id: str
    draft: TicketDraft
    op_key: str
    status: str = "new"
    updated_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    comments: list[RemoteComment] = field(default_factory=list)
    attachments: list[tuple[str, AttachmentDraft, bool]] = field(default_factory=list)


@dataclass
class FakeStore:
    tickets: dict[str, FakeTicket] = field(default_factory=dict)
    fail_next: list[str] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)
    ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))


STORES: dict[str, FakeStore] = {}


def store(name: str) -> FakeStore:
    return STORES.setdefault(name, FakeStore())


class FakeConfig(BackendConfig):
    store: str = "default"
    token: SecretStr = SecretStr("fake")
    webhook_secret: SecretStr | None = None


class FakeBackend(TicketBackend[FakeConfig]):
    kind: ClassVar[str] = "fake"
    Config: ClassVar[type[BackendConfig]] = FakeConfig
    capabilities: ClassVar[frozenset[Cap]] = frozenset(Cap) - {Cap.NATIVE_IDEMPOTENCY}

    @property
    def store(self) -> FakeStore:
        return store(self.config.store)

    def _gate(self, op: str) -> bool:
        """Raise a scripted failure; True: perform the change, then fail ambiguously."""
        self.store.calls.append(op)
        if self.config.token.get_secret_value() == "bad":
            raise AuthError("credentials rejected: token 'bad'", backend=self.name, status=401)
        if not self.store.fail_next:
            return False
        what = self.store.fail_next.pop(0)
        if what == "ambiguous":
            return True
        errors: dict[str, BackendError] = {
            "transient": Transient("service unavailable", backend=self.name, status=503),
            "ratelimit": RateLimited("slow down", retry_after=7, backend=self.name),
        }
        raise errors[what]

    def _ambiguous(self) -> AmbiguousResult:
        return AmbiguousResult("connection dropped after sending", backend=self.name)

    def _ticket(self, ref: RemoteRef) -> FakeTicket:
        found = self.store.tickets.get(ref.id)
        if found is None:
            raise NotFound(f"ticket {ref.id} not found", backend=self.name, status=404)
        return found

    def _remote(self, t: FakeTicket) -> RemoteTicket:
        return RemoteTicket(
            ref=RemoteRef(self.name, t.id, f"FAKE-{t.id}", f"fake://{self.config.store}/{t.id}"),
            status_raw=t.status,
            status=self.normalize_status(t.status, STATUSES),
            updated_at=t.updated_at,
        )

    def default_statuses(self) -> Mapping[str, Normalized]:
        return STATUSES

    async def test_connection(self) -> str:
        self._gate("test")
        return f"fake store {self.config.store!r}: {len(self.store.tickets)} tickets"

    async def create_ticket(self, draft: TicketDraft, *, op_key: str) -> RemoteRef:
        after = self._gate("create_ticket")
        tid = str(next(self.store.ids))
        self.store.tickets[tid] = FakeTicket(tid, draft, op_key)
        if after:
            raise self._ambiguous()
        return self._remote(self.store.tickets[tid]).ref

    async def find_by_op_key(self, op_key: str) -> RemoteRef | None:
        self._gate("find_by_op_key")
        for t in self.store.tickets.values():
            if t.op_key == op_key:
                return self._remote(t).ref
        return None

    async def get_ticket(self, ref: RemoteRef) -> RemoteTicket:
        self._gate("get_ticket")
        return self._remote(self._ticket(ref))

    async def patch_ticket(self, ref: RemoteRef, patch: TicketPatch) -> RemoteTicket:
        self._gate("patch_ticket")
        t = self._ticket(ref)
        if patch.status:
            t.status = _LOCAL_TO_FAKE.get(patch.status, patch.status)
        t.updated_at = datetime.now(UTC)
        return self._remote(t)

    async def close_ticket(self, ref: RemoteRef, resolution: str | None = None) -> RemoteTicket:
        self._gate("close_ticket")
        t = self._ticket(ref)
        t.status = "closed"
        t.updated_at = datetime.now(UTC)
        return self._remote(t)

    async def create_comment(self, ref: RemoteRef, comment: CommentDraft, *, op_key: str) -> str:
        after = self._gate("create_comment")
        t = self._ticket(ref)
        cid = f"c{next(self.store.ids)}"
        t.comments.append(
            RemoteComment(ref, cid, comment.text, comment.public, comment.author_email, op_key=op_key)
        )
        if after:
            raise self._ambiguous()
        return cid

    async def find_comment_by_op_key(self, ref: RemoteRef, op_key: str) -> str | None:
        return next((c.id for c in self._ticket(ref).comments if c.op_key == op_key), None)

    async def list_comments(self, ref: RemoteRef) -> list[RemoteComment]:
        return list(self._ticket(ref).comments)

    async def create_attachment(
        self, ref: RemoteRef, attachment: AttachmentDraft, *, public: bool, op_key: str
    ) -> str:
        self._gate("create_attachment")
        self._ticket(ref).attachments.append((op_key, attachment, public))
        return f"a{next(self.store.ids)}"

    async def find_attachment_by_op_key(
        self, ref: RemoteRef, op_key: str, attachment: AttachmentDraft
    ) -> str | None:
        return next((k for k, _, _ in self._ticket(ref).attachments if k == op_key), None)

    async def query_tickets(
        self, *, updated_since: datetime | None, cursor: str | None = None, limit: int = 100
    ) -> Page:
        self._gate("query_tickets")
        found = sorted(
            (t for t in self.store.tickets.values()
             if updated_since is None or t.updated_at >= updated_since),
            key=lambda t: (t.updated_at, int(t.id)),
        )
        start = int(cursor or 0)
        chunk = found[start : start + limit]
        more = start + limit < len(found)
        return Page([self._remote(t) for t in chunk], str(start + limit) if more else None)

    def parse_webhook(self, headers: Mapping[str, str], body: bytes) -> WebhookEvent:
        secret = self.config.webhook_secret
        if secret is None:
            raise WebhookSignatureError("no webhook secret configured", backend=self.name)
        expected = hmac.new(secret.get_secret_value().encode(), body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, headers.get("x-fake-signature", "")):
            raise WebhookSignatureError("signature mismatch", backend=self.name)
        data: dict[str, Any] = json.loads(body)
        return WebhookEvent(
            delivery_id=headers.get("x-fake-delivery", ""),
            event=str(data.get("event", "")),
            ticket_id=str(data["ticket_id"]) if "ticket_id" in data else None,
            raw=data,
        )
