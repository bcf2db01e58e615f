"""Runtime configuration, read once at start-up from the environment and `.env`.

Nothing in the package reads the environment at import time: `load_settings()` builds one
`Settings` value at start-up and it is passed down explicitly.
"""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Priority(str, enum.Enum):
    low = "low"
    normal = "normal"
    high = "high"
    critical = "critical"


class SubjectMatchPolicy(str, enum.Enum):
    any = "any"
    participants = "participants"


class UnmatchedAction(str, enum.Enum):
    log = "log"
    create_ticket = "create_ticket"


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
    workflows_path: Path | None = None
    classification_rules_path: Path | None = None
    ticket_timezone: str = "UTC"
    ticket_subject_match: SubjectMatchPolicy = SubjectMatchPolicy.any
    email_unmatched_action: UnmatchedAction = UnmatchedAction.log
    # Messages per transaction when ingesting in bulk; each message still has its own
    # savepoint, so one failure never loses its neighbours.
    ingest_batch_size: int = Field(default=200, ge=1, le=10_000)
    # Domain used in Message-IDs of mail we generate (replies, synthetic ids).
    mail_domain: str = "mailticket.local"
    # Addresses that belong to us: mail from them is never answered nor treated as customer mail.
    own_addresses: list[str] = Field(default_factory=list)

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
        if not value.startswith(("sqlite", "postgresql")):
            raise ValueError("must be a sqlite:// or postgresql:// URL")
        return value

    @field_validator("workflows_path", "classification_rules_path")
    @classmethod
    def _path_exists(cls, value: Path | None) -> Path | None:
        if value is not None and not value.exists():
            raise ValueError(f"{value} does not exist")
        return value

    @model_validator(mode="after")
    def _assignee_needed(self) -> Settings:
        if self.ticket_auto_assign and self.ticket_default_assignee_id is None:
            raise ValueError(
                "TICKET_AUTO_ASSIGN=true needs TICKET_DEFAULT_ASSIGNEE_ID to be set"
            )
        return self

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
            lines.append(f"{name}: {err['msg']}{shown}")
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines)) from None
