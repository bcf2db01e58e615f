"""Response and request bodies; they are also what the OpenAPI document describes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from mailticket.settings import Priority


def _utc(value: datetime) -> datetime:
    # SQLite hands back naive values that are UTC; the seed's examples end in "Z" everywhere.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


UtcDatetime = Annotated[datetime, AfterValidator(_utc)]


def _input_utc(value: datetime) -> datetime:
    # A naive input means UTC; an aware one near datetime.min/max can overflow on conversion.
    try:
        return _utc(value)
    except OverflowError:
        raise ValueError("date is out of range") from None


InputDatetime = Annotated[datetime, AfterValidator(_input_utc)]

TicketStatus = Literal["open", "pending", "resolved", "closed", "merged"]
SettableStatus = Literal["open", "pending", "resolved", "closed"]


class _Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class EmailOut(_Out):
    id: int
    email_message_id: str
    email_from: str
    email_subject: str | None
    email_received_at: UtcDatetime | None
    is_reply: bool
    created_at: UtcDatetime
    direction: Literal["in", "out"] | str
    matched_by: str | None
    classification: str | None


class TicketEmails(BaseModel):
    ticket_id: int
    ticket_number: str
    emails: list[EmailOut]


class TicketBrief(_Out):
    id: int
    ticket_number: str
    subject: str
    status: str
    created_at: UtcDatetime


class TicketsByEmail(BaseModel):
    email_address: str
    tickets: list[TicketBrief]


class TicketSummary(TicketBrief):
    priority: str
    customer_id: int | None
    assigned_to_user_id: int | None
    tags: list[str]
    requester_email: str | None
    updated_at: UtcDatetime


class TicketPage(BaseModel):
    tickets: list[TicketSummary]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null on the last page."
    )


class CommentOut(_Out):
    id: int
    body: str
    author_email: str | None
    is_internal: bool
    source: str
    email_log_id: int | None
    created_at: UtcDatetime


class TicketDetail(TicketSummary):
    description: str
    custom_fields: dict[str, Any]
    merged_into_id: int | None
    resolved_at: UtcDatetime | None
    comments: list[CommentOut]


class TicketPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: SettableStatus | None = None
    priority: Priority | None = None
    assigned_to_user_id: int | None = Field(default=None, ge=0, le=2_147_483_647)
    tags: list[Annotated[str, Field(min_length=1, max_length=64)]] | None = Field(
        default=None, max_length=50
    )


class CommentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    body: str = Field(min_length=1, max_length=100_000)
    visibility: Literal["public", "internal"] = "public"
    author_email: str | None = Field(default=None, max_length=320)


class AttachmentOut(_Out):
    id: int
    email_log_id: int
    ticket_id: int | None
    part_index: int
    filename: str
    content_type: str
    size: int
    sha256: str
    download_url: str


class AttachmentList(BaseModel):
    email_id: int
    attachments: list[AttachmentOut]


class QuarantineOut(_Out):
    id: int
    raw_message_id: int
    source: str | None
    message_id: str | None
    reason: str
    error_type: str | None
    status: str
    attempts: int
    size: int
    created_at: UtcDatetime
    updated_at: UtcDatetime


class QuarantineDetail(QuarantineOut):
    sha256: str
    # The traceback is ops data kept in the database; it is only shown to admin tokens.
    traceback: str | None


class QuarantineList(BaseModel):
    entries: list[QuarantineOut]


class OutcomeOut(BaseModel):
    source: str
    message_id: str | None
    action: str
    ticket_id: int | None
    ticket_number: str | None
    matched_by: str | None
    classification: str | None
    confidence: float | None
    error: str | None


class StepOut(BaseModel):
    action: str
    params: dict[str, Any]
    line: int
    continue_on_error: bool


class WorkflowOut(BaseModel):
    name: str
    description: str | None
    triggers: list[str]
    confidence_threshold: float
    order: int
    stop: bool
    enabled: bool
    file: str
    line: int
    steps: list[StepOut]


class WorkflowList(BaseModel):
    sources: list[str]
    workflows: list[WorkflowOut]


class WorkflowIssueOut(BaseModel):
    file: str
    line: int
    reason: str


class WorkflowValidateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    yaml: str = Field(max_length=1_000_000, description="The text of one workflow file.")


class WorkflowValidation(BaseModel):
    valid: bool
    issues: list[WorkflowIssueOut]
    workflows: list[str]


class TestEmailData(BaseModel):
    message_id: str | None = Field(default=None, max_length=998)
    subject: str = Field(default="", max_length=998)
    from_address: str = Field(min_length=3, max_length=320)
    body: str = Field(default="", max_length=1_000_000)
    received_at: InputDatetime | None = None
    in_reply_to: str | None = Field(default=None, max_length=998)
    references: str | None = Field(default=None, max_length=10_000)


class TestEmailIn(BaseModel):
    email_data: TestEmailData


class TestEmailOut(BaseModel):
    ticket_id: int | None
    ticket_number: str | None
    created: bool
    linked: bool
    action: str
    matched_by: str | None
    classification: str | None
    message_id: str | None
    error: str | None


class Health(BaseModel):
    status: str
    detail: str | None = None
