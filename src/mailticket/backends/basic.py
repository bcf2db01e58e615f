"""The `basic` backend: no external system. Every operation succeeds and does nothing.

For sites that want the push_to_backend step in a shared workflow without a remote system
(or to switch one off without editing workflows): links point at the local ticket itself.
"""

from __future__ import annotations

from typing import ClassVar

from mailticket.backends.base import (
    AttachmentDraft,
    BackendConfig,
    Cap,
    CommentDraft,
    Normalized,
    RemoteRef,
    RemoteTicket,
    TicketBackend,
    TicketDraft,
    TicketPatch,
)


class BasicConfig(BackendConfig):
    pass


class BasicBackend(TicketBackend[BasicConfig]):
    kind: ClassVar[str] = "basic"
    Config: ClassVar[type[BackendConfig]] = BasicConfig
    capabilities: ClassVar[frozenset[Cap]] = frozenset(
        {Cap.INTERNAL_NOTES, Cap.ATTACHMENTS, Cap.CLOSE, Cap.NATIVE_IDEMPOTENCY}
    )

    async def test_connection(self) -> str:
        return "basic backend: nothing to connect to"

    async def create_ticket(self, draft: TicketDraft, *, op_key: str) -> RemoteRef:
        # The op key is unique per push, so it doubles as a stable remote id.
        return RemoteRef(self.name, op_key[:32], draft.local_number)

    async def find_by_op_key(self, op_key: str) -> RemoteRef | None:
        return RemoteRef(self.name, op_key[:32])

    async def get_ticket(self, ref: RemoteRef) -> RemoteTicket:
        return RemoteTicket(ref=ref, status_raw="open", status=Normalized.open)

    async def patch_ticket(self, ref: RemoteRef, patch: TicketPatch) -> RemoteTicket:
        status = patch.status or "open"
        return RemoteTicket(ref=ref, status_raw=status, status=Normalized(status))

    async def close_ticket(self, ref: RemoteRef, resolution: str | None = None) -> RemoteTicket:
        return RemoteTicket(ref=ref, status_raw="closed", status=Normalized.closed)

    async def create_comment(self, ref: RemoteRef, comment: CommentDraft, *, op_key: str) -> str:
        return op_key[:32]

    async def create_attachment(
        self, ref: RemoteRef, attachment: AttachmentDraft, *, public: bool, op_key: str
    ) -> str:
        return op_key[:32]
