"""Typed values that flow between pipeline stages (parse → classify → thread → workflows)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

# reopened: linked to a closed ticket and reopened it; followup: opened a ticket that
# follows up a ticket closed longer than the reopen window.
Action = Literal["created", "linked", "reopened", "followup", "duplicate", "logged", "quarantined"]
# The actions that wrote to a ticket (opened one or added to one).
WROTE_TICKETS = frozenset({"created", "linked", "reopened", "followup"})
# Mail whose From is one of our own addresses (reading/ownmail.py): an agent's copy, our
# own outgoing mail come back, a probe.
OWN_MAIL = "own_mail"
# Labels of mail that is no customer's word: no human wrote it (auto_reply, bounce) or we
# sent it ourselves (own_mail). It is logged and threaded onto its ticket, but never reopens
# nor comments on one, opens none by default or as a follow-up, and the SLA, idle and
# participant queries leave it out. (own_mail also never opens one through a workflow.)
AUTOMATED_LABELS = ("auto_reply", "bounce", OWN_MAIL)


@dataclass(frozen=True, slots=True)
class AttachmentPart:
    filename: str
    content_type: str
    size: int
    payload: bytes = field(repr=False)
    # Position among the message's attachments, stable for the same bytes: lets the API
    # cut the attachment back out of the stored raw message.
    index: int = 0
    content_id: str | None = None
    inline: bool = False
    # The payload's SHA-256 (hex), when the parse thread computed it for the attachment row.
    sha256: str | None = None


@dataclass(frozen=True, slots=True)
class EmbeddedMessage:
    """Headers of a message carried inside this one (DSN original, forwarded rfc822)."""

    message_id: str | None
    in_reply_to: tuple[str, ...] = ()
    references: tuple[str, ...] = ()
    subject: str = ""
    from_address: str = ""


@dataclass(slots=True)
class ParsedEmail:
    # Normalised "<local@domain>"; synthetic (derived from the bytes) when the header is absent
    # or unusable, so a re-delivery of the same bytes is still recognised.
    message_id: str
    message_id_synthetic: bool
    in_reply_to: list[str]  # normalised ids, header order
    references: list[str]  # normalised ids, oldest first (header order)
    subject: str  # decoded (RFC 2047), unfolded
    from_address: str  # bare address, lower-cased; "" when absent
    from_name: str
    to: list[str]
    cc: list[str]
    reply_to: list[str]
    date: datetime | None  # timezone-aware UTC, None when missing or unparseable
    # lower-cased header name -> every value, decoded to str, in order
    headers: dict[str, list[str]]
    text: str  # readable text: text/plain, else text extracted from HTML
    html: str | None
    attachments: list[AttachmentPart]
    content_type: str  # top-level, lower-case, e.g. "multipart/report"
    report_type: str | None  # multipart/report's report-type parameter, lower-case
    part_types: list[str]  # every MIME part's content type, lower-case, walk order
    return_path: str | None  # "" for the null reverse-path "<>", None when absent
    embedded: list[EmbeddedMessage]
    defects: list[str]
    raw_size: int
    # The raw bytes' SHA-256 (hex), when the parse thread computed it for the raw row.
    raw_sha256: str | None = None
    # What the sender wrote now (the reply without quoted mail and signature), when the
    # parse thread split it ahead for a message likely to become a ticket comment.
    reply: str | None = None
    # When it arrived by its own headers (our MTA's Received stamp, else Date), when the
    # parse thread read it ahead (`pipeline.received_at_of`); None: not read, or neither.
    received: datetime | None = None

    def header(self, name: str) -> str | None:
        values = self.headers.get(name.lower())
        return values[0] if values else None


@dataclass(frozen=True, slots=True)
class RuleHit:
    rule: str
    label: str
    weight: float
    reason: str


@dataclass(frozen=True, slots=True)
class Classification:
    label: str
    confidence: float
    hits: tuple[RuleHit, ...] = ()

    @property
    def reasons(self) -> list[str]:
        return [f"{h.rule}: {h.reason}" for h in self.hits if h.label == self.label]

    @property
    def is_automated(self) -> bool:
        """No customer's word (automatic mail, or our own): never auto-answered, never
        reopens a ticket."""
        return self.label in AUTOMATED_LABELS


@dataclass(frozen=True, slots=True)
class ThreadMatch:
    """Which existing ticket a message belongs to, and the signal that said so."""

    ticket_id: int
    ticket_number: str
    matched_by: str  # in_reply_to | references | referenced_by | embedded | subject
    matched_value: str


# Events the scheduler raises for tickets; workflows trigger on them (`event_trigger`).
SLA_WARNING, SLA_BREACHED, TICKET_IDLE = "sla_warning", "sla_breached", "ticket_idle"
EVENT_KINDS = (SLA_WARNING, SLA_BREACHED, TICKET_IDLE)


@dataclass(frozen=True, slots=True)
class TicketEvent:
    """Something that happened to a ticket with time, not with mail: an SLA threshold
    crossed, or a ticket the customer left without an answer for N days."""

    kind: str  # one of EVENT_KINDS
    ticket_id: int
    # first_response | resolution (SLA events); the quiet period, e.g. "7d" (ticket_idle)
    target: str
    at: datetime  # when the threshold was crossed / the quiet period began
    policy: str | None = None  # the SLA policy, for SLA events
    # ticket_idle: the `days` of the workflow trigger that asked for it
    idle_days: float | None = None

    @property
    def trigger(self) -> str:
        """How an execution row names it: `sla_breached:first_response`, `ticket_idle:7d`."""
        return f"{self.kind}:{self.target}" if self.target else self.kind


@dataclass(slots=True)
class Outcome:
    source: str
    message_id: str | None
    action: Action
    ticket_number: str | None = None
    ticket_id: int | None = None
    matched_by: str | None = None
    classification: str | None = None
    confidence: float | None = None
    error: str | None = None
    email_log_id: int | None = None
    workflows: list[str] = field(default_factory=list)
    # Every ticket the message opened or joined, ticket_number's first (multi-ticket).
    ticket_numbers: list[str] = field(default_factory=list)
    # The sender failed validation under the deployment's policy (the `spoofed?` label).
    suspect: bool = False

    def as_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "message_id": self.message_id,
            "action": self.action,
            "ticket_number": self.ticket_number,
            "matched_by": self.matched_by,
            "classification": self.classification,
            "confidence": self.confidence,
            "error": self.error,
            "tickets": list(self.ticket_numbers),
            "suspect": self.suspect,
        }
