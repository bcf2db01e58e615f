"""Response and request bodies; they are also what the OpenAPI document describes."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from mailticket.conversation.participants import ADDRESS_PATTERN
from mailticket.settings import Priority


def _utc(value: datetime) -> datetime:
    # SQLite hands back naive values that are UTC; the seed's examples end in "Z" everywhere.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


UtcDatetime = Annotated[datetime, AfterValidator(_utc)]


def _input_utc(value: datetime) -> datetime:
    # An instant near datetime.min/max can leave the calendar when moved to UTC (year 1 at
    # +01:00): it is clamped to the end it fell off, a valid bound for a filter.
    try:
        return _utc(value)
    except OverflowError:
        end = datetime.min if value.year == 1 else datetime.max
        return end.replace(tzinfo=UTC)


# RFC 3339 date-time, as the document declares (format: date-time). Pydantic alone would also
# take "0.5" or 1 as epoch seconds, or a date without a time.
RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})", re.ASCII
)


def _rfc3339(value: Any) -> Any:
    if isinstance(value, datetime) or (isinstance(value, str) and RFC3339.fullmatch(value)):
        return value
    raise ValueError("expected an RFC 3339 date-time, e.g. 2025-12-15T10:00:00Z")


InputDatetime = Annotated[datetime, BeforeValidator(_rfc3339), AfterValidator(_input_utc)]


def _json_integer(value: Any) -> Any:
    # JSON true and "5" are not integers; pydantic's lax mode would read them as 1 and 5.
    if isinstance(value, bool | str):
        raise ValueError("expected an integer")
    return value


# The bounds come before the validator: after it, pydantic would not show them in the schema.
UserId = Annotated[int, Field(ge=0, le=2_147_483_647), BeforeValidator(_json_integer)]

TicketStatus = Literal["open", "pending", "resolved", "closed", "merged"]
SettableStatus = Literal["open", "pending", "resolved", "closed"]
# Fields a customer-scoped token's answers leave out (api/customer_access.py).
STAFF_ONLY = "Left out (absent, not null) for a customer-scoped token: staff only."


class _Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


def _nul_at(value: Any, loc: str) -> str | None:
    """Where in a JSON value a string holds NUL, or None."""
    if isinstance(value, str):
        return loc if "\x00" in value else None
    items: list[tuple[str, Any]] = []
    if isinstance(value, dict):
        items = [(f"{loc}.{k}", k) for k in value] + [(f"{loc}.{k}", v) for k, v in value.items()]
    elif isinstance(value, list):
        items = [(f"{loc}[{i}]", v) for i, v in enumerate(value)]
    for where, item in items:
        found = _nul_at(item, where)
        if found is not None:
            return found
    return None


class _In(BaseModel):
    """Every request body: unknown fields are refused, and so is NUL in any string of a
    field, at any depth (PostgreSQL text cannot hold it; the gate refuses it in the URL).
    Nested models check their own fields; fields a model ignores are never stored."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _refuse_nul(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for name, field in cls.model_fields.items():
                # A nested body checks its own fields (and skips the ones it ignores).
                nested = isinstance(field.annotation, type) and issubclass(field.annotation, _In)
                where = _nul_at(data[name], name) if name in data and not nested else None
                if where is not None:
                    raise ValueError(f"{where} holds a NUL character (\\u0000), not allowed")
        return data


class EmailOut(_Out):
    id: int
    email_message_id: str
    email_from: str
    email_subject: str | None
    email_received_at: UtcDatetime | None
    is_reply: bool
    created_at: UtcDatetime
    direction: Literal["in", "out"] | str
    # Staff only (api/customer_access.py): absent, not null, for a customer-scoped token.
    matched_by: str | None = Field(default=None, description=f"How it was threaded. {STAFF_ONLY}")
    classification: str | None = Field(default=None, description=f"The classifier's label. {STAFF_ONLY}")


PAGED_NEXT = (
    "Pass as `cursor` for the next page; null on the last page. Present only when the "
    "request gave `limit` or `cursor`: an unpaged answer keeps the seed's shape."
)


class TicketEmails(BaseModel):
    ticket_id: int
    ticket_number: str
    emails: list[EmailOut]
    next_cursor: str | None = Field(default=None, description=PAGED_NEXT)


