"""What the worker benchmarks share: a fresh PostgreSQL database, `mailticket run` processes,
LMTP clients that retry like an MTA, and the lost/duplicated check."""

from __future__ import annotations

import os
import re
import signal
import smtplib
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sqlalchemy import Engine, func, select, text  # noqa: E402
from tests.dbutil import create_pg  # noqa: E402

from mailticket.live.models import ImapLedgerEntry  # noqa: E402
from mailticket.store import migrate  # noqa: E402
from mailticket.store.models import EmailLog, QuarantineEntry, Ticket  # noqa: E402

MESSAGE_ID = re.compile(rb"^Message-ID:[ \t]*(<[^>\r\n]*>)", re.IGNORECASE | re.MULTILINE)


def as_mta_sends(raw: bytes, limit: int = 990) -> bytes:
    """Lines longer than SMTP allows (RFC 5321 4.5.3.1.6: 998) split as Postfix's
    smtp_line_length_limit does: the mix has HTML bodies on one long line, which a real
    receiver never gets as such, and ours refuses (500 Line too long)."""
    out = []
    for line in raw.replace(b"\r\n", b"\n").split(b"\n"):
        while len(line) > limit:
            out.append(line[:limit])
            line = line[limit:]
        out.append(line)
    # smtplib sends bytes as they are: line ends must already be CRLF
    return b"\r\n".join(out)


def fresh_pg(name: str) -> str:
    url = create_pg(name)
    migrate.upgrade(url)
    return url


def load() -> str:
    """The machine's load, printed with every figure: the machine is shared."""
    one, five, fifteen = os.getloadavg()
    return f"load {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} cores"


def message_id(raw: bytes) -> str | None:
    head = raw.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
    match = MESSAGE_ID.search(head)
    return match.group(1).decode("ascii", "replace") if match else None


