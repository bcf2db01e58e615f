"""Free-mail and shared domains never say who the customer is."""

from __future__ import annotations

import pytest

from mailticket.customers.shared import DEFAULT_SHARED_DOMAINS, SharedDomains, shared_domains
from mailticket.reading.maildomains import InvalidDomain
from mailticket.settings import ConfigError, load_settings


@pytest.mark.parametrize(
    ("domain", "entry"),
    [
        ("gmail.com", "gmail.com"),
        ("googlemail.com", "googlemail.com"),
        ("outlook.com", "outlook.*"),
        ("outlook.de", "outlook.*"),
        ("hotmail.co.uk", "hotmail.*"),
        ("yahoo.co.jp", "yahoo.*"),
        ("mail.yahoo.co.uk", "yahoo.*"),
        ("icloud.com", "icloud.com"),
        ("gmx.net", "gmx.*"),
        ("gmx.de", "gmx.*"),
        ("web.de", "web.de"),
        ("proton.me", "proton.me"),
        ("protonmail.com", "protonmail.com"),
        ("smtp.t-online.de", "t-online.de"),
    ],
)
def test_defaults_cover_the_big_providers(domain: str, entry: str) -> None:
    assert shared_domains(None).entry_for(domain) == entry


@pytest.mark.parametrize(
    "domain", ["acme.example", "web.dev", "webde.com", "gmail.co", "yahoo-inc.example", "mygmail.com"]
)
def test_organisations_are_not_shared(domain: str) -> None:
    assert not shared_domains(None).is_shared(domain)


def test_a_configured_list_replaces_the_defaults_and_extra_adds() -> None:
    only = shared_domains(["mail.example"], ["isp.*"])
    assert only.is_shared("mail.example") and only.is_shared("isp.co.uk")
    assert not only.is_shared("gmail.com")
    assert shared_domains(None, ["partner-mail.example"]).is_shared("partner-mail.example")


@pytest.mark.parametrize("bad", ["*.gmail.com", "a.b.*", "not a domain", ".*"])
def test_bad_entries(bad: str) -> None:
    with pytest.raises(InvalidDomain):
        SharedDomains([bad])


def test_defaults_are_valid_and_lower_case() -> None:
    SharedDomains(DEFAULT_SHARED_DOMAINS)
    assert all(entry == entry.lower() for entry in DEFAULT_SHARED_DOMAINS)
    assert len(set(DEFAULT_SHARED_DOMAINS)) == len(DEFAULT_SHARED_DOMAINS)


def test_settings() -> None:
    settings = load_settings(_env_file=None, customer_shared_domains_extra="isp.example, isp2.*")
    assert settings.customer_shared_domains is None
    assert settings.customer_shared_domains_extra == ["isp.example", "isp2.*"]
    settings = load_settings(_env_file=None, customer_shared_domains='["only.example"]')
    assert settings.customer_shared_domains == ["only.example"]


def test_a_bad_entry_stops_start_up() -> None:
    with pytest.raises(ConfigError, match="CUSTOMER_SHARED_DOMAINS_EXTRA.*bare domain"):
        load_settings(_env_file=None, customer_shared_domains_extra="*.gmail.com")
