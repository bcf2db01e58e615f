"""One kit per vendor: its fake, a backend client pointed at it, and where its tickets are.

Used by the tests that run the same scenario against every vendor (faults, contracts).
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from mailticket.backends.autotask import AutotaskBackend, AutotaskConfig
from mailticket.backends.base import TicketBackend
from mailticket.backends.freshdesk import FreshdeskBackend, FreshdeskConfig
from mailticket.backends.itop import ITopBackend, ITopConfig
from mailticket.backends.jira import JiraBackend, JiraConfig
from mailticket.backends.servicenow import ServiceNowBackend, ServiceNowConfig
from mailticket.backends.smax import SmaxBackend, SmaxConfig
from mailticket.backends.webhook import WebhookBackend, WebhookConfig
from mailticket.backends.zammad import ZammadBackend, ZammadConfig
from mailticket.backends.zendesk import ZendeskBackend, ZendeskConfig
from tests.backends.fakes import base
from tests.backends.fakes._server import serve
from tests.backends.fakes.autotask import FakeAutotask
from tests.backends.fakes.contract import Exchange
from tests.backends.fakes.freshdesk import FakeFreshdesk
from tests.backends.fakes.itop import FakeITop, operation
from tests.backends.fakes.jira import FakeJira
from tests.backends.fakes.servicenow import FakeServiceNow
from tests.backends.fakes.smax import TENANT, FakeSmax
from tests.backends.fakes.webhook_receiver import FakeReceiver
from tests.backends.fakes.zammad import FakeZammad
from tests.backends.fakes.zendesk import FakeZendesk

HOOK_SECRET = "whsec_" + base64.b64encode(b"kits-signing-secret-0123456789ab").decode()


@dataclass(frozen=True)
class Kit:
    name: str
    fake: Callable[[], Any]
    backend: Callable[[Any, str], TicketBackend[Any]]  # (fake, its URL) -> client
    tickets: Callable[[Any], int]  # how many tickets the fake holds
    create: str  # the create request's path (a regular expression)
    # ...and what else tells the create apart, where the path does not (iTop)
    create_where: Callable[[Exchange], bool] | None = None


@contextmanager
def running(fake: Any) -> Iterator[str]:
    """Serve a fake of either base class; yield its URL."""
    if isinstance(fake, base.FakeVendor):
        with fake:
            yield fake.url
    else:
        with serve(fake.app) as url:
            yield url


KITS = [
    Kit("jira", FakeJira, lambda f, url: JiraBackend("jira", JiraConfig.model_validate({
        "base_url": url, "project_key": f.project, "email": f.email, "api_token": f.token,
        "timeout": 5})), lambda f: len(f.issues), r"/rest/api/2/issue"),
    Kit("zendesk", FakeZendesk, lambda f, url: ZendeskBackend("zd", ZendeskConfig.model_validate({
        "base_url": url, "email": f.email, "api_token": f.token, "timeout": 5})),
        lambda f: len(f.tickets), r"/api/v2/tickets\.json"),
    Kit("autotask", FakeAutotask, lambda f, url: AutotaskBackend("at", AutotaskConfig.model_validate({
        "username": f.user, "secret": f.secret, "integration_code": f.code,
        "zone_lookup_url": f"{url}/atservicesrest/v1.0/", "company_id": 0,
        "queue_id": 29683354, "source": 4, "timeout": 5})),
        lambda f: len(f.tickets), r"/ATServicesRest/V1\.0/Tickets"),
    Kit("itop", FakeITop, lambda f, url: ITopBackend("itop", ITopConfig.model_validate({
        "base_url": url, "auth_user": f.user, "auth_pwd": f.password, "org_id": "3",
        "timeout": 5})), lambda f: len(f.objects["UserRequest"]), r"/webservices/rest\.php",
        lambda ex: operation("core/create")(ex) and b"UserRequest" in ex.body),
    Kit("servicenow", FakeServiceNow, lambda f, url: ServiceNowBackend("snow",
        ServiceNowConfig.model_validate({"base_url": url, "username": f.user,
                                         "password": f.password, "timeout": 5})),
        lambda f: len(f.incidents), r"/api/now/table/incident"),
    Kit("zammad", FakeZammad, lambda f, url: ZammadBackend("zm", ZammadConfig.model_validate({
        "base_url": url, "token": f.token, "group": "Support", "timeout": 5})),
        lambda f: len(f.tickets), r"/api/v1/tickets"),
    Kit("freshdesk", FakeFreshdesk, lambda f, url: FreshdeskBackend("fd",
        FreshdeskConfig.model_validate({"base_url": url, "api_key": f.api_key, "timeout": 5})),
        lambda f: len(f.tickets), r"/api/v2/tickets"),
    Kit("smax", FakeSmax, lambda f, url: SmaxBackend("smax", SmaxConfig.model_validate({
        "base_url": url, "tenant_id": TENANT, "login": f.login, "password": f.password,
        "requested_by_person": "10016", "timeout": 5})),
        lambda f: len(f.requests), rf"/rest/{TENANT}/ems/bulk"),
    Kit("webhook", lambda: FakeReceiver(HOOK_SECRET), lambda f, url: WebhookBackend(
        "hook", WebhookConfig.model_validate({"url": f"{url}/hook", "secret": HOOK_SECRET,
                                              "timeout": 5})),
        lambda f: len(f.events), r"/hook"),
]
BY_NAME = {kit.name: kit for kit in KITS}
