"""DNS for our own DKIM/SPF/DMARC checks: one resolver object, configurable servers.

dkimpy takes a lookup function per call. pyspf instead calls a module-level `DNSLookup`;
we install one that asks the resolver of the check in progress (a ContextVar), so a
configured resolver (or the tests' stub on loopback) is used without global state per call.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import dkim
import dns.exception
import dns.nameserver
import dns.rdatatype
import dns.resolver
import spf


class DnsTempError(Exception):
    """The answer could not be had now (timeout, SERVFAIL): a temperror, not a "no"."""


def _server(spec: str) -> dns.nameserver.Do53Nameserver:
    host, port = spec, 53
    if spec.startswith("["):  # [2001:db8::1]:5353
        host, _, rest = spec[1:].partition("]")
        port = int(rest.lstrip(":") or 53)
    elif spec.count(":") == 1:
        host, raw_port = spec.split(":")
        port = int(raw_port)
    return dns.nameserver.Do53Nameserver(host, port)


class DnsClient:
    def __init__(self, servers: list[str] | None = None, timeout: float = 5.0) -> None:
        if servers:
            self.resolver = dns.resolver.Resolver(configure=False)
            self.resolver.nameservers = [_server(s) for s in servers]
        else:
            self.resolver = dns.resolver.Resolver()
        self.resolver.lifetime = timeout
        self.resolver.timeout = timeout
        self.timeout = timeout

    def query(self, name: str, rdtype: str) -> list[Any]:
        """The answer's records; [] for NXDOMAIN or no data; DnsTempError otherwise."""
        try:
            answer = self.resolver.resolve(name, rdtype, raise_on_no_answer=False, search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []
        except (dns.exception.Timeout, dns.resolver.NoNameservers) as exc:
            raise DnsTempError(f"{rdtype} {name}: {exc}") from exc
        except dns.exception.DNSException as exc:
            raise DnsTempError(f"{rdtype} {name}: {exc}") from exc
        return list(answer.rrset or [])

    def txt(self, name: str) -> list[bytes]:
        """Each TXT record with its strings joined (RFC 7208 §3.3, RFC 6376 §3.6.2.2)."""
        return [b"".join(r.strings) for r in self.query(name, "TXT")]

    def dkim_dnsfunc(self, name: bytes, timeout: float = 5) -> bytes | None:
        """The lookup function dkimpy expects: the key record's text, or None."""
        try:
            records = self.txt(name.decode("ascii"))
        except DnsTempError as exc:
            raise dkim.DnsTimeoutError(str(exc)) from exc
        return records[0] if records else None

    @contextmanager
    def for_spf(self) -> Iterator[None]:
        token = _current.set(self)
        try:
            yield
        finally:
            _current.reset(token)


_current: contextvars.ContextVar[DnsClient | None] = contextvars.ContextVar(
    "senderauth_dns", default=None
)
_pyspf_default = spf.DNSLookup


def _pyspf_lookup(name: str, qtype: str, strict: bool = True, timeout: float = 20) -> list[Any]:
    client = _current.get()
    if client is None:
        return list(_pyspf_default(name, qtype, strict, timeout))
    try:
        records = client.query(name, qtype)
    except DnsTempError as exc:
        raise spf.TempError(f"DNS {exc}") from exc
    out: list[Any] = []
    for rdata in records:
        if qtype in ("A", "AAAA"):
            out.append(((name, qtype), rdata.address))
        elif qtype == "MX":
            out.append(((name, qtype), (rdata.preference, rdata.exchange)))
        elif qtype == "PTR":
            out.append(((name, qtype), rdata.target.to_text(True)))
        elif qtype in ("TXT", "SPF"):
            out.append(((name, qtype), rdata.strings))
    return out


spf.DNSLookup = _pyspf_lookup
