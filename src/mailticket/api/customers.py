"""/api/v1/customers: the customer directory (admin tokens only).

One source of truth per deployment (customers/directory.py): with CUSTOMERS_PATH set, the
file is it and every write here answers 409 naming the file; otherwise these routes write
the database. Bodies are validated by the same model as the file's items (CustomerSpec),
so both paths accept exactly the same customers.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query
from fastapi.responses import Response
from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from mailticket.api.auth import RuntimeDep, SessionDep, require
from mailticket.api.errors import Problem, jsonable_errors
from mailticket.api.models import ApiToken
from mailticket.api.schemas import ContactOut, CustomerIn, CustomerList, CustomerOut
from mailticket.customers import directory
from mailticket.customers.directory import CustomersMode, CustomerView
from mailticket.customers.lookup import shared_for
from mailticket.customers.schema import CustomerSpec
from mailticket.runtime import Runtime

router = APIRouter(
    prefix="/api/v1/customers", tags=["customers"], dependencies=[Depends(require("admin"))]
)

CustomerRef = Annotated[
    str,
    Path(min_length=1, max_length=64, description="The customer's numeric id or its key."),
]
WRITE_ERRORS: dict[int | str, dict[str, str]] = {
    409: {
        "description": "CUSTOMERS_PATH is the source of truth (the API is read-only); or "
        "the key, id, a domain or an address belongs to another customer, a domain is a "
        "shared mail domain or a public suffix, or an entry is listed twice; or (DELETE) "
        "tickets, tokens or the workflow and SLA files still refer to the customer."
    },
}


def _mode(runtime: Runtime) -> CustomersMode:
    return CustomersMode.db if runtime.customers is None else CustomersMode.yaml


def _out(view: CustomerView) -> CustomerOut:
    return CustomerOut(
        id=view.id, key=view.key, name=view.name, active=view.active, source=view.source,
        domains=list(view.domains),
        contacts=[ContactOut(address=c.address, name=c.name) for c in view.contacts],
    )


def _spec(body: CustomerIn) -> CustomerSpec:
    """The body as the directory's model. What the schema already describes is a 422 before
    this runs; what is well formed but cannot be (an entry twice, in another spelling) is a
    409, like a value another customer holds."""
    for what, values in (("domain", body.domains), ("contact", [c.address for c in body.contacts])):
        seen: set[str] = set()
        for value in values:
            if value.lower() in seen:
                raise Problem(409, f"{what} {value.lower()!r} is listed twice")
            seen.add(value.lower())
    try:
        return CustomerSpec.model_validate(body.model_dump())
    except ValidationError as exc:
        raise Problem(
            422, "the customer is not valid", extra={"errors": jsonable_errors(exc.errors())}
        ) from None


def _read_only(runtime: Runtime) -> None:
    """Checked before anything else, so the answer in YAML mode never depends on the body
    or on which customers exist."""
    if runtime.customers is not None:
        raise Problem(
            409,
            f"customers are managed in CUSTOMERS_PATH ({runtime.customers.source}); the API "
            "is read-only for them. Change the file and restart or run "
            "`mailticket customers sync`.",
            title="Customers are read-only",
        )


def _write_error(exc: Exception) -> Problem:
    # A shared mail domain or a public suffix is well formed; it conflicts with the
    # deployment's shared-domain list or the Public Suffix List, as a taken domain does.
    if isinstance(exc, directory.CustomerNotFound):
        return Problem(404, str(exc))
    return Problem(409, str(exc))


_WRITE_FAILURES = (
    directory.CustomerNotFound, directory.CustomerInvalid, directory.CustomerConflict,
)


def _commit(session: Session) -> None:
    """The checks above read before writing; a concurrent request can still take the same
    key, domain or address (or scope a token to a customer being deleted) in between. The
    database's constraints then refuse the write: a 409, not a 500."""
    try:
        session.commit()
    except IntegrityError:
        raise _raced(session) from None


def _raced(session: Session) -> Problem:
    session.rollback()
    return Problem(409, "a concurrent change took a key, id, domain or address of this "
                   "customer, or now refers to it; read it again and retry")


def _find(session: Session, ref: str) -> CustomerView:
    """A customer by id (ASCII digits) or key; anything else names none (404)."""
    try:
        if ref.isascii() and ref.isdigit():
            if len(ref) > 10 or int(ref) > 2_147_483_647:
                raise directory.CustomerNotFound(f"no customer with id {ref}")
            return directory.get_customer(session, int(ref))
        return directory.get_customer_by_key(session, ref)
    except directory.CustomerNotFound as exc:
        raise Problem(404, str(exc)) from None


