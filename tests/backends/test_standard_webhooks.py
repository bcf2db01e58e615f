"""The generic webhook backend's signing and verifying pass the Standard Webhooks spec's test
vectors (tests/fixtures/vendor-specs/standard-webhooks.test-vectors.json)."""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from pydantic import ValidationError as ConfigError

from mailticket.backends.errors import WebhookSignatureError
from mailticket.backends.webhook import WebhookConfig, sign, verify

VECTORS = json.loads((Path(__file__).parents[1] / "fixtures" / "vendor-specs"
                      / "standard-webhooks.test-vectors.json").read_text())
BY_NAME: dict[str, dict[str, Any]] = {v["name"]: v for v in VECTORS["vectors"]}
MAIN = BY_NAME["sign_function"]
TOLERANCE = VECTORS["tolerance_seconds"]


@pytest.fixture
def at_vector_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """The vectors were signed at a fixed time: verify as if it were then."""
    then = float(MAIN["webhook-timestamp"])

    class Then(datetime):
        @classmethod
        def now(cls, tz: Any = None) -> Then:  # type: ignore[override]
            return cls.fromtimestamp(then, tz)

    import standardwebhooks.webhooks as library

    monkeypatch.setattr(library, "datetime", Then)
    monkeypatch.setattr(time, "time", lambda: then)


def headers(signature: str, **over: str) -> dict[str, str]:
    out = {"webhook-id": MAIN["webhook-id"], "webhook-timestamp": MAIN["webhook-timestamp"],
           "webhook-signature": signature}
    out.update(over)
    return {k: v for k, v in out.items() if v}


def check(signature: str, *, secret: str = MAIN["secret"], **over: str) -> str:
    return verify(SecretStr(secret), headers(signature, **over), MAIN["payload"].encode(),
                  tolerance_s=TOLERANCE)


def test_sign_function_vector() -> None:
    got = sign(SecretStr(MAIN["secret"]), MAIN["webhook-id"], int(MAIN["webhook-timestamp"]),
               MAIN["payload"].encode())
    assert got == MAIN["expected_signature"]


def test_valid_vector_verifies(at_vector_time: None) -> None:
    assert check(MAIN["expected_signature"]) == MAIN["webhook-id"]


def test_wrong_signature_rejected(at_vector_time: None) -> None:
    wrong = BY_NAME["wrong_signature_rejected"]
    with pytest.raises(WebhookSignatureError):
        check(wrong["signature_header"])


def test_multi_signature_header(at_vector_time: None) -> None:
    decoys = BY_NAME["multi_signature_header"]["decoys"]
    assert check(" ".join([*decoys, MAIN["expected_signature"]])) == MAIN["webhook-id"]
    with pytest.raises(WebhookSignatureError):
        check(" ".join(decoys))


@pytest.mark.parametrize("secret", BY_NAME["unpadded_secrets"]["secrets"])
def test_unpadded_secrets(secret: str) -> None:
    key = SecretStr("whsec_" + secret)
    now = int(time.time())
    signature = sign(key, "msg_1", now, b'{"a":1}')
    assert verify(key, {"webhook-id": "msg_1", "webhook-timestamp": str(now),
                        "webhook-signature": signature}, b'{"a":1}', tolerance_s=300) == "msg_1"


@pytest.mark.parametrize("over", [
    {"webhook-id": ""}, {"webhook-timestamp": ""}, {"webhook-signature": ""},
    {"webhook-timestamp": "hello"},
    {"webhook-timestamp": str(int(MAIN["webhook-timestamp"]) - TOLERANCE - 1)},
    {"webhook-timestamp": str(int(MAIN["webhook-timestamp"]) + TOLERANCE + 1)},
    {"webhook-signature": "v1"}, {"webhook-signature": "v1,not base64!"},
], ids=["no-id", "no-timestamp", "no-signature", "timestamp-not-integer", "too-old",
        "too-new", "no-comma", "garbled"])
def test_rejections(at_vector_time: None, over: dict[str, str]) -> None:
    signature = over.pop("webhook-signature", MAIN["expected_signature"])
    with pytest.raises(WebhookSignatureError):
        check(signature, **over)


def test_body_not_utf8_is_refused(at_vector_time: None) -> None:
    with pytest.raises(WebhookSignatureError):
        verify(SecretStr(MAIN["secret"]), headers(MAIN["expected_signature"]), b"\xff\xfe",
               tolerance_s=TOLERANCE)


@pytest.mark.parametrize("secret", ["", "whsec_"])
def test_empty_secret_refused_at_configuration(secret: str) -> None:
    with pytest.raises(ConfigError):
        WebhookConfig.model_validate({"url": "http://x", "secret": secret})


def test_tighter_tolerance_is_kept(at_vector_time: None) -> None:
    stamp = str(int(MAIN["webhook-timestamp"]) - 120)
    key = SecretStr(MAIN["secret"])
    signature = sign(key, MAIN["webhook-id"], int(stamp), MAIN["payload"].encode())
    hdrs = headers(signature, **{"webhook-timestamp": stamp})
    assert verify(key, hdrs, MAIN["payload"].encode(), tolerance_s=300) == MAIN["webhook-id"]
    with pytest.raises(WebhookSignatureError, match="tolerance"):
        verify(key, hdrs, MAIN["payload"].encode(), tolerance_s=60)
