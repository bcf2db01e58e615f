"""/api/v1/tokens: list, create and revoke API tokens (admin tokens only), as the
`mailticket tokens` commands do (api/tokens.py is the service both use).

The token itself is in the answer to its creation and nowhere else: only its hash is stored,
and the answer is marked `Cache-Control: no-store`. A revoked token stays listed (with its
`revoked_at`); revoking is for good. The token making the request cannot revoke itself: an
admin who did would lock themselves out of the API mid-task (another admin token or
`mailticket tokens revoke` can).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Response

from mailticket.api import tokens
from mailticket.api.auth import Principal, SessionDep, require
from mailticket.api.errors import Problem
from mailticket.api.models import ApiToken
from mailticket.api.schemas import TokenCreated, TokenIn, TokenList, TokenOut

AdminPrincipal = Annotated[Principal, Depends(require("admin"))]

router = APIRouter(prefix="/api/v1/tokens", tags=["tokens"])

TokenId = Annotated[int, Path(ge=1, le=2_147_483_647, description="The token's id.")]
NO_STORE = {"Cache-Control": "no-store"}


def _out(row: ApiToken, state: str) -> TokenOut:
    return TokenOut.model_validate({
        "id": row.id, "name": row.name, "scope": row.scope, "customer_id": row.customer_id,
        "state": state, "created_at": row.created_at, "last_used_at": row.last_used_at,
        "revoked_at": row.revoked_at,
    })


@router.get("", response_model=TokenList)
def list_tokens(session: SessionDep, _: AdminPrincipal) -> TokenList:
    """Every token, oldest first, with its state; never the token itself."""
    return TokenList(tokens=[_out(row, state) for row, state in tokens.list_with_states(session)])


@router.post(
    "",
    response_model=TokenCreated,
    status_code=201,
    responses={
        201: {"headers": {"Cache-Control": {
            "description": "`no-store`: the token is in this answer only.",
            "schema": {"type": "string"},
        }}},
        409: {"description": "The customer does not exist or is inactive, or an admin "
              "token was asked for with a customer."},
    },
)
def create_token(
    body: TokenIn, session: SessionDep, response: Response, _: AdminPrincipal
) -> TokenCreated:
    """A new token; `token` in the answer is the only time it is ever shown. A customer
    that does not exist or is inactive, or an admin token scoped to a customer, is a 409."""
    try:
        row, plain = tokens.create_token(
            session, name=body.name, scope=body.scope, customer=body.customer
        )
    except tokens.TokenError as exc:
        # Well formed but impossible (as the customers API answers such requests).
        raise Problem(409, str(exc)) from None
    session.commit()
    session.refresh(row)
    response.headers.update(NO_STORE)
    return TokenCreated(**_out(row, tokens.ACTIVE).model_dump(), token=plain)


@router.post(
    "/{token_id}/revoke",
    response_model=TokenOut,
    responses={409: {"description": "The token making the request cannot revoke itself."}},
)
def revoke_token(token_id: TokenId, session: SessionDep, principal: AdminPrincipal) -> TokenOut:
    """Revoke a token for good (it stops working at once); revoking a revoked one changes
    nothing."""
    if token_id == principal.token_id:
        raise Problem(
            409, "a token cannot revoke itself: use another admin token or "
            "`mailticket tokens revoke`",
        )
    try:
        row = tokens.revoke_token(session, token_id)
    except tokens.TokenError:
        raise Problem(404, f"no token {token_id}") from None
    session.commit()
    return _out(row, tokens.current_state(session, row))
