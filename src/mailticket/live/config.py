"""Which mailboxes to watch: MAILBOXES_FILE (a YAML list) plus one from the IMAP_* settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from mailticket.settings import ConfigError, Settings

_LOOPBACK = ("localhost", "127.0.0.1", "::1")


class MailboxConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str | None = None  # shown in logs; default user@host/folder
    host: str
    port: int | None = Field(default=None, ge=1, le=65535)
    tls: Literal["ssl", "starttls", "plain"] = "ssl"
    # tls=plain sends the password in clear: only to loopback unless allowed here.
    allow_plain: bool = False
    user: str
    password: SecretStr | None = None
    oauth2_token: SecretStr | None = None
    # Access tokens expire within the hour: a command printing a fresh one (e.g. a script
    # doing the OAuth2 refresh or client-credentials flow) is run before every login.
    oauth2_token_command: str | None = None
    folder: str = "INBOX"
    after: str = "seen"  # seen | move:<folder> | delete
    # Use IDLE when the server offers it; false forces polling (servers with a broken IDLE).
    idle: bool = True
    ca_file: Path | None = None  # trust this CA (self-signed servers) instead of the system's

    @model_validator(mode="after")
    def _check(self) -> MailboxConfig:
        given = [self.password, self.oauth2_token, self.oauth2_token_command]
        if sum(x is not None for x in given) != 1:
            raise ValueError(
                f"mailbox {self.key}: give exactly one of password, oauth2_token,"
                " oauth2_token_command"
            )
        if self.after not in ("seen", "delete") and not (
            self.after.startswith("move:") and self.after[5:].strip()
        ):
            raise ValueError(
                f"mailbox {self.key}: after must be seen, delete or move:<folder>"
                f" (got {self.after!r})"
            )
        if self.tls == "plain" and self.host not in _LOOPBACK and not self.allow_plain:
            raise ValueError(
                f"mailbox {self.key}: tls=plain to {self.host} would send the password in"
                " clear text; use ssl or starttls, or set allow_plain: true"
            )
        if self.ca_file is not None and not self.ca_file.exists():
            raise ValueError(f"mailbox {self.key}: ca_file {self.ca_file} does not exist")
        return self

    @property
    def port_or_default(self) -> int:
        return self.port or (993 if self.tls == "ssl" else 143)

    @property
    def key(self) -> str:
        """Identity of the mailbox in the ledger and the worker lock (not the display name)."""
        return f"{self.user}@{self.host}:{self.port_or_default}"

    @property
    def label(self) -> str:
        return self.name or f"{self.key}/{self.folder}"

    @property
    def move_target(self) -> str | None:
        return self.after[5:].strip() if self.after.startswith("move:") else None


def _from_settings(settings: Settings) -> MailboxConfig | None:
    if not settings.imap_host:
        return None
    if not settings.imap_user:
        raise ConfigError("IMAP_HOST is set but IMAP_USER is not")
    return MailboxConfig(
        host=settings.imap_host,
        port=settings.imap_port,
        tls=settings.imap_tls,
        allow_plain=settings.imap_allow_plain,
        user=settings.imap_user,
        password=settings.imap_password,
        oauth2_token=settings.imap_oauth2_token,
        folder=settings.imap_folder,
        after=settings.imap_after,
    )


def _from_file(path: Path) -> list[MailboxConfig]:
    try:
        data: Any = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"MAILBOXES_FILE {path}: {exc}") from None
    if data is None:
        return []
    if isinstance(data, dict) and "mailboxes" in data:
        data = data["mailboxes"]
    if not isinstance(data, list):
        raise ConfigError(f"MAILBOXES_FILE {path}: expected a list of mailboxes")
    boxes = []
    for i, item in enumerate(data, 1):
        try:
            boxes.append(MailboxConfig.model_validate(item))
        except ValidationError as exc:
            reasons = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'mailbox'}: {e['msg']}"
                for e in exc.errors()
            )
            raise ConfigError(f"MAILBOXES_FILE {path}: mailbox #{i}: {reasons}") from None
    return boxes


def load_mailboxes(settings: Settings) -> list[MailboxConfig]:
    """Every configured mailbox; two entries for the same mailbox and folder are an error."""
    boxes = _from_file(settings.mailboxes_file) if settings.mailboxes_file else []
    try:
        single = _from_settings(settings)
    except ValidationError as exc:
        raise ConfigError(f"IMAP_*: {exc.errors()[0]['msg']}") from None
    if single is not None:
        boxes.append(single)
    seen: set[tuple[str, str]] = set()
    for box in boxes:
        if (box.key, box.folder) in seen:
            raise ConfigError(f"mailbox {box.key} folder {box.folder} is configured twice")
        seen.add((box.key, box.folder))
    return boxes
