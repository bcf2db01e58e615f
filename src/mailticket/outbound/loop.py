"""Should this message get an automatic answer? (RFC 3834 §2 and mail-loop experience.)

Answering an auto-responder, a bounce, a mailing list or ourselves is how two robots end up
mailing each other forever; a per-recipient rate limit is the last line of defence when a
responder we failed to recognise answers every one of our mails.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from email.utils import getaddresses

from mailticket.settings import Settings
from mailticket.store.batch import Batch
from mailticket.store.outbox_models import as_utc
from mailticket.types import Classification, ParsedEmail

NO_REPLY_LABELS = frozenset({"auto_reply", "bounce", "bulk", "spam"})
_BULK_PRECEDENCE = frozenset({"bulk", "junk", "list", "auto_reply"})
# Microsoft's X-Auto-Response-Suppress tokens that ask for no automatic reply; "DR", "RN",
# "NRN" and "NDR" only concern receipts, which a human's mail also commonly suppresses.
_SUPPRESS_TOKENS = frozenset({"all", "autoreply", "oof"})
# Also the addresses of list software (vacation(1)'s list, RFC 3834 §2's "known to be a
# mailing list"): owner-x, x-owner, x-request and x-bounces (+VERP tag) are read by a list
# manager, whose notices ("you are not a member") would answer our answer.
_NO_REPLY_LOCAL = re.compile(
    r"(?:^|[-_.+])(?:no[-_.]?reply|do[-_.]?not[-_.]?reply|dont[-_.]?reply)(?:$|[-_.+])"
    r"|^(?:mailer[-_.]?daemon|postmaster|listserv|majordomo|mailman)(?:$|[-_.+])"
    r"|^owner-|-(?:owner|request|bounces?)(?:$|\+)|^bounces?(?:$|[-_.+])",
    re.IGNORECASE,
)
# List software that marks its mail without List-Id (RFC 2919 came later): ezmlm's
# Mailing-List, fml's X-ML-Name/X-MLServer, older servers' X-Mailing-List.
_LIST_HEADERS = ("List-Id", "Mailing-List", "X-Mailing-List", "X-ML-Name", "X-MLServer")



def reply_recipient(email: ParsedEmail) -> tuple[str, str]:
    """Where an answer goes: the first Reply-To address, else From. (address, display name)"""
    if email.reply_to and email.reply_to[0]:
        return email.reply_to[0].strip().lower(), ""
    return email.from_address.strip().lower(), email.from_name


def own_addresses(settings: Settings) -> frozenset[str]:
    return frozenset(
        a.strip().lower() for a in [settings.mail_from_address, *settings.own_addresses] if a
    )


def is_own_address(settings: Settings, address: str) -> bool:
    """One of our addresses, also with a sub-address tag (`support+billing@…`): the MTA
    delivers that to our own mailbox, so answering it is mailing ourselves."""
    ours = own_addresses(settings)
    address = address.strip().lower()
    if address in ours:
        return True
    local, at, domain = address.rpartition("@")
    return bool(at) and "+" in local and f"{local.split('+', 1)[0]}@{domain}" in ours


def _loop_reason(settings: Settings, email: ParsedEmail) -> str | None:
    """X-Loop (procmail, RT, list servers) names who already handled the message: our own
    address there means it has been through us, and answering it would go round again."""
    for value in email.headers.get("x-loop", []):
        for _, address in getaddresses([value]):
            if address and is_own_address(settings, address):
                return f"X-Loop: {address.strip().lower()} is one of our own addresses (a loop)"
    return None


def _first_token(value: str) -> str:
    return value.split(";", 1)[0].strip().lower()


def _header_reason(email: ParsedEmail) -> str | None:
    for value in email.headers.get("auto-submitted", []):
        if _first_token(value) not in ("", "no"):
            return f"Auto-Submitted: {_first_token(value)}"
    for value in email.headers.get("x-auto-response-suppress", []):
        tokens = {t.strip().lower() for t in value.split(",")}
        if tokens & _SUPPRESS_TOKENS:
            return f"X-Auto-Response-Suppress: {value.strip()[:60]}"
    for value in email.headers.get("precedence", []):
        if _first_token(value) in _BULK_PRECEDENCE:
            return f"Precedence: {_first_token(value)}"
    for name in _LIST_HEADERS:
        if email.headers.get(name.lower()):
            return f"mailing-list mail ({name})"
    if email.return_path == "":
        return "null Return-Path (a bounce or other automatic mail)"
    return None


def _address_reason(settings: Settings, address: str, role: str) -> str | None:
    if not address or "@" not in address:
        return f"no usable {role} address"
    if not address.isascii():
        return f"{role} address {address} needs SMTPUTF8, which auto-replies do not use"
    if is_own_address(settings, address):
        return f"{role} {address} is one of our own addresses"
    local = address.rsplit("@", 1)[0]
    if _NO_REPLY_LOCAL.search(local):
        return f"{role} {address} does not take replies"
    return None


def recent_auto_replies(work: Batch, address: str, *, since: datetime) -> int:
    return work.recent_replies(address, since)


def arrival_time(email: ParsedEmail, logged_at: datetime | None) -> datetime | None:
    """When the message reached us, as far as a server can vouch for it: the time the
    pipeline logged (the source's word or the newest Received stamp), unless all it had was
    the Date header. Date is the sender's clock, which may be wrong by a year; judging age
    by it would silence a customer for the fault of their laptop."""
    if logged_at is None:
        return None
    if not email.headers.get("received") and logged_at == email.date:
        return None
    return logged_at


def should_auto_reply(
    work: Batch,
    settings: Settings,
    email: ParsedEmail,
    classification: Classification,
    *,
    now: datetime | None = None,
    received_at: datetime | None = None,
) -> tuple[bool, str]:
    """(True, "ok") when an automatic answer may go out, else (False, why not).

    `now` is the pipeline's clock (never backdated) and `received_at` when the message
    reached us: an answer to old mail is news to nobody and noise to everybody."""
    if not settings.auto_reply_enabled:
        return False, (
            "auto-replies are off (AUTO_REPLY_ENABLED=false, or an `ingest` without"
            " --send-replies)"
        )
    now = as_utc(now or datetime.now(UTC))
    max_age = settings.auto_reply_max_age
    if received_at is not None and max_age > timedelta(0):
        age = now - as_utc(received_at)
        if age > max_age:
            return False, (
                f"received {_human(age)} ago, longer than AUTO_REPLY_MAX_AGE={_human(max_age)}"
            )
    if classification.label in NO_REPLY_LABELS:
        return False, f"classified as {classification.label}"
    reason = _header_reason(email) or _loop_reason(settings, email)
    if reason:
        return False, reason
    sender = email.from_address.strip().lower()
    recipient, _ = reply_recipient(email)
    reason = _address_reason(settings, sender, "sender")
    if reason is None and recipient != sender:
        reason = _address_reason(settings, recipient, "reply-to")
    if reason:
        return False, reason
    domain = settings.mail_domain.lower()
    if not email.message_id_synthetic and email.message_id.lower().endswith(f"@{domain}>"):
        return False, f"Message-ID {email.message_id} is from our own domain (a loop)"
    limit, window = settings.auto_reply_rate_limit, settings.auto_reply_rate_window
    sent = recent_auto_replies(work, recipient, since=now - window)
    if sent >= limit:
        return False, (
            f"rate limit: {sent} auto-replies to {recipient} in the last {_human(window)} "
            f"(AUTO_REPLY_RATE_LIMIT={limit})"
        )
    return True, "ok"


def _human(window: timedelta) -> str:
    seconds = int(window.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0 and seconds >= size:
            return f"{seconds // size}{unit}"
    if seconds >= 86400 * 2:
        return f"{seconds // 86400}d"  # an age, not a setting: whole days are precise enough
    return f"{seconds}s"
