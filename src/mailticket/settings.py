"""Runtime configuration, read once at start-up from the environment and `.env`.

Nothing in the package reads the environment at import time: `load_settings()` builds one
`Settings` value at start-up and it is passed down explicitly.
"""

from __future__ import annotations

import enum
import json
import re
from datetime import timedelta
from email.utils import parseaddr
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError


class Priority(enum.StrEnum):
    low = "low"
    normal = "normal"
    high = "high"
    critical = "critical"


class SubjectMatchPolicy(enum.StrEnum):
    any = "any"
    participants = "participants"


class UnmatchedAction(enum.StrEnum):
    log = "log"
    create_ticket = "create_ticket"


class SmtpTls(enum.StrEnum):
    ssl = "ssl"  # implicit TLS (port 465)
    starttls = "starttls"  # upgrade required; a server without STARTTLS is an error
    plain = "plain"  # no TLS at all: only when chosen explicitly


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$", re.IGNORECASE)
_DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


# The password in a URL (user:password@host) never goes into an error message.
_URL_PASSWORD = re.compile(r"(://[^:/@\s]*:)[^@\s]+(?=@)")


def _mask_password(text: str) -> str:
    return _URL_PASSWORD.sub(r"\1***", text)


def parse_duration(text: str) -> timedelta:
    """ "3h", "90m", "45s", "2d" or plain seconds; ValueError otherwise."""
    m = _DURATION.match(text)
    if m is None:
        raise ValueError(f"not a duration: {text!r} (e.g. 30d, 12h, 90m, 45s)")
    return timedelta(seconds=float(m.group(1)) * _DURATION_UNITS[m.group(2).lower()])


