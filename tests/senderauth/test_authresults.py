"""Authentication-Results from our MTA: believed only from our authserv-id and only above our
own Received line; everything else is kept as evidence but decides nothing."""

from __future__ import annotations

import json

import pytest

from mailticket.reading.senderauth import Policy, is_suspect
from tests.senderauth.conftest import OUR_MX, delivered, judge, message
from tests.senderauth.dnsstub import Zone

AR = f"Authentication-Results: {OUR_MX};"


def test_trusted_dmarc_pass_decides_without_any_dns(zone: Zone, dns: object) -> None:
    raw = delivered(message(), above=[
        f"{AR} dkim=pass header.d=acme.example header.s=mt; spf=pass "
        "smtp.mailfrom=bounces@acme.example; dmarc=pass (p=reject dis=none) header.from=acme.example"
    ])
    verdict = judge(raw, dns, verify="fallback")  # type: ignore[arg-type]
    assert (verdict.status, verdict.decided_by, verdict.reason) == ("pass", "mta", "dmarc=pass (p=reject)")
    assert zone.queries == []  # a trusted header exists: no own checks in fallback mode
    assert [c.method for c in verdict.checks] == ["dkim", "spf", "dmarc"]
    assert all(c.source == f"mta:{OUR_MX}" for c in verdict.checks)


def test_untrusted_authserv_id_is_ignored() -> None:
    raw = delivered(message(), above=[
        "Authentication-Results: mx.elsewhere.example; dmarc=pass header.from=acme.example"
    ])
    verdict = judge(raw)
    assert verdict.status == "none"
    assert verdict.ignored == (
        {"authserv_id": "mx.elsewhere.example", "reason": "authserv-id not trusted"},
    )
    assert "no trusted Authentication-Results" in verdict.reason


def test_authserv_id_is_compared_case_insensitively() -> None:
    raw = delivered(message(), above=[
        f"Authentication-Results: {OUR_MX.upper()}; dmarc=fail header.from=acme.example"
    ])
    assert judge(raw).status == "fail"


def test_forged_header_with_our_id_below_our_received_is_ignored() -> None:
    # The sender wrote "our" header into the message; our MTA's own says fail.
    forged = f"{AR} dmarc=pass header.from=acme.example"
    raw = delivered(
        message(),
        above=[f"{AR} dmarc=fail (p=reject) header.from=acme.example"],
        below=[forged],
    )
    verdict = judge(raw)
    assert (verdict.status, verdict.dmarc_policy) == ("fail", "reject")
    assert verdict.ignored == (
        {"authserv_id": OUR_MX, "reason": "below our Received header: written by the sender"},
    )


def test_forged_pass_alone_proves_nothing() -> None:
    raw = delivered(message(), below=[f"{AR} dkim=pass header.d=acme.example; dmarc=pass"])
    verdict = judge(raw)
    assert verdict.status == "none"
    assert is_suspect(verdict, Policy.no_pass)
    assert not is_suspect(verdict, Policy.fail)


def test_two_hops_of_our_own_move_the_boundary() -> None:
    # MX -> filter host: two Received lines are ours; the MX's header sits between them.
    filter_received = (
        "Received: from mx.support.example (mx.support.example [198.51.100.2])\r\n"
        "\tby filter.support.example with LMTP; Mon, 15 Dec 2025 10:00:01 +0100\r\n"
    )
    raw = (
        filter_received.encode()
        + delivered(message(), above=[f"{AR} dmarc=fail (p=quarantine) header.from=acme.example"])
    )
    one_hop = judge(raw, mta_hops=1)
    assert one_hop.status == "none" and one_hop.ignored[0]["reason"].startswith("below")
    two_hops = judge(raw, mta_hops=2)
    assert (two_hops.status, two_hops.dmarc_policy) == ("fail", "quarantine")
    # The connecting IP is read from the outermost of our own Received lines.
    assert two_hops.context["connecting_ip"] == "192.0.2.10"


def test_several_headers_of_our_mta_are_combined() -> None:
    raw = delivered(message(), above=[
        f"{AR} dmarc=none header.from=acme.example",
        f"{AR} spf=fail smtp.mailfrom=bounces@acme.example",
        f"{AR} dkim=pass (1024-bit key) header.d=esp.example header.i=@esp.example",
    ])
    verdict = judge(raw)
    # dkim passed for an unaligned domain; spf failed for an aligned one: fail.
    assert (verdict.status, verdict.reason) == ("fail", "aligned spf=fail (acme.example)")
    assert {(c.method, c.result, c.aligned) for c in verdict.checks} == {
        ("dmarc", "none", None), ("spf", "fail", True), ("dkim", "pass", False),
    }