def outside_uses(session: Session, runtime: Runtime, view: CustomerView) -> list[str]:
    """What refers to the customer besides tickets (the directory counts those): tokens
    scoped to it, and the workflow and SLA files. The API and the CLI delete through this."""
    uses = []
    tokens = session.scalar(
        select(func.count()).select_from(ApiToken).where(ApiToken.customer_id == view.id)
    )
    if tokens:
        uses.append(f"{tokens} API token(s)")
    names = _config_names(runtime)
    if view.key in names or view.id in names:
        uses.append("the workflow or SLA files")
    return uses


def _config_names(runtime: Runtime) -> set[str | int]:
    """Customers the workflow and SLA files name (by key, or by id in a workflow): the next
    start-up refuses to run if one of them is gone."""
    names: set[str | int] = {name for name, _ in runtime.workflows.customer_names()}
    if runtime.sla is not None:
        names |= set(runtime.sla.customer_calendars)
        names |= {p.customer for p in runtime.sla.policies if p.customer is not None}
    return names


@router.get("", response_model=CustomerList)
def list_customers(
    runtime: RuntimeDep,
    session: SessionDep,
    include_inactive: Annotated[bool, Query(description="Inactive customers too.")] = False,
) -> CustomerList:
    rows = directory.list_customers(session, active=None if include_inactive else True)
    return CustomerList(
        read_only=runtime.customers is not None,
        source="database" if runtime.customers is None else runtime.customers.source,
        customers=[_out(v) for v in rows],
    )


@router.get("/{customer}", response_model=CustomerOut)
def get_customer(customer: CustomerRef, session: SessionDep) -> CustomerOut:
    return _out(_find(session, customer))


@router.post("", response_model=CustomerOut, status_code=201, responses=WRITE_ERRORS)
def create_customer(body: CustomerIn, runtime: RuntimeDep, session: SessionDep) -> CustomerOut:
    """A new customer (database mode). Keys, ids, domains and addresses are unique: 409."""
    _read_only(runtime)
    spec = _spec(body)
    try:
        view = directory.create_customer(
            session, spec, mode=_mode(runtime), shared=shared_for(runtime.settings),
            now=runtime.clock(),
        )
    except _WRITE_FAILURES as exc:
        raise _write_error(exc) from None
    except IntegrityError:
        raise _raced(session) from None
    _commit(session)
    return _out(view)


@router.put("/{customer}", response_model=CustomerOut, responses=WRITE_ERRORS)
def replace_customer(
    customer: CustomerRef, body: CustomerIn, runtime: RuntimeDep, session: SessionDep
) -> CustomerOut:
    """Replace name, key, active, domains and contacts. `active: false` keeps the customer
    (tickets keep their customer_id) but it matches no mail and frees its addresses."""
    _read_only(runtime)
    spec = _spec(body)
    before = _find(session, customer)
    try:
        if spec.key != before.key and before.key in _config_names(runtime):
            raise directory.CustomerConflict(
                f"the workflow or SLA files name customer {before.key!r}; its key cannot change"
            )
        view = directory.update_customer(
            session, before.id, spec, mode=_mode(runtime),
            shared=shared_for(runtime.settings), now=runtime.clock(),
        )
    except _WRITE_FAILURES as exc:
        raise _write_error(exc) from None
    except IntegrityError:
        raise _raced(session) from None
    _commit(session)
    return _out(view)


@router.delete(
    "/{customer}", status_code=204, response_class=Response, responses=WRITE_ERRORS
)
def delete_customer(customer: CustomerRef, runtime: RuntimeDep, session: SessionDep) -> Response:
    """Delete a customer nothing refers to. One that tickets, tokens or the workflow and SLA
    files still name is refused (409): deactivate it with PUT instead."""
    _read_only(runtime)
    view = _find(session, customer)
    try:
        directory.delete_customer(
            session, view.id, mode=_mode(runtime), also_used_by=outside_uses(session, runtime, view)
        )
    except _WRITE_FAILURES as exc:
        raise _write_error(exc) from None
    except IntegrityError:
        raise _raced(session) from None
    _commit(session)
    return Response(status_code=204)