class ConfigError(Exception):
    """Raised at start-up when a setting is invalid; the message names the variable."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=False
    )

    # --- the seed's settings -------------------------------------------------------------
    ticket_enabled: bool = True
    ticket_email_integration: bool = True
    ticket_auto_assign: bool = False
    ticket_default_assignee_id: int | None = None
    ticket_default_priority: Priority = Priority.normal
    email_workflows_enabled: bool = True

    # --- storage and workflows -------------------------------------------------------------
    database_url: str = "sqlite:///mailticket.db"
    # PostgreSQL only, in seconds: how soon a connection gives up on a server that does not
    # answer (store.db.Liveness says why); 0 leaves one to the OS. A parameter of the same
    # name in DATABASE_URL's query string (?connect_timeout=5; tcp_user_timeout there in libpq's
    # milliseconds) wins over its setting.
    db_connect_timeout: int = Field(default=10, ge=0)
    db_keepalives_idle: int = Field(default=30, ge=0)
    db_keepalives_interval: int = Field(default=10, ge=0)
    db_keepalives_count: int = Field(default=3, ge=0)
    db_tcp_user_timeout: int = Field(default=30, ge=0)
    # The longest one statement, commit or ping waits for PostgreSQL's answer (seconds; 0:
    # for ever): a server that keeps the connection open and never answers is then an
    # outage like a stopped one. Above the slowest statement the service runs.
    db_answer_timeout: float = Field(default=60.0, ge=0)
    workflows_path: Path | None = None
    classification_rules_path: Path | None = None
    ticket_timezone: str = "UTC"
    ticket_subject_match: SubjectMatchPolicy = SubjectMatchPolicy.any
    email_unmatched_action: UnmatchedAction = UnmatchedAction.log
    # A customer's reply to a resolved or closed ticket reopens it within this long of its
    # closing ("14d", "36h", seconds); later, it opens a follow-up ticket linked to the old
    # one. "0": every such reply opens a follow-up.
    ticket_reopen_window: timedelta = Field(default=timedelta(days=14), ge=timedelta(0))
    # Messages per transaction when ingesting in bulk, and the most raw bytes one batch may
    # hold in memory. A batch is written in one go; when a message in it fails, the batch
    # is redone one message at a time, so one failure never loses its neighbours.
    ingest_batch_size: int = Field(default=500, ge=1, le=10_000)
    ingest_batch_bytes: int = Field(default=32 * 1024 * 1024, ge=1024)
    # Domain used in Message-IDs of mail we generate (replies, synthetic ids).
    mail_domain: str = "mailticket.local"
    # Addresses that belong to us: mail from them is never answered nor treated as customer mail.
    # A JSON list, one address, or a comma-separated list (NoDecode: read by the validator).
    own_addresses: Annotated[list[str], NoDecode] = Field(default_factory=list)

    # --- outgoing mail (auto-replies through the outbox) -------------------------------------
    smtp_host: str = "localhost"
    # None: the usual port for SMTP_TLS (465 ssl, 587 starttls, 25 plain).
    smtp_port: int | None = Field(default=None, ge=1, le=65535)
    smtp_tls: SmtpTls = SmtpTls.starttls
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_timeout: float = Field(default=30.0, gt=0)
    # Our support address, "support@example.com" or "Support <support@example.com>";
    # None: support@MAIL_DOMAIN. Always counted as one of our own addresses.
    mail_from: str | None = None
    templates_path: Path | None = None  # None: the project's templates/email
    auto_reply_enabled: bool = True
    auto_reply_rate_limit: int = Field(default=10, ge=0)
    # "3h", "90m", "45s", "2d" or plain seconds.
    auto_reply_rate_window: timedelta = timedelta(hours=3)
    # Mail received longer ago than this is never answered (a mailbox full of old unread
    # mail, a Maildir restored from backup); "0" answers mail of any age.
    auto_reply_max_age: timedelta = timedelta(days=1)
    # --- agents' answers (issue 10; see conversation/agent_reply.py) ---------------------------
    # Quote the customer's last message below the reply marker in an agent's answer.
    agent_reply_quote: bool = True
    # Language of that marker line (ISO 639-1; the quote stripping knows every one).
    agent_reply_language: str = Field(default="en", min_length=2, max_length=8)
    # From: "<agent name> <support address>" when the comment names its author;
    # false: always MAIL_FROM's own name.
    agent_reply_show_name: bool = True
    # Files one answer may carry, and their total size in bytes (413 above it). A request
    # is also bound by API_MAX_BODY_BYTES.
    reply_max_attachments: int = Field(default=10, ge=0, le=100)
    reply_max_attachment_bytes: int = Field(default=4 * 1024 * 1024, ge=0)
    # Delivered outbox items are deleted this long after delivery ("30d", "12h", seconds);
    # 0 keeps them forever. Dead items are kept until an operator retries or removes them.
    outbox_retention: timedelta = timedelta(days=30)

    # --- live sources (`mailticket run`; see mailticket/live/) --------------------------------
    # YAML list of mailboxes (keys as in live/config.py); IMAP_* adds one more mailbox.
    mailboxes_file: Path | None = None
    imap_host: str | None = None
    imap_port: int | None = Field(default=None, ge=1, le=65535)  # None: 993 ssl, 143 otherwise
    imap_user: str | None = None
    imap_password: SecretStr | None = None
    imap_oauth2_token: SecretStr | None = None  # AUTHENTICATE XOAUTH2 instead of LOGIN
    imap_tls: Literal["ssl", "starttls", "plain"] = "ssl"
    imap_allow_plain: bool = False  # IMAP_TLS=plain to a host other than loopback
    imap_folder: str = "INBOX"
    imap_after: str = "seen"  # seen | move:<folder> | delete
    imap_poll_interval: float = Field(default=60.0, gt=0)  # seconds; IDLE servers push
    imap_timeout: float = Field(default=30.0, gt=0)  # connect and per-command
    # "host:port": `mailticket run` takes pushes from the mail server (Dovecot's
    # push_notification ox driver) and drains the matching mailbox at once (live/push.py).
    imap_push_listen: str | None = None
    # The push must carry this (the password of the URL's userinfo, or a Bearer token).
    imap_push_secret: SecretStr | None = None
    maildir_path: Path | None = None
    lmtp_listen: str | None = None  # "host:port"; off by default
    max_message_size: int = Field(default=25 * 1024 * 1024, ge=1024)
    # LMTP/SMTP receiver: message bytes in flight over all sessions (read, waiting for or in
    # their commit; a message's parse costs about as much again); past it a session waits
    # for room at most LMTP_INFLIGHT_WAIT seconds, then answers 451 4.3.1. 0: no budget.
    lmtp_inflight_bytes: int = Field(default=64 * 1024 * 1024, ge=0)
    lmtp_inflight_wait: float = Field(default=60.0, gt=0)
    log_format: Literal["text", "json"] = "text"
    api_listen: str | None = None  # "host:port": `mailticket run` also serves the HTTP API
    # The seed's POST /api/v1/test/email-to-ticket: feeds a synthetic mail through the pipeline.
    api_test_endpoint_enabled: bool = False
    # Page size cap of GET /api/v1/tickets (the `limit` parameter).
    api_max_page_size: int = Field(default=200, ge=1, le=1000)
    # Most rows a thread (GET /api/v1/tickets/{id}/emails) or an address's tickets (by-email)
    # answers without `limit`; 0: no bound. The seed promises the whole list there and
    # clients written against it cannot page, so the default keeps that promise; an operator
    # who would rather refuse a huge unpaged answer (422 asking for pages) sets a bound.
    api_max_unpaged: int = Field(default=0, ge=0, le=1_000_000)
    # Largest request body the HTTP API reads (413 above it), webhook deliveries included.
    api_max_body_bytes: int = Field(default=5 * 1024 * 1024, ge=1024)

    # --- external ticket backends (see mailticket/backends/) ----------------------------------
    # YAML `{instances: {name: {kind: jira, ...}}}`; None: no backends configured.
    backends_file: Path | None = None
    backend_delivery_interval: float = Field(default=15.0, gt=0)  # seconds between outbox drains
    backend_poll_interval: float = Field(default=300.0, gt=0)  # seconds between status polls
    backend_max_attempts: int = Field(default=12, ge=1)  # then the operation is dead-lettered

    # --- customers, sender validation, SLAs (issue 11; see customers/, reading/senderauth/,
    # sla/). Lists take JSON (`["a","b"]`) or commas (`a,b`). ---------------------------------
    # YAML of customers; set: the file is the truth and the API cannot change customers.
    customers_path: Path | None = None
    # Free-mail / shared domains that never map to a customer by domain (`brand.*` covers
    # every public suffix). None: the built-in list; _EXTRA adds to whichever is in force.
    customer_shared_domains: Annotated[list[str] | None, NoDecode] = None
    customer_shared_domains_extra: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # authserv-ids of our own receiving MTA: only its Authentication-Results are believed.
    sender_auth_authserv_ids: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Received headers our own hosts add (MX, filters); an Authentication-Results below the
    # last of them was written by the sender, and that Received names the connecting IP.
    sender_auth_mta_hops: int = Field(default=1, ge=1, le=20)
    # Check DKIM/SPF/DMARC ourselves: off | fallback (when no trusted header) | always.
    sender_auth_verify: Literal["off", "fallback", "always"] = "off"
    # Which mail is `spoofed?`: off | dmarc (fails and its domain asks quarantine/reject) |
    # fail (any fail) | no_pass (anything but a pass).
    sender_auth_policy: Literal["off", "dmarc", "fail", "no_pass"] = "fail"
    # Resolvers for our own checks, "ip" or "ip:port"; empty: the system's.
    sender_auth_dns_servers: Annotated[list[str], NoDecode] = Field(default_factory=list)
    sender_auth_dns_timeout: float = Field(default=5.0, gt=0, le=60)
    # YAML of calendars and SLA policies; None: no SLAs.
    sla_path: Path | None = None
    # Seconds between SLA sweeps (sla_warning / sla_breached / ticket_idle events).
    sla_sweep_interval: float = Field(default=60.0, gt=0)
    # Where `notify` reaches an assignee: JSON `{"5": "anna@example.com"}` (user id -> address).
    assignee_addresses: dict[int, str] = Field(default_factory=dict)

    @field_validator(
        "customer_shared_domains", "customer_shared_domains_extra", "sender_auth_authserv_ids",
        "sender_auth_dns_servers", mode="before",
    )
    @classmethod
    def _list_or_commas(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [part.strip() for part in text.split(",") if part.strip()]
        return value

    @field_validator("customer_shared_domains", "customer_shared_domains_extra")
    @classmethod
    def _shared_domain_entries(cls, value: list[str] | None) -> list[str] | None:
        from mailticket.customers.shared import SharedDomains

        if value is not None:
            SharedDomains(value)  # raises a ValueError naming the bad entry
        return value

    @field_validator("assignee_addresses", mode="before")
    @classmethod
    def _assignee_json(cls, value: Any) -> Any:
        return json.loads(value) if isinstance(value, str) else value

    @field_validator("assignee_addresses")
    @classmethod
    def _assignee_addresses(cls, value: dict[int, str]) -> dict[int, str]:
        out = {}
        for user, address in value.items():
            bare = parseaddr(address)[1].strip().lower()
            if "@" not in bare:
                raise ValueError(f"user {user}: {address!r} is not an address")
            out[user] = bare
        return out

    @field_validator("customers_path", "sla_path")
    @classmethod
    def _issue11_path_exists(cls, value: Path | None) -> Path | None:
        if value is not None and not value.exists():
            raise ValueError(f"{value} does not exist")
        return value

    @field_validator("ticket_timezone")
    @classmethod
    def _valid_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    @field_validator("database_url")
    @classmethod
    def _valid_database_url(cls, value: str) -> str:
        if not value.startswith(("sqlite", "postgresql", "postgres://")):
            raise ValueError("must be a sqlite:// or postgresql:// URL")
        try:
            url = make_url(value)
        except (ArgumentError, ValueError) as exc:
            raise ValueError(f"is not a valid URL ({_mask_password(str(exc))})") from None
        # psycopg2 is the driver mailticket installs; SQLAlchemy's default for a bare
        # postgresql:// would be psycopg 3, which is not there.
        if url.drivername in ("postgresql", "postgres"):
            value = url.set(drivername="postgresql+psycopg2").render_as_string(
                hide_password=False
            )
        return value

    @field_validator(
        "auto_reply_rate_window", "auto_reply_max_age", "outbox_retention",
        "ticket_reopen_window", mode="before"
    )
    @classmethod
    def _duration(cls, value: Any) -> Any:
        if isinstance(value, str) and _DURATION.match(value):
            return parse_duration(value)
        return value

    @field_validator("own_addresses", mode="before")
    @classmethod
    def _address_list(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        text = value.strip()
        if text.startswith("["):
            try:
                return json.loads(text)
            except json.JSONDecodeError as exc:
                raise ValueError(f"is not a JSON list of addresses ({exc.msg})") from None
        addresses = []
        for item in (a.strip() for a in text.split(",")):
            address = parseaddr(item)[1] if item else ""
            if item and "@" not in address:
                raise ValueError(
                    f"{item!r} is not an address; give one address, a comma-separated"
                    ' list, or a JSON list like ["help@example.com"]'
                )
            if address:
                addresses.append(address)
        return addresses

    @field_validator("mail_from")
    @classmethod
    def _valid_mail_from(cls, value: str | None) -> str | None:
        if value is not None and "@" not in parseaddr(value)[1]:
            raise ValueError("must be an address like support@example.com")
        return value

    @field_validator(
        "workflows_path", "classification_rules_path", "templates_path", "backends_file"
    )
    @classmethod
    def _path_exists(cls, value: Path | None) -> Path | None:
        if value is not None and not value.exists():
            raise ValueError(f"{value} does not exist")
        return value

    @model_validator(mode="after")
    def _push_needs_secret(self) -> Settings:
        if self.imap_push_listen and (
            self.imap_push_secret is None or len(self.imap_push_secret.get_secret_value()) < 16
        ):
            raise ValueError(
                "IMAP_PUSH_LISTEN needs IMAP_PUSH_SECRET (at least 16 characters): pushes"
                " without it would let anyone on the network make the worker drain"
            )
        return self

    @model_validator(mode="after")
    def _assignee_needed(self) -> Settings:
        if self.ticket_auto_assign and self.ticket_default_assignee_id is None:
            raise ValueError(
                "TICKET_AUTO_ASSIGN=true needs TICKET_DEFAULT_ASSIGNEE_ID to be set"
            )
        return self

    @model_validator(mode="after")
    def _sender_policy_has_evidence(self) -> Settings:
        if (
            self.sender_auth_policy == "no_pass"
            and not self.sender_auth_authserv_ids
            and self.sender_auth_verify == "off"
        ):
            raise ValueError(
                "SENDER_AUTH_POLICY=no_pass would mark every message spoofed?: nothing can "
                "pass without SENDER_AUTH_AUTHSERV_IDS or SENDER_AUTH_VERIFY"
            )
        return self

    @model_validator(mode="after")
    def _no_cleartext_password(self) -> Settings:
        loopback = self.smtp_host in ("localhost", "127.0.0.1", "::1")
        if self.smtp_tls is SmtpTls.plain and self.smtp_username and not loopback:
            raise ValueError("SMTP_TLS=plain would send SMTP_PASSWORD in clear text; use ssl or starttls")
        return self

    @property
    def mail_from_address(self) -> str:
        """Bare, lower-cased support address."""
        if self.mail_from:
            return parseaddr(self.mail_from)[1].lower()
        return f"support@{self.mail_domain}".lower()

    @property
    def mail_from_name(self) -> str:
        return parseaddr(self.mail_from)[0] if self.mail_from else ""

    @property
    def smtp_port_or_default(self) -> int:
        if self.smtp_port is not None:
            return self.smtp_port
        return {SmtpTls.ssl: 465, SmtpTls.starttls: 587, SmtpTls.plain: 25}[self.smtp_tls]

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.ticket_timezone)

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


def load_settings(**overrides: Any) -> Settings:
    """Build the settings once; turn pydantic's error into one naming each bad variable."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = [str(part) for part in err["loc"]]
            name = loc[0].upper() if loc else "configuration"
            got = err.get("input")
            shown = "" if isinstance(got, dict) or got is None else f" (got {got!r})"
            shown = _mask_password(shown)
            lines.append(f"{name}: {err['msg']}{shown}")
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines)) from None
