"""A tiny real HTTP server on 127.0.0.1 for vendor fakes, with scripted faults.

Vendors subclass FakeVendor, register routes with `route(method, pattern)`, and keep their
state in plain attributes (guarded by `lock`: the server is threaded). A subclass names its
`contract` (the vendor's API description): every request is checked against it before any
route runs, and every answer after (see contract.py).

Faults: `fail_next(kind)` with a `faults.Fault` is the same on every fake; `fail_next(Resp)`
answers the next matching request with a ready-made answer (a vendor's error of one kind,
e.g. its "not found" for a ticket that exists).
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit

from tests.backends.fakes import faults
from tests.backends.fakes.contract import Answer, Breaches, Contract, Exchange, Problem
from tests.backends.fakes.faults import Fault, Pending


@dataclass
class Req:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-cased names
    body: bytes
    params: dict[str, str] = field(default_factory=dict)

    def json(self) -> Any:
        return json.loads(self.body or b"null")


@dataclass
class Resp:
    status: int
    body: Any = None  # JSON-encoded unless bytes
    headers: dict[str, str] = field(default_factory=dict)


Handler = Callable[[Req], Resp]


class FakeVendor:
    contract: ClassVar[Contract | None] = None

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.routes: list[tuple[str, re.Pattern[str], Handler]] = []
        # A fault kind, or a ready-made answer.
        self.faults: list[Pending[Fault | Resp]] = []
        self.breaches = Breaches()
        self.log: list[tuple[str, str, int]] = []  # (method, path, status or -1 for drops)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- set-up ------------------------------------------------------------------------

    def route(self, method: str, pattern: str, handler: Handler) -> None:
        self.routes.append((method, re.compile(f"^{pattern}$"), handler))

    def fail_next(self, kind: Fault | str | Resp, *, method: str | None = None,
                  path: str | None = None, times: int = 1, retry_after: int = 7,
                  ticket: str | int | None = None,
                  where: Callable[[Exchange], bool] | None = None) -> None:
        """Schedule one of the faults every fake reproduces (see faults.py), or answer the
        next `times` matching requests with a ready-made `Resp`."""
        if isinstance(kind, Resp):
            with self.lock:
                self.faults.append(Pending(method, path, kind, times, where=where))
            return
        fault = Fault(kind)
        if fault is Fault.DELETED:
            if ticket is None:
                raise ValueError("Fault.DELETED needs the ticket")
            with self.lock:
                self.delete_ticket(str(ticket))
            return
        with self.lock:
            self.faults.append(Pending(method, path, fault, times, retry_after, where=where))

    def take_breaches(self) -> list[Problem]:
        """The contract breaches seen so far, which then no longer fail the test."""
        return self.breaches.take()

    # --- what a vendor says (subclasses answer in their vendor's shape) ------------------

    def delete_ticket(self, ticket: str) -> None:
        raise NotImplementedError(f"{type(self).__name__} cannot delete a ticket")

    def refuse_credentials(self, req: Req) -> Resp:
        return Resp(401, {"error": "bad credentials"})

    def fault_answer(self, kind: Fault, req: Req, retry_after: int) -> Resp:
        if kind is Fault.RATE_LIMITED:
            return Resp(429, {"error": "rate limited"}, {"Retry-After": str(retry_after)})
        if kind is Fault.WRONG_PASSWORD:
            return self.refuse_credentials(req)
        return Resp(500, {"error": "internal server error"})

    def reject(self, req: Req, problems: list[Problem]) -> Resp:
        """The vendor's answer to a request its API refuses."""
        text = "; ".join(p.message for p in problems)
        if all(p.unknown for p in problems):
            return Resp(404, {"error": text})
        return Resp(400, {"error": text})

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeVendor:
        vendor = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # quiet test output
                return

            def _any(self) -> None:
                vendor._serve(self)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _any

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def __enter__(self) -> FakeVendor:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- serving -----------------------------------------------------------------------

    def _take_fault(self, exchange: Exchange) -> Pending[Fault | Resp] | None:
        with self.lock:
            return faults.take(self.faults, exchange)

    def _exchange(self, req: Req, query: str) -> Exchange:
        return Exchange(req.method, req.path, query, req.headers, req.body)

    def _serve(self, h: BaseHTTPRequestHandler) -> None:
        split = urlsplit(h.path)
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else b""
        req = Req(
            method=h.command, path=split.path,
            query={k: v[-1] for k, v in parse_qs(split.query).items()},
            headers={k.lower(): v for k, v in h.headers.items()}, body=body,
        )
        exchange = self._exchange(req, split.query)
        if self.contract is not None:
            problems = self.contract.check_request(exchange)
            if problems:
                self.breaches.add(problems)
                return self._write(h, req, self.reject(req, problems))
        fault = self._take_fault(exchange)
        action = fault.answer if fault is not None else None
        if isinstance(action, Resp):
            return self._write(h, req, Resp(action.status, action.body, dict(action.headers)))
        if fault is not None and action in (Fault.RATE_LIMITED, Fault.SERVER_ERROR,
                                            Fault.WRONG_PASSWORD):
            return self._write(h, req, self.fault_answer(Fault(action), req, fault.retry_after))
        resp = self._dispatch(req)
        status, headers, data = self._encode(resp)
        if self.contract is not None:
            self.breaches.add(self.contract.check_response(
                exchange, Answer(status, {k.lower(): v for k, v in headers.items()}, data)))
        if action is Fault.LOST_ANSWER:
            return self._drop(h, req)
        self._send(h, req, status, headers, data)

    def _dispatch(self, req: Req) -> Resp:
        for method, pattern, handler in self.routes:
            m = pattern.match(req.path)
            if m and method == req.method:
                req.params = m.groupdict()
                auth = self.check_auth(req)
                if auth is not None:
                    return auth
                with self.lock:
                    return handler(req)
        return self.not_found(req)

    def check_auth(self, req: Req) -> Resp | None:
        """None when the request's credentials are good; else the vendor's refusal."""
        return None

    def not_found(self, req: Req) -> Resp:
        return Resp(404, {"error": f"no route {req.method} {req.path}"})

    def _drop(self, h: BaseHTTPRequestHandler, req: Req) -> None:
        self.log.append((req.method, req.path, -1))
        h.close_connection = True

    @staticmethod
    def _encode(resp: Resp) -> tuple[int, dict[str, str], bytes]:
        headers = dict(resp.headers)
        if isinstance(resp.body, bytes):
            data = resp.body
            headers.setdefault("Content-Type", "application/octet-stream")
        elif resp.body is None:
            data = b""
        else:
            data = json.dumps(resp.body).encode()
            headers.setdefault("Content-Type", "application/json")
        return resp.status, headers, data

    def _write(self, h: BaseHTTPRequestHandler, req: Req, resp: Resp) -> None:
        self._send(h, req, *self._encode(resp))

    def _send(self, h: BaseHTTPRequestHandler, req: Req, status: int, headers: dict[str, str],
              data: bytes) -> None:
        self.log.append((req.method, req.path, status))
        h.send_response(status)
        for name, value in headers.items():
            h.send_header(name, value)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)


def multipart_files(req: Req) -> dict[str, tuple[str, str, bytes]]:
    """field name -> (filename, content type, bytes) of a multipart/form-data body."""
    from email.parser import BytesParser
    from email.policy import HTTP

    head = f"Content-Type: {req.headers.get('content-type', '')}\r\n\r\n".encode()
    msg = BytesParser(policy=HTTP).parsebytes(head + req.body)
    out: dict[str, tuple[str, str, bytes]] = {}
    for part in msg.iter_parts():
        name = part.get_param("name", header="content-disposition")
        data = part.get_payload(decode=True)
        if isinstance(name, str) and isinstance(data, bytes):
            out[name] = (part.get_filename() or "", part.get_content_type(), data)
    return out
