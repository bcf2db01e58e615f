"""Sender -> customer. An exact contact address wins over a domain, a domain over its
parent domain; shared mail domains never map by domain; inactive customers never match.

Reads the database (the one source every deployment matches against, whether customers
come from YAML or the API), with two indexed IN queries per call however many addresses.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import bindparam, select, union_all
from sqlalchemy.orm import Session

from mailticket.customers.models import Customer, CustomerContact, CustomerDomain
from mailticket.customers.shared import SharedDomains
from mailticket.reading.maildomains import InvalidDomain, normalise_address, parent_chain
from mailticket.store.batch import mail_row

MatchedBy = Literal["address", "domain"]


@dataclass(frozen=True)
class CustomerRef:
    id: int
    key: str


@dataclass(frozen=True)
class CustomerMatch:
    customer_id: int
    customer_key: str
    matched_by: MatchedBy
    # The contact address, or the customer domain that covered the sender's domain.
    matched_value: str
    address: str

    def evidence(self) -> dict[str, Any]:
        return {
            "customer_id": self.customer_id,
            "customer": self.customer_key,
            "matched_by": self.matched_by,
            "matched_value": self.matched_value,
            "address": self.address,
        }


@dataclass(frozen=True)
class Detection:
    """The outcome for one address: a match, or why there is none (for the log)."""

    address: str
    match: CustomerMatch | None
    # no_address | shared_domain:<entry> | domain_not_trusted | no_rule
    reason: str | None = None


def resolve(
    address: str,
    contacts: Mapping[str, CustomerRef],
    domains: Mapping[str, CustomerRef],
    shared: SharedDomains,
    *,
    allow_domain: bool = True,
) -> Detection:
    """Pure core of the matcher, on lookups already fetched (address -> customer, domain ->
    customer)."""
    try:
        normal = normalise_address(address)
    except InvalidDomain:
        return Detection(address, None, "no_address")
    exact = contacts.get(normal)
    if exact is not None:
        return Detection(normal, CustomerMatch(exact.id, exact.key, "address", normal, normal))
    domain = normal.rpartition("@")[2]
    entry = shared.entry_for(domain)
    if entry is not None:
        return Detection(normal, None, f"shared_domain:{entry}")
    if not allow_domain:
        return Detection(normal, None, "domain_not_trusted")
    for candidate in parent_chain(domain):
        owner = domains.get(candidate)
        if owner is not None:
            return Detection(
                normal, CustomerMatch(owner.id, owner.key, "domain", candidate, normal)
            )
    return Detection(normal, None, "no_rule")


def detect(
    session: Session,
    addresses: Iterable[str],
    shared: SharedDomains,
    *,
    allow_domain: bool = True,
) -> list[Detection]:
    """One Detection per address, in the given order."""
    wanted = list(addresses)
    contact_map, domain_map = rules_for(session, wanted)
    return [
        resolve(address, contact_map, domain_map, shared, allow_domain=allow_domain)
        for address in wanted
    ]


def match_sender(
    session: Session, address: str, shared: SharedDomains, *, allow_domain: bool = True
) -> Detection:
    """The customer of one sender. `allow_domain=False` for mail whose sender could not be
    authenticated: then only an exact contact address maps."""
    return detect(session, [address], shared, allow_domain=allow_domain)[0]


def customers_involved(
    session: Session,
    addresses: Iterable[str],
    shared: SharedDomains,
    *,
    allow_domain: bool = True,
) -> list[CustomerMatch]:
    """The distinct customers among `addresses` (From, To, Cc ...), each once with the
    first address that mapped to it, in address order: what `split_by: customer` splits by.
    """
    seen: set[int] = set()
    out: list[CustomerMatch] = []
    for detection in detect(session, addresses, shared, allow_domain=allow_domain):
        match = detection.match
        if match is not None and match.customer_id not in seen:
            seen.add(match.customer_id)
            out.append(match)
    return out


def rules_for(
    session: Session, addresses: Iterable[str]
) -> tuple[dict[str, CustomerRef], dict[str, CustomerRef]]:
    """The contact and domain rules that could map any of `addresses` (normalised address
    -> customer, domain -> customer), in one query: for callers that cache them."""
    normal: list[str] = []
    for address in addresses:
        try:
            normal.append(normalise_address(address))
        except InvalidDomain:
            continue
    return rules_for_normal(session, normal)


def rules_for_normal(
    session: Session, addresses: Iterable[str]
) -> tuple[dict[str, CustomerRef], dict[str, CustomerRef]]:
    """`rules_for` of addresses already normalised (`normalise_address`): for a caller that
    normalised them to see which it still needs, so each is not normalised twice."""
    params = lookup_params(addresses)
    if not params["addresses"]:
        return {}, {}
    rows = session.execute(_LOOKUP, params)
    return read_rules((what, value, cid, key) for what, value, cid, _, key, _ in rows)


def lookup_params(addresses: Iterable[str]) -> dict[str, list[str]]:
    """The parameters of `LOOKUP_PARTS` for addresses already normalised: the addresses
    and every domain they could be mapped by."""
    normal: set[str] = set()
    domains: set[str] = set()
    for value in addresses:
        normal.add(value)
        domains.update(parent_chain(value.rpartition("@")[2]))
    return {"addresses": sorted(normal), "domains": sorted(domains)}


def read_rules(
    rows: Iterable[tuple[str, Any, Any, Any]],
) -> tuple[dict[str, CustomerRef], dict[str, CustomerRef]]:
    """Rows of `LOOKUP_PARTS` as (what, value, customer id, customer key) -> (contacts,
    domains)."""
    contacts: dict[str, CustomerRef] = {}
    owners: dict[str, CustomerRef] = {}
    for what, value, cid, key in rows:
        (contacts if what == CONTACT else owners)[value] = CustomerRef(cid, key)
    return contacts, owners


# Both lookups, in the shape of the batch's prefetch rows (`store.batch.mail_row`: what,
# key, log_id, ticket_id, kind, at), so a batch asks them in its prefetch's round trip.
# Built once: the matcher runs for every message, and building the statement cost more
# than the database answering it.
CONTACT, DOMAIN = "customer_contact", "customer_domain"
LOOKUP_PARTS = (
    select(*mail_row(CONTACT, CustomerContact.address, log_id=Customer.id, kind=Customer.key))
    .select_from(CustomerContact)
    .join(Customer, Customer.id == CustomerContact.customer_id)
    .where(CustomerContact.address.in_(bindparam("addresses", expanding=True)),
           Customer.active.is_(True)),
    select(*mail_row(DOMAIN, CustomerDomain.domain, log_id=Customer.id, kind=Customer.key))
    .select_from(CustomerDomain)
    .join(Customer, Customer.id == CustomerDomain.customer_id)
    .where(CustomerDomain.domain.in_(bindparam("domains", expanding=True)),
           Customer.active.is_(True)),
)
_LOOKUP = union_all(*LOOKUP_PARTS)
