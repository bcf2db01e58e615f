"""Our own DKIM (dkimpy), SPF (pyspf) and DMARC (RFC 7489 record and alignment) checks, for
mail that no trusted MTA has judged. DMARC itself is a record lookup and two comparisons,
too little to justify a library that brings its own resolver and network behaviour."""

from __future__ import annotations

from dataclasses import dataclass

import dkim
import spf

from mailticket.reading.maildomains import domain_of, organizational_domain
from mailticket.reading.senderauth.dns import DnsClient, DnsTempError
from mailticket.reading.senderauth.headers import Origin
from mailticket.reading.senderauth.verdict import Check, aligned

# Each signature costs a DNS lookup and an RSA verification; real mail carries one to
# three. A message with dozens is either broken or an attack on our CPU.
MAX_DKIM_SIGNATURES = 5
_POLICIES = ("none", "quarantine", "reject")


@dataclass(frozen=True)
class DmarcRecord:
    found_at: str
    policy: str  # the one that applies to the From domain (p, or sp for a subdomain)
    adkim: str  # r | s
    aspf: str


def parse_dmarc(text: bytes, *, found_at: str, for_subdomain: bool) -> DmarcRecord | None:
    """A DMARC1 record, or None when it is not one or its policy is unusable."""
    try:
        value = text.decode("ascii")
    except UnicodeDecodeError:
        return None
    tags: dict[str, str] = {}
    for part in value.split(";"):
        key, eq, tag_value = part.partition("=")
        if eq:
            tags.setdefault(key.strip().lower(), tag_value.strip())
    if tags.get("v") != "DMARC1":
        return None
    policy = tags.get("p", "").lower()
    if policy not in _POLICIES:
        return None
    if for_subdomain and tags.get("sp", "").lower() in _POLICIES:
        policy = tags["sp"].lower()
    modes = {k: tags.get(k, "r").lower() for k in ("adkim", "aspf")}
    return DmarcRecord(
        found_at,
        policy,
        modes["adkim"] if modes["adkim"] in ("r", "s") else "r",
        modes["aspf"] if modes["aspf"] in ("r", "s") else "r",
    )


def lookup_dmarc(dns: DnsClient, from_domain: str) -> DmarcRecord | None:
    """RFC 7489 §6.6.3: the From domain's record, else its organizational domain's."""
    org = organizational_domain(from_domain)
    for name in dict.fromkeys((from_domain, org)):
        records = [r for r in dns.txt(f"_dmarc.{name}") if r[:8].upper() == b"V=DMARC1"]
        if len(records) != 1:
            continue  # none, or several: both mean "no policy" here
        record = parse_dmarc(records[0], found_at=name, for_subdomain=name != from_domain)
        if record is not None:
            return record
    return None


def dkim_checks(raw: bytes, dns: DnsClient, from_domain: str | None, mode: str) -> list[Check]:
    checks = []
    try:
        headers = dkim.DKIM(raw).headers
    except dkim.DKIMException as exc:
        return [Check("dkim", "permerror", None, None, "local", f"unreadable message: {exc}")]
    count = sum(1 for name, _ in headers if name.lower() == b"dkim-signature")
    for index in range(min(count, MAX_DKIM_SIGNATURES)):
        verifier = dkim.DKIM(raw, timeout=int(dns.timeout) or 1)
        domain: str | None = None
        try:
            ok = verifier.verify(idx=index, dnsfunc=dns.dkim_dnsfunc)
            result, detail = ("pass" if ok else "fail"), None
        except dkim.DnsTimeoutError as exc:
            result, detail = "temperror", str(exc)
        except dkim.KeyFormatError as exc:  # no key published, or an unusable one
            result, detail = "permerror", str(exc)
        except dkim.ValidationError as exc:
            # dkimpy reports a changed body like a malformed tag; only the former is a
            # signature that failed (RFC 8601 §2.7.1), the rest could not be processed.
            text = str(exc)
            result, detail = ("fail" if "body hash mismatch" in text else "neutral"), text
        except dkim.DKIMException as exc:
            result, detail = "neutral", str(exc)
        if verifier.domain:
            domain = verifier.domain.decode("ascii", "replace").lower()
            selector = verifier.selector.decode("ascii", "replace") if verifier.selector else ""
            detail = f"s={selector}" + (f"; {detail}" if detail else "")
        checks.append(Check(
            "dkim", result, domain,
            aligned(domain, from_domain, mode) if from_domain else None, "local", detail,
        ))
    return checks


def spf_check(origin: Origin, dns: DnsClient, from_domain: str | None, mode: str) -> Check:
    if origin.connecting_ip is None:
        return Check("spf", "none", None, None, "local", "no connecting IP in our Received header")
    helo = origin.helo or ""
    sender = origin.mail_from if origin.mail_from else ""
    if not sender:
        # The null sender (bounces): RFC 7208 §2.4 checks postmaster@HELO instead.
        sender = f"postmaster@{helo}" if helo else ""
    domain = domain_of(sender) if sender else None
    if domain is None:
        return Check("spf", "none", None, None, "local", "no MAIL FROM or HELO domain")
    with dns.for_spf():
        result, _code, explanation = spf.query(
            i=origin.connecting_ip, s=sender, h=helo, timeout=dns.timeout
        ).check()
    return Check(
        "spf", str(result), domain,
        aligned(domain, from_domain, mode) if from_domain else None, "local",
        f"ip={origin.connecting_ip}; {explanation}",
    )


def local_checks(raw: bytes, origin: Origin, dns: DnsClient) -> list[Check]:
    """DKIM, SPF and DMARC for the message, as our MTA would have checked them."""
    from_domain = origin.from_domain
    record: DmarcRecord | None = None
    dmarc: Check | None = None
    if from_domain is not None:
        try:
            record = lookup_dmarc(dns, from_domain)
        except DnsTempError as exc:
            dmarc = Check("dmarc", "temperror", from_domain, None, "local", str(exc))
    dkim_mode = record.adkim if record else "r"
    spf_mode = record.aspf if record else "r"
    checks = dkim_checks(raw, dns, from_domain, dkim_mode)
    checks.append(spf_check(origin, dns, from_domain, spf_mode))
    if from_domain is not None and dmarc is None:
        if record is None:
            dmarc = Check("dmarc", "none", from_domain, None, "local", "no DMARC record")
        else:
            passed = any(c.result == "pass" and c.aligned for c in checks)
            dmarc = Check(
                "dmarc", "pass" if passed else "fail", from_domain, None, "local",
                f"p={record.policy} adkim={record.adkim} aspf={record.aspf} "
                f"(record at _dmarc.{record.found_at})",
            )
    if dmarc is not None:
        checks.append(dmarc)
    return checks
