"""Push from the mail server: an HTTP endpoint that wakes an IMAP source at once.

IMAP IDLE is as fast as the server's notice, and Dovecot batches those (a hardcoded 500 ms
in src/lib-storage/mailbox-watch.c). Dovecot's push_notification plugin instead fires when a
delivery (LMTP/LDA) commits the message; its `ox` driver PUTs a small JSON document

    {"user": "support@example.com", "event": "messageNew", "folder": "INBOX",
     "imap-uidvalidity": 1, "imap-uid": 7, ...}

to a configured URL, sending the URL's userinfo as HTTP Basic credentials. The push only
wakes the matching source: the message itself is still fetched over IMAP by the same drain as
always (ledger, crash safety, server action), so a lost or forged push can cost a drain,
never a message. Setup: docs/scaling.md.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
from collections.abc import Callable, Iterable

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from mailticket.live.imap import ImapSource

log = logging.getLogger(__name__)

# The ox driver's document is a few hundred bytes (the snippet is short); anything much
# larger is not a notification.
MAX_BODY = 64 * 1024

# Wakes the sources watching (user, folder); returns how many it woke.
Wake = Callable[[str, str], int]


def _authorized(header: str | None, secret: str) -> bool:
    """Basic (the password is the secret, as Dovecot sends the URL's userinfo; the user name
    is free) or Bearer; compared in constant time."""
    if not header:
        return False
    scheme, _, value = header.partition(" ")
    given: str | None = None
    if scheme.lower() == "bearer":
        given = value.strip()
    elif scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return False
        _, colon, password = decoded.partition(":")
        given = password if colon else None
    if given is None:
        return False
    return hmac.compare_digest(given.encode(), secret.encode())


def _refuse(status: int, reason: str) -> Response:
    headers = {"WWW-Authenticate": 'Basic realm="mailticket push"'} if status == 401 else None
    return JSONResponse({"error": reason}, status_code=status, headers=headers)


def build_app(secret: str, wake: Wake) -> Starlette:
    async def notify(request: Request) -> Response:
        if not _authorized(request.headers.get("authorization"), secret):
            log.warning("push refused client=%s reason=unauthorized",
                        request.client.host if request.client else "?")
            return _refuse(401, "unauthorized")
        declared = request.headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY):
            return _refuse(413, "body too large")
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BODY:
                return _refuse(413, "body too large")
        try:
            doc = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            return _refuse(400, "body is not JSON")
        if not isinstance(doc, dict) or not isinstance(doc.get("user"), str) or not doc["user"]:
            return _refuse(400, 'expected a JSON object with a "user" string')
        folder = doc.get("folder", "INBOX")
        if not isinstance(folder, str) or not folder:
            return _refuse(400, '"folder" must be a non-empty string')
        woken = wake(doc["user"], folder)
        if not woken:
            # Dovecot logs the status: a push for a mailbox nobody here watches is a
            # configuration mistake worth seeing on the server side.
            log.info("push ignored user=%s folder=%s reason=no-such-source", doc["user"], folder)
            return _refuse(404, "no source watches this user and folder")
        log.debug("push woke sources=%d user=%s folder=%s", woken, doc["user"], folder)
        return Response(status_code=204)

    return Starlette(routes=[Route("/{path:path}", notify, methods=["PUT", "POST"])])


def wake_sources(sources: Iterable[ImapSource], user: str, folder: str) -> int:
    """Wake every source watching (user, folder); how many. User names compare without
    case: waking one source too many costs a drain, missing one costs the latency."""
    woken = 0
    for src in sources:
        if src.box.user.casefold() == user.casefold() and same_folder(src.box.folder, folder):
            src.wake.set()
            woken += 1
    return woken


def same_folder(a: str, b: str) -> bool:
    """IMAP folder names compare exactly, except INBOX, which is case-insensitive (RFC 3501)."""
    if a.upper() == "INBOX" and b.upper() == "INBOX":
        return True
    return a == b
