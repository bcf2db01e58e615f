"""`mailticket serve [--host --port]`: the HTTP API and thread view on their own (uvicorn)."""

from __future__ import annotations

import argparse

import uvicorn

from mailticket import metrics
from mailticket.cli.common import one_line_warnings, open_runtime, settings_or_exit, tcp_port
from mailticket.live.logs import configure_logging


def _listen_default(api_listen: str | None) -> tuple[str, int]:
    if not api_listen:
        return "127.0.0.1", 8000
    host, _, port = api_listen.rpartition(":")
    return host or "127.0.0.1", int(port)


def _serve(args: argparse.Namespace) -> int:
    from mailticket.api.app import create_app

    settings = settings_or_exit()
    configure_logging(settings.log_format)
    if not getattr(args, "verbose", False):
        one_line_warnings()
    host, port = _listen_default(settings.api_listen)
    runtime = open_runtime(settings)
    try:
        uvicorn.run(
            create_app(runtime), host=args.host or host, port=args.port or port,
            log_config=None, proxy_headers=args.proxy_headers,
        )
    finally:
        runtime.close()
        metrics.process_exiting()
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("serve", help="serve the HTTP API and thread view (no mail sources)")
    p.add_argument("--host", help="default: API_LISTEN's host, else 127.0.0.1")
    p.add_argument("--port", type=tcp_port, help="default: API_LISTEN's port, else 8000")
    p.add_argument(
        "--proxy-headers", action="store_true",
        help="trust X-Forwarded-* (only behind your own reverse proxy)",
    )
    p.set_defaults(func=_serve)
