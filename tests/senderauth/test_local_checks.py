"""Our own DKIM, SPF and DMARC checks on mail signed with a real key, against a real DNS
server on loopback serving the sender's records."""

from __future__ import annotations

import pytest

from mailticket.reading.senderauth import Policy, is_suspect
from mailticket.reading.senderauth.dns import DnsClient
from tests.senderauth.conftest import OUR_MX, TestKey, delivered, judge, message, sign
from tests.senderauth.dnsstub import Zone

AR = f"Authentication-Results: {OUR_MX};"
FOREIGN_RECEIVED = (
    "Received: from mail.attacker.example (mail.attacker.example [203.0.113.66])\r\n"
    "\tby mx.support.example (Postfix) with ESMTP id 9; Mon, 15 Dec 2025 10:00:00 +0100\r\n"
)


def check(verdict: object, method: str) -> tuple[str, bool | None]:
    found = [c for c in verdict.checks if c.method == method]  # type: ignore[attr-defined]
    assert len(found) == 1, found
    return found[0].result, found[0].aligned


def test_signed_mail_from_an_authorised_ip_passes(test_key: TestKey, dns: DnsClient) -> None:
    verdict = judge(delivered(sign(message(), test_key)), dns, verify="fallback")
    assert (verdict.status, verdict.decided_by, verdict.dmarc_policy) == ("pass", "local", "reject")
    assert check(verdict, "dkim") == ("pass", True)
    assert check(verdict, "spf") == ("pass", True)
    assert check(verdict, "dmarc")[0] == "pass"


def test_tampered_body_breaks_dkim_and_dmarc_fails(test_key: TestKey, dns: DnsClient) -> None:
    signed = sign(message(), test_key)
    tampered = signed.replace(b"on fire again", b"fine, pay invoice 42 to IBAN X")
    raw = delivered(tampered, received=FOREIGN_RECEIVED)
    verdict = judge(raw, dns, verify="fallback")
    assert check(verdict, "dkim") == ("fail", True)
    assert check(verdict, "spf") == ("fail", True)
    assert (verdict.status, verdict.reason, verdict.dmarc_policy) == (
        "fail", "dmarc=fail (p=reject)", "reject",
    )
    assert is_suspect(verdict, Policy.dmarc)


def test_dkim_alone_carries_dmarc_when_spf_fails(test_key: TestKey, dns: DnsClient) -> None:
    # Forwarded mail: SPF fails at the forwarder's IP, the intact signature still aligns.
    raw = delivered(sign(message(), test_key), received=FOREIGN_RECEIVED)
    verdict = judge(raw, dns, verify="fallback")
    assert check(verdict, "spf") == ("fail", True)
    assert verdict.status == "pass"


def test_signature_by_another_key_fails(other_key: TestKey, dns: DnsClient) -> None:
    raw = delivered(sign(message(), other_key), received=FOREIGN_RECEIVED)
    verdict = judge(raw, dns, verify="fallback")
    assert check(verdict, "dkim") == ("fail", True)
    assert verdict.status == "fail"


def test_signature_whose_key_is_not_published(test_key: TestKey, dns: DnsClient) -> None:
    raw = delivered(sign(message(), test_key, selector="gone"), received=FOREIGN_RECEIVED)
    verdict = judge(raw, dns, verify="fallback")
    # dkimpy reports a missing key as a failed signature (and logs why).
    assert check(verdict, "dkim") == ("fail", True)
    assert verdict.status == "fail"


def test_signature_by_an_unrelated_domain_is_not_aligned(
    other_key: TestKey, zone: Zone, dns: DnsClient
) -> None:
    zone.txt("esp._domainkey.esp.example", other_key.txt())
    raw = delivered(
        sign(message(), other_key, domain="esp.example", selector="esp"), received=FOREIGN_RECEIVED
    )
    verdict = judge(raw, dns, verify="fallback")
    assert check(verdict, "dkim") == ("pass", False)
    assert verdict.status == "fail"