@dataclass
class Workers:
    """`mailticket run` processes, each with its own LMTP port, killed and restarted at will."""

    env: dict[str, str]
    logdir: Path
    ports: list[int]
    procs: list[subprocess.Popen[bytes] | None] = field(default_factory=list)
    starts: list[int] = field(default_factory=list)
    kills: int = 0

    def start_all(self) -> None:
        self.procs = [None] * len(self.ports)
        self.starts = [0] * len(self.ports)
        for i in range(len(self.ports)):
            self.start(i)

    def start(self, i: int) -> None:
        self.starts[i] += 1
        env = {**self.env, "LMTP_LISTEN": f"lmtp://127.0.0.1:{self.ports[i]}"}
        log = open(self.logdir / f"worker{i}.{self.starts[i]}.log", "wb")
        self.procs[i] = subprocess.Popen(
            [sys.executable, "-m", "mailticket.cli", "run"], env=env, cwd=self.logdir,
            stdout=subprocess.DEVNULL, stderr=log,
        )

    def log(self, i: int) -> str:
        return (self.logdir / f"worker{i}.{self.starts[i]}.log").read_text(errors="replace")

    def all_logs(self) -> str:
        return "".join(p.read_text(errors="replace") for p in self.logdir.glob("worker*.log"))

    def wait_started(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all("worker started" in self.log(i) for i in range(len(self.ports))):
                return
            for i, proc in enumerate(self.procs):
                if proc is not None and proc.poll() is not None:
                    raise RuntimeError(f"worker {i} exited:\n{self.log(i)[-3000:]}")
            time.sleep(0.1)
        raise RuntimeError("the workers did not start")

    def kill(self, i: int) -> None:
        proc = self.procs[i]
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            self.kills += 1

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for i, proc in enumerate(self.procs):
            if proc is None:
                continue
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                print(f"worker {i} did not stop on SIGTERM; killed", file=sys.stderr)
                proc.kill()
                proc.wait()


DOT_START = re.compile(rb"^\.", re.MULTILINE)


def on_the_wire(raw: bytes) -> bytes:
    """What goes after DATA's 354: the message dot-stuffed (RFC 5321 4.5.2), ending in CRLF,
    without the final "." line. Done once per message, before the clock starts."""
    wire = DOT_START.sub(b"..", raw)
    return wire if wire.endswith(b"\r\n") else wire + b"\r\n"


class PipeliningLmtp:
    """An LMTP session that pipelines as Postfix's LMTP client does (RFC 2920; an LMTP server
    must offer PIPELINING, RFC 2033 4.1): MAIL, RCPT and DATA leave in one write and their
    replies are read together, then the content goes and one reply per recipient comes back:
    two round trips per message where smtplib's `sendmail` takes four. Same exceptions as
    smtplib, so the feed's retry logic treats both alike."""

    def __init__(self, host: str, port: int, timeout: float) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.replies = self.sock.makefile("rb")
        self._expect(self._reply(), 220)
        self.sock.sendall(b"LHLO bench.example\r\n")
        code, text = self._reply()
        self._expect((code, text), 250)
        if b"PIPELINING" not in text.upper():
            raise smtplib.SMTPResponseException(code, b"no PIPELINING in LHLO: " + text)

    def _reply(self) -> tuple[int, bytes]:
        lines = []
        while True:
            line = self.replies.readline(8192)
            if not line:
                raise smtplib.SMTPServerDisconnected("the server closed the connection")
            lines.append(line[4:].rstrip(b"\r\n"))
            if line[3:4] != b"-":
                return int(line[:3]), b"\n".join(lines)

    @staticmethod
    def _expect(reply: tuple[int, bytes], code: int) -> None:
        if reply[0] != code:
            raise smtplib.SMTPResponseException(*reply)

    def sendmail(self, sender: str, recipients: Sequence[str], wire: bytes) -> None:
        commands = [f"MAIL FROM:<{sender}>", *(f"RCPT TO:<{r}>" for r in recipients), "DATA"]
        self.sock.sendall("".join(c + "\r\n" for c in commands).encode())
        replies = [self._reply() for _ in commands]
        if replies[-1][0] != 354:  # no DATA: the server said why in an earlier reply
            refused = next((r for r in replies if r[0] >= 400), replies[-1])
            self.sock.sendall(b"RSET\r\n")
            self._reply()
            raise smtplib.SMTPResponseException(*refused)
        self.sock.sendall(wire + b".\r\n")
        accepted = [r for r in replies[1:-1] if r[0] == 250]
        answers = [self._reply() for _ in accepted]  # LMTP: one per accepted recipient
        for answer in answers:
            self._expect(answer, 250)
        if len(accepted) < len(recipients):
            raise smtplib.SMTPResponseException(*next(r for r in replies[1:-1] if r[0] != 250))

    def quit(self) -> None:
        try:
            self.sock.sendall(b"QUIT\r\n")
            self._reply()
        finally:
            self.close()

    def close(self) -> None:
        self.replies.close()
        self.sock.close()


class LmtpFeed:
    """`clients` threads, each one LMTP session, sending their share of the messages. Like an
    MTA, a client that gets no 250 (451, a dead worker) keeps the message and tries again,
    on the next worker's port. `pipelining`: the sessions pipeline as Postfix's do
    (`PipeliningLmtp`) instead of smtplib's four round trips per message."""

    def __init__(
        self, ports: Sequence[int], messages: Sequence[bytes], clients: int,
        pipelining: bool = False,
    ) -> None:
        self.ports = list(ports)
        self.pipelining = pipelining
        self.shares = [[as_mta_sends(m) for m in messages[i::clients]] for i in range(clients)]
        # what a pipelining session sends: the message as recorded, in its wire form
        self.wires = [[on_the_wire(m) for m in share] if pipelining else share
                      for share in self.shares]
        self.latencies: list[float] = []  # first try to 250, retries included
        self.accepted: list[bytes] = []  # answered 250: the receivers' responsibility now
        self.give_up = 300.0  # seconds of retrying one message (a worker restarting)
        self.retries = 0
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self.threads = [
            threading.Thread(target=self._client, args=(i,), daemon=True) for i in range(clients)
        ]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def join(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in self.threads:
            thread.join(None if deadline is None else max(deadline - time.monotonic(), 0))
        return not any(t.is_alive() for t in self.threads)

    def _connect(self, turn: int) -> smtplib.LMTP | PipeliningLmtp:
        port = self.ports[turn % len(self.ports)]
        if self.pipelining:
            return PipeliningLmtp("127.0.0.1", port, timeout=60)
        return smtplib.LMTP("127.0.0.1", port, timeout=60)

    def _client(self, index: int) -> None:
        turn = index
        client: smtplib.LMTP | PipeliningLmtp | None = None
        for raw, wire in zip(self.shares[index], self.wires[index], strict=True):
            attempts = 0
            first = time.perf_counter()
            while True:
                try:
                    if client is None:
                        client = self._connect(turn)
                    client.sendmail(
                        "customer@example.com", ["support@example.test"],
                        wire,
                    )
                except smtplib.SMTPResponseException as exc:
                    if exc.smtp_code >= 500:  # refused for good: the MTA would bounce it
                        with self._lock:
                            self.errors.append(repr(exc))
                        break
                    attempts += 1
                    with self._lock:
                        self.retries += 1
                    time.sleep(0.05)
                    continue
                except (OSError, smtplib.SMTPException) as exc:
                    attempts += 1
                    with self._lock:
                        self.retries += 1
                        if time.perf_counter() - first > self.give_up:
                            self.errors.append(f"gave up after {attempts} tries: {exc!r}")
                            break
                    if client is not None:
                        try:
                            client.close()
                        except OSError:
                            pass
                    client = None
                    turn += 1  # another worker (this one may be dead)
                    time.sleep(0.05)
                    continue
                with self._lock:
                    self.latencies.append(time.perf_counter() - first)
                    self.accepted.append(raw)
                break
        if client is not None:
            try:
                client.quit()
            except (OSError, smtplib.SMTPException):
                pass


def count(engine: Engine, stmt) -> int:  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        return int(conn.scalar(stmt) or 0)


def stored_ids(engine: Engine) -> tuple[list[str], list[str]]:
    with engine.connect() as conn:
        logged = list(conn.scalars(
            select(EmailLog.email_message_id).where(EmailLog.direction == "in")
        ))
        held = [m for m in conn.scalars(select(QuarantineEntry.message_id)) if m]
    return logged, held


def integrity(engine: Engine, messages: Sequence[bytes]) -> dict[str, int]:
    """Every Message-ID of the input stored once (logged or quarantined), no ticket twice."""
    expected = {mid for raw in messages if (mid := message_id(raw)) is not None}
    logged, held = stored_ids(engine)
    seen = set(logged) | set(held)
    created = count(engine, select(func.count()).where(
        EmailLog.direction == "in", EmailLog.action == "created"
    ))
    tickets = count(engine, select(func.count()).select_from(Ticket))
    return {
        "expected": len(expected),
        "lost": len(expected - seen),
        "duplicated_log": len(logged) - len(set(logged)),
        "in_log_and_quarantine": len(set(logged) & set(held)),
        "duplicated_quarantine": len(held) - len(set(held)),
        # one ticket per message that opened one: a ticket opened twice shows up here
        "tickets": tickets,
        "tickets_without_their_message": tickets - created,
        "ledger_rows": count(engine, select(func.count()).select_from(ImapLedgerEntry)),
    }


def xact_commits(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.scalar(text(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
        )) or 0)


def wait_for(check: Callable[[], bool], timeout: float, what: str, poll: float = 0.2) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return time.monotonic()
        time.sleep(poll)
    raise RuntimeError(f"timed out waiting for {what}")


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(q * len(ordered)), len(ordered) - 1)] if ordered else float("nan")


def group_sizes(prom: Path) -> tuple[float, float]:
    """(transactions, messages) of the receivers' group commits, summed over the workers'
    metrics files (PROMETHEUS_MULTIPROC_DIR)."""
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry, str(prom))  # type: ignore[no-untyped-call]
    name = "mailticket_receiver_group_messages"
    return (
        registry.get_sample_value(f"{name}_count") or 0.0,
        registry.get_sample_value(f"{name}_sum") or 0.0,
    )
