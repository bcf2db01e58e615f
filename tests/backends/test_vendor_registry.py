"""The six vendor kinds are installed entry points and build from BACKENDS_FILE-style YAML."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from mailticket.backends.autotask import AutotaskBackend
from mailticket.backends.registry import BackendConfigError, available_kinds, parse_instances
from tests.backends.fakes._server import serve
from tests.backends.fakes.autotask import FakeAutotask
from tests.backends.fakes.freshdesk import FakeFreshdesk
from tests.backends.fakes.itop import FakeITop
from tests.backends.fakes.servicenow import FakeServiceNow
from tests.backends.fakes.smax import TENANT, FakeSmax
from tests.backends.fakes.zendesk import FakeZendesk

KINDS = ("autotask", "itop", "servicenow", "zendesk", "freshdesk", "smax")


def test_kinds_are_entry_points() -> None:
    kinds = available_kinds()
    for kind in KINDS:
        assert kinds[kind].kind == kind


@pytest.fixture
def urls() -> Iterator[dict[str, str]]:
    AutotaskBackend.zone_cache.clear()
    fakes: dict[str, Any] = {"autotask": FakeAutotask(), "itop": FakeITop(),
                             "servicenow": FakeServiceNow(), "zendesk": FakeZendesk(),
                             "freshdesk": FakeFreshdesk(), "smax": FakeSmax()}
    with serve(fakes["autotask"].app) as at, serve(fakes["itop"].app) as it, \
            serve(fakes["servicenow"].app) as sn, serve(fakes["zendesk"].app) as zd, \
            serve(fakes["freshdesk"].app) as fd, serve(fakes["smax"].app) as sm:
        yield {"autotask": at, "itop": it, "servicenow": sn, "zendesk": zd, "freshdesk": fd,
               "smax": sm}
    AutotaskBackend.zone_cache.clear()


YAML = """
instances:
  psa:
    kind: autotask
    username: api@example.org
    secret: s3cret
    integration_code: INTEGRATION
    zone_lookup_url: "{autotask}/atservicesrest/v1.0/"
    company_id: 0
    queue_id: 29683354
  cmdb:
    kind: itop
    base_url: "{itop}"
    auth_user: rest
    auth_pwd: pw
    org_id: "1"
  snow:
    kind: servicenow
    base_url: "{servicenow}"
    username: svc
    password: pw
  zd:
    kind: zendesk
    base_url: "{zendesk}"
    email: agent@example.org
    api_token: tok
  fd:
    kind: freshdesk
    base_url: "{freshdesk}"
    api_key: fdkey
  sm:
    kind: smax
    base_url: "{smax}"
    tenant_id: "{tenant}"
    login: integration
    password: pw
    requested_by_person: "10016"
"""


async def test_build_from_yaml_and_test_connection(urls: dict[str, str]) -> None:
    instances = parse_instances(yaml.safe_load(YAML.format(tenant=TENANT, **urls)), "backends.yaml")
    assert {i.kind for i in instances.values()} == set(KINDS)
    assert "s3cret" not in repr(instances["psa"].config)  # secrets never print
    # Autotask's tenant-wide budget arrives as a default: a throttled client is built.
    assert instances["psa"].config.max_requests_per_hour == 10_000
    for inst in instances.values():
        backend = inst.build()
        try:
            assert await backend.test_connection()
        finally:
            await backend.aclose()


def test_config_errors_name_file_and_field() -> None:
    bad = {"instances": {"snow": {"kind": "servicenow", "username": "u"}}}
    with pytest.raises(BackendConfigError, match=r"backends.yaml: instances.snow \(servicenow\): "
                                                 r"base_url: Field required"):
        parse_instances(bad, "backends.yaml")
    typo = {"instances": {"zd": {"kind": "zendesk", "base_url": "x", "api_tokn": "t"}}}
    with pytest.raises(BackendConfigError, match="api_tokn: Extra inputs"):
        parse_instances(typo, "backends.yaml")
