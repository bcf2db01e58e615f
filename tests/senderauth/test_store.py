"""The verdict is stored with the email, on both databases, and settings build the config."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from mailticket.reading.senderauth import Policy, SenderAuthConfig, is_suspect
from mailticket.settings import ConfigError, load_settings
from mailticket.store.models import EmailLog
from mailticket.store.senderauth_models import EmailSenderAuth, record_sender_auth, sender_auth_of
from tests.senderauth.conftest import OUR_MX, delivered, judge, message


def test_evidence_round_trips(session_factory: sessionmaker[Session]) -> None:
    raw = delivered(message(), above=[
        f"Authentication-Results: {OUR_MX}; dmarc=fail (p=reject) header.from=acme.example"
    ], below=["Authentication-Results: evil.example; dmarc=pass"])
    verdict = judge(raw)
    with session_factory() as session, session.begin():
        log = EmailLog(email_message_id="<c0ffee@laptop.acme.example>", email_from="jane@acme.example")
        session.add(log)
        session.flush()
        record_sender_auth(
            session, log.id, verdict.evidence(), suspect=is_suspect(verdict, Policy.fail)
        )
        log_id = log.id
    with session_factory() as session:
        rows = sender_auth_of(session, [log_id, 999_999])
        assert list(rows) == [log_id]
        row = rows[log_id]
        assert (row.status, row.suspect, row.from_domain) == ("fail", True, "acme.example")
        assert row.evidence == verdict.evidence()
        assert row.evidence["ignored_headers"][0]["authserv_id"] == "evil.example"
        assert session.query(EmailSenderAuth).filter(EmailSenderAuth.suspect.is_(True)).count() == 1


def test_config_from_settings(tmp_path: Path) -> None:
    settings = load_settings(
        _env_file=None,
        sender_auth_authserv_ids="MX.Support.Example, mx2.support.example",
        sender_auth_mta_hops=2,
        sender_auth_verify="fallback",
        sender_auth_policy="dmarc",
        sender_auth_dns_servers='["127.0.0.1:5300"]',
    )
    config = SenderAuthConfig.from_settings(settings)
    assert config.authserv_ids == frozenset({"mx.support.example", "mx2.support.example"})
    assert (config.mta_hops, config.verify, config.policy) == (2, "fallback", Policy.dmarc)
    assert config.dns_servers == ("127.0.0.1:5300",)
    assert config.dns_client().resolver.nameservers[0].port == 5300


def test_defaults_flag_failures_only() -> None:
    config = SenderAuthConfig.from_settings(load_settings(_env_file=None))
    assert (config.verify, config.policy, config.authserv_ids) == ("off", Policy.fail, frozenset())


@pytest.mark.parametrize(
    ("name", "value"),
    [("sender_auth_policy", "sometimes"), ("sender_auth_verify", "yes"), ("sender_auth_mta_hops", 0)],
)
def test_bad_settings_are_named(name: str, value: object) -> None:
    with pytest.raises(ConfigError, match=name.upper()):
        load_settings(_env_file=None, **{name: value})
