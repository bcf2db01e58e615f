"""The FastAPI application: JSON API under /api/v1, thread view under /ui, health at the root."""

from __future__ import annotations

import importlib
import logging

from fastapi import FastAPI
from fastapi.routing import APIRoute

from mailticket.api import (
    conversation,
    customers,
    emails,
    errors,
    health,
    openapi,
    quarantine,
    testing,
    tickets,
    token_routes,
    web,
    web_forms,
    workflows,
)
from mailticket.api.gate import WEBHOOK_PREFIX, Gate
from mailticket.api.headers import DefaultHeaders
from mailticket.api.routing import iter_routes
from mailticket.runtime import Runtime

log = logging.getLogger(__name__)

__all__ = ["WEBHOOK_PREFIX", "create_app", "iter_routes"]

WEBHOOK_MODULE = "mailticket.backends.webhook_api"


def _include_webhooks(app: FastAPI, runtime: Runtime) -> None:
    try:
        module = importlib.import_module(WEBHOOK_MODULE)
    except ModuleNotFoundError as exc:
        # Only "the module is not installed" is expected; a broken module must fail loudly.
        if exc.name not in (WEBHOOK_MODULE, "mailticket.backends"):
            raise
        return
    router = module.build_router(runtime)
    # Marked before inclusion: newer FastAPI versions copy route settings when including.
    for route in router.routes:
        if isinstance(route, APIRoute) and route.path.startswith(WEBHOOK_PREFIX):
            route.openapi_extra = {**(route.openapi_extra or {}), "x-auth": "signature"}
    app.include_router(router)


def create_app(runtime: Runtime) -> FastAPI:
    app = FastAPI(
        title="mailticket",
        version="1",
        description=(
            "Tickets and their email threads. Every /api route needs a bearer token "
            "(`mailticket tokens create --scope read|write|admin`), checked before the "
            "request body is read; errors are RFC 9457 problem+json. A token scoped to one "
            "customer (`--customer`) sees that customer's tickets and mail only, and never "
            "an internal note."
        ),
    )
    app.state.runtime = runtime
    app.add_middleware(Gate, runtime=runtime)
    # Added last, so outermost: the gate's own refusals carry the headers too.
    app.add_middleware(DefaultHeaders)
    errors.install(app)
    web.install(app)
    app.include_router(health.router)
    app.include_router(tickets.router)
    app.include_router(conversation.router)
    app.include_router(emails.router)
    app.include_router(quarantine.router)
    app.include_router(workflows.router)
    app.include_router(customers.router)
    app.include_router(token_routes.router)
    test_router = testing.register(runtime)
    if test_router is not None:
        app.include_router(test_router)
    _include_webhooks(app, runtime)
    app.include_router(web.router)
    app.include_router(web_forms.router)
    health.install_collector(runtime)
    openapi.install(app, runtime.settings)
    return app
