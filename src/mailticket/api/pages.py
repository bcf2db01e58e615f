"""Server-rendered HTML: the Jinja2 environment and the headers every page carries.

Shared by the thread view (web.py) and the error handlers (errors.py), which answer /ui
requests with a page instead of problem+json. Jinja2 runs with autoescape on: mail is
attacker-controlled text.
"""

from __future__ import annotations

import re
from typing import Any

import jinja2
from fastapi import Request
from fastapi.responses import HTMLResponse
from markupsafe import Markup, escape
from starlette.templating import Jinja2Templates

from mailticket.bundled import data_path

TEMPLATE_DIR = data_path("templates", "web")
# The pages' stylesheet: a file, not a <style> block, so the policy needs no 'unsafe-inline'
# (which would let any markup that ever slipped through style the page, or read it out
# with attribute selectors and url()).
STYLESHEET = (TEMPLATE_DIR / "style.css").read_text(encoding="utf-8")
UI_PREFIX = "/ui"
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    # same-origin, not no-referrer: with no-referrer, browsers send "Origin: null" on our
    # own form posts.
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}

# Unicode direction controls: embeddings, overrides and isolates. In a subject they make
# "Invoice\u202Efdp.exe" read "Invoiceexe.pdf". Mail text shows them as a visible marker
# instead of obeying them; what remains (real right-to-left text) is isolated by the
# templates (<bdi>, unicode-bidi: plaintext), so it cannot reorder what surrounds it.
BIDI_CONTROLS = {
    "\u202a": "LEFT-TO-RIGHT EMBEDDING",
    "\u202b": "RIGHT-TO-LEFT EMBEDDING",
    "\u202c": "POP DIRECTIONAL FORMATTING",
    "\u202d": "LEFT-TO-RIGHT OVERRIDE",
    "\u202e": "RIGHT-TO-LEFT OVERRIDE",
    "\u2066": "LEFT-TO-RIGHT ISOLATE",
    "\u2067": "RIGHT-TO-LEFT ISOLATE",
    "\u2068": "FIRST STRONG ISOLATE",
    "\u2069": "POP DIRECTIONAL ISOLATE",
}
_BIDI = re.compile("[" + "".join(BIDI_CONTROLS) + "]")


def _marker(match: re.Match[str]) -> str:
    char = match.group()
    code = f"U+{ord(char):04X}"
    return (
        f'<span class="bidi" title="{code} {BIDI_CONTROLS[char]}: shown, not applied">'
        f"[{code}]</span>"
    )


def shown(value: object) -> Markup:
    """Text from a mail, escaped, with every direction control replaced by a marker."""
    return Markup(_BIDI.sub(_marker, str(escape("" if value is None else value))))


# The most of a one-line field from a mail (a subject, a name, an address, a file name) a
# page shows: a header may be megabytes long, and a page shows a hundred mails' headers.
FIELD_SHOWN = 1_000


def field(value: object) -> Markup:
    """A one-line field from a mail, as `shown`, cut after FIELD_SHOWN characters with a
    note of how many more there are (the whole of it is in the original .eml)."""
    text = "" if value is None else str(value)
    if len(text) <= FIELD_SHOWN:
        return shown(text)
    return shown(text[:FIELD_SHOWN]) + Markup(
        '<span class="meta cut-field">… {:,} more characters</span>'
    ).format(len(text) - FIELD_SHOWN)


def _code_points(text: str) -> str:
    return "".join(c if c.isascii() else f"[U+{ord(c):04X}]" for c in text)


def _ascii_domain(domain: str) -> str:
    try:
        return domain.encode("idna").decode("ascii")
    except UnicodeError:  # not a domain IDNA can write (an empty label, a stray symbol)
        return _code_points(domain)


def ascii_reading(value: object) -> Markup:
    """After a mail address with characters outside ASCII, its ASCII reading, so that a
    look-alike cannot pass for the address it imitates (example.com written with a Cyrillic
    "a" reads the same): the domain in its IDNA form (xn--...), each other non-ASCII
    character as its code point. Nothing after a plain ASCII address."""
    text = "" if value is None else str(value)
    if text.isascii():
        return Markup("")
    local, at, domain = text.rpartition("@")
    reading = f"{_code_points(local)}@{_ascii_domain(domain)}" if at else _code_points(text)
    return Markup(
        ' <span class="ascii" title="the address in ASCII: look-alike letters differ here">'
        "({})</span>"
    ).format(reading)


_env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(str(TEMPLATE_DIR)),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
)
_env.filters["shown"] = shown
_env.filters["field"] = field
_env.filters["ascii_reading"] = ascii_reading
templates = Jinja2Templates(env=_env)


def is_ui(path: str) -> bool:
    return path == UI_PREFIX or path.startswith(UI_PREFIX + "/")


def page(request: Request, name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    response = templates.TemplateResponse(request, name, context, status_code=status_code)
    response.headers.update(SECURITY_HEADERS)
    return response
