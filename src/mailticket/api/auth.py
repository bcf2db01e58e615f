"""Bearer-token authentication for /api and cookie authentication for the /ui pages.

Both resolve to the same tokens table: the thread view's login form takes an API token and
keeps it in an HttpOnly, SameSite=strict cookie.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
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


class LoginRequired(Exception):
    """A /ui page was asked for without a valid cookie: the browser goes to the login form."""


# The dependencies below are `async def` on purpose: each sync dependency costs a trip
# through the thread pool, and on the hot read path those trips, not the SQL, dominated
# latency. Blocking work (SQL) still runs in the pool, one trip per step.


async def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


async def get_session(
    runtime: Annotated[Runtime, Depends(get_runtime)],
) -> AsyncIterator[Session]:
    """One session per request, shared by authentication and the handler (one pooled
    connection). Handlers that write are the boundary and commit it themselves."""
    session = runtime.session_factory()
    try:
        yield session
    finally:
        await run_in_threadpool(session.close)


def _verify(session: Session, plain: str) -> Principal | None:
    row = tokens.verify_token(session, plain)
    if row is None:
        return None
    principal = Principal(row.id, row.name, row.scope)
    if session.dirty:
        # last_used_at moved (once a minute per token): the auth step commits its own write.
        session.commit()
    return principal


def authenticate(runtime: Runtime, plain: str) -> Principal | None:
    """Check a token outside a request's session (the login form)."""
    with runtime.session_factory() as session:
        return _verify(session, plain)


def _challenge(error: str | None = None) -> dict[str, str]:
    value = "Bearer" if error is None else f'Bearer error="{error}"'
    return {"WWW-Authenticate": value}


def require(scope: str) -> Callable[..., Awaitable[Principal]]:
    """A dependency: the request must carry a live bearer token with at least `scope`."""

    async def dependency(
        session: Annotated[Session, Depends(get_session)],
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> Principal:
        if credentials is None or not credentials.credentials:
            raise Problem(401, "a bearer token is required", headers=_challenge())
        principal = await run_in_threadpool(_verify, session, credentials.credentials)
        if principal is None:
            raise Problem(
                401, "the token is unknown or revoked", headers=_challenge("invalid_token")
            )
        if not tokens.scope_allows(principal.scope, scope):
            raise Problem(
                403,
                f"this needs a token with the {scope!r} scope (this one has {principal.scope!r})",
                headers=_challenge("insufficient_scope"),
            )
        return principal

    dependency.__name__ = f"require_{scope}"
    return dependency


async def ui_principal(
    request: Request, session: Annotated[Session, Depends(get_session)]
) -> Principal:
    plain = request.cookies.get(COOKIE_NAME)
    principal = await run_in_threadpool(_verify, session, plain) if plain else None
    if principal is None or not tokens.scope_allows(principal.scope, "read"):
        raise LoginRequired
    return principal


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
SessionDep = Annotated[Session, Depends(get_session)]
ReadPrincipal = Annotated[Principal, Depends(require("read"))]
WritePrincipal = Annotated[Principal, Depends(require("write"))]
UiPrincipal = Annotated[Principal, Depends(ui_principal)]
