"""Jinja2 mail templates: `<name>.txt` (required) and `<name>.html` (optional) in one folder.

The folder is TEMPLATES_PATH, else the project's templates/email. Templates render in a
sandbox with strict undefined variables: a typo in an admin's template fails loudly instead of
mailing customers an empty blank, and a template cannot reach into Python objects.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from jinja2 import FileSystemLoader, StrictUndefined, TemplateError, TemplateNotFound
from jinja2.sandbox import ImmutableSandboxedEnvironment

from mailticket.bundled import data_path
from mailticket.settings import Settings

_NAME_OK = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_-")


class TemplateRenderError(Exception):
    """A template is missing or failed to render; the message names the file."""


@dataclass(frozen=True)
class Rendered:
    text: str
    html: str | None


@lru_cache(maxsize=1)
def default_templates_dir() -> Path:
    return data_path("templates", "email")


def templates_dir(settings: Settings) -> Path:
    return settings.templates_path or default_templates_dir()


@lru_cache(maxsize=16)
def _templates_for(folder: Path) -> MailTemplates:
    # One environment per folder, so each template compiles once; Jinja's loader still
    # notices an edited file (auto_reload compares mtimes) and recompiles it.
    return MailTemplates(folder)


class MailTemplates:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._text_env = self._env(autoescape=False)
        self._html_env = self._env(autoescape=True)

    @classmethod
    def from_settings(cls, settings: Settings) -> MailTemplates:
        return _templates_for(templates_dir(settings))

    def _env(self, *, autoescape: bool) -> ImmutableSandboxedEnvironment:
        return ImmutableSandboxedEnvironment(
            loader=FileSystemLoader(str(self.folder)),
            autoescape=autoescape,
            undefined=StrictUndefined,
            keep_trailing_newline=True,
        )

    def render(self, name: str, context: dict[str, Any]) -> Rendered:
        if not name or not set(name) <= _NAME_OK:
            raise TemplateRenderError(f"invalid template name {name!r} (use a-z, 0-9, _ and -)")
        text = self._render(self._text_env, f"{name}.txt", context, required=True)
        html = self._render(self._html_env, f"{name}.html", context, required=False)
        assert text is not None
        return Rendered(text=text, html=html)

    def _render(
        self,
        env: ImmutableSandboxedEnvironment,
        filename: str,
        context: dict[str, Any],
        *,
        required: bool,
    ) -> str | None:
        try:
            template = env.get_template(filename)
        except TemplateNotFound:
            if required:
                raise TemplateRenderError(
                    f"mail template {filename} not found in {self.folder}"
                ) from None
            return None
        try:
            return template.render(context)
        except TemplateError as exc:
            raise TemplateRenderError(f"{self.folder / filename}: {exc}") from exc