class TicketBrief(_Out):
    id: int
    ticket_number: str
    subject: str
    status: str
    created_at: UtcDatetime


class TicketsByEmail(BaseModel):
    email_address: str
    tickets: list[TicketBrief]
    next_cursor: str | None = Field(default=None, description=PAGED_NEXT)


class TicketSummary(TicketBrief):
    priority: str
    customer_id: int | None
    assigned_to_user_id: int | None = Field(default=None, description=STAFF_ONLY)
    tags: list[str] = Field(default_factory=list, description=STAFF_ONLY)
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
    author_email: str | None = Field(
        description="Who wrote it. A customer-scoped token sees its own people's addresses, "
        "the support address for whatever the team wrote, and null for its own comment "
        "written without `author_email`.",
    )
    is_internal: bool
    source: str = Field(
        description="Who wrote it: `email` (the customer, by mail), `customer` (the customer, "
        "through a customer-scoped token; never mailed), `api` (an agent: the API or the "
        "thread view), `backend` (an external backend), `system`.",
    )
    email_log_id: int | None
    created_at: UtcDatetime


class TicketDetail(TicketSummary):
    description: str
    custom_fields: dict[str, Any] = Field(default_factory=dict, description=STAFF_ONLY)
    merged_into_id: int | None
    resolved_at: UtcDatetime | None
    # When it was last resolved or closed (the reopen window runs from here).
    closed_at: UtcDatetime | None = None
    # The closed ticket this one follows up, and the tickets that follow this one up.
    followup_of: TicketBrief | None = None
    followups: list[TicketBrief] = Field(default_factory=list)
    comments: list[CommentOut] = Field(
        description="Oldest first. A customer-scoped token gets the public comments only: "
        "internal notes (`is_internal`) are never shown to it.",
    )


class TicketPatch(_In):
    status: SettableStatus | None = None
    priority: Priority | None = None
    assigned_to_user_id: UserId | None = None
    tags: list[Annotated[str, Field(min_length=1, max_length=64)]] | None = Field(
        default=None, max_length=50
    )


Address = Annotated[str, Field(
    min_length=3, max_length=320, pattern=ADDRESS_PATTERN,
    description="A bare address, e.g. eve@customer.example.",
)]


class CommentIn(_In):
    body: str = Field(min_length=1, max_length=100_000)
    visibility: Literal["public", "internal"] = "public"
    author_email: str | None = Field(default=None, max_length=320)
    author_name: str | None = Field(
        default=None, max_length=200,
        description="Shown as the From display name of the mail (AGENT_REPLY_SHOW_NAME).",
    )
    cc: list[Address] = Field(
        default_factory=list, max_length=50,
        description="Further recipients of this reply only, like a mail client's Cc.",
    )


class ParticipantIn(_In):
    address: Address
    name: str | None = Field(default=None, max_length=200)


class ParticipantOut(BaseModel):
    address: str
    name: str
    source: Literal["requester", "mail", "added"]


class ParticipantList(BaseModel):
    ticket_id: int
    ticket_number: str
    participants: list[ParticipantOut]
    removed: list[str] = Field(description="Addresses removed from the ticket: never mailed.")


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


class WorkflowValidateIn(_In):
    yaml: str = Field(max_length=200_000, description="The text of one workflow file.")


class WorkflowValidation(BaseModel):
    valid: bool
    issues: list[WorkflowIssueOut]
    workflows: list[str]


# A header field's value: one line, no NUL. Every character Python's email package takes
# for a line break (str.splitlines) is out, not only CR and LF.
ONE_LINE = r"^[^\r\n\x0b\x0c\x1c-\x1e\x85\u2028\u2029\x00]*$"


class TestEmailData(_In):
    # The seed's test endpoint ignores fields it does not know, as it always has.
    model_config = ConfigDict(extra="ignore")

    message_id: str | None = Field(default=None, max_length=998, pattern=ONE_LINE)
    subject: str = Field(default="", max_length=998, pattern=ONE_LINE)
    from_address: str = Field(min_length=3, max_length=320, pattern=ONE_LINE)
    body: str = Field(default="", max_length=200_000)
    received_at: InputDatetime | None = None
    in_reply_to: str | None = Field(default=None, max_length=998, pattern=ONE_LINE)
    references: str | None = Field(default=None, max_length=10_000, pattern=ONE_LINE)


