"""The app's routes as FastAPI resolves them, for code that reasons about every route."""

from __future__ import annotations

import re
from collections.abc import Iterator

from fastapi import FastAPI
from starlette.routing import BaseRoute, compile_path


def iter_routes(app: FastAPI) -> Iterator[tuple[str, frozenset[str], BaseRoute]]:
    """Every route as (path, methods, route), whether FastAPI flattens included routers into
    app.routes (older versions) or keeps them as lazily resolved branches (newer ones)."""
    for route in app.routes:
        contexts = getattr(route, "effective_route_contexts", None)
        if contexts is not None:
            for ctx in contexts():
                original = ctx.original_route
                yield ctx.path, frozenset(getattr(original, "methods", None) or ()), original
        else:
            path = getattr(route, "path", "")
            yield path, frozenset(getattr(route, "methods", None) or ()), route


def allowed_methods(app: FastAPI, path: str) -> list[str]:
    """Every method some route serves at `path`. Starlette's 405 names only the methods of
    the first route whose path matched (GET, where PATCH is served by a sibling route)."""
    table: list[tuple[re.Pattern[str], frozenset[str]]] | None = getattr(
        app.state, "method_table", None
    )
    if table is None:
        table = [(compile_path(p)[0], methods) for p, methods, _ in iter_routes(app) if p]
        app.state.method_table = table
    found: set[str] = set()
    for regex, methods in table:
        if regex.match(path):
            found |= methods
    return sorted(found)
