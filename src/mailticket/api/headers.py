"""The headers every answer carries, whichever route (or error handler) made it.

The thread view's pages set their own (pages.SECURITY_HEADERS), the downloads theirs
(emails.DOWNLOAD_HEADERS); everything else, the JSON API above all, gets these defaults.
JSON carries mail text (a subject of "<script>…"): a browser pointed at an API URL must
neither sniff it into HTML nor let another site frame it. A header a route set is kept.
"""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Every answer, HTML or not.
ALWAYS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
}
# Answers that are not HTML load nothing and are framed by nobody. (HTML is our pages, with
# their own policy, and the OpenAPI explorer, which loads its scripts from a CDN.)
NOT_HTML = {"Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'"}


def add_defaults(headers: MutableHeaders) -> None:
    """ALWAYS (and NOT_HTML for an answer that is not HTML), where not set already."""
    defaults = dict(ALWAYS)
    if not headers.get("content-type", "").startswith("text/html"):
        defaults.update(NOT_HTML)
    for name, value in defaults.items():
        headers.setdefault(name, value)


class DefaultHeaders:
    """A plain ASGI middleware: add_defaults on each response's head. (An unhandled error's
    500 is answered outside every middleware, by errors.on_crash, which calls add_defaults
    itself.)"""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_defaults(message: Message) -> None:
            if message["type"] == "http.response.start":
                add_defaults(MutableHeaders(scope=message))
            await send(message)

        await self.app(scope, receive, send_with_defaults)
