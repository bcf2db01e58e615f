"""Back from the backend: remote status and comments onto local tickets.

Webhooks are hints: a delivery is verified, deduplicated on its id, and then the ticket is
re-read with `get_ticket` (a webhook body may be stale or partial). Backends without
webhooks are polled through `query_tickets(updated_since)`. Remote statuses map to local
ones through the backend's normalisation (configurable `status_map` on each instance) with
Waldur's resolved / canceled semantics; a status nobody mapped is reported, never guessed.
A local status change still on its way out (queued in the outbox) wins: the poll does not
overwrite it with the remote status it is about to replace. Remote comments come back
except the ones we wrote ourselves (recognised by the marker or id we stored, never by an
author's name): a public one as a public comment that is mailed to the customer
(conversation/agent_reply.py), an internal one, and the vendor's resolution text, as
internal comments that are never mailed.

Polling also checks, at each instance's `existence_check_interval`, that every linked remote
ticket still exists (batched), so a deletion is found without waiting for the next write.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from mailticket.backends import links
from mailticket.backends.base import (
    Cap,
    Normalized,
    RemoteComment,
    RemoteRef,
    RemoteTicket,
    TicketBackend,
)
from mailticket.backends.delivery import status_change_waiting
from mailticket.backends.errors import NotFound, Unsupported, WebhookSignatureError
from mailticket.backends.models import RemoteCommentRef, RemoteLink, SyncCursor, WebhookDelivery
from mailticket.backends.registry import BackendRegistry
from mailticket.conversation.agent_reply import NoRecipients, mail_comment
from mailticket.outbound.templates import TemplateRenderError
from mailticket.settings import Settings
from mailticket.sla import service as sla_service
from mailticket.store.models import Comment, Ticket
from mailticket.store.outbox_models import as_utc, utcnow
from mailticket.ticketing import tickets

log = logging.getLogger(__name__)

# Normalized remote state -> local ticket status. Canceled closes without counting as
# resolved (resolved_at stays empty and the remote resolution is recorded).
LOCAL_STATUS: Mapping[Normalized, str] = {
    Normalized.open: "open",
    Normalized.pending: "pending",
    Normalized.resolved: "resolved",
    Normalized.closed: "closed",
    Normalized.canceled: "closed",
}
# Search indexes of some vendors lag behind writes; each poll re-reads this much overlap.
POLL_OVERLAP = timedelta(minutes=2)


@dataclass
class SyncReport:
    updated: int = 0
    unchanged: int = 0
    unknown_status: list[str] = field(default_factory=list)
    broken: int = 0
    comments: int = 0
    unlinked: int = 0
    kept_local: int = 0  # remote status not applied: a local change is still on its way
    checked: int = 0  # linked tickets whose existence was checked

    def as_dict(self) -> dict[str, Any]:
        return {
            "updated": self.updated, "unchanged": self.unchanged, "broken": self.broken,
            "comments": self.comments, "unlinked": self.unlinked,
            "kept_local": self.kept_local, "checked": self.checked,
            "unknown_status": self.unknown_status,
        }


def apply_remote(session: Session, link: RemoteLink, remote: RemoteTicket,
                 report: SyncReport, *, now: datetime | None = None) -> None:
    """Bring one local ticket in line with its remote twin's status. The SLA clock follows
    as it does for a change made here: resolved in the backend stops it, pending pauses it."""
    now = now or utcnow()
    link.last_status_raw = remote.status_raw[:255]
    link.last_status = remote.status.value
    link.last_synced_at = now
    if remote.status is Normalized.unknown:
        log.warning(
            "backend %s: remote status %r of %s is not mapped (add it to status_map)",
            link.backend, remote.status_raw, link.remote_key or link.remote_id,
        )
        report.unknown_status.append(f"{link.remote_key or link.remote_id}: {remote.status_raw}")
        return
    if status_change_waiting(session, link.ticket_id, link.backend):
        # The remote status is about to be replaced by ours (a reopen, a close...): taking
        # it now would undo the local change the outbox is still delivering.
        report.kept_local += 1
        return
    ticket = session.get_one(Ticket, link.ticket_id)
    wanted = LOCAL_STATUS[remote.status]
    link.expected_status = wanted
    if remote.resolution and remote.status in (Normalized.resolved, Normalized.closed,
                                               Normalized.canceled):
        _bring_back_resolution(session, link, ticket, remote.resolution, report)
    resolution = "canceled" if remote.status is Normalized.canceled else None
    fields = dict(ticket.custom_fields or {})
    if ticket.status == wanted and fields.get("remote_resolution") == resolution:
        report.unchanged += 1
        return
    if ticket.status != wanted:
        tickets.set_status(ticket, wanted, now)
        sla_service.record_status(session, ticket.id, wanted, now, source="backend")
    if remote.status in (Normalized.resolved, Normalized.closed):
        ticket.resolved_at = ticket.resolved_at or now
    else:
        ticket.resolved_at = None
    if resolution is None:
        fields.pop("remote_resolution", None)
    else:
        fields["remote_resolution"] = resolution
    ticket.custom_fields = fields
    report.updated += 1
    session.flush()


def _bring_back_resolution(session: Session, link: RemoteLink, ticket: Ticket, text: str,
                           report: SyncReport) -> None:
    """The vendor's resolution text, once, as an internal comment (ours is never echoed)."""
    rid = links.resolution_id(text)
    known = session.scalars(
        select(RemoteCommentRef.id).where(
            RemoteCommentRef.link_id == link.id, RemoteCommentRef.remote_comment_id == rid
        )
    ).first()
    if known is not None:
        return
    comment = tickets.add_comment(
        session, ticket, f"[{link.backend} resolution]\n{text.strip()}", internal=True,
        author_email=None, source="backend",
    )
    links.remember_comment(session, link, rid, "in", comment.id)
    fields = dict(ticket.custom_fields or {})
    fields["remote_solution"] = text.strip()[:4000]
    ticket.custom_fields = fields
    report.comments += 1


