from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mailticket.runtime import Runtime
from tests.backends.fakes import contract
from tests.backends.fakes._server import serve
from tests.backends.fakes.jira import FakeJira
from tests.backends.fakes.zendesk import FakeZendesk
from tests.backends.helpers import PUSH_WORKFLOW, write_backends


@pytest.fixture(autouse=True)
def vendor_contracts() -> Iterator[None]:
    """Fail the test when any fake saw a request its vendor would refuse, or gave an answer
    its vendor's document does not allow (see fakes/contract.py)."""
    contract.watch()
    yield
    problems = contract.unread()
    if problems:
        pytest.fail("fake vendors saw contract breaches:\n" + "\n".join(map(str, problems)),
                    pytrace=False)


@pytest.fixture
def fake_jira() -> Iterator[FakeJira]:
    with FakeJira() as server:
        yield server


def jira_instance(server: FakeJira, **extra: Any) -> dict[str, Any]:
    return {
        "kind": "jira", "base_url": server.url, "project_key": server.project,
        "email": server.email, "api_token": server.token,
        "webhook_secret": server.webhook_secret, "timeout": 5,
        "status_map": {"Done": "resolved"}, **extra,
    }


@pytest.fixture
def jira_runtime(
    make_runtime: Callable[..., Runtime], fake_jira: FakeJira, tmp_path: Path
) -> Runtime:
    backends = write_backends(tmp_path / "backends.yaml", {"jira": jira_instance(fake_jira)})
    return make_runtime(workflows_path=PUSH_WORKFLOW, backends_file=backends)


ZD_SECRET = "zd-webhook-secret"


@pytest.fixture
def zd() -> Iterator[tuple[FakeZendesk, str]]:
    fake = FakeZendesk()
    with serve(fake.app) as url:
        yield fake, url


@pytest.fixture
def zd_rt(make_runtime: Callable[..., Runtime], zd: tuple[FakeZendesk, str],
          tmp_path: Path) -> Runtime:
    """A runtime whose workflow pushes every ticket to the fake Zendesk instance `zd`."""
    _, url = zd
    backends = write_backends(tmp_path / "backends.yaml", {"zd": {
        "kind": "zendesk", "base_url": url, "email": "agent@example.org", "api_token": "tok",
        "webhook_secret": ZD_SECRET, "timeout": 5}})
    workflow = tmp_path / "push_zd.yaml"
    workflow.write_text(PUSH_WORKFLOW.read_text().replace("backend: jira", "backend: zd")
                        .replace("customfield_10050", '"360"'))
    return make_runtime(workflows_path=workflow, backends_file=backends)