class TestEmailIn(_In):
    model_config = ConfigDict(extra="ignore")

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


# A host name as the API takes it: LDH labels, at least two of them (a single label is
# nobody's mail domain). The directory normalises (lower case, IDNA) and also refuses shared
# mail domains and public suffixes; those are 422 with the reason.
_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
DOMAIN = rf"^({_LABEL}\.)+{_LABEL}$"
ADDRESS_SPEC = rf"^[A-Za-z0-9._%+=!#$&'*/?^`{{|}}~-]{{1,64}}@({_LABEL}\.)+{_LABEL}$"


# A JSON integer (1.0 is one, as JSON Schema counts; true and "5" are not).
CustomerNumber = Annotated[int, Field(ge=1, le=2_147_483_647), BeforeValidator(_json_integer)]


class ContactIn(_In):
    # RFC 5321's 254 characters also keep the domain part within DNS's 253.
    address: str = Field(max_length=254, pattern=ADDRESS_SPEC)
    name: str | None = Field(default=None, max_length=500)


class CustomerIn(_In):
    """A customer as POST and PUT take it: the same rules as an item of CUSTOMERS_PATH."""

    key: str = Field(
        pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$",
        description="Stable name that workflows and SLA policies use.",
    )
    name: str = Field(min_length=1, max_length=500)
    id: CustomerNumber | None = Field(
        default=None,
        description="Pin the numeric id tickets carry (POST only; PUT must repeat the id or omit it).",
    )
    # Strict: JSON 0/1 or "true" are not booleans, for the document either.
    active: bool = Field(default=True, strict=True)
    domains: list[Annotated[str, Field(max_length=253, pattern=DOMAIN)]] = Field(
        default_factory=list, max_length=500, json_schema_extra={"uniqueItems": True},
        description="The domain covers its subdomains; compared case-insensitively.",
    )
    contacts: list[ContactIn] = Field(
        default_factory=list, max_length=2000, json_schema_extra={"uniqueItems": True},
        description="Exact addresses; they map even on a shared domain such as gmail.com.",
    )


class ContactOut(BaseModel):
    address: str
    name: str | None


class CustomerOut(BaseModel):
    id: int
    key: str
    name: str
    active: bool
    source: Literal["yaml", "api"] | str
    domains: list[str]
    contacts: list[ContactOut]


class CustomerList(BaseModel):
    read_only: bool = Field(
        description="True when CUSTOMERS_PATH is the source of truth: writes answer 409."
    )
    source: str = Field(description="`database`, or the CUSTOMERS_PATH file.")
    customers: list[CustomerOut]


TokenScope = Literal["read", "write", "admin"]
TokenState = Literal[
    "active", "revoked", "suspended: customer deactivated", "suspended: customer gone"
]


class TokenIn(_In):
    # Something besides blanks, and no NUL (which the pattern must say itself: openapi.py
    # adds its no-NUL pattern only to strings without one).
    name: str = Field(
        min_length=1, max_length=200, pattern=r"^[^\x00]*[^\s\x00][^\x00]*$",
        description="Who or what uses it.",
    )
    scope: TokenScope
    customer: Annotated[str, Field(min_length=1, max_length=64)] | CustomerNumber | None = Field(
        default=None,
        description="Scope the token to one customer (its key or id): it sees that "
        "customer's tickets, mail and public comments only. Such a token is read or write.",
    )


class TokenOut(_Out):
    id: int
    name: str
    scope: TokenScope
    customer_id: int | None = Field(description="Set: the token is scoped to this customer.")
    state: TokenState = Field(
        description="What a use of the token meets: `active`; `revoked` (for good); "
        "`suspended: …` (a customer-scoped token whose customer is deactivated or gone: "
        "refused with 401 until the customer is active again)."
    )
    created_at: UtcDatetime
    last_used_at: UtcDatetime | None = Field(description="To the minute.")
    revoked_at: UtcDatetime | None


class TokenCreated(TokenOut):
    token: str = Field(
        description="The bearer token. Shown in this answer only: only its hash is stored."
    )


class TokenList(BaseModel):
    tokens: list[TokenOut]
