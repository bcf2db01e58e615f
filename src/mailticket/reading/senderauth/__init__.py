"""Sender validation: did the From domain really send this message?

`check_sender(raw, SenderAuthConfig.from_settings(settings))` returns a Verdict (pass /
fail / none, with the evidence as JSON); `is_suspect(verdict, policy)` says whether the
message is `spoofed?`. The MTA's Authentication-Results (RFC 8601) are believed only from
configured authserv-ids and only above our own Received line (see headers.py); our own DKIM,
SPF and DMARC checks (verify.py) run when configured.
"""

from mailticket.reading.senderauth.check import SenderAuthConfig, check_sender
from mailticket.reading.senderauth.verdict import SPOOFED_LABEL, Check, Policy, Verdict, is_suspect

__all__ = [
    "SPOOFED_LABEL",
    "Check",
    "Policy",
    "SenderAuthConfig",
    "Verdict",
    "check_sender",
    "is_suspect",
]
