"""Check every request a backend sends, and every answer a fake gives, against the vendor's
published API description, so that a fake cannot drift from its vendor.

Each fake names a `Contract`: an OpenAPI document, either the vendor's own (Jira, Zendesk,
Autotask: tests/fixtures/vendor-specs/, see scripts/vendor_specs.py) or one we wrote from the
vendor's prose docs (ServiceNow, Zammad, iTop, Freshdesk, SMAX, Jira Service Management,
Standard Webhooks: fakes/schemas/, every operation and schema citing its doc section). openapi-core does the
checking: method, path, parameters, body schema, and the response for the documented status.

Breaches are kept in a `Breaches` log per fake. The fake answers a bad request as the vendor
would (400, 404...) and the autouse fixture in tests/backends/conftest.py fails the test at
teardown if any fake saw a breach: a test that means to send one takes it with
`fake.take_breaches()`.

Auth is left to the fakes (each answers a bad credential exactly as its vendor does); the
documents' `security` requirements are dropped so openapi-core does not answer first.
"""

from __future__ import annotations

import functools
import gzip
import json
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import yaml
from jsonschema_path import SchemaPath
from openapi_core import Config, OpenAPI
from openapi_core.templating.datatypes import TemplateResult
from openapi_core.templating.paths.datatypes import Path as Route
from openapi_core.templating.paths.exceptions import OperationNotFound, PathError
from openapi_core.templating.paths.finders import APICallPathFinder
from openapi_core.templating.paths.iterators import TemplatePathsIterator
from openapi_core.templating.responses.exceptions import ResponseNotFound
from openapi_core.testing import MockRequest, MockResponse
from openapi_core.validation.request.exceptions import (
    MissingParameterError,
    ParameterValidationError,
    RequestBodyValidationError,
)
from openapi_core.validation.response.exceptions import (
    DataValidationError,
    HeaderValidationError,
    MissingHeaderError,
)
from openapi_core.validation.schemas.exceptions import InvalidSchemaValue

VENDOR_SPECS = Path(__file__).resolve().parents[2] / "fixtures" / "vendor-specs"
OUR_SCHEMAS = Path(__file__).resolve().parent / "schemas"

Overlay = Callable[[dict[str, Any]], None]
FormatCheck = Callable[[Any], bool]


@dataclass(frozen=True)
class Exchange:
    """One request as it reached a fake, and (once answered) the fake's answer."""

    method: str
    path: str
    query: str
    headers: Mapping[str, str]  # lower-case names
    body: bytes

    def describe(self) -> str:
        return f"{self.method} {self.path}" + (f"?{self.query}" if self.query else "")


@dataclass(frozen=True)
class Answer:
    status: int
    headers: Mapping[str, str]  # lower-case names
    body: bytes


@dataclass(frozen=True)
class Problem:
    """A request the vendor would refuse (`unknown`: no such endpoint) or a fake's answer
    that the vendor's document does not allow."""

    where: str  # "request" | "response"
    exchange: str
    message: str
    unknown: bool = False

    def __str__(self) -> str:
        return f"{self.where} {self.exchange}: {self.message}"


