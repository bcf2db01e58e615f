"""Bearer-token authentication for /api and cookie authentication for the /ui pages.

Both resolve to the same tokens table: the thread view's login form takes an API token and
keeps it in an HttpOnly, SameSite=strict cookie.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from mailticket.api import tokens
from mailticket.api.errors import Problem
from mailticket.runtime import Runtime

COOKIE_NAME = "mailticket_token"

bearer = HTTPBearer(
    auto_error=False,
    description="An API token from `mailticket tokens create --scope read|write|admin`.",
)


@dataclass(frozen=True)
class Principal:
    token_id: int
    name: str
    scope: str
    # A customer-scoped token: it sees that customer's tickets and mail only.
    customer_id: int | None = None


class LoginRequired(Exception):
    """A /ui page was asked for without a valid cookie: the browser goes to the login form."""


# The dependencies below are `async def` on purpose: each sync dependency costs a trip
# through the thread pool, and on the hot read path those trips, not the SQL, dominated
# latency. Blocking work (SQL) still runs in the pool, one trip per step.


STATE_SESSION = "session"
STATE_PRINCIPAL = "principal"


async def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


async def get_session(request: Request) -> Session:
    """The request's session, opened and closed by the gate (gate.py): authentication and
    the handler share it (one pooled connection). Handlers that write are the boundary and
    commit it themselves."""
    try:
        session: Session = getattr(request.state, STATE_SESSION)
    except AttributeError:
        raise RuntimeError("the request did not pass through mailticket.api.gate.Gate") from None
    return session


def verify(session: Session, plain: str) -> Principal | None:
    row = tokens.verify_token(session, plain)
    if row is None:
        return None
    principal = Principal(row.id, row.name, row.scope, row.customer_id)
    if session.dirty:
        # last_used_at moved (once a minute per token): the auth step commits its own write.
        session.commit()
    return principal


def authenticate(runtime: Runtime, plain: str) -> Principal | None:
    """Check a token outside a request's session (the login form)."""
    with runtime.session_factory() as session:
        return verify(session, plain)


def _challenge(error: str | None = None) -> dict[str, str]:
    value = "Bearer" if error is None else f'Bearer error="{error}"'
    return {"WWW-Authenticate": value}


@dataclass(frozen=True)
class Require:
    """A dependency: the gate found a live bearer token, and it has at least `scope`.

    The token itself is checked by the gate (gate.py), before the body is read; the
    `credentials` parameter is here so that the OpenAPI document declares the bearer scheme
    on the operation, and `scope` tells openapi.py which operations can answer 403.

    `customers`: the route narrows what it serves to a customer-scoped token's customer
    (customers/scope.py). Every other route refuses such tokens (403), so a route added
    later stays closed to them until it is written to scope its answers."""

    scope: str
    customers: bool = False

    async def __call__(
        self,
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> Principal:
        principal: Principal | None = getattr(request.state, STATE_PRINCIPAL, None)
        if principal is None:  # only when the gate is not in front: fail closed
            raise Problem(401, "a bearer token is required", headers=_challenge())
        if principal.customer_id is not None and not self.customers:
            raise Problem(
                403,
                "a customer-scoped token cannot use this operation (it serves every "
                "customer's data or the service's configuration)",
                headers=_challenge("insufficient_scope"),
            )
        if not tokens.scope_allows(principal.scope, self.scope):
            raise Problem(
                403,
                f"this needs a token with the {self.scope!r} scope "
                f"(this one has {principal.scope!r})",
                headers=_challenge("insufficient_scope"),
            )
        return principal


def require(scope: str, *, customers: bool = False) -> Require:
    if scope not in tokens.SCOPES:
        raise ValueError(f"unknown scope {scope!r}")
    return Require(scope, customers)


async def ui_principal(
    request: Request, session: Annotated[Session, Depends(get_session)]
) -> Principal:
    plain = request.cookies.get(COOKIE_NAME)
    principal = await run_in_threadpool(verify, session, plain) if plain else None
    if principal is None or not tokens.scope_allows(principal.scope, "read"):
        raise LoginRequired
    return principal


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
SessionDep = Annotated[Session, Depends(get_session)]
ReadPrincipal = Annotated[Principal, Depends(require("read"))]
WritePrincipal = Annotated[Principal, Depends(require("write"))]
# Routes that serve a customer-scoped token its own customer's data, and only that.
ScopedReader = Annotated[Principal, Depends(require("read", customers=True))]
ScopedWriter = Annotated[Principal, Depends(require("write", customers=True))]
UiPrincipal = Annotated[Principal, Depends(ui_principal)]