@pytest.mark.parametrize(
    ("spf_record", "dmarc", "spf_result", "status"),
    [
        ("v=spf1 ip4:192.0.2.10 -all", None, "pass", "pass"),
        ("v=spf1 ip4:198.51.100.0/24 -all", None, "fail", "fail"),
        ("v=spf1 ip4:198.51.100.0/24 ~all", None, "softfail", "none"),
        ("v=spf1 ip4:198.51.100.0/24 ?all", None, "neutral", "none"),
        ("v=spf1 ip4:198.51.100.0/24 ~all", "v=DMARC1; p=quarantine", "softfail", "fail"),
        ("v=spf1 a:mail.acme.example -all", "v=DMARC1; p=none", "pass", "pass"),
        ("v=spf1 mx -all", None, "pass", "pass"),
        ("v=spf1 include:_spf.esp.example -all", None, "pass", "pass"),
    ],
)
def test_spf_by_the_connecting_ip(
    zone: Zone,
    dns: DnsClient,
    spf_record: str,
    dmarc: str | None,
    spf_result: str,
    status: str,
) -> None:
    zone.records.pop("_dmarc.acme.example")
    zone.records.pop("acme.example")
    zone.txt("acme.example", spf_record)
    zone.add("acme.example", "MX", "10 mail.acme.example")
    zone.add("mail.acme.example", "A", "192.0.2.10")
    zone.txt("_spf.esp.example", "v=spf1 ip4:192.0.2.8/29 -all")
    if dmarc:
        zone.txt("_dmarc.acme.example", dmarc)
    verdict = judge(delivered(message()), dns, verify="fallback")
    assert check(verdict, "spf") == (spf_result, True)
    assert verdict.status == status


def test_null_sender_checks_the_helo_name(zone: Zone, dns: DnsClient) -> None:
    zone.txt("mail.acme.example", "v=spf1 ip4:192.0.2.10 -all")
    verdict = judge(delivered(message(), return_path="<>"), dns, verify="fallback")
    spf = next(c for c in verdict.checks if c.method == "spf")
    assert (spf.result, spf.domain, spf.aligned) == ("pass", "mail.acme.example", True)
    assert verdict.status == "pass"


@pytest.mark.parametrize(
    ("record", "status", "policy"),
    [
        ("v=DMARC1; p=reject", "fail", "reject"),
        ("v=DMARC1; p=quarantine", "fail", "quarantine"),
        ("v=DMARC1; p=none; rua=mailto:x@acme.example", "fail", "none"),
        ("v=DMARC1; p=bogus", "none", None),  # unusable record: no DMARC
        ("v=spf1 -all", "none", None),  # not a DMARC record at all
    ],
)
def test_dmarc_policies(
    zone: Zone, dns: DnsClient, record: str, status: str, policy: str | None
) -> None:
    zone.records.pop("_dmarc.acme.example")
    zone.txt("_dmarc.acme.example", record)
    # Unsigned, from an IP the SPF record does not know: no aligned pass, SPF says fail.
    zone.records.pop("acme.example")
    zone.txt("acme.example", "v=spf1 ip4:192.0.2.0/28 ~all")
    verdict = judge(delivered(message(), received=FOREIGN_RECEIVED), dns, verify="fallback")
    assert (verdict.status, verdict.dmarc_policy) == (status, policy)
    assert is_suspect(verdict, Policy.dmarc) is (policy in ("reject", "quarantine"))


def test_two_dmarc_records_mean_none(zone: Zone, dns: DnsClient) -> None:
    zone.txt("_dmarc.acme.example", "v=DMARC1; p=none")
    verdict = judge(delivered(message(), received=FOREIGN_RECEIVED), dns, verify="fallback")
    assert check(verdict, "dmarc")[0] == "none"


def test_strict_dkim_alignment(test_key: TestKey, zone: Zone, dns: DnsClient) -> None:
    """Signed by acme.example, From news.acme.example: relaxed aligns, strict does not."""
    zone.txt("_dmarc.news.acme.example", "v=DMARC1; p=reject; adkim=s; aspf=s")
    raw = delivered(
        sign(message(sender="news@news.acme.example"), test_key), received=FOREIGN_RECEIVED
    )
    strict = judge(raw, dns, verify="fallback")
    assert check(strict, "dkim") == ("pass", False)
    assert strict.status == "fail"
    zone.records.pop("_dmarc.news.acme.example")
    zone.txt("_dmarc.news.acme.example", "v=DMARC1; p=reject")
    assert judge(raw, dns, verify="fallback").status == "pass"


def test_subdomain_uses_the_organizational_record_and_its_sp(zone: Zone, dns: DnsClient) -> None:
    zone.records.pop("_dmarc.acme.example")
    zone.txt("_dmarc.acme.example", "v=DMARC1; p=none; sp=reject")
    raw = delivered(message(sender="x@billing.acme.example"), received=FOREIGN_RECEIVED)
    verdict = judge(raw, dns, verify="fallback")
    assert (verdict.status, verdict.dmarc_policy) == ("fail", "reject")
    assert ("_dmarc.billing.acme.example", "TXT") in zone.queries
    assert ("_dmarc.acme.example", "TXT") in zone.queries


