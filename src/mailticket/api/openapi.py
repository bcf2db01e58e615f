"""The OpenAPI document says what really comes back.

FastAPI declares 200 and a 422 as application/json with its own error shape. Our errors are
problem+json (errors.py) and some come from outside the routes: the gate (gate.py) answers
401, 413 and 422 before a route runs, and any /api route 503 while the database is
unavailable. This module derives, per operation, the error statuses it can answer from what
the route declares (its path parameters, its body, the scope it needs) and documents each as
application/problem+json with the one Problem schema. It also states input rules that live
outside the pydantic models: no NUL in any input string, and `limit`'s maximum from
API_MAX_PAGE_SIZE.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from mailticket.api.auth import Require
from mailticket.api.errors import PROBLEM_TYPE
from mailticket.api.gate import API_PREFIX, WEBHOOK_PREFIX
from mailticket.api.routing import iter_routes
from mailticket.settings import Settings

PROBLEM_REF = "#/components/schemas/Problem"
PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "description": "RFC 9457 problem details.",
    "type": "object",
    "required": ["type", "title", "status"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
        "errors": {
            "description": "What was wrong with the request (422).",
            "type": "array",
            "items": {
                "type": "object",
                "required": ["loc", "msg", "type"],
                "properties": {
                    "loc": {"type": "array", "items": {"type": "string"}},
                    "msg": {"type": "string"},
                    "type": {"type": "string"},
                },
            },
        },
        "issues": {
            "description": "file:line: reason, for workflow files that were refused.",
            "type": "array",
            "items": {"type": "string"},
        },
    },
}
ERROR_TEXT = {
    400: "The body could not be decoded.",
    401: "No bearer token, or one that is unknown or revoked.",
    403: "The token's scope is not enough for this operation, or the token is scoped to one "
    "customer and the operation is not open to such tokens.",
    404: "Nothing with that id or name.",
    413: "The request body is larger than API_MAX_BODY_BYTES.",
    422: "The request is not valid (a NUL character, a value out of range, malformed JSON).",
    503: "The database is unavailable (restarting, failing over); ask again after the "
    "Retry-After header's seconds.",
}
# No input string may hold one: PostgreSQL text cannot store it (gate.py, schemas._In).
NO_NUL = "^[^\\x00]*$"
# Parameters whose real bound is a setting, not a constant in the code.
SETTING_MAXIMUM: dict[tuple[str, str, str], Callable[[Settings], int]] = {
    ("/api/v1/tickets", "get", "limit"): lambda s: s.api_max_page_size,
    ("/api/v1/tickets/{ticket_id}/emails", "get", "limit"): lambda s: s.api_max_page_size,
    ("/api/v1/tickets/by-email/{email_address}", "get", "limit"): lambda s: s.api_max_page_size,
}


def install(app: FastAPI, settings: Settings) -> None:
    generate = app.openapi  # FastAPI's own; it caches its result in app.openapi_schema

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document(generate(), app, settings)
        return app.openapi_schema  # type: ignore[return-value]  # set by generate()

    app.openapi = openapi  # type: ignore[method-assign]


def _requirements(dependant: Dependant) -> list[Require]:
    found = [dependant.call] if isinstance(dependant.call, Require) else []
    for sub in dependant.dependencies:
        found += _requirements(sub)
    return found


def error_statuses(path: str, route: APIRoute) -> set[int]:
    statuses = {413, 422}  # the gate: Content-Length over the limit, NUL in the URL
    if path.startswith(API_PREFIX):
        statuses.add(503)  # every /api route reads the database (errors.py: while it is away)
    if path.startswith(API_PREFIX) and not path.startswith(WEBHOOK_PREFIX):
        statuses.add(401)
    # 403: a scope above read, or a route closed to customer-scoped tokens.
    if any(r.scope != "read" or not r.customers for r in _requirements(route.dependant)):
        statuses.add(403)
    if route.dependant.path_params:
        statuses.add(404)
    if route.body_field is not None:
        statuses.add(400)
    return statuses


def _problem(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {PROBLEM_TYPE: {"schema": {"$ref": PROBLEM_REF}}},
    }


def document(doc: dict[str, Any], app: FastAPI, settings: Settings) -> None:
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    schemas["Problem"] = PROBLEM_SCHEMA
    routes = {
        (path, method.lower()): route
        for path, methods, route in iter_routes(app)
        if isinstance(route, APIRoute)
        for method in methods
    }
    body_models: set[str] = set()
    for path, item in doc.get("paths", {}).items():
        for method, op in item.items():
            route = routes.get((path, method))
            if route is None:
                continue
            responses = op.setdefault("responses", {})
            responses.pop("422", None)  # FastAPI's, as application/json: never sent
            declared = route.responses.get(422) or route.responses.get("422")
            if declared and declared.get("description"):  # the route's own word on its 422s
                responses["422"] = {"description": declared["description"]}
            for status in sorted(error_statuses(path, route)):
                described = responses.get(str(status), {}).get("description")
                responses[str(status)] = _problem(described or ERROR_TEXT[status])
            for code, response in responses.items():
                # Errors a route declares by description only (the webhooks) are problems too.
                if code.isdigit() and int(code) >= 400 and "content" not in response:
                    responses[code] = _problem(response.get("description", ""))
            for param in op.get("parameters", []):
                _forbid_nul(param.get("schema", {}))
                bound = SETTING_MAXIMUM.get((path, method, param.get("name", "")))
                if bound is not None:
                    _set_maximum(param["schema"], bound(settings))
            body = op.get("requestBody", {}).get("content", {})
            for media in body.values():
                _collect_refs(media.get("schema", {}), schemas, body_models)
                if "properties" in media.get("schema", {}):  # a body declared in place
                    _forbid_nul_in_model(media["schema"])
    for name in body_models:
        _forbid_nul_in_model(schemas[name])
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)


def _forbid_nul(schema: dict[str, Any]) -> None:
    for branch in schema.get("anyOf", [schema]):
        if branch.get("type") == "string" and not (
            {"pattern", "enum", "const", "format"} & branch.keys()
        ):
            branch["pattern"] = NO_NUL
        if branch.get("type") == "array":
            _forbid_nul(branch.get("items", {}))


def _forbid_nul_in_model(schema: dict[str, Any]) -> None:
    for prop in schema.get("properties", {}).values():
        _forbid_nul(prop)


def _collect_refs(schema: Any, schemas: dict[str, Any], seen: set[str]) -> None:
    """The component schemas a request body uses, nested ones included."""
    if isinstance(schema, dict):
        ref = schema.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
            name = ref.rsplit("/", 1)[1]
            if name not in seen:
                seen.add(name)
                _collect_refs(schemas.get(name, {}), schemas, seen)
        for value in schema.values():
            _collect_refs(value, schemas, seen)
    elif isinstance(schema, list):
        for value in schema:
            _collect_refs(value, schemas, seen)


def _set_maximum(schema: dict[str, Any], maximum: int) -> None:
    for branch in schema.get("anyOf", [schema]):
        if branch.get("type") == "integer":
            branch["maximum"] = maximum
