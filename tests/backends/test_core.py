"""Registry, HTTP error mapping, Jira auth order and the `mailticket backends` command."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from mailticket.backends import http
from mailticket.backends.errors import (
    AmbiguousResult,
    AuthError,
    NotFound,
    RateLimited,
    Transient,
    ValidationError,
)
from mailticket.backends.jira import JiraBackend, JiraConfig
from mailticket.backends.registry import BackendConfigError, load_instances
from mailticket.cli import main
from tests.backends.conftest import jira_instance
from tests.backends.fakes.jira import FakeJira
from tests.backends.helpers import write_backends


def test_retry_after_seconds_and_http_date() -> None:
    now = datetime(2025, 12, 15, 10, 0, tzinfo=UTC)
    assert http.parse_retry_after("42") == 42.0
    assert http.parse_retry_after("Mon, 15 Dec 2025 10:01:30 GMT", now=now) == 90.0
    assert http.parse_retry_after("Mon, 15 Dec 2025 09:00:00 GMT", now=now) == 0.0
    assert http.parse_retry_after("soon") is None
    assert http.retry_after_of({"x-ratelimit-reset": "2025-12-15T10:00:30Z"}, now=now) == 30.0


def _resp(status: int, body: object, method: str = "GET", **headers: str) -> httpx.Response:
    return httpx.Response(status, json=body, headers=headers,
                          request=httpx.Request(method, "http://x/"))


def test_status_codes_map_to_the_error_tree() -> None:
    jira_body = {"errorMessages": ["Issue does not exist"], "errors": {}}
    with pytest.raises(NotFound, match="Issue does not exist"):
        http.raise_for_vendor(_resp(404, jira_body), "jira")
    with pytest.raises(AuthError, match="credentials rejected"):
        http.raise_for_vendor(_resp(401, {"error": "bad token"}), "zammad")
    with pytest.raises(ValidationError, match="summary: required"):
        http.raise_for_vendor(_resp(400, {"errorMessages": [], "errors": {"summary": "required"}}), "j")
    with pytest.raises(RateLimited) as limited:
        http.raise_for_vendor(_resp(429, {}, **{"Retry-After": "12"}), "j")
    assert limited.value.retry_after == 12.0 and limited.value.retryable
    with pytest.raises(AmbiguousResult):
        http.raise_for_vendor(_resp(502, {}, method="POST"), "j")
    with pytest.raises(Transient) as plain:
        http.raise_for_vendor(_resp(502, {}, method="GET"), "j")
    assert not isinstance(plain.value, AmbiguousResult)


def test_registry_reports_file_and_reason(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bad = tmp_path / "b.yaml"
    bad.write_text("instances:\n  jira:\n    kind: jira\n    base_url: http://x\n")
    with pytest.raises(BackendConfigError) as err:
        load_instances(bad)
    assert str(bad) in str(err.value) and "instances.jira" in str(err.value)
    assert "project_key" in str(err.value)
    bad.write_text("instances:\n  x:\n    kind: nosuch\n")
    with pytest.raises(BackendConfigError, match="unknown kind 'nosuch'"):
        load_instances(bad)
    monkeypatch.setenv("MT_TEST_TOKEN", "from-env")
    bad.write_text(
        "instances:\n  j:\n    kind: jira\n    base_url: http://x\n    project_key: OPS\n"
        "    email: a@b\n    api_token: ${MT_TEST_TOKEN}\n"
    )
    config = load_instances(bad)["j"].config
    assert isinstance(config, JiraConfig)
    assert config.api_token is not None and config.api_token.get_secret_value() == "from-env"
    assert "from-env" not in repr(config)


def test_jira_auth_order() -> None:
    base = {"base_url": "http://x", "project_key": "OPS"}
    every = JiraConfig(**base, oauth2_token="o", pat="p", email="e@x", api_token="t",
                       username="u", password="pw")
    assert JiraBackend("j", every).auth_header() == ("Bearer o", "OAuth2")
    no_oauth = every.model_copy(update={"oauth2_token": None})
    assert JiraBackend("j", no_oauth).auth_header() == ("Bearer p", "personal access token")
    token = no_oauth.model_copy(update={"pat": None})
    assert JiraBackend("j", token).auth_header()[0] == "Basic " + base64.b64encode(b"e@x:t").decode()
    basic = token.model_copy(update={"api_token": None})
    assert JiraBackend("j", basic).auth_header()[0] == "Basic " + base64.b64encode(b"u:pw").decode()
    with pytest.raises(ValueError, match="needs credentials"):
        JiraConfig(**base)


def test_cli_test_reports_bad_credentials_clearly(
    fake_jira: FakeJira, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str], db_url: str,
) -> None:
    path = write_backends(tmp_path / "b.yaml", {
        "good": jira_instance(fake_jira),
        "wrong": jira_instance(fake_jira, api_token="nope"),
        "pat": jira_instance(fake_jira, pat="pat-1"),
    })
    monkeypatch.setenv("BACKENDS_FILE", str(path))
    monkeypatch.setenv("DATABASE_URL", db_url)
    monkeypatch.chdir(tmp_path)  # no stray .env
    assert main(["backends", "test", "good"]) == 0
    assert "good: ok, authenticated as Bot via API token" in capsys.readouterr().out
    assert main(["backends", "test", "wrong"]) == 1
    err = capsys.readouterr().err
    assert "wrong: authentication failed" in err and "HTTP 401" in err
    assert "You are not authenticated" in err
    # PAT outranks the API token: the fake only knows the token, so it refuses.
    assert main(["backends", "test", "pat"]) == 1
    assert "authentication failed" in capsys.readouterr().err
    fake_jira.bearer.add("pat-1")
    assert main(["backends", "test", "pat"]) == 0
    assert "via personal access token" in capsys.readouterr().out
    assert main(["backends", "list"]) == 0
    listing = capsys.readouterr().out
    assert "good" in listing and "jira" in listing and "webhooks" in listing
    assert main(["backends", "test", "missing"]) == 2
    assert "unknown backend instance 'missing'" in capsys.readouterr().err