def test_dns_failure_is_a_temperror_not_a_fail(zone: Zone, dns: DnsClient) -> None:
    zone.servfail.add("_dmarc.acme.example")
    zone.servfail.add("acme.example")
    verdict = judge(delivered(message(), received=FOREIGN_RECEIVED), dns, verify="fallback")
    assert check(verdict, "dmarc")[0] == "temperror"
    assert check(verdict, "spf")[0] == "temperror"
    assert verdict.status == "none"


def test_fallback_does_not_run_when_the_mta_spoke(zone: Zone, dns: DnsClient) -> None:
    raw = delivered(message(), above=[f"{AR} spf=neutral smtp.mailfrom=bounces@acme.example"])
    verdict = judge(raw, dns, verify="fallback")
    assert verdict.status == "none" and zone.queries == []


def test_always_decides_where_the_mta_did_not(test_key: TestKey, zone: Zone, dns: DnsClient) -> None:
    raw = delivered(
        sign(message(), test_key),
        above=[f"{AR} spf=neutral smtp.mailfrom=bounces@acme.example"],
    )
    verdict = judge(raw, dns, verify="always")
    assert (verdict.status, verdict.decided_by) == ("pass", "local")
    assert {c.source for c in verdict.checks} == {f"mta:{OUR_MX}", "local"}


def test_always_keeps_the_mtas_decision(test_key: TestKey, dns: DnsClient) -> None:
    raw = delivered(
        sign(message(), test_key),
        above=[f"{AR} dmarc=fail (p=reject) header.from=acme.example"],
    )
    verdict = judge(raw, dns, verify="always")
    # Our own checks would pass it; the MTA saw the real connection and said fail.
    assert (verdict.status, verdict.decided_by) == ("fail", "mta")
    assert check(verdict, "dkim") == ("pass", True)


def test_off_never_touches_dns(zone: Zone, dns: DnsClient, test_key: TestKey) -> None:
    verdict = judge(delivered(sign(message(), test_key)), dns, verify="off")
    assert verdict.status == "none" and zone.queries == []


def test_signature_count_is_bounded(test_key: TestKey, dns: DnsClient) -> None:
    raw = message()
    for _ in range(8):
        raw = sign(raw, test_key)
    verdict = judge(delivered(raw), dns, verify="fallback")
    assert len([c for c in verdict.checks if c.method == "dkim"]) == 5
    assert verdict.status == "pass"


def test_malformed_signature_is_neutral(dns: DnsClient) -> None:
    raw = b"DKIM-Signature: v=1; a=rsa-sha256; d=acme.example\r\n" + message()
    verdict = judge(delivered(raw), dns, verify="fallback")
    assert check(verdict, "dkim")[0] == "neutral"
    assert verdict.status == "pass"  # SPF from the authorised IP still aligns


@pytest.mark.parametrize(
    ("received", "ip", "helo"),
    [
        (
            "Received: from [192.0.2.10] (helo=mail.acme.example)\r\n\tby mx.support.example "
            "with esmtps (Exim 4.96) id 1t; Mon, 15 Dec 2025 10:00:00 +0100\r\n",
            "192.0.2.10", "mail.acme.example",
        ),
        (
            "Received: from mail.acme.example ([192.0.2.10] helo=mail.acme.example)\r\n"
            "\tby mx.support.example with esmtp (Exim 4.96); Mon, 15 Dec 2025 10:00:00 +0100\r\n",
            "192.0.2.10", "mail.acme.example",
        ),
        (
            "Received: from mail.acme.example (mail.acme.example [IPv6:2001:db8::25])\r\n"
            "\tby mx.support.example (Postfix); Mon, 15 Dec 2025 10:00:00 +0100\r\n",
            "2001:db8::25", "mail.acme.example",
        ),
        ("Received: by mx.support.example; Mon, 15 Dec 2025 10:00:00 +0100\r\n", None, None),
    ],
)
def test_connecting_ip_from_received_variants(
    zone: Zone, dns: DnsClient, received: str, ip: str | None, helo: str | None
) -> None:
    zone.records.pop("acme.example")
    zone.txt("acme.example", "v=spf1 ip4:192.0.2.10 ip6:2001:db8::/64 -all")
    verdict = judge(delivered(message(), received=received), dns, verify="fallback")
    assert (verdict.context["connecting_ip"], verdict.context["helo"]) == (ip, helo)
    assert check(verdict, "spf")[0] == ("pass" if ip else "none")


def test_bare_lf_line_endings_as_in_a_maildir(test_key: TestKey, dns: DnsClient) -> None:
    raw = delivered(sign(message(), test_key), received=FOREIGN_RECEIVED).replace(b"\r\n", b"\n")
    verdict = judge(raw, dns, verify="fallback")
    assert check(verdict, "dkim") == ("pass", True)
    assert verdict.status == "pass"
