"""A Standard Webhooks receiver (contract §9): verifies, rejects stale, dedupes on webhook-id."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import httpx

from tests.backends.fakes.base import FakeVendor, Req, Resp


def _sign(secret: str, msg_id: str, ts: int, body: bytes) -> str:
    key = base64.b64decode(secret.removeprefix("whsec_")) if secret.startswith("whsec_") else secret.encode()
    mac = hmac.new(key, f"{msg_id}.{ts}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


class FakeReceiver(FakeVendor):
    def __init__(self, secret: str) -> None:
        super().__init__()
        self.secret = secret
        self.events: dict[str, dict[str, Any]] = {}  # webhook-id -> event, first delivery only
        self.deliveries = 0
        self.route("POST", r"/hook", self._hook)

    def _hook(self, req: Req) -> Resp:
        self.deliveries += 1
        msg_id = req.headers.get("webhook-id", "")
        ts = int(req.headers.get("webhook-timestamp", "0") or 0)
        if abs(time.time() - ts) > 300:
            return Resp(401, {"error": "timestamp too old"})
        expected = _sign(self.secret, msg_id, ts, req.body)
        if expected not in req.headers.get("webhook-signature", "").split():
            return Resp(401, {"error": "bad signature"})
        self.events.setdefault(msg_id, req.json())
        return Resp(204)

    def call_back(self, url: str, payload: dict[str, Any], *, msg_id: str,
                  secret: str | None = None, ts: int | None = None) -> httpx.Response:
        body = json.dumps(payload).encode()
        stamp = ts if ts is not None else int(time.time())
        headers = {"Content-Type": "application/json", "webhook-id": msg_id,
                   "webhook-timestamp": str(stamp),
                   "webhook-signature": _sign(secret or self.secret, msg_id, stamp, body)}
        return httpx.post(url, content=body, headers=headers)
