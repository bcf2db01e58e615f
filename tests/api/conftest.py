"""An API on a real database (SQLite and PostgreSQL) with one token per scope, and the headless
Chromium the browser tests drive."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

from mailticket.api import tokens
from mailticket.api.app import create_app
from mailticket.runtime import Runtime
from mailticket.types import Outcome


@dataclass
class Api:
    runtime: Runtime
    app: FastAPI
    client: TestClient
    tokens: dict[str, str]

    def auth(self, scope: str = "read") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[scope]}"}

    def get(self, path: str, scope: str = "read", **kw: Any) -> Any:
        return self.client.get(path, headers=self.auth(scope), **kw)

    def ingest(self, raw: bytes, received_at: datetime | None = None) -> Outcome:
        return self.runtime.pipeline.process(raw, "test", received_at=received_at)

    def token(self, scope: str, name: str) -> str:
        with self.runtime.session_factory() as session:
            _, plain = tokens.create_token(session, name=name, scope=scope)
            session.commit()
        return plain


def build_api(runtime: Runtime) -> Api:
    app = create_app(runtime)
    # 5xx must come back as responses (problem+json), not as exceptions in the test.
    client = TestClient(app, raise_server_exceptions=False)
    api = Api(runtime, app, client, {})
    for scope in tokens.SCOPES:
        api.tokens[scope] = api.token(scope, f"test-{scope}")
    return api


@pytest.fixture
def make_api(make_runtime: Callable[..., Runtime]) -> Iterator[Callable[..., Api]]:
    built: list[Api] = []

    def factory(**overrides: Any) -> Api:
        overrides.setdefault("api_test_endpoint_enabled", True)
        api = build_api(make_runtime(**overrides))
        built.append(api)
        return api

    yield factory
    for api in built:
        api.client.close()


@pytest.fixture
def api(make_api: Callable[..., Api]) -> Api:
    return make_api()


CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):
        pytest.fail("Chromium is missing: scripts/test installs Debian's chromium and chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.implicitly_wait(5)
    yield driver
    driver.quit()
