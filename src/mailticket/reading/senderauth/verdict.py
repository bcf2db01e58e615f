"""The verdict on a message's From domain, the evidence behind it, and the policy that turns
it into the `spoofed?` label.

status:
- pass: DMARC passed, or (no DMARC result) a DKIM signature or SPF check of a domain
  aligned with the From domain passed;
- fail: DMARC failed, or (no DMARC result) SPF failed outright for an aligned domain and
  nothing aligned passed. A broken DKIM signature alone is not a fail: RFC 6376 §6.1 treats
  it as no signature (mailing lists break them innocently);
- none: no evidence either way (nothing trusted, only neutral/softfail/temporary results).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Literal

from mailticket.reading.maildomains import organizational_domain

Status = Literal["pass", "fail", "none"]
SPOOFED_LABEL = "spoofed?"


class Policy(enum.StrEnum):
    off = "off"  # never suspect
    dmarc = "dmarc"  # fail, and the domain asks receivers to quarantine or reject (or we
    # cannot tell what it asks)
    fail = "fail"  # any fail
    no_pass = "no_pass"  # anything but a pass (also mail with no evidence at all)


@dataclass(frozen=True)
class Check:
    method: str  # dkim | spf | dmarc
    result: str  # pass | fail | softfail | neutral | none | temperror | permerror | policy
    domain: str | None  # d= (dkim), MAIL FROM/HELO domain (spf), From domain (dmarc)
    aligned: bool | None  # dkim/spf: aligned with the From domain; None when unknown
    source: str  # "mta:<authserv-id>" or "local"
    detail: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "result": self.result,
            "domain": self.domain,
            "aligned": self.aligned,
            "source": self.source,
            "detail": self.detail,
        }


@dataclass(frozen=True)
class Verdict:
    status: Status
    from_domain: str | None
    reason: str
    # What the From domain publishes: none | quarantine | reject; "unknown" when a DMARC
    # failure was reported without it; None when no DMARC record is known.
    dmarc_policy: str | None = None
    # mta: decided by a trusted Authentication-Results; local: by our own checks
    decided_by: Literal["mta", "local", "none"] = "none"
    checks: tuple[Check, ...] = ()
    ignored: tuple[dict[str, Any], ...] = ()
    context: dict[str, Any] = field(default_factory=dict)

    def evidence(self) -> dict[str, Any]:
        """JSON-able: stored with the email, shown in the thread view."""
        return {
            "status": self.status,
            "from_domain": self.from_domain,
            "reason": self.reason,
            "dmarc_policy": self.dmarc_policy,
            "decided_by": self.decided_by,
            "checks": [check.as_dict() for check in self.checks],
            "ignored_headers": list(self.ignored),
            **self.context,
        }


def is_suspect(verdict: Verdict, policy: Policy | str) -> bool:
    """True: the message gets the `spoofed?` label, never maps to a customer by domain and
    never links to a ticket by subject alone."""
    match Policy(policy):
        case Policy.off:
            return False
        case Policy.dmarc:
            return verdict.status == "fail" and verdict.dmarc_policy in (
                "quarantine", "reject", "unknown"
            )
        case Policy.fail:
            return verdict.status == "fail"
        case Policy.no_pass:
            return verdict.status != "pass"


def aligned(domain: str | None, from_domain: str, mode: str = "r") -> bool:
    """RFC 7489 §3.1: strict (`s`) wants the same name, relaxed the same organization."""
    if not domain:
        return False
    domain = domain.lower().rstrip(".")
    if mode == "s":
        return domain == from_domain
    return organizational_domain(domain) == organizational_domain(from_domain)


def decide(
    checks: list[Check], from_domain: str | None, decided_by: Literal["mta", "local"]
) -> Verdict | None:
    """The verdict these checks support, or None when they support none (no evidence)."""
    if from_domain is None:
        return None
    for check in checks:
        if check.method == "dmarc" and check.domain in (None, from_domain):
            if check.result in ("pass", "fail"):
                policy = _policy_of(check) if check.result == "fail" else _policy_of(check, None)
                return Verdict(
                    check.result,  # type: ignore[arg-type]
                    from_domain,
                    f"dmarc={check.result}" + (f" (p={policy})" if policy else ""),
                    dmarc_policy=policy,
                    decided_by=decided_by,
                )
    for method in ("dkim", "spf"):
        for check in checks:
            if check.method == method and check.result == "pass" and check.aligned:
                return Verdict(
                    "pass", from_domain, f"aligned {method}=pass ({check.domain})",
                    decided_by=decided_by,
                )
    for check in checks:
        if check.method == "spf" and check.result == "fail" and check.aligned:
            return Verdict(
                "fail", from_domain, f"aligned spf=fail ({check.domain})", decided_by=decided_by
            )
    return None


def _policy_of(check: Check, unknown: str | None = "unknown") -> str | None:
    if check.detail and check.detail.startswith("p="):
        return check.detail[2:].split()[0]
    return unknown
