"""Sender validation in the pipeline, on SQLite and PostgreSQL: the verdict is stored with
the email, a `spoofed?` sender never maps to a customer by domain nor threads by subject
alone, and a workflow can quarantine it. Real DKIM signatures, DNS from a stub on loopback."""

from __future__ import annotations

from collections.abc import Callable
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path

from sqlalchemy import func, select

from mailticket.runtime import Runtime
from mailticket.store.models import EmailLog, QuarantineEntry, Ticket
from mailticket.store.senderauth_models import EmailSenderAuth
from tests.escalation.helpers import setup
from tests.senderauth.conftest import OUR_MX, QUARANTINE_SPOOFED, TestKey, delivered, sign
from tests.senderauth.dnsstub import Zone, dns_stub

FOREIGN_RECEIVED = (
    "Received: from mail.attacker.example (mail.attacker.example [203.0.113.66])\r\n"
    "\tby mx.support.example (Postfix) with ESMTP id 9; Mon, 15 Dec 2025 10:00:00 +0100\r\n"
)


def mail(n: int, *, sender: str = "Jane <jane@acme.example>", subject: str = "Printer on fire",
         body: str = "The printer in room 4 is on fire again.\n") -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = "support@support.example"
    msg["Subject"] = subject
    msg["Date"] = "Mon, 15 Dec 2025 09:59:50 +0100"
    msg["Message-ID"] = f"<m{n}@laptop.acme.example>"
    msg.set_content(body)
    return msg.as_bytes(policy=SMTP)


def judged(raw: bytes, dmarc: str, *, authserv: str = OUR_MX, domain: str = "acme.example") -> bytes:
    return delivered(raw, above=[
        f"Authentication-Results: {authserv}; dmarc={dmarc} (p=reject) header.from={domain}"
    ])


def test_verdict_stored_and_spoofed_sender_gets_no_customer_by_domain(
    make_runtime: Callable[..., Runtime], tmp_path: Path
) -> None:
    env = setup(make_runtime, tmp_path, sla=None, sender_auth_authserv_ids=OUR_MX)
    good = env.ingest(judged(mail(1), "pass"))
    forged = env.ingest(judged(mail(2), "fail"))
    # believed only from our own MTA: the sender's own "pass" counts for nothing
    untrusted = env.ingest(judged(mail(3), "pass", authserv="mx.attacker.example"))
    # an exact contact address is not a domain guess: it still maps
    boss = env.ingest(judged(mail(4, sender="boss@gmail.com"), "fail", domain="gmail.com"))
    assert (good.suspect, forged.suspect, untrusted.suspect, boss.suspect) == (
        False, True, False, True
    )
    with env.session() as s:
        def customer(o: object) -> int | None:
            return s.get_one(Ticket, o.ticket_id).customer_id  # type: ignore[attr-defined]

        assert customer(good) == 101
        assert customer(forged) is None
        assert customer(untrusted) == 101  # no evidence either way: policy `fail` trusts it
        assert customer(boss) == 101
        rows = {r.email_log_id: r for r in s.scalars(select(EmailSenderAuth))}
        assert set(rows) == {good.email_log_id, forged.email_log_id, untrusted.email_log_id,
                             boss.email_log_id}
        bad = rows[forged.email_log_id]
        assert (bad.status, bad.suspect, bad.from_domain) == ("fail", True, "acme.example")
        assert bad.evidence["reason"] == "dmarc=fail (p=reject)"
        assert bad.evidence["checks"][0]["source"] == f"mta:{OUR_MX}"
        assert rows[untrusted.email_log_id].status == "none"
        assert rows[untrusted.email_log_id].evidence["ignored_headers"]


def test_spoofed_sender_never_threads_by_subject_alone(
    make_runtime: Callable[..., Runtime], tmp_path: Path
) -> None:
    env = setup(make_runtime, tmp_path, sla=None, sender_auth_authserv_ids=OUR_MX)
    first = env.ingest(judged(mail(1), "pass"))
    number = first.ticket_number
    forged = env.ingest(judged(mail(2, subject=f"Re: [{number}] pay to IBAN X"), "fail"))
    assert forged.action == "created" and forged.ticket_id != first.ticket_id
    genuine = env.ingest(judged(mail(3, subject=f"Re: [{number}] thanks"), "pass"))
    assert genuine.action == "linked" and genuine.ticket_id == first.ticket_id
    assert genuine.matched_by == "subject"


def test_a_workflow_quarantines_spoofed_mail(
    make_runtime: Callable[..., Runtime], tmp_path: Path
) -> None:
    env = setup(make_runtime, tmp_path, sla=None, workflows=QUARANTINE_SPOOFED,
                sender_auth_authserv_ids=OUR_MX)
    held = env.ingest(judged(mail(1), "fail"))
    kept = env.ingest(judged(mail(2), "pass"))
    assert held.action == "quarantined"
    assert held.error == "workflow 'hold forged mail': sender failed DMARC"
    assert kept.action == "created"
    with env.session() as s:
        entry = s.scalars(select(QuarantineEntry)).one()
        assert entry.message_id == "<m1@laptop.acme.example>" and entry.traceback is None
        # nothing of the held message stays behind but its bytes and the entry
        logged = s.scalars(select(EmailLog.email_message_id)).all()
        assert logged == ["<m2@laptop.acme.example>"]
        assert s.scalar(select(func.count()).select_from(EmailSenderAuth)) == 1


def test_own_dkim_and_spf_checks_decide_when_no_mta_says(
    make_runtime: Callable[..., Runtime], tmp_path: Path, test_key: TestKey, zone: Zone
) -> None:
    with dns_stub(zone) as address:
        env = setup(make_runtime, tmp_path, sla=None, sender_auth_verify="fallback",
                    sender_auth_dns_servers=address, sender_auth_policy="dmarc")
        signed = env.ingest(delivered(sign(mail(1), test_key)))
        tampered = sign(mail(2), test_key).replace(b"on fire again", b"fine, pay invoice 42")
        forged = env.ingest(delivered(tampered, received=FOREIGN_RECEIVED))
    assert (signed.suspect, forged.suspect) == (False, True)
    with env.session() as s:
        assert s.get_one(Ticket, signed.ticket_id).customer_id == 101
        assert s.get_one(Ticket, forged.ticket_id).customer_id is None
        row = s.get_one(EmailSenderAuth, forged.email_log_id)
        methods = {c["method"]: c["result"] for c in row.evidence["checks"]}
        assert methods == {"dkim": "fail", "spf": "fail", "dmarc": "fail"}
        assert row.evidence["decided_by"] == "local"


def test_nothing_checked_or_stored_without_configuration(
    make_runtime: Callable[..., Runtime], tmp_path: Path
) -> None:
    env = setup(make_runtime, tmp_path, sla=None)
    outcome = env.ingest(judged(mail(1), "fail"))
    assert outcome.suspect is False
    with env.session() as s:
        assert s.scalar(select(func.count()).select_from(EmailSenderAuth)) == 0
        assert s.get_one(Ticket, outcome.ticket_id).customer_id == 101


def test_a_policy_nothing_can_pass_is_refused() -> None:
    import pytest

    from mailticket.settings import ConfigError, load_settings

    with pytest.raises(ConfigError, match="SENDER_AUTH_POLICY=no_pass would mark every"):
        load_settings(_env_file=None, sender_auth_policy="no_pass")
    ok = load_settings(_env_file=None, sender_auth_policy="no_pass", sender_auth_verify="always")
    assert ok.sender_auth_policy == "no_pass"
