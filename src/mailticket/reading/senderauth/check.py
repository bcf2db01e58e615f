"""check_sender: the verdict on one raw message, from our MTA's word or our own checks."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal

from mailticket.reading.maildomains import InvalidDomain, domain_of, normalise_domain
from mailticket.reading.senderauth.dns import DnsClient
from mailticket.reading.senderauth.headers import ArResult, Origin, read_origin
from mailticket.reading.senderauth.verdict import Check, Policy, Verdict, aligned, decide
from mailticket.reading.senderauth.verify import local_checks

Verify = Literal["off", "fallback", "always"]


@dataclass(frozen=True)
class SenderAuthConfig:
    authserv_ids: frozenset[str] = frozenset()
    mta_hops: int = 1
    # off: believe the MTA only; fallback: check ourselves when no trusted header exists;
    # always: check ourselves too, deciding whenever the MTA's results do not.
    verify: Verify = "off"
    policy: Policy = Policy.fail
    dns_servers: tuple[str, ...] = ()
    dns_timeout: float = 5.0

    @classmethod
    def from_settings(cls, settings: Any) -> SenderAuthConfig:
        return cls(
            authserv_ids=frozenset(s.strip().lower() for s in settings.sender_auth_authserv_ids),
            mta_hops=settings.sender_auth_mta_hops,
            verify=settings.sender_auth_verify,
            policy=Policy(settings.sender_auth_policy),
            dns_servers=tuple(settings.sender_auth_dns_servers),
            dns_timeout=settings.sender_auth_dns_timeout,
        )

    @property
    def active(self) -> bool:
        """Any evidence can be had: a trusted MTA, or our own checks. Without either every
        verdict would be `none`, so nothing is checked (nor stored) at all."""
        return bool(self.authserv_ids) or self.verify != "off"

    def dns_client(self) -> DnsClient:
        return DnsClient(list(self.dns_servers), self.dns_timeout)


def check_sender(raw: bytes, config: SenderAuthConfig, *, dns: DnsClient | None = None) -> Verdict:
    """Judge the From domain of `raw`. Does DNS only when `config.verify` asks for our own
    checks; never raises for bad input (unreadable headers give status none)."""
    origin = read_origin(raw, config.authserv_ids, config.mta_hops)
    context = {
        "connecting_ip": origin.connecting_ip,
        "helo": origin.helo,
        "mail_from": origin.mail_from,
    }
    mta = _mta_checks(origin)
    verdict = decide(mta, origin.from_domain, "mta")
    checks = list(mta)
    run_local = config.verify == "always" or (config.verify == "fallback" and not origin.trusted)
    if run_local and origin.from_domain is not None:
        local = local_checks(raw, origin, dns or config.dns_client())
        checks += local
        if verdict is None:
            verdict = decide(local, origin.from_domain, "local")
    if verdict is None:
        verdict = Verdict("none", origin.from_domain, _why_none(origin, config, checks))
    return replace(verdict, checks=tuple(checks), ignored=tuple(origin.ignored), context=context)


def _why_none(origin: Origin, config: SenderAuthConfig, checks: list[Check]) -> str:
    if origin.from_problem:
        return origin.from_problem
    if checks:
        return "no aligned pass and no failure"
    if not origin.trusted and config.verify == "off":
        return "no trusted Authentication-Results and own checks are off"
    return "no evidence"


def _mta_checks(origin: Origin) -> list[Check]:
    out = []
    for header in origin.trusted:
        source = f"mta:{header.authserv_id}"
        for result in header.results:
            domain = _domain(result)
            is_aligned = (
                aligned(domain, origin.from_domain)
                if origin.from_domain and domain and result.method in ("dkim", "spf")
                else None
            )
            detail = f"p={result.policy}" if result.policy else None
            out.append(Check(result.method, result.result, domain, is_aligned, source, detail))
    return out


def _domain(result: ArResult) -> str | None:
    props = result.properties
    if result.method == "dkim":
        raw = props.get("header.d") or props.get("header.i", "").rpartition("@")[2]
    elif result.method == "spf":
        raw = props.get("smtp.mailfrom") or props.get("smtp.helo") or ""
    elif result.method == "dmarc":
        raw = props.get("header.from", "")
    else:
        return None
    raw = raw.strip().strip('"')
    if "@" in raw:
        return domain_of(raw)
    try:
        return normalise_domain(raw) if raw else None
    except InvalidDomain:
        return None
