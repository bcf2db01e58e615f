"""What the headers say about a message's origin, and which of them we may believe.

Headers are read top down, newest first. Each of our own receiving hosts prepends one
Received line; everything below the last of them (the `mta_hops`-th from the top) was
written by the sender and proves nothing. So an Authentication-Results header counts only
when its authserv-id is one of ours AND it sits above that boundary; the boundary Received
line is also where the connecting IP and HELO name are read for SPF.

This needs our MTA to put its Authentication-Results above its own Received line (milters
such as OpenDKIM/OpenDMARC and rspamd do; Exim with `add_header = :at_start:...`), or to
remove foreign headers carrying its authserv-id, as RFC 8601 §5 requires of it.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from email.parser import BytesHeaderParser
from email.policy import compat32
from email.utils import getaddresses
from typing import Any

import authres

from mailticket.reading.maildomains import domain_of

_FOLD = re.compile(r"\r?\n[ \t]+")
_BY = re.compile(r"\sby\s", re.IGNORECASE)
_IP_LITERAL = re.compile(r"\[(?:IPv6:)?([0-9A-Fa-f:.]+)\]")
_HELO_PARAM = re.compile(r"\bhelo=([^\s)\]]+)", re.IGNORECASE)
_FROM_WORD = re.compile(r"^\s*from\s+([^\s(]+)", re.IGNORECASE)
_DMARC_CLAUSE = re.compile(r"\bdmarc\s*=\s*\w+[^;]*", re.IGNORECASE)
_DMARC_POLICY = re.compile(
    r"(?:\bp|\bpolicy|policy\.dmarc|policy\.published-domain-policy)\s*=\s*"
    r"(none|quarantine|reject)\b",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class ArResult:
    method: str
    result: str
    properties: dict[str, str]
    # The DMARC policy a dmarc clause reports in a property or comment (p=reject ...).
    policy: str | None = None


@dataclass(frozen=True)
class TrustedHeader:
    authserv_id: str
    results: tuple[ArResult, ...]


@dataclass
class Origin:
    """Everything the checks need from the headers."""

    from_domain: str | None
    from_problem: str | None
    trusted: list[TrustedHeader] = field(default_factory=list)
    ignored: list[dict[str, Any]] = field(default_factory=list)
    connecting_ip: str | None = None
    helo: str | None = None
    mail_from: str | None = None  # envelope sender from Return-Path; "" for the null sender


def read_origin(raw: bytes, authserv_ids: frozenset[str], mta_hops: int) -> Origin:
    headers = [
        (name.lower(), _FOLD.sub(" ", str(value)).strip())
        for name, value in BytesHeaderParser(policy=compat32).parsebytes(raw).items()
    ]
    from_domain, problem = _from_domain([v for n, v in headers if n == "from"])
    origin = Origin(from_domain, problem)

    received = [i for i, (name, _) in enumerate(headers) if name == "received"]
    if received:
        boundary = received[min(mta_hops, len(received)) - 1]
        origin.connecting_ip, origin.helo = _parse_received(headers[boundary][1])
    else:
        # Nothing tells our headers from the sender's (a file ingested by hand): only the
        # authserv-id can be checked.
        boundary = len(headers)
    return_paths = [v for n, v in headers if n == "return-path"]
    if return_paths:
        origin.mail_from = return_paths[0].strip().strip("<>").strip()

    context = authres.all_features()
    for index, (name, value) in enumerate(headers):
        if name != "authentication-results":
            continue
        try:
            parsed = context.parse(f"Authentication-Results: {value}")
        except Exception as exc:  # noqa: BLE001 - authres raises its own SyntaxError and others
            origin.ignored.append({"authserv_id": None, "reason": f"unparseable: {exc}"})
            continue
        serv = str(parsed.authserv_id or "").lower()
        if serv not in authserv_ids:
            origin.ignored.append({"authserv_id": serv, "reason": "authserv-id not trusted"})
        elif index > boundary:
            origin.ignored.append({
                "authserv_id": serv,
                "reason": "below our Received header: written by the sender",
            })
        else:
            origin.trusted.append(TrustedHeader(serv, _results(parsed, value)))
    return origin


def _results(parsed: Any, raw_value: str) -> tuple[ArResult, ...]:
    clause = _DMARC_CLAUSE.search(raw_value)
    found = _DMARC_POLICY.search(clause.group(0)) if clause else None
    dmarc_policy = found.group(1).lower() if found else None
    out = []
    for result in parsed.results:
        props = {f"{p.type}.{p.name}".lower(): str(p.value) for p in result.properties}
        method = str(result.method).lower()
        out.append(ArResult(
            method=method,
            result=str(result.result).lower(),
            properties=props,
            policy=dmarc_policy if method == "dmarc" else None,
        ))
    return tuple(out)


def _from_domain(values: list[str]) -> tuple[str | None, str | None]:
    """RFC 7489 §6.6.1: DMARC applies to one From header with one address."""
    if not values:
        return None, "no From header"
    if len(values) > 1:
        return None, "more than one From header"
    addresses = [addr for _, addr in getaddresses(values) if addr]
    if len(addresses) != 1:
        return None, "From does not hold exactly one address"
    domain = domain_of(addresses[0])
    if domain is None:
        return None, f"From address {addresses[0]!r} has no valid domain"
    return domain, None


def _parse_received(value: str) -> tuple[str | None, str | None]:
    """Connecting IP and HELO name from the `from` clause of a Received line (Postfix,
    Sendmail, Exim and Microsoft spell it differently; all put the IP in [brackets])."""
    clause = _BY.split(value, maxsplit=1)[0]
    ip = None
    for candidate in _IP_LITERAL.findall(clause):
        try:
            ip = str(ipaddress.ip_address(candidate))
            break
        except ValueError:
            continue
    helo_param = _HELO_PARAM.search(clause)
    helo: str | None
    if helo_param:
        helo = helo_param.group(1)
    else:
        word = _FROM_WORD.match(clause)
        helo = word.group(1) if word else None
    if helo is not None:
        helo = helo.strip("[]") or None
    return ip, helo
