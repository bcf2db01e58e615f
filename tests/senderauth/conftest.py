from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from email.policy import SMTP

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from mailticket.reading.senderauth import SenderAuthConfig, check_sender
from mailticket.reading.senderauth.dns import DnsClient
from mailticket.reading.senderauth.verdict import Verdict
from tests.senderauth.dnsstub import Zone, dns_stub

OUR_MX = "mx.support.example"
OUR_RECEIVED = (
    "Received: from mail.acme.example (mail.acme.example [192.0.2.10])\r\n"
    f"\tby {OUR_MX} (Postfix) with ESMTPS id 4XyZ1; Mon, 15 Dec 2025 10:00:00 +0100\r\n"
)
SENDER_RECEIVED = (
    "Received: from laptop.acme.example (laptop.acme.example [10.1.2.3])\r\n"
    "\tby mail.acme.example (Postfix) with ESMTPSA id 77; Mon, 15 Dec 2025 09:59:58 +0100\r\n"
)


@dataclass(frozen=True)
class TestKey:
    __test__ = False  # a key, not a test class

    private_pem: bytes
    public_b64: str

    def txt(self) -> str:
        return f"v=DKIM1; k=rsa; p={self.public_b64}"


def _new_key() -> TestKey:
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return TestKey(pem, base64.b64encode(der).decode("ascii"))


@pytest.fixture(scope="session")
def test_key() -> TestKey:
    return _new_key()


@pytest.fixture(scope="session")
def other_key() -> TestKey:
    return _new_key()


def message(
    *,
    sender: str = "Jane Doe <jane@acme.example>",
    subject: str = "Printer on fire",
    body: str = "The printer in room 4 is on fire again.\n",
) -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = "support@support.example"
    msg["Subject"] = subject
    msg["Date"] = "Mon, 15 Dec 2025 09:59:50 +0100"
    msg["Message-ID"] = "<c0ffee@laptop.acme.example>"
    msg.set_content(body)
    return msg.as_bytes(policy=SMTP)


def sign(raw: bytes, key: TestKey, *, domain: str = "acme.example", selector: str = "mt") -> bytes:
    header = dkim.sign(
        raw,
        selector.encode(),
        domain.encode(),
        key.private_pem,
        include_headers=[b"from", b"to", b"subject", b"date", b"message-id"],
    )
    return bytes(header) + raw


def delivered(
    raw: bytes,
    *,
    above: list[str] = (),  # type: ignore[assignment]
    below: list[str] = (),  # type: ignore[assignment]
    return_path: str = "<bounces@acme.example>",
    received: str = OUR_RECEIVED,
) -> bytes:
    """What our MTA hands over: its headers (`above` its Received line, like milters put
    Authentication-Results), its Received line, then what the sender wrote (`below`)."""
    top = [f"Return-Path: {return_path}\r\n"] if return_path is not None else []
    top += [h if h.endswith("\r\n") else h + "\r\n" for h in above]
    sender_side = [h if h.endswith("\r\n") else h + "\r\n" for h in below]
    return ("".join(top) + received + "".join(sender_side) + SENDER_RECEIVED).encode() + raw


@pytest.fixture
def zone(test_key: TestKey) -> Zone:
    z = Zone()
    z.txt("mt._domainkey.acme.example", test_key.txt())
    z.txt("acme.example", "v=spf1 ip4:192.0.2.0/28 -all")
    z.txt("_dmarc.acme.example", "v=DMARC1; p=reject; rua=mailto:d@acme.example")
    return z


@pytest.fixture
def dns(zone: Zone) -> Iterator[DnsClient]:
    with dns_stub(zone) as address:
        yield DnsClient([address], timeout=3.0)


def judge(raw: bytes, dns: DnsClient | None = None, **config: object) -> Verdict:
    config.setdefault("authserv_ids", frozenset({OUR_MX}))
    return check_sender(raw, SenderAuthConfig(**config), dns=dns)  # type: ignore[arg-type]


# Workflows that hold mail failing sender validation and open tickets for the rest.
QUARANTINE_SPOOFED = """
workflows:
  - name: hold forged mail
    classification_trigger: "spoofed?"
    order: 1
    workflow_steps:
      - action: quarantine
        params: {reason: sender failed DMARC}
  - name: tickets
    classification_trigger: support_request
    order: 2
    workflow_steps:
      - action: create_ticket
"""
