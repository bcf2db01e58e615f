"""Domain names as mail sees them: normalised, split into parents, and reduced to the
organizational domain (RFC 7489 §3.2) with the Public Suffix List.

The list ships inside the `publicsuffixlist` package, so no lookup ever leaves the machine.
"""

from __future__ import annotations

import re
from functools import lru_cache

from publicsuffixlist import PublicSuffixList

_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


class InvalidDomain(ValueError):
    pass


@lru_cache(maxsize=1)
def _psl() -> PublicSuffixList:
    return PublicSuffixList()


# Every message's addresses come through here several times (sender checks, customer
# rules, shared domains) and a mailbox sees the same few thousand domains again and again:
# the IDNA codec, pure Python, cost more than the rest of the lookup. Pure functions of
# their argument, so a bounded cache changes nothing but the time (a refused value raises
# again each time: lru_cache keeps only results).
@lru_cache(maxsize=16384)
def normalise_domain(value: str) -> str:
    """Lower-cased ASCII (IDNA A-label) form; raises InvalidDomain for anything that is not a
    host name. Both sides of every comparison go through here, so Unicode and punycode
    spellings of one domain compare equal."""
    text = value.strip().rstrip(".").lower()
    if not text:
        raise InvalidDomain("empty domain")
    try:
        ascii_form = text.encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise InvalidDomain(f"{value!r} is not a valid domain name") from exc
    labels = ascii_form.split(".")
    if len(ascii_form) > 253 or not all(_LABEL.match(label) for label in labels):
        raise InvalidDomain(f"{value!r} is not a valid domain name")
    return ascii_form


def domain_of(address: str) -> str | None:
    """The normalised domain of `local@domain`, None when there is none or it is invalid."""
    _, at, domain = address.rpartition("@")
    if not at:
        return None
    try:
        return normalise_domain(domain)
    except InvalidDomain:
        return None


# Cached for the reason normalise_domain is: every message's sender comes through here
# (customer rules, the prefetch of each batch), most of them seen before.
@lru_cache(maxsize=16384)
def normalise_address(value: str) -> str:
    """`Local@Domain` -> `local@domain` with the domain in A-label form. Local parts are
    compared case-insensitively, as every real mail system treats them."""
    local, at, domain = value.strip().strip("<>").rpartition("@")
    # split() splits at exactly the characters isspace() names: a local part holding
    # whitespace anywhere does not come back whole.
    if not at or not local or local.split() != [local]:
        raise InvalidDomain(f"{value!r} is not an address like name@example.com")
    return f"{local.lower()}@{normalise_domain(domain)}"


@lru_cache(maxsize=8192)
def organizational_domain(domain: str) -> str:
    """The registrable domain (`mail.eu.acme.co.uk` -> `acme.co.uk`); a public suffix or an
    unknown single label is its own organizational domain."""
    return _psl().privatesuffix(domain) or domain


def is_public_suffix(domain: str) -> bool:
    return bool(_psl().is_public(domain))


def parent_chain(domain: str) -> list[str]:
    """`a.b.acme.co.uk` -> [a.b.acme.co.uk, b.acme.co.uk, acme.co.uk]: most specific first,
    ending at the organizational domain (a public suffix is never anyone's domain)."""
    return list(_parent_chain(domain))  # a list of its own: the caller may change it


@lru_cache(maxsize=16384)
def _parent_chain(domain: str) -> tuple[str, ...]:
    org = organizational_domain(domain)
    labels = domain.split(".")
    chain = []
    for start in range(len(labels)):
        candidate = ".".join(labels[start:])
        chain.append(candidate)
        if candidate == org:
            break
    return tuple(chain)
