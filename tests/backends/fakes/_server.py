"""Run a fake vendor (an ASGI app) on a real 127.0.0.1 socket in a background thread.

`FakeVendor` is the common base of every fake: an in-memory store is the subclass's business;
here live the request log (so tests can count zone lookups or read Idempotency-Key headers)
and a queue of injected faults (429 with Retry-After, 5xx) answered before any route runs.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send


@dataclass
class Seen:
    method: str
    path: str
    query: str
    headers: dict[str, str]


class FakeVendor:
    """Subclasses implement `routes()`; faults and the log apply to every route."""

    def __init__(self) -> None:
        self.seen: list[Seen] = []
        self._faults: list[tuple[str, Response]] = []
        self._drops: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self.app: ASGIApp = self._wrap(Starlette(routes=self.routes()))

    def routes(self) -> list[Route]:
        raise NotImplementedError

    def fail_next(self, response: Response, times: int = 1, path_prefix: str = "/") -> None:
        """Answer the next `times` requests under `path_prefix` with `response`."""
        with self._lock:
            self._faults.extend([(path_prefix, response)] * times)

    def drop_after(self, method: str, path_prefix: str) -> None:
        """Process the next matching request, then cut the connection mid-answer: the
        client cannot tell whether its write happened (an ambiguous create)."""
        with self._lock:
            self._drops.append((method, path_prefix))

    def fail_rate_limited(self, retry_after: int = 7, body: Any = None) -> None:
        self.fail_next(
            JSONResponse(body or {"error": "rate limited"}, 429, {"Retry-After": str(retry_after)})
        )

    def calls(self, method: str, path_prefix: str) -> list[Seen]:
        return [s for s in self.seen if s.method == method and s.path.startswith(path_prefix)]

    def _wrap(self, inner: ASGIApp) -> ASGIApp:
        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http":
                await inner(scope, receive, send)
                return
            request = Request(scope)
            self.seen.append(
                Seen(
                    request.method,
                    request.url.path,
                    request.url.query,
                    {k.lower(): v for k, v in request.headers.items()},
                )
            )
            fault = None
            with self._lock:
                for i, (prefix, response) in enumerate(self._faults):
                    if request.url.path.startswith(prefix):
                        fault = response
                        del self._faults[i]
                        break
            if fault is not None:
                await fault(scope, receive, send)
                return
            drop = False
            with self._lock:
                for i, (method, prefix) in enumerate(self._drops):
                    if request.method == method and request.url.path.startswith(prefix):
                        drop = True
                        del self._drops[i]
                        break
            if not drop:
                await inner(scope, receive, send)
                return

            async def swallow(message: Message) -> None:
                return None

            await inner(scope, receive, swallow)
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", b"4096")]})
            await send({"type": "http.response.body", "body": b'{"partial', "more_body": True})
            raise ConnectionAbortedError("fake vendor drops the connection on purpose")

        return app


@contextmanager
def serve(app: ASGIApp) -> Iterator[str]:
    """Yield the base URL of `app` served by uvicorn on a free loopback port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("fake vendor server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