def mirror_comments(session: Session, settings: Settings, link: RemoteLink,
                    comments: list[RemoteComment], report: SyncReport) -> None:
    """Remote comments we did not write, once each, as local comments: an agent's public
    answer stays public and is mailed to the ticket's participants; an internal one stays
    internal and is never mailed."""
    for rc in comments:
        if rc.op_key is not None:
            continue  # ours: the backend kept the key we created it with
        known = session.scalars(
            select(RemoteCommentRef.id).where(
                RemoteCommentRef.link_id == link.id, RemoteCommentRef.remote_comment_id == rc.id
            )
        ).first()
        if known is not None:
            continue
        ticket = session.get_one(Ticket, link.ticket_id)
        if rc.public and rc.text.strip():
            comment = _public_answer(session, settings, link, ticket, rc)
        else:
            who = f" by {rc.author}" if rc.author else ""
            comment = tickets.add_comment(
                session, ticket, f"[{link.backend} {'public' if rc.public else 'internal'}"
                f" comment{who}]\n{rc.text}", internal=True, author_email=None,
                source="backend",
            )
        links.remember_comment(session, link, rc.id, "in", comment.id)
        report.comments += 1


def _public_answer(session: Session, settings: Settings, link: RemoteLink, ticket: Ticket,
                   rc: RemoteComment) -> Comment:
    """An agent's public comment in the backend: the customer gets it by mail, like one
    written here. When it cannot be mailed (nobody to mail, a broken template) the comment
    is still kept, public, and the reason logged: the sync must not stall on it."""
    comment = tickets.add_comment(
        session, ticket, rc.text.strip(), internal=False, author_email=None, source="backend",
        now=utcnow(),
    )
    try:
        mail_comment(session, settings, ticket, comment, author_name=rc.author or "",
                     now=utcnow())
    except (NoRecipients, TemplateRenderError) as exc:
        log.warning("backend %s: public comment %s on %s not mailed: %s",
                    link.backend, rc.id, ticket.ticket_number, exc)
    return comment


async def _read(
    backend: TicketBackend[Any], ref: RemoteRef, fallback: RemoteTicket | None
) -> RemoteTicket | NotFound | None:
    try:
        return await backend.get_ticket(ref)
    except NotFound as exc:
        return exc
    except Unsupported:
        # Write-only backends (the generic webhook): the delivery's own word is all we have.
        return fallback


