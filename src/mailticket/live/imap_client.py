"""A thin IMAP session over aioimaplib: TLS modes, login, and the few commands a source needs.

aioimaplib has no STARTTLS, so `starttls` mode speaks the pre-TLS part of the protocol itself
(greeting, CAPABILITY, STARTTLS), upgrades the socket, then hands it to aioimaplib. A server
that does not offer STARTTLS is an error, never a fallback to clear text.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import re
import shlex
import ssl
import time
from dataclasses import dataclass
from typing import Any, Literal

import aioimaplib

from mailticket.live.config import MailboxConfig
from mailticket.live.imap_protocol import LinearProtocol, literal_positions

log = logging.getLogger(__name__)

_UIDVALIDITY = re.compile(rb"\[UIDVALIDITY (\d+)\]")
_FETCH_UID = re.compile(rb"\bUID (\d+)")
_FETCH_SIZE = re.compile(rb"\bRFC822\.SIZE (\d+)")
_UNPRINTABLE = re.compile(r"[^\x20-\x7e]+")
# A name already in modified UTF-7 (RFC 3501 5.1.3): ASCII, every & opening a shift
# sequence. Such names (configured as the server lists them) are sent as they are.
_MUTF7 = re.compile(r"(?:[\x20-\x25\x27-\x7e]|&[A-Za-z0-9+,]*-)*\Z")


class ImapError(Exception):
    """The server refused something or the connection is unusable; the session is over."""


class TlsUnavailable(ImapError):
    pass


@dataclass(frozen=True, slots=True)
class Fetched:
    uid: int
    data: bytes


def ssl_context(box: MailboxConfig) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(box.ca_file) if box.ca_file else None)
    return ctx


async def _expect_tagged(
    reader: asyncio.StreamReader, tag: bytes, timeout: float
) -> list[bytes]:
    lines = []
    while True:
        line = await asyncio.wait_for(reader.readline(), timeout)
        if not line:
            raise ImapError("server closed the connection before TLS")
        lines.append(line)
        if line.startswith(tag + b" "):
            if not line[len(tag) + 1 :].upper().startswith(b"OK"):
                raise ImapError(f"server refused: {line.decode(errors='replace').strip()}")
            return lines


class _Protocol(LinearProtocol):
    def _continuation(self, line: bytes) -> None:
        command = self.pending_sync_command
        if command is not None and command.name == "AUTHENTICATE":
            # XOAUTH2 failure: the server sends "+ <base64 error JSON>" and waits for an empty
            # client response before its tagged NO; aioimaplib would wait forever.
            command.append_to_resp(line)
            self.transport.write(b"\r\n")
            return
        super()._continuation(line)


class _IMAP4(aioimaplib.IMAP4):  # type: ignore[misc]
    """Plain or implicit-TLS client (ssl_context given) with the protocol fix above."""

    def create_client(
        self,
        host: str,
        port: int,
        loop: asyncio.AbstractEventLoop,
        conn_lost_cb: Any = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        local_loop = loop or asyncio.get_running_loop()
        self.protocol = _Protocol(local_loop, conn_lost_cb)
        self._client_task = local_loop.create_task(
            local_loop.create_connection(lambda: self.protocol, host, port, ssl=ssl_context)
        )


class _StartTlsIMAP4(aioimaplib.IMAP4):  # type: ignore[misc]
    """STARTTLS, spoken by hand before aioimaplib takes over the upgraded socket."""

    def create_client(
        self,
        host: str,
        port: int,
        loop: asyncio.AbstractEventLoop,
        conn_lost_cb: Any = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        local_loop = loop or asyncio.get_running_loop()
        self.protocol = _Protocol(local_loop, conn_lost_cb)
        assert ssl_context is not None
        self._client_task = local_loop.create_task(self._upgrade(host, port, ssl_context))

    async def _upgrade(self, host: str, port: int, context: ssl.SSLContext) -> None:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            greeting = await asyncio.wait_for(reader.readline(), self.timeout)
            if not greeting.startswith(b"* OK"):
                raise ImapError(f"unexpected greeting: {greeting[:200]!r}")
            writer.write(b"T1 CAPABILITY\r\n")
            caps = b" ".join(await _expect_tagged(reader, b"T1", self.timeout)).upper()
            if b"STARTTLS" not in caps.split():
                raise TlsUnavailable(
                    f"{host}:{port} does not offer STARTTLS; refusing to continue in clear text"
                )
            writer.write(b"T2 STARTTLS\r\n")
            await _expect_tagged(reader, b"T2", self.timeout)
            await asyncio.wait_for(
                writer.start_tls(context, server_hostname=host), self.timeout
            )
        except BaseException:
            writer.close()
            raise
        transport = writer.transport
        transport.set_protocol(self.protocol)
        self.protocol.connection_made(transport)
        # The greeting was consumed before TLS; capabilities must be asked again after it.
        self.protocol.state = aioimaplib.NONAUTH
        await self.protocol.capability()


class ImapSession:
    """One logged-in connection with one selected folder."""

    def __init__(self, box: MailboxConfig, timeout: float) -> None:
        self.box = box
        self.timeout = timeout
        self.client: aioimaplib.IMAP4 | None = None
        self.uidvalidity = 0
        self.lost = False
        self.selected_at = 0.0  # time.monotonic() of the last SELECT

    def _connection_lost(self, exc: Exception | None) -> None:
        # aioimaplib leaves a waiting IDLE hanging when the socket dies; wake it so the
        # source reconnects now instead of when IDLE would have been renewed (minutes).
        self.lost = True
        client = self.client
        if client is None:
            return
        protocol = client.protocol
        if protocol.has_pending_idle_command():
            protocol.idle_queue.put_nowait(aioimaplib.STOP_WAIT_SERVER_PUSH)
            return
        # aioimaplib leaves any other command in flight (a FETCH mid-literal, say) waiting
        # for its timeout, IMAP_TIMEOUT of silence: end it now, the session is over.
        for command in (protocol.pending_sync_command, *protocol.pending_async_commands.values()):
            if command is not None:
                command._exception = aioimaplib.AioImapException(
                    f"connection lost during {command.name}: {exc!r}"
                )
                command.close(b"connection lost", "KO")

    async def open(self) -> None:
        box, host, port = self.box, self.box.host, self.box.port_or_default
        self.lost = False
        if box.tls == "starttls":
            client = _StartTlsIMAP4(
                host, port, timeout=self.timeout, ssl_context=ssl_context(box),
                conn_lost_cb=self._connection_lost,
            )
        else:
            context = ssl_context(box) if box.tls == "ssl" else None
            client = _IMAP4(
                host, port, timeout=self.timeout, ssl_context=context,
                conn_lost_cb=self._connection_lost,
            )
        self.client = client
        # aioimaplib's timeouts here are bare TimeoutError(): the log said "error=TimeoutError()"
        # and not whether the server never greeted (a wrong port, a stuck proxy) or sat on
        # the login (Dovecot's auth penalty after failed logins from the same address).
        try:
            await client.wait_hello_from_server()
        except TimeoutError:
            raise ImapError(
                f"no IMAP greeting from {host}:{port} within {self.timeout:g} s"
            ) from None
        token = None
        if box.oauth2_token_command is not None:
            token = await _run_token_command(box, self.timeout)
        elif box.oauth2_token is not None:
            token = box.oauth2_token.get_secret_value()
        try:
            if token is not None:
                resp = await client.xoauth2(box.user, token)
            else:
                assert box.password is not None
                resp = await client.login(box.user, box.password.get_secret_value())
        except TimeoutError:
            raise ImapError(f"no answer to the login within {self.timeout:g} s") from None
        self._ok(resp, "login")
        if self.box.move_target is not None:
            # Create the target once; a NO [ALREADYEXISTS] is the normal answer afterwards.
            await self._c.create(_mailbox(self.box.move_target))
        await self.select()

    async def select(self) -> None:
        resp = await self._c.select(_mailbox(self.box.folder))
        self._ok(resp, f"select {self.box.folder}")
        self.selected_at = time.monotonic()
        for line in resp.lines:
            if m := _UIDVALIDITY.search(bytes(line)):
                uidvalidity = int(m.group(1))
                if self.uidvalidity and uidvalidity != self.uidvalidity:
                    # Its UIDs start again: say why everything in it is read once more.
                    log.warning(
                        "uidvalidity changed mailbox=%s old=%d new=%d (folder recreated?)",
                        self.box.label, self.uidvalidity, uidvalidity,
                    )
                self.uidvalidity = uidvalidity
                return
        raise ImapError(f"server gave no UIDVALIDITY for {self.box.folder}")

    @property
    def _c(self) -> aioimaplib.IMAP4:
        if self.client is None:
            raise ImapError("not connected")
        if self.lost:
            # A command written to a closed socket would wait IMAP_TIMEOUT for its answer.
            raise ImapError("connection lost")
        return self.client

    @staticmethod
    def _ok(resp: Any, what: str) -> None:
        if resp.result != "OK":
            text = b" ".join(bytes(x) for x in resp.lines).decode(errors="replace")[:300]
            raise ImapError(f"{what} failed: {resp.result} {text}")

    def has(self, capability: str) -> bool:
        return bool(self._c.has_capability(capability))

    async def search(self, criterion: str) -> list[int]:
        resp = await self._c.uid_search(criterion, charset=None)
        self._ok(resp, "search")
        uids: list[int] = []
        for line in resp.lines[:-1]:
            uids.extend(int(x) for x in bytes(line).split() if x.isdigit())
        return sorted(uids)

    async def sizes(self, uids: list[int]) -> dict[int, int]:
        resp = await self._c.uid("fetch", _uid_set(uids), "(RFC822.SIZE)")
        self._ok(resp, "fetch sizes")
        out: dict[int, int] = {}
        for line in resp.lines:
            raw = bytes(line)
            uid, size = _FETCH_UID.search(raw), _FETCH_SIZE.search(raw)
            if uid and size:
                out[int(uid.group(1))] = int(size.group(1))
        return out

    async def fetch(self, uids: list[int], part: str = "BODY.PEEK[]") -> list[Fetched]:
        """Bodies without touching \\Seen (PEEK); a vanished UID is simply absent."""
        resp = await self._c.uid("fetch", _uid_set(uids), f"(UID {part})")
        self._ok(resp, "fetch")
        out: list[Fetched] = []
        lines = resp.lines
        for head, body in literal_positions(lines):
            if uid := _FETCH_UID.search(lines[head]):
                data = lines[body]
                # LinearProtocol hands literals over as bytes already: no second copy.
                out.append(Fetched(int(uid.group(1)), data if type(data) is bytes else bytes(data)))
        return out

    async def finish(self, uids: list[int]) -> None:
        """The after-processing action, for messages already committed to the database."""
        if not uids:
            return
        target, uid_set = self.box.move_target, _uid_set(uids)
        if target is not None:
            if self.has("MOVE"):
                self._ok(await self._transfer("move", uid_set, target), "move")
                return
            self._ok(await self._transfer("copy", uid_set, target), "copy")
        if target is not None or self.box.after == "delete":
            self._ok(await self._c.uid("store", uid_set, "+FLAGS.SILENT", r"(\Seen \Deleted)"), "store")
            if self.has("UIDPLUS"):
                self._ok(await self._c.uid("expunge", uid_set), "expunge")
            else:
                self._ok(await self._c.expunge(), "expunge")
            return
        self._ok(await self._c.uid("store", uid_set, "+FLAGS.SILENT", r"(\Seen)"), "store")

    async def _transfer(self, command: str, uid_set: str, target: str) -> Any:
        """UID MOVE/COPY. Dovecot refuses the whole command, NO [EXPUNGEISSUED], when another
        client expunged one of the messages since this session last heard; the answer
        brings the EXPUNGE, so the same command again moves the rest. Refused, it was an
        error that cost a reconnect (and failed `run --once`) for a message already gone."""
        resp = await self._c.uid(command, uid_set, _mailbox(target))
        if resp.result == "NO" and any(b"[EXPUNGEISSUED]" in bytes(x) for x in resp.lines):
            resp = await self._c.uid(command, uid_set, _mailbox(target))
        return resp

    async def hold(self, uids: list[int]) -> None:
        """Flag messages read and flagged, and leave them where they are: what a mailbox that
        deletes stored mail does with one it could not store whole (too large)."""
        if uids:
            uid_set = _uid_set(uids)
            self._ok(
                await self._c.uid("store", uid_set, "+FLAGS.SILENT", r"(\Seen \Flagged)"), "store"
            )

    async def wait_for_news(
        self, timeout: float, wake: asyncio.Event | None = None
    ) -> Literal["news", "woken", "timeout"]:
        """IDLE until the server reports something ("news"), `wake` is set ("woken": a push
        from the server's notification plugin, which comes before IDLE's batched notice), or
        `timeout` passes. A `wake` set before the call ends the IDLE at once."""
        client = self._c
        if self.lost:
            raise ImapError("connection lost")
        idle = await client.idle_start(timeout=timeout)
        result: Literal["news", "woken", "timeout"] = "timeout"
        woken = asyncio.ensure_future(wake.wait()) if wake is not None else None
        try:
            while client.has_pending_idle():
                pushed = asyncio.ensure_future(
                    client.wait_server_push(timeout=timeout + self.timeout)
                )
                waiting: set[asyncio.Future[Any]] = {pushed}
                if woken is not None:
                    waiting.add(woken)
                await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                if not pushed.done():
                    # Only the wake: leave the queued server lines where they are; DONE below
                    # ends the IDLE and the drain that follows sees the new messages anyway.
                    pushed.cancel()
                    await asyncio.gather(pushed, return_exceptions=True)
                    result = "woken"
                    break
                lines = pushed.result()
                if lines == aioimaplib.STOP_WAIT_SERVER_PUSH:
                    if self.lost:
                        raise ImapError("connection lost while idling")
                    break
                if any(b"EXISTS" in bytes(x) or b"RECENT" in bytes(x) for x in lines):
                    result = "news"
                    break
        finally:
            if woken is not None:
                woken.cancel()
            if not self.lost:
                if client.has_pending_idle():
                    client.idle_done()
                await asyncio.wait_for(idle, self.timeout)
            else:
                idle.cancel()
        if result != "news":
            # Dovecot syncs the session's view only when it reports news (or on a command
            # that syncs): without this NOOP the drain's SEARCH would not see a message the
            # push announced (or one committed just before a timeout).
            self._ok(await client.noop(), "noop")
        return result

    async def close(self) -> None:
        client, self.client = self.client, None
        if client is None:
            return
        try:
            if not self.lost:  # on a dead socket LOGOUT would only wait for its timeout
                await asyncio.wait_for(client.logout(), min(self.timeout, 5))
        except (TimeoutError, aioimaplib.AioImapException, OSError) as exc:
            # The connection is already gone; closing the socket below is all that is left.
            log.debug("logout failed mailbox=%s error=%r", self.box.label, exc)
        transport = getattr(client.protocol, "transport", None)
        if transport is not None:
            transport.close()


async def _run_token_command(box: MailboxConfig, timeout: float) -> str:
    assert box.oauth2_token_command is not None
    proc = await asyncio.create_subprocess_exec(
        *shlex.split(box.oauth2_token_command),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise ImapError(f"mailbox {box.label}: oauth2_token_command timed out") from None
    token = out.decode().strip()
    if proc.returncode != 0 or not token:
        raise ImapError(
            f"mailbox {box.label}: oauth2_token_command failed (exit {proc.returncode}):"
            f" {err.decode(errors='replace').strip()[:300]}"
        )
    return token


def _quote(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _mailbox(name: str) -> str:
    """A folder name as IMAP wants it: modified UTF-7, quoted. Sent as UTF-8, a name like
    "Eingang/Rückfragen" is refused ("not valid mUTF-7") at every connect, forever."""
    return _quote(name if _MUTF7.match(name) else _mutf7(name))


def _mutf7(name: str) -> str:
    def shift(run: re.Match[str]) -> str:
        packed = base64.b64encode(run.group().encode("utf-16-be")).rstrip(b"=")
        return "&" + packed.replace(b"/", b",").decode("ascii") + "-"

    return _UNPRINTABLE.sub(shift, name.replace("&", "&-"))


def _uid_set(uids: list[int]) -> str:
    """Compact "1:5,8,10:12" form so large batches stay short on the wire."""
    ordered = sorted(set(uids))
    parts: list[str] = []
    start = prev = ordered[0]
    for uid in ordered[1:]:
        if uid == prev + 1:
            prev = uid
            continue
        parts.append(f"{start}:{prev}" if prev > start else str(start))
        start = prev = uid
    parts.append(f"{start}:{prev}" if prev > start else str(start))
    return ",".join(parts)
