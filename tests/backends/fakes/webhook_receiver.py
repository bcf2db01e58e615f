"""A Standard Webhooks receiver (contract §9): verifies, rejects stale, dedupes on webhook-id.

Signatures are checked and made with the `standardwebhooks` reference library, and every
delivery is checked against schemas/standard-webhooks.yaml (headers and event body).
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

import httpx
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from tests.backends.fakes.base import FakeVendor, Req, Resp
from tests.backends.fakes.contract import Contract


def _webhook(secret: str) -> Webhook:
    # As mailticket's WebhookConfig: "whsec_<base64>", or a plain string used as bytes.
    return Webhook(secret if secret.startswith("whsec_") else secret.encode())


class FakeReceiver(FakeVendor):
    contract = Contract("standard-webhooks.yaml")

    def __init__(self, secret: str) -> None:
        super().__init__()
        self.secret = secret
        self.events: dict[str, dict[str, Any]] = {}  # webhook-id -> event, first delivery only
        self.deliveries = 0
        self.route("POST", r"/hook", self._hook)

    def _hook(self, req: Req) -> Resp:
        self.deliveries += 1
        try:
            event = _webhook(self.secret).verify(req.body, req.headers)
        except (WebhookVerificationError, ValueError) as exc:
            return Resp(401, {"error": str(exc)})
        self.events.setdefault(req.headers["webhook-id"], event)
        return Resp(204)

    def call_back(self, url: str, payload: dict[str, Any], *, msg_id: str,
                  secret: str | None = None, ts: int | None = None) -> httpx.Response:
        body = json.dumps(payload)
        stamp = ts if ts is not None else int(time.time())
        signature = _webhook(secret or self.secret).sign(
            msg_id, datetime.fromtimestamp(stamp, UTC), body)
        headers = {"Content-Type": "application/json", "webhook-id": msg_id,
                   "webhook-timestamp": str(stamp), "webhook-signature": signature}
        return httpx.post(url, content=body.encode(), headers=headers)