def _link_snapshot(session: Session, backend: str, remote_id: str) -> RemoteRef | None:
    link = links.by_remote_id(session, backend, remote_id)
    if link is None or link.state != "linked":
        return None
    return links.ref_of(link)


async def refresh_link(
    session_factory: sessionmaker[Session],
    settings: Settings,
    backend: TicketBackend[Any],
    remote_id: str,
    report: SyncReport,
    *,
    extra_comments: list[RemoteComment] | None = None,
    known: RemoteTicket | None = None,
    fallback: RemoteTicket | None = None,
    before_commit: Callable[[Session], bool] | None = None,
) -> None:
    """Re-read one remote ticket (unless `known`) and apply status and comments locally."""
    with session_factory() as session:
        ref = _link_snapshot(session, backend.name, remote_id)
    if ref is None:
        report.unlinked += 1
        if before_commit is not None:
            with session_factory() as session, session.begin():
                before_commit(session)
        return
    remote = known if known is not None else await _read(backend, ref, fallback)
    comments: list[RemoteComment] = []
    if not isinstance(remote, NotFound):
        comments = await backend.list_comments(ref)
    listed = {c.id for c in comments}
    # A webhook's copy of a comment lacks what the listing knows (e.g. that it is ours).
    comments += [c for c in extra_comments or [] if c.id not in listed]
    with session_factory() as session, session.begin():
        if before_commit is not None and before_commit(session) is False:
            return
        link = links.by_remote_id(session, backend.name, remote_id)
        if link is None or link.state != "linked":
            return
        if isinstance(remote, NotFound):
            links.mark_broken(session, link, f"remote ticket gone: {remote}")
            report.broken += 1
            return
        if remote is not None:
            apply_remote(session, link, remote, report)
        mirror_comments(session, settings, link, comments, report)


def seen_delivery(session: Session, backend: str, delivery_id: str) -> bool:
    return session.scalars(
        select(WebhookDelivery.id).where(
            WebhookDelivery.backend == backend, WebhookDelivery.delivery_id == delivery_id
        )
    ).first() is not None


async def handle_webhook(
    session_factory: sessionmaker[Session],
    settings: Settings,
    backend: TicketBackend[Any],
    headers: Mapping[str, str],
    body: bytes,
) -> dict[str, Any]:
    """Verify (WebhookSignatureError propagates), dedupe, re-read, apply. Returns a summary.

    The delivery id is recorded in the same transaction as the changes it caused, so a
    delivery that failed half-way is processed again when the vendor retries it.
    """
    event = backend.parse_webhook(headers, body)
    if not event.delivery_id:
        raise WebhookSignatureError("delivery carries no delivery id", backend=backend.name)
    with session_factory() as session:
        if seen_delivery(session, backend.name, event.delivery_id):
            return {"status": "duplicate", "delivery_id": event.delivery_id}
    report = SyncReport()
    fresh = {"ok": True}

    def claim(session: Session) -> bool:
        # A concurrent redelivery may have won since the check above.
        if seen_delivery(session, backend.name, event.delivery_id):
            fresh["ok"] = False
            return False
        session.add(WebhookDelivery(
            backend=backend.name, delivery_id=event.delivery_id, event=event.event[:64]
        ))
        session.flush()
        return True

    extra = [event.comment] if event.comment is not None else []
    try:
        if event.ticket_id is None:
            with session_factory() as session, session.begin():
                claim(session)
        else:
            fallback = None
            if event.status_raw is not None:
                fallback = RemoteTicket(
                    ref=RemoteRef(backend.name, event.ticket_id), status_raw=event.status_raw,
                    status=backend.normalize_status(event.status_raw, backend.default_statuses()),
                )
            await refresh_link(session_factory, settings, backend, event.ticket_id, report,
                               extra_comments=extra, fallback=fallback, before_commit=claim)
    except IntegrityError:
        # The same delivery, arriving twice at once: the other request's commit won.
        fresh["ok"] = False
    if not fresh["ok"]:
        return {"status": "duplicate", "delivery_id": event.delivery_id}
    return {"status": "ok", "delivery_id": event.delivery_id, "event": event.event,
            **report.as_dict()}