class Breaches:
    """Thread-safe list of the problems one fake has seen (its server runs in a thread)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: list[Problem] = []
        _LIVE.append(self)

    def add(self, problems: Iterable[Problem]) -> None:
        with self._lock:
            self._items.extend(problems)

    def take(self) -> list[Problem]:
        with self._lock:
            items, self._items = self._items, []
            return items

    def peek(self) -> list[Problem]:
        with self._lock:
            return list(self._items)


# Every Breaches made since the last `watch()`: the autouse fixture reads them at teardown.
_LIVE: list[Breaches] = []


def watch() -> None:
    _LIVE.clear()


def unread() -> list[Problem]:
    return [p for log in _LIVE for p in log.take()]


# --- documents ------------------------------------------------------------------------------


def _read(name: str) -> dict[str, Any]:
    if name.endswith(".json.gz"):
        document: dict[str, Any] = json.loads(gzip.decompress((VENDOR_SPECS / name).read_bytes()))
    else:
        document = yaml.safe_load((OUR_SCHEMAS / name).read_text())
    return document


def _normalise(document: dict[str, Any]) -> None:
    """What every document gets: no `security` (the fakes judge credentials themselves), and
    no body on a 204 (RFC 9110 15.3.5: a 204 has no content, whatever a document declares)."""
    document.pop("security", None)
    for item in document.get("paths", {}).values():
        for operation in item.values():
            if isinstance(operation, dict):
                operation.pop("security", None)
                no_content = operation.get("responses", {}).get("204")
                if isinstance(no_content, dict):
                    no_content.pop("content", None)


@functools.cache
def _prepared(name: str, overlays: tuple[Overlay, ...]) -> dict[str, Any]:
    """Read a document once per test session (the vendor documents are megabytes)."""
    document = _read(name)
    for overlay in overlays:
        overlay(document)
    _normalise(document)
    # The hostname does not matter here: the fakes run on 127.0.0.1.
    base = urlsplit(document.get("servers", [{"url": "/"}])[0]["url"]).path.rstrip("/")
    document["servers"] = [{"url": base or "/"}]
    return document


class _PathsListedOnce(TemplatePathsIterator):
    """openapi-core's own path matching, except that a document's path items are listed
    once instead of on every request: the vendor documents have up to 2,077 paths, and
    listing them was most of the time a check took."""

    def __init__(self) -> None:
        super().__init__("paths")
        self._listed: dict[int, list[tuple[str, SchemaPath]]] = {}

    def __call__(self, name: str, spec: SchemaPath, base_url: str | None = None
                 ) -> Iterator[Route]:
        listed = self._listed.get(id(spec))
        if listed is None:
            listed = self._listed[id(spec)] = list((spec / self.paths_part).str_items())
        templated = []
        for pattern, path in listed:
            if name.endswith(pattern):  # a path without variables is the most concrete
                yield Route(path, TemplateResult(pattern, {}))
                continue
            found = self._get_path_parser(pattern).search(name)
            if found:
                templated.append(Route(path, TemplateResult(pattern, found.named)))
        yield from sorted(templated, key=lambda route: len(route[1].variables))


class _PathFinder(APICallPathFinder):
    paths_iterator = _PathsListedOnce()


@functools.cache
def _openapi(name: str, overlays: tuple[Overlay, ...],
             formats: tuple[tuple[str, FormatCheck], ...]) -> OpenAPI:
    document = _prepared(name, overlays)
    ours = not name.endswith(".json.gz")
    # Our own documents are small and must be valid OpenAPI; the vendors' are big, and
    # checking them would only find the vendors' slips, so it is skipped.
    config = Config(extra_format_validators=dict(formats), path_finder_cls=_PathFinder)
    if not ours:
        config.spec_validator_cls = None
    return OpenAPI.from_dict(document, config=config)


@dataclass(frozen=True)
class Contract:
    """A vendor's API description as the fakes check it.

    `rewrite` maps a request path to the document's path where the two legitimately differ
    (Jira: our v2 paths against the v3 document; Autotask: IIS matches paths without case).
    `overlays` patch the loaded document where the vendor's own document is wrong, and
    `formats` replace a string format check where the vendor's real answers (and its own
    examples) differ from the format it declares; each must say why, next to its definition.
    `beside` names other documents of the same server, each for the paths under its prefix
    (Jira: Jira Service Management's API under /rest/servicedeskapi/).
    """

    document: str
    rewrite: Callable[[str], str] | None = None
    overlays: tuple[Overlay, ...] = field(default=())
    formats: tuple[tuple[str, FormatCheck], ...] = field(default=())
    beside: tuple[tuple[str, Contract], ...] = field(default=())

    def _for(self, ex: Exchange) -> Contract:
        for prefix, other in self.beside:
            if ex.path.startswith(prefix):
                return other
        return self

    @property
    def api(self) -> OpenAPI:
        return _openapi(self.document, self.overlays, self.formats)

    def paths(self) -> list[str]:
        """The path templates the document (and those beside it) describe."""
        return [*_prepared(self.document, self.overlays)["paths"],
                *(path for _, other in self.beside for path in other.paths())]

    def _request(self, ex: Exchange) -> MockRequest:
        cookies: dict[str, str] = {}
        if "cookie" in ex.headers:
            jar: SimpleCookie = SimpleCookie()
            jar.load(ex.headers["cookie"])
            cookies = {k: m.value for k, m in jar.items()}
        path = self.rewrite(ex.path) if self.rewrite else ex.path
        request = MockRequest(
            "http://vendor.invalid", ex.method, path, headers=dict(ex.headers), cookies=cookies,
            data=ex.body, content_type=ex.headers.get("content-type", ""),
        )
        # Repeated query parameters (a=1&a=2) stay repeated.
        request.parameters.query = type(request.parameters.query)(
            parse_qsl(ex.query, keep_blank_values=True))
        return request

    def check_request(self, ex: Exchange) -> list[Problem]:
        if (owner := self._for(ex)) is not self:
            return owner.check_request(ex)
        errors = list(self.api.iter_request_errors(self._request(ex)))
        return [Problem("request", ex.describe(), describe(e), isinstance(e, PathError))
                for e in errors]

    def check_response(self, ex: Exchange, answer: Answer) -> list[Problem]:
        if (owner := self._for(ex)) is not self:
            return owner.check_response(ex, answer)
        response = MockResponse(
            answer.body, status_code=answer.status, headers=dict(answer.headers),
            content_type=answer.headers.get("content-type", ""),
        )
        problems = []
        for error in self.api.iter_response_errors(self._request(ex), response):
            if isinstance(error, PathError):
                continue  # already reported for the request
            if isinstance(error, ResponseNotFound) and answer.status >= 400:
                continue  # vendors do not document every error status
            problems.append(Problem("response", f"{ex.describe()} -> {answer.status}",
                                    describe(error)))
        return problems


def describe(error: BaseException) -> str:
    """openapi-core's exception chain as one readable line."""
    chain: list[BaseException] = []
    seen: BaseException | None = error
    while seen is not None and seen not in chain:
        chain.append(seen)
        seen = seen.__cause__
    invalid = next((e for e in chain if isinstance(e, InvalidSchemaValue)), None)
    if isinstance(error, OperationNotFound):
        head = f"the document has no {error.method.upper()} on this path"
    elif isinstance(error, ParameterValidationError | HeaderValidationError):
        where = getattr(error, "location", "response header")
        head = f"{where} parameter {error.name!r}" if not isinstance(
            error, MissingParameterError | MissingHeaderError) else str(error)
    elif isinstance(error, RequestBodyValidationError | DataValidationError):
        head = "body" if invalid is not None else str(error) or type(error).__name__
    else:
        head = str(error) or type(error).__name__
    if invalid is None:
        causes = [str(e) for e in chain[1:] if str(e)]
        return "; ".join([head, *causes])
    found = []
    for e in invalid.schema_errors:
        where = "/".join(str(p) for p in e.absolute_path)
        found.append(e.message + (f" (at {where})" if where else ""))
    return f"{head}: " + "; ".join(found)
