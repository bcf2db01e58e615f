"""Token service: create, verify, list, revoke. Takes a Session, never commits."""

from __future__ import annotations

import hashlib
import secrets
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailticket.api.models import ApiToken
from mailticket.customers.models import Customer

SCOPES = ("read", "write", "admin")
PREFIX = "mtk_"
# Recording every use would turn each read request into a write; a minute is precise enough
# to tell a live token from a forgotten one.
LAST_USED_RESOLUTION = timedelta(minutes=1)
# A token's state (state_of): what a use of it meets.
ACTIVE = "active"
REVOKED = "revoked"
SUSPENDED_DEACTIVATED = "suspended: customer deactivated"
SUSPENDED_GONE = "suspended: customer gone"


class TokenError(ValueError):
    pass


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def scope_allows(held: str, needed: str) -> bool:
    """admin ⊇ write ⊇ read."""
    if held not in SCOPES or needed not in SCOPES:
        return False
    return SCOPES.index(held) >= SCOPES.index(needed)


def create_token(
    session: Session, *, name: str, scope: str, customer: str | int | None = None
) -> tuple[ApiToken, str]:
    """Returns the row and the plain token; the plain token exists only in this return value.

    `customer` (its key or id) scopes the token to that customer's tickets and mail. Such a
    token is read or write: admin routes act on every customer's data, so the two exclude
    each other."""
    if scope not in SCOPES:
        raise TokenError(f"unknown scope {scope!r} (one of {', '.join(SCOPES)})")
    if not name.strip():
        raise TokenError("a token needs a name")
    customer_id = None
    if customer is not None:
        if scope == "admin":
            raise TokenError("a customer-scoped token is read or write, never admin")
        customer_id = _customer_id(session, customer)
    plain = PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(
        name=name.strip(), token_hash=hash_token(plain), scope=scope, customer_id=customer_id
    )
    session.add(row)
    session.flush()
    return row, plain


def _customer_id(session: Session, customer: str | int) -> int:
    text = str(customer).strip()
    query = select(Customer.id, Customer.active)
    if text.isascii() and text.isdigit():
        if len(text) > 10 or int(text) > 2**31 - 1:
            raise TokenError(f"no customer {text!r} (give its key or id)")
        query = query.where(Customer.id == int(text))
    else:
        query = query.where(Customer.key == text)
    found = session.execute(query).first()
    if found is None:
        raise TokenError(f"no customer {text!r} (give its key or id)")
    if not found.active:
        raise TokenError(f"customer {text!r} is inactive")
    return int(found.id)


def verify_token(session: Session, plain: str, *, now: datetime | None = None) -> ApiToken | None:
    """The live token for `plain`, or None (unknown, revoked, or scoped to a customer that is
    no longer active). Bumps last_used_at (at most
    once a minute), without flushing: callers commit only when something changed."""
    if not plain or len(plain) > 200:
        return None
    row = session.scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(plain)))
    if row is None or current_state(session, row) != ACTIVE:
        return None
    now = now or datetime.now(UTC)
    last = row.last_used_at
    if last is not None and last.tzinfo is None:  # SQLite hands back naive UTC values
        last = last.replace(tzinfo=UTC)
    if last is None or now - last >= LAST_USED_RESOLUTION:
        row.last_used_at = now  # left unflushed: the caller sees it in session.dirty
    return row


def state_of(row: ApiToken, customer_active: bool | None) -> str:
    """What a use of the token meets, as `tokens list` and the API show it.

    `customer_active`: the scoped customer's `active` (None: no such row), ignored for a
    token of every customer. A customer-scoped token stops with its customer: deactivating
    a customer (its contract ended) must also end the access its portal or integration had,
    so such a token is refused (401) and listed as suspended, not active, until the customer
    is active again; revoked is for good and wins."""
    if row.revoked_at is not None:
        return REVOKED
    if row.customer_id is not None:
        if customer_active is None:
            return SUSPENDED_GONE
        if not customer_active:
            return SUSPENDED_DEACTIVATED
    return ACTIVE


def current_state(session: Session, row: ApiToken) -> str:
    """state_of the token now (one query for a customer-scoped token, none otherwise)."""
    if row.revoked_at is not None or row.customer_id is None:
        return state_of(row, None)
    active = session.scalar(select(Customer.active).where(Customer.id == row.customer_id))
    return state_of(row, None if active is None else bool(active))


def list_tokens(session: Session) -> list[ApiToken]:
    return list(session.scalars(select(ApiToken).order_by(ApiToken.id)))


def list_with_states(session: Session) -> list[tuple[ApiToken, str]]:
    """Every token and its state (state_of), in one query."""
    rows = session.execute(
        select(ApiToken, Customer.active)
        .outerjoin(Customer, Customer.id == ApiToken.customer_id)
        .order_by(ApiToken.id)
    ).all()
    return [
        (token, state_of(token, None if active is None else bool(active)))
        for token, active in rows
    ]


def revoke_token(session: Session, token_id: int) -> ApiToken:
    row = session.get(ApiToken, token_id)
    if row is None:
        raise TokenError(f"no token {token_id}")
    if row.revoked_at is None:
        row.revoked_at = datetime.now(UTC)
        session.flush()
    return row
