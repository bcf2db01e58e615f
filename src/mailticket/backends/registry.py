"""Backend kinds (Python entry points) and configured instances (the BACKENDS_FILE YAML).

A kind is a TicketBackend subclass registered under the entry point group
`mailticket.backends`, so another package can ship one. An instance is a named, validated
configuration of a kind:

    instances:
      jira:
        kind: jira
        base_url: https://example.atlassian.net
        email: bot@example.com
        api_token: ${JIRA_TOKEN}

`${NAME}` is replaced from the environment when the file is loaded, so secrets need not
live in the file.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import httpx
import pydantic
import yaml

from mailticket.backends.base import BackendConfig, TicketBackend
from mailticket.backends.throttle import throttled_client

GROUP = "mailticket.backends"
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")

_extra_kinds: dict[str, type[TicketBackend[Any]]] = {}


class BackendConfigError(Exception):
    """The backends file is unreadable or an instance is invalid; the message says where."""


class UnknownBackend(KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


def register_kind(cls: type[TicketBackend[Any]]) -> None:
    """Add a kind without an entry point (tests, embedding applications)."""
    _extra_kinds[cls.kind] = cls


def _load_kinds() -> tuple[dict[str, type[TicketBackend[Any]]], dict[str, str]]:
    kinds: dict[str, type[TicketBackend[Any]]] = {}
    broken: dict[str, str] = {}
    for ep in entry_points(group=GROUP):
        try:
            kinds[ep.name] = ep.load()
        except (ImportError, AttributeError) as exc:
            # One broken plugin must not take every other backend down with it.
            broken[ep.name] = f"{type(exc).__name__}: {exc}"
    kinds.update(_extra_kinds)
    return kinds, broken


def available_kinds() -> dict[str, type[TicketBackend[Any]]]:
    return _load_kinds()[0]


@dataclass(frozen=True)
class BackendInstance:
    name: str
    kind: str
    cls: type[TicketBackend[Any]]
    config: BackendConfig

    def build(self, *, client: httpx.AsyncClient | None = None) -> TicketBackend[Any]:
        per_hour = self.config.max_requests_per_hour
        if client is None and per_hour:
            client = throttled_client(
                self.name, per_hour, self.config.max_burst, self.config.timeout
            )
            backend = self.cls(self.name, self.config, client=client)
            backend._own_client = True  # we made it for the backend: it closes it
            return backend
        return self.cls(self.name, self.config, client=client)


def _expand(value: Any, where: str) -> Any:
    if isinstance(value, str):
        def sub(m: re.Match[str]) -> str:
            found = os.environ.get(m.group(1))
            if found is None:
                raise BackendConfigError(f"{where}: environment variable {m.group(1)} is not set")
            return found

        return _ENV_REF.sub(sub, value)
    if isinstance(value, dict):
        return {k: _expand(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v, where) for v in value]
    return value


def _describe(exc: pydantic.ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(config)"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)


def parse_instances(
    data: Any, source: str, kinds: Mapping[str, type[TicketBackend[Any]]] | None = None
) -> dict[str, BackendInstance]:
    broken: dict[str, str] = {}
    if kinds is None:
        kinds, broken = _load_kinds()
    if data is None:
        return {}
    if not isinstance(data, dict) or not isinstance(data.get("instances", {}), dict):
        raise BackendConfigError(f"{source}: expected a mapping with an `instances` mapping")
    unknown_top = set(data) - {"instances"}
    if unknown_top:
        raise BackendConfigError(f"{source}: unknown top-level keys {sorted(unknown_top)}")
    out: dict[str, BackendInstance] = {}
    for name, raw in (data.get("instances") or {}).items():
        where = f"{source}: instances.{name}"
        if not isinstance(name, str) or not _NAME.match(name):
            raise BackendConfigError(f"{where}: names are lower-case letters, digits, - and _")
        if not isinstance(raw, dict) or "kind" not in raw:
            raise BackendConfigError(f"{where}: needs a `kind` (one of {', '.join(sorted(kinds))})")
        values = _expand(dict(raw), where)
        kind = values.pop("kind")
        cls = kinds.get(kind)
        if cls is None and kind in broken:
            raise BackendConfigError(f"{where}: kind {kind!r} cannot be loaded: {broken[kind]}")
        if cls is None:
            raise BackendConfigError(
                f"{where}: unknown kind {kind!r} (installed: {', '.join(sorted(kinds)) or 'none'})"
            )
        try:
            config = cls.Config.model_validate(values)
        except pydantic.ValidationError as exc:
            raise BackendConfigError(f"{where} ({kind}): {_describe(exc)}") from None
        out[name] = BackendInstance(name, kind, cls, config)
    return out


def load_instances(path: Path | None) -> dict[str, BackendInstance]:
    if path is None:
        return {}
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise BackendConfigError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise BackendConfigError(f"{path}: not valid YAML: {exc}") from exc
    return parse_instances(data, str(path))


@dataclass
class BackendRegistry:
    instances: dict[str, BackendInstance]

    @classmethod
    def from_file(cls, path: Path | None) -> BackendRegistry:
        return cls(load_instances(path))

    def get(self, name: str) -> BackendInstance:
        try:
            return self.instances[name]
        except KeyError:
            known = ", ".join(sorted(self.instances)) or "none configured"
            raise UnknownBackend(f"unknown backend instance {name!r} (known: {known})") from None

    def build(self, name: str) -> TicketBackend[Any]:
        return self.get(name).build()

    def names(self) -> list[str]:
        return sorted(self.instances)


_cache: dict[Path | None, tuple[float, BackendRegistry]] = {}


def registry_for(path: Path | None) -> BackendRegistry:
    """The registry of one backends file, re-read only when the file changed."""
    try:
        stamp = path.stat().st_mtime if path is not None else 0.0
    except OSError as exc:
        raise BackendConfigError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    cached = _cache.get(path)
    if cached is not None and cached[0] == stamp:
        return cached[1]
    registry = BackendRegistry.from_file(path)
    _cache[path] = (stamp, registry)
    return registry
