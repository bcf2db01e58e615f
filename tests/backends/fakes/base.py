"""A tiny real HTTP server on 127.0.0.1 for vendor fakes, with scripted faults.

Vendors subclass FakeVendor, register routes with `route(method, pattern)`, and keep their
state in plain attributes (guarded by `lock`: the server is threaded). Faults are queued
per route: `429` (with Retry-After), `503`, `drop_before` (close the connection without
processing) and `drop_after` (process, then close without answering: the ambiguous create).
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


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


@dataclass
class Fault:
    method: str
    pattern: str
    action: str  # "429" | "503" | "drop_before" | "drop_after" | "500" | "respond"
    retry_after: str = "7"
    times: int = 1
    response: Resp | None = None  # for "respond": answered instead of the route


Handler = Callable[[Req], Resp]


class FakeVendor:
    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.routes: list[tuple[str, re.Pattern[str], Handler]] = []
        self.faults: list[Fault] = []
        self.log: list[tuple[str, str, int]] = []  # (method, path, status or -1 for drops)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- set-up ------------------------------------------------------------------------

    def route(self, method: str, pattern: str, handler: Handler) -> None:
        self.routes.append((method, re.compile(f"^{pattern}$"), handler))

    def fail(self, method: str, pattern: str, action: str, *, times: int = 1,
             retry_after: str = "7") -> None:
        with self.lock:
            self.faults.append(Fault(method, pattern, action, retry_after, times))

    def respond(self, method: str, pattern: str, response: Resp, *, times: int = 1) -> None:
        """Answer the next matching request with `response` (the vendor's own error shape)."""
        with self.lock:
            self.faults.append(Fault(method, pattern, "respond", times=times, response=response))

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

    def _take_fault(self, method: str, path: str) -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if fault.method == method and re.fullmatch(fault.pattern, path):
                    fault.times -= 1
                    if fault.times <= 0:
                        self.faults.remove(fault)
                    return fault
        return None

    def _serve(self, h: BaseHTTPRequestHandler) -> None:
        split = urlsplit(h.path)
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else b""
        req = Req(
            method=h.command, path=split.path,
            query={k: v[-1] for k, v in parse_qs(split.query).items()},
            headers={k.lower(): v for k, v in h.headers.items()}, body=body,
        )
        fault = self._take_fault(req.method, req.path)
        if fault is not None and fault.action == "drop_before":
            return self._drop(h, req)
        if fault is not None and fault.action == "respond" and fault.response is not None:
            return self._write(h, req, Resp(fault.response.status, fault.response.body,
                                            dict(fault.response.headers)))
        if fault is not None and fault.action in ("429", "503", "500"):
            resp = Resp(int(fault.action), {"error": f"injected {fault.action}"},
                        {"Retry-After": fault.retry_after} if fault.action != "500" else {})
            return self._write(h, req, resp)
        resp = self._dispatch(req)
        if fault is not None and fault.action == "drop_after":
            return self._drop(h, req)
        self._write(h, req, resp)

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

    def _write(self, h: BaseHTTPRequestHandler, req: Req, resp: Resp) -> None:
        self.log.append((req.method, req.path, resp.status))
        if isinstance(resp.body, bytes):
            data = resp.body
            ctype = resp.headers.pop("Content-Type", "application/octet-stream")
        elif resp.body is None:
            data, ctype = b"", ""
        else:
            data, ctype = json.dumps(resp.body).encode(), "application/json"
        h.send_response(resp.status)
        if ctype:
            h.send_header("Content-Type", ctype)
        for name, value in resp.headers.items():
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