def test_aligned_dkim_pass_without_dmarc_result_passes() -> None:
    raw = delivered(message(), above=[f"{AR} dkim=pass header.d=mail.acme.example"])
    verdict = judge(raw)
    assert (verdict.status, verdict.reason) == ("pass", "aligned dkim=pass (mail.acme.example)")


def test_dkim_identity_from_header_i_when_no_d() -> None:
    raw = delivered(message(), above=[f"{AR} dkim=pass header.i=@acme.example"])
    assert judge(raw).status == "pass"


def test_unaligned_passes_are_no_evidence() -> None:
    raw = delivered(message(), above=[
        f"{AR} dkim=pass header.d=mailer.esp.example; spf=pass smtp.mailfrom=b@esp.example"
    ])
    verdict = judge(raw)
    assert verdict.status == "none"
    assert verdict.reason == "no aligned pass and no failure"


def test_a_dmarc_result_for_another_domain_is_not_ours() -> None:
    raw = delivered(message(), above=[f"{AR} dmarc=pass header.from=other.example"])
    assert judge(raw).status == "none"


@pytest.mark.parametrize(
    ("clause", "policy"),
    [
        ("dmarc=fail (p=reject dis=none) header.from=acme.example", "reject"),
        ("dmarc=fail reason=\"x\" header.from=acme.example (policy=quarantine)", "quarantine"),
        ("dmarc=fail header.from=acme.example policy.dmarc=none", "none"),
        ("dmarc=fail (p=NONE sp=REJECT) header.from=acme.example", "none"),
        ("dmarc=fail header.from=acme.example", "unknown"),
    ],
)
def test_dmarc_policy_is_read_from_the_mtas_words(clause: str, policy: str) -> None:
    verdict = judge(delivered(message(), above=[f"{AR} {clause}"]))
    assert (verdict.status, verdict.dmarc_policy) == ("fail", policy)
    # Only p=none keeps a DMARC failure out of `spoofed?` under the `dmarc` policy.
    assert is_suspect(verdict, Policy.dmarc) is (policy != "none")
    assert is_suspect(verdict, Policy.fail)


def test_unparseable_header_is_reported_not_fatal() -> None:
    raw = delivered(message(), above=[f"Authentication-Results: i=1; {OUR_MX}; spf=pass"])
    verdict = judge(raw)
    assert verdict.status == "none"
    assert verdict.ignored[0]["reason"].startswith("unparseable")


def test_no_received_header_at_all_trusts_by_authserv_id() -> None:
    # A message file fed by hand: nothing separates our headers from the sender's.
    raw = f"{AR} dmarc=pass header.from=acme.example\r\n".encode() + message()
    assert judge(raw).status == "pass"


@pytest.mark.parametrize(
    ("sender", "reason"),
    [
        ("a@acme.example, b@other.example", "From does not hold exactly one address"),
        ("undisclosed-recipients:;", "From does not hold exactly one address"),
    ],
)
def test_from_must_be_one_address(sender: str, reason: str) -> None:
    raw = delivered(message(sender=sender), above=[f"{AR} dmarc=pass header.from=acme.example"])
    verdict = judge(raw)
    assert (verdict.status, verdict.from_domain, verdict.reason) == ("none", None, reason)
    assert is_suspect(verdict, "no_pass") and not is_suspect(verdict, "fail")


def test_two_from_headers() -> None:
    raw = delivered(b"From: other@evil.example\r\n" + message())
    assert judge(raw).reason == "more than one From header"


def test_evidence_is_json() -> None:
    raw = delivered(message(), above=[f"{AR} dkim=pass header.d=acme.example"], below=[
        "Authentication-Results: mx.elsewhere.example; spf=pass"
    ])
    evidence = judge(raw).evidence()
    assert json.loads(json.dumps(evidence)) == evidence
    assert evidence["status"] == "pass" and evidence["decided_by"] == "mta"
    assert evidence["connecting_ip"] == "192.0.2.10"
    assert evidence["mail_from"] == "bounces@acme.example"


@pytest.mark.parametrize(
    ("status", "dmarc_policy", "expected"),
    [
        # (off, dmarc, fail, no_pass)
        ("pass", "reject", (False, False, False, False)),
        ("fail", "reject", (False, True, True, True)),
        ("fail", "quarantine", (False, True, True, True)),
        ("fail", "none", (False, False, True, True)),
        ("fail", None, (False, False, True, True)),
        ("fail", "unknown", (False, True, True, True)),
        ("none", None, (False, False, False, True)),
    ],
)
def test_is_suspect_per_policy(
    status: str, dmarc_policy: str | None, expected: tuple[bool, ...]
) -> None:
    from mailticket.reading.senderauth import Verdict

    verdict = Verdict(status, "acme.example", "x", dmarc_policy=dmarc_policy)  # type: ignore[arg-type]
    got = tuple(is_suspect(verdict, p) for p in ("off", "dmarc", "fail", "no_pass"))
    assert got == expected