async def poll_backend(
    session_factory: sessionmaker[Session],
    settings: Settings,
    backend: TicketBackend[Any],
    *,
    now: datetime | None = None,
) -> SyncReport:
    """One polling pass over tickets updated since the stored cursor."""
    report = SyncReport()
    started = now or utcnow()
    with session_factory() as session:
        cursor_row = session.get(SyncCursor, backend.name)
        since = cursor_row.updated_since if cursor_row is not None else None
    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=UTC)  # SQLite hands stored UTC back without a zone
    query_since = since - POLL_OVERLAP if since is not None else None
    newest = since
    cursor: str | None = None
    while True:
        page = await backend.query_tickets(updated_since=query_since, cursor=cursor)
        for remote in page.items:
            await refresh_link(session_factory, settings, backend, remote.ref.id, report,
                               known=remote)
            if remote.updated_at is not None and (newest is None or remote.updated_at > newest):
                newest = remote.updated_at
        cursor = page.cursor
        if cursor is None:
            break
    with session_factory() as session, session.begin():
        row = session.get(SyncCursor, backend.name)
        if row is None:
            row = SyncCursor(backend=backend.name)
            session.add(row)
        row.updated_since = newest or started
        row.polled_at = started
    await check_existence(session_factory, backend, report, now=started)
    return report


def _linked_refs(session: Session, backend: str) -> list[RemoteRef]:
    rows = session.scalars(
        select(RemoteLink)
        .where(RemoteLink.backend == backend, RemoteLink.state == "linked")
        .order_by(RemoteLink.id)
    ).all()
    return [links.ref_of(row) for row in rows if row.remote_id is not None]


async def check_existence(
    session_factory: sessionmaker[Session],
    backend: TicketBackend[Any],
    report: SyncReport,
    *,
    now: datetime | None = None,
    force: bool = False,
) -> None:
    """Ask the vendor, in batches, whether the linked tickets still exist (when due).

    A poll by `updated_since` never sees a deletion. Each ticket the batch query misses is
    read back on its own before its link is marked broken."""
    interval = backend.config.existence_check_interval
    now = now or utcnow()
    with session_factory() as session:
        row = session.get(SyncCursor, backend.name)
        last = as_utc(row.checked_at) if row is not None and row.checked_at else None
        refs = _linked_refs(session, backend.name)
    if not force and (interval <= 0 or (
            last is not None and (now - last).total_seconds() < interval)):
        return
    size = max(backend.config.existence_check_batch, 1)
    for start in range(0, len(refs), size):
        batch: Sequence[RemoteRef] = refs[start:start + size]
        report.checked += len(batch)
        for gone_id in await backend.missing_tickets(batch):
            ref = next((r for r in batch if r.id == gone_id), None)
            if ref is None:
                continue
            confirmed = await _read(backend, ref, None)
            if not isinstance(confirmed, NotFound):
                continue  # the batch query missed it, the ticket itself is there
            with session_factory() as session, session.begin():
                link = links.by_remote_id(session, backend.name, ref.id)
                if link is not None and link.state == "linked":
                    links.mark_broken(session, link, f"deleted remotely: {confirmed}")
                    report.broken += 1
    with session_factory() as session, session.begin():
        row = session.get(SyncCursor, backend.name)
        if row is None:
            row = SyncCursor(backend=backend.name)
            session.add(row)
        row.checked_at = now


async def poll_all(
    session_factory: sessionmaker[Session], settings: Settings, registry: BackendRegistry
) -> dict[str, SyncReport | Exception]:
    """Poll every instance that can be polled; one failing instance does not stop the rest."""
    results: dict[str, SyncReport | Exception] = {}
    for name in registry.names():
        backend = registry.build(name)
        try:
            if not backend.supports(Cap.POLLING):
                continue
            results[name] = await poll_backend(session_factory, settings, backend)
        except Exception as exc:  # per-instance boundary: reported, the next one still runs
            log.warning("polling %s failed: %s", name, exc, exc_info=True)
            results[name] = exc
        finally:
            await backend.aclose()
    return results
