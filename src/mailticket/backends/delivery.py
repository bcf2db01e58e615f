"""Backend operations through the durable outbox (kind "backend", target = instance name).

Each remote operation is an outbox row written with the local change that causes it. The
handler here performs one row: it maps the backend error tree onto the outbox's retry
semantics (429 Retry-After honoured, transient failures backed off, the rest dead-lettered
with the vendor's message), probes `find_by_op_key` / `find_comment_by_op_key` before any
repeated create so an ambiguous first try never makes a second remote object, and marks a
link broken only when a read of the remote ticket itself confirms it is gone (a "not found"
from a write may be about anything the request names, such as a wrong agent id).

Operations on one remote ticket are performed in the order they were queued: an item whose
earlier sibling is still waiting is deferred (without using up an attempt), so a retried
comment can never land after a later one. An operation the backend cannot perform at all
(a status it has no way to represent) is parked as "unable", never reported as done.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from mailticket.backends import links
from mailticket.backends.base import (
    AttachmentDraft,
    CommentDraft,
    RemoteRef,
    TicketBackend,
    TicketDraft,
    TicketPatch,
    op_key,
)
from mailticket.backends.errors import BackendError, NotFound, RateLimited, Unsupported
from mailticket.backends.models import RemoteLink
from mailticket.backends.registry import BackendRegistry, UnknownBackend
from mailticket.reading.parsing import parse_email
from mailticket.settings import Settings
from mailticket.store import outbox
from mailticket.store.models import EmailLog, RawMessage
from mailticket.store.outbox import (
    Deferred,
    DeliveryError,
    DrainReport,
    OutboxItem,
    PermanentError,
    RetryPolicy,
    TransientError,
    Unperformable,
)
from mailticket.store.outbox_models import as_utc, utcnow

log = logging.getLogger(__name__)

KIND = "backend"
OPERATIONS = ("create_ticket", "create_comment", "create_attachment", "patch_ticket", "close_ticket")
STATUS_OPERATIONS = ("patch_ticket", "close_ticket")
OPEN = ("pending", "in_flight")
T = TypeVar("T")


def earlier_open_item(session: Session, item: OutboxItem) -> OutboxItem | None:
    """The oldest operation queued before `item` for the same ticket and instance that is
    still to be performed (dead and unable ones no longer hold the queue up)."""
    return session.scalars(
        select(OutboxItem)
        .where(
            OutboxItem.kind == KIND, OutboxItem.target == item.target,
            OutboxItem.ticket_id == item.ticket_id, OutboxItem.id < item.id,
            OutboxItem.status.in_(OPEN),
        )
        .order_by(OutboxItem.id)
        .limit(1)
    ).first()


def status_change_waiting(session: Session, ticket_id: int, backend: str) -> bool:
    """Is a local status change for this ticket still on its way to `backend`?"""
    return session.scalars(
        select(OutboxItem.id).where(
            OutboxItem.kind == KIND, OutboxItem.target == backend,
            OutboxItem.ticket_id == ticket_id, OutboxItem.operation.in_(STATUS_OPERATIONS),
            OutboxItem.status.in_(OPEN),
        ).limit(1)
    ).first() is not None


def policy_for(settings: Settings) -> RetryPolicy:
    return RetryPolicy(
        max_attempts=settings.backend_max_attempts,
        base_delay=timedelta(seconds=30),
        max_delay=timedelta(hours=2),
        jitter=0.1,
    )


def enqueue_op(
    session: Session,
    *,
    backend: str,
    operation: str,
    ticket_id: int,
    payload: dict[str, Any],
    key_parts: tuple[object, ...],
) -> OutboxItem:
    """Queue one remote operation; the same key_parts never queue a second one."""
    if operation not in OPERATIONS:
        raise ValueError(f"unknown backend operation {operation!r}")
    key = op_key(backend, operation, *key_parts)
    return outbox.enqueue(
        session,
        kind=KIND,
        target=backend,
        operation=operation,
        payload={**payload, "op_key": key},
        idempotency_key=f"backend:{key}",
        ticket_id=ticket_id,
    )


def draft_to_payload(draft: TicketDraft) -> dict[str, Any]:
    return {
        "subject": draft.subject, "text": draft.text, "html": draft.html,
        "requester_email": draft.requester_email, "requester_name": draft.requester_name,
        "priority": draft.priority, "tags": list(draft.tags), "local_number": draft.local_number,
        "custom_fields": dict(draft.custom_fields),
    }


def draft_from_payload(data: dict[str, Any]) -> TicketDraft:
    return TicketDraft(**{**data, "tags": tuple(data.get("tags") or ())})


def _describe(exc: BackendError) -> str:
    # The class says what kind of failure it was (AuthError, AmbiguousResult...), the
    # message carries the vendor's own words.
    return f"{type(exc).__name__}: {exc}"


@dataclass(frozen=True)
class _Link:
    id: int
    state: str
    ref: RemoteRef | None
    reason: str | None


class BackendDelivery:
    """Performs backend outbox items; one instance per drain (it caches built backends)."""

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        registry: BackendRegistry,
        settings: Settings,
    ) -> None:
        self.session_factory = session_factory
        self.registry = registry
        self.settings = settings
        self._built: dict[str, TicketBackend[Any]] = {}

    def backend(self, name: str) -> TicketBackend[Any]:
        if name not in self._built:
            self._built[name] = self.registry.build(name)
        return self._built[name]

    async def aclose(self) -> None:
        for backend in self._built.values():
            await backend.aclose()
        self._built.clear()

    def _tx(self, fn: Callable[[Session], T]) -> T:
        with self.session_factory() as session, session.begin():
            return fn(session)

    def _link(self, ticket_id: int, backend: str, *, create: bool = False) -> _Link | None:
        def load(session: Session) -> _Link | None:
            row = links.current_link(session, ticket_id, backend)
            if row is None and create:
                row = links.open_pending(session, ticket_id, backend)
            if row is None:
                return None
            ref = links.ref_of(row) if row.remote_id is not None else None
            return _Link(row.id, row.state, ref, row.broken_reason)

        return self._tx(load)

    # --- the outbox handler ------------------------------------------------------------------

    async def handle(self, item: OutboxItem) -> dict[str, Any]:
        if item.ticket_id is None:
            raise PermanentError("a backend operation needs a ticket")
        try:
            backend = self.backend(item.target)
        except UnknownBackend as exc:
            raise PermanentError(f"{exc}; add it to BACKENDS_FILE, then retry") from exc
        self._wait_for_earlier(item)
        link: _Link | None = None
        try:
            if item.operation == "create_ticket":
                return await self._create_ticket(backend, item)
            link = self._usable_link(item)
            assert link.ref is not None
            return await self._on_linked(backend, item, link.id, link.ref)
        except NotFound as exc:
            if link is None or link.ref is None:
                raise PermanentError(_describe(exc)) from exc
            raise await self._break_if_gone(backend, link, exc) from exc
        except Unsupported as exc:
            raise Unperformable(
                f"{backend.kind} cannot {item.operation.replace('_', ' ')} here: {exc}"
            ) from exc
        except RateLimited as exc:
            raise TransientError(_describe(exc), retry_after=exc.retry_after) from exc
        except BackendError as exc:
            if exc.retryable:
                raise TransientError(_describe(exc)) from exc
            raise PermanentError(_describe(exc)) from exc

    def _wait_for_earlier(self, item: OutboxItem) -> None:
        def load(session: Session) -> tuple[int, str, str, datetime] | None:
            found = earlier_open_item(session, item)
            if found is None:
                return None
            return found.id, found.operation, found.status, as_utc(found.next_attempt_at)

        earlier = self._tx(load)
        if earlier is None:
            return
        eid, operation, status, due = earlier
        # Due when the earlier one is (it may succeed then); soon, if it is being tried now.
        wait = 1.0 if status == "in_flight" else max((due - utcnow()).total_seconds(), 0) + 1
        raise Deferred(
            f"waiting for operation #{eid} ({operation}) on the same remote ticket to be "
            "delivered first", retry_after=wait,
        )

    async def _break_if_gone(
        self, backend: TicketBackend[Any], link: _Link, exc: NotFound
    ) -> DeliveryError:
        """A write said "not found": only a read of the ticket itself tells whether the
        ticket is gone or the error is about something else the request named. Returns
        the outcome to raise."""
        assert link.ref is not None
        shown = link.ref.key or link.ref.id
        try:
            await backend.get_ticket(link.ref)
        except NotFound as gone:
            reason, broken_id = str(exc), link.id
            self._tx(lambda s: links.mark_broken(s, s.get_one(RemoteLink, broken_id), reason))
            return PermanentError(
                f"remote ticket {shown} no longer exists ({reason}; read back: {gone}); "
                "link marked broken, nothing recreated"
            )
        except Unsupported:
            return PermanentError(
                f"{_describe(exc)} (the remote ticket cannot be read back to tell whether it "
                "is gone; link kept)"
            )
        except BackendError as read:
            if read.retryable:
                return TransientError(
                    f"{_describe(exc)}; reading {shown} back to check failed: {read}"
                )
            return PermanentError(f"{_describe(exc)}; reading {shown} back: {read}")
        return PermanentError(
            f"{_describe(exc)}, but remote ticket {shown} still exists: the error is about "
            "something else the request names (a wrong id in the instance's configuration?); "
            "link kept"
        )

    def _usable_link(self, item: OutboxItem) -> _Link:
        assert item.ticket_id is not None
        link = self._link(item.ticket_id, item.target)
        if link is None:
            raise PermanentError(f"ticket {item.ticket_id} was never pushed to {item.target}")
        if link.state == "broken":
            raise PermanentError(
                f"the link to {item.target} is broken ({link.reason}); re-link or push anew"
            )
        if link.ref is None:
            # Nothing earlier is waiting (checked above), so the create failed for good.
            raise PermanentError(
                f"the remote ticket in {item.target} was never created (its create_ticket "
                "operation failed); retry that one first, then this"
            )
        return link

    async def _create_ticket(
        self, backend: TicketBackend[Any], item: OutboxItem
    ) -> dict[str, Any]:
        assert item.ticket_id is not None
        key = str(item.payload["op_key"])
        link = self._link(item.ticket_id, item.target, create=True)
        assert link is not None
        if link.state == "broken":
            raise PermanentError(f"the link to {item.target} is broken ({link.reason})")
        if link.ref is not None:
            return {"remote_id": link.ref.id, "remote_key": link.ref.key, "already_linked": True}
        ref: RemoteRef | None = None
        if item.attempts > 1:
            # An earlier try may have created it although we never saw the answer.
            ref = await backend.find_by_op_key(key)
        found = ref is not None
        if ref is None:
            draft = draft_from_payload(item.payload["draft"])
            ref = await backend.create_ticket(draft, op_key=key)
        created = ref
        self._tx(lambda s: links.record_linked(s, s.get_one(RemoteLink, link.id), created))
        return {
            "remote_id": ref.id, "remote_key": ref.key, "remote_url": ref.url,
            "found_existing": found,
        }

    async def _on_linked(
        self, backend: TicketBackend[Any], item: OutboxItem, link_id: int, ref: RemoteRef
    ) -> dict[str, Any]:
        p = item.payload
        key = str(p["op_key"])
        if item.operation == "create_comment":
            remote_id = None
            if item.attempts > 1:
                remote_id = await backend.find_comment_by_op_key(ref, key)
            found = remote_id is not None
            if remote_id is None:
                draft = CommentDraft(
                    text=p["text"], public=bool(p.get("public", True)), html=p.get("html"),
                    author_email=p.get("author_email"),
                )
                remote_id = await backend.create_comment(ref, draft, op_key=key)
            rid = remote_id
            self._tx(lambda s: links.remember_comment(
                s, s.get_one(RemoteLink, link_id), rid, "out", p.get("comment_id")
            ))
            return {"remote_comment_id": remote_id, "found_existing": found}
        if item.operation == "create_attachment":
            attachment = self._tx(lambda s: load_attachment(s, p, self.settings.mail_domain))
            att_id = None
            if item.attempts > 1:
                att_id = await backend.find_attachment_by_op_key(ref, key, attachment)
            found = att_id is not None
            if att_id is None:
                att_id = await backend.create_attachment(
                    ref, attachment, public=bool(p.get("public", True)), op_key=key
                )
            return {"remote_attachment_id": att_id, "found_existing": found}
        if item.operation == "patch_ticket":
            remote = await backend.patch_ticket(ref, TicketPatch(**p["patch"]))
        elif item.operation == "close_ticket":
            remote = await backend.close_ticket(ref, p.get("resolution"))
        else:
            raise PermanentError(f"unknown backend operation {item.operation!r}")

        def note(s: Session) -> None:
            row = s.get_one(RemoteLink, link_id)
            row.last_status_raw, row.last_status = remote.status_raw[:255], remote.status.value
            if remote.resolution:
                # The resolution text we just wrote is ours: never mirrored back.
                links.remember_comment(s, row, links.resolution_id(remote.resolution), "out",
                                       None)

        self._tx(note)
        return {"status_raw": remote.status_raw, "status": remote.status.value}


def load_attachment(session: Session, payload: dict[str, Any], domain: str) -> AttachmentDraft:
    """Cut the attachment's bytes out of the stored raw message (they are not kept twice)."""
    entry = session.get(EmailLog, payload["email_log_id"])
    if entry is None or entry.raw_message_id is None:
        raise PermanentError(f"email {payload['email_log_id']} has no stored raw message")
    raw = session.get_one(RawMessage, entry.raw_message_id).raw
    for part in parse_email(raw, domain=domain).attachments:
        if part.index == payload["part_index"]:
            return AttachmentDraft(part.filename or payload["filename"], part.content_type, part.payload)
    raise PermanentError(f"attachment part {payload['part_index']} is not in the raw message")


async def deliver_backend_ops(
    session_factory: sessionmaker[Session],
    registry: BackendRegistry,
    settings: Settings,
    *,
    policy: RetryPolicy | None = None,
    target: str | None = None,
    batch: int = 50,
) -> DrainReport:
    """One drain of the backend outbox: every due operation is tried once."""
    delivery = BackendDelivery(session_factory, registry, settings)
    try:
        return await outbox.drain(
            session_factory, kind=KIND, handler=delivery.handle,
            policy=policy or policy_for(settings), target=target, batch=batch,
        )
    finally:
        await delivery.aclose()
