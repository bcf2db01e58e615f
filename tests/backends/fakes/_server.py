"""Run a fake vendor (an ASGI app) on a real 127.0.0.1 socket in a background thread.

`FakeVendor` is the common base of these fakes: an in-memory store is the subclass's business;
here live the request log (so tests can count zone lookups or read Idempotency-Key headers),
the check of every request and answer against the vendor's API description (the subclass's
`contract`, see contract.py), and a queue of injected faults answered before any route runs:
`fail_next(Fault...)` as on every fake (faults.py), or `fail_next(response)` for a one-off.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tests.backends.fakes import faults
from tests.backends.fakes.contract import Answer, Breaches, Contract, Exchange, Problem
from tests.backends.fakes.faults import Fault, Pending


@dataclass
class Seen:
    method: str
    path: str
    query: str
    headers: dict[str, str]


class FakeVendor:
    """Subclasses implement `routes()`; checks, faults and the log apply to every route."""

    contract: ClassVar[Contract | None] = None

    def __init__(self) -> None:
        self.seen: list[Seen] = []
        # A fault kind, or a ready-made answer (the older `fail_next(response)`).
        self._faults: list[Pending[Fault | Response]] = []
        self._lock = threading.Lock()
        self.breaches = Breaches()
        self.app: ASGIApp = self._wrap(Starlette(routes=self.routes()))

    def routes(self) -> list[Route]:
        raise NotImplementedError

    def fail_next(self, kind: Fault | str | Response, times: int = 1, path_prefix: str = "/",
                  *, method: str | None = None, path: str | None = None,
                  retry_after: int = 7, ticket: str | int | None = None,
                  where: Callable[[Exchange], bool] | None = None) -> None:
        """Schedule a fault (see faults.py); or answer the next `times` matching requests
        with a ready-made `response`. `path` is a regular expression for the whole path;
        without it, any path under `path_prefix` matches."""
        prefix = path is None
        pattern = path_prefix if path is None else path
        if isinstance(kind, Response):
            with self._lock:
                self._faults.append(Pending(method, pattern, kind, times, prefix=prefix,
                                            where=where))
            return
        fault = Fault(kind)
        if fault is Fault.DELETED:
            if ticket is None:
                raise ValueError("Fault.DELETED needs the ticket")
            with self._lock:
                self.delete_ticket(str(ticket))
            return
        with self._lock:
            self._faults.append(Pending(method, pattern, fault, times, retry_after,
                                        prefix=prefix, where=where))

    def drop_after(self, method: str, path_prefix: str) -> None:
        """Process the next matching request, then cut the connection mid-answer: the
        client cannot tell whether its write happened (an ambiguous create)."""
        self.fail_next(Fault.LOST_ANSWER, method=method, path_prefix=path_prefix)

    def fail_rate_limited(self, retry_after: int = 7, body: Any = None) -> None:
        self.fail_next(
            JSONResponse(body or {"error": "rate limited"}, 429, {"Retry-After": str(retry_after)})
        )

    def calls(self, method: str, path_prefix: str) -> list[Seen]:
        return [s for s in self.seen if s.method == method and s.path.startswith(path_prefix)]

    def take_breaches(self) -> list[Problem]:
        """The contract breaches seen so far, which then no longer fail the test."""
        return self.breaches.take()

    # --- what a vendor says (subclasses answer in their vendor's shape) ------------------

    def delete_ticket(self, ticket: str) -> None:
        raise NotImplementedError(f"{type(self).__name__} cannot delete a ticket")

    def refuse_credentials(self) -> Response:
        return JSONResponse({"error": "bad credentials"}, 401)

    def fault_answer(self, kind: Fault, retry_after: int) -> Response:
        if kind is Fault.RATE_LIMITED:
            return JSONResponse({"error": "rate limited"}, 429,
                                {"Retry-After": str(retry_after)})
        if kind is Fault.WRONG_PASSWORD:
            return self.refuse_credentials()
        return JSONResponse({"error": "internal server error"}, 500)

    def reject(self, problems: list[Problem]) -> Response:
        """The vendor's answer to a request its API refuses."""
        text = "; ".join(p.message for p in problems)
        return JSONResponse({"error": text}, 404 if all(p.unknown for p in problems) else 400)

    # --- serving -------------------------------------------------------------------------

    def _wrap(self, inner: ASGIApp) -> ASGIApp:
        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http":
                await inner(scope, receive, send)
                return
            request = Request(scope)
            headers = {k.lower(): v for k, v in request.headers.items()}
            self.seen.append(Seen(request.method, request.url.path, request.url.query, headers))
            body = b""
            more = True
            while more:
                message = await receive()
                body += message.get("body", b"")
                more = message.get("more_body", False)
            replayed = False

            async def replay() -> Message:
                nonlocal replayed
                if not replayed:
                    replayed = True
                    return {"type": "http.request", "body": body, "more_body": False}
                return await receive()

            exchange = Exchange(request.method, request.url.path, request.url.query, headers,
                                body)
            if self.contract is not None:
                problems = self.contract.check_request(exchange)
                if problems:
                    self.breaches.add(problems)
                    await self.reject(problems)(scope, replay, send)
                    return
            with self._lock:
                fault = faults.take(self._faults, exchange)
            if fault is not None and isinstance(fault.answer, Response):
                await fault.answer(scope, replay, send)
                return
            if fault is not None and fault.answer is not Fault.LOST_ANSWER:
                await self.fault_answer(fault.answer, fault.retry_after)(scope, replay, send)
                return
            answer: dict[str, Any] = {"body": b""}

            async def record(message: Message) -> None:
                if message["type"] == "http.response.start":
                    answer["status"] = message["status"]
                    answer["headers"] = {k.decode().lower(): v.decode()
                                         for k, v in message.get("headers", [])}
                elif message["type"] == "http.response.body":
                    answer["body"] += message.get("body", b"")
                    if not message.get("more_body") and self.contract is not None:
                        self.breaches.add(self.contract.check_response(exchange, Answer(
                            answer["status"], answer["headers"], answer["body"])))
                if fault is None:
                    await send(message)

            await inner(scope, replay, record)
            if fault is None:
                return
            # A lost answer: the vendor did the work; the client sees the line go dead.
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
