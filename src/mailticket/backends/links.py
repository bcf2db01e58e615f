"""Remote links: the local ticket's reference to its twin in a backend (service functions)."""

from __future__ import annotations

import hashlib
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailticket.backends.base import RemoteRef
from mailticket.backends.models import RemoteCommentRef, RemoteLink
from mailticket.store.outbox_models import utcnow


class LinkBroken(Exception):
    """The remote ticket is gone; nothing is sent until someone re-links or pushes anew."""


def current_link(session: Session, ticket_id: int, backend: str) -> RemoteLink | None:
    """The newest link of a ticket to an instance (a broken one is kept, and returned)."""
    return session.scalars(
        select(RemoteLink)
        .where(RemoteLink.ticket_id == ticket_id, RemoteLink.backend == backend)
        .order_by(RemoteLink.id.desc())
        .limit(1)
    ).first()


def links_of(session: Session, ticket_id: int) -> list[RemoteLink]:
    """The current link per instance of one ticket."""
    rows = session.scalars(
        select(RemoteLink).where(RemoteLink.ticket_id == ticket_id).order_by(RemoteLink.id)
    ).all()
    newest: dict[str, RemoteLink] = {}
    for row in rows:
        newest[row.backend] = row
    return list(newest.values())


def by_remote_id(session: Session, backend: str, remote_id: str) -> RemoteLink | None:
    return session.scalars(
        select(RemoteLink).where(RemoteLink.backend == backend, RemoteLink.remote_id == remote_id)
    ).first()


def ref_of(link: RemoteLink) -> RemoteRef:
    if link.remote_id is None:
        raise ValueError(f"link {link.id} has no remote id yet")
    return RemoteRef(link.backend, link.remote_id, link.remote_key, link.remote_url)


def resolution_id(text: str) -> str:
    """A remote resolution text has no id of its own: it is known by its digest."""
    return "resolution:" + hashlib.sha256(text.strip().encode()).hexdigest()[:32]


def open_pending(
    session: Session, ticket_id: int, backend: str, *, status: str | None = None
) -> RemoteLink:
    link = RemoteLink(ticket_id=ticket_id, backend=backend, state="pending",
                      expected_status=status)
    session.add(link)
    session.flush()
    return link


def record_linked(session: Session, link: RemoteLink, ref: RemoteRef) -> None:
    link.remote_id, link.remote_key, link.remote_url = ref.id, ref.key, ref.url
    link.state = "linked"
    link.broken_reason = None
    link.last_synced_at = utcnow()
    session.flush()


def mark_broken(session: Session, link: RemoteLink, reason: str) -> None:
    link.state = "broken"
    link.broken_reason = reason[:2000]
    link.updated_at = utcnow()
    session.flush()


def relink(
    session: Session, ticket_id: int, ref: RemoteRef, *, now: datetime | None = None
) -> RemoteLink:
    """Point a ticket at an existing remote ticket (the operator's repair of a broken link)."""
    link = RemoteLink(ticket_id=ticket_id, backend=ref.backend, state="pending")
    session.add(link)
    record_linked(session, link, ref)
    link.last_synced_at = now or utcnow()
    session.flush()
    return link


def remember_comment(
    session: Session, link: RemoteLink, remote_id: str, direction: str, comment_id: int | None
) -> bool:
    """Record a remote comment id once; False when it was already known."""
    known = session.scalars(
        select(RemoteCommentRef.id).where(
            RemoteCommentRef.link_id == link.id,
            RemoteCommentRef.remote_comment_id == remote_id,
        )
    ).first()
    if known is not None:
        return False
    session.add(
        RemoteCommentRef(
            link_id=link.id, remote_comment_id=remote_id, direction=direction,
            comment_id=comment_id,
        )
    )
    session.flush()
    return True
