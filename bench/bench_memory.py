"""Memory (issue 12): peak RSS storing one message with a big attachment, and RSS over a
long import. Run by hand; prints figures, asserts nothing.

    .venv/bin/python bench/bench_memory.py                       # 50 MB + 50,000 messages
    .venv/bin/python bench/bench_memory.py --mb 50 --long 1000000
    .venv/bin/python bench/bench_memory.py --long 0 --worker imap lmtp maildir   # + the sources

Each measurement runs in a process of its own that does nothing else, so its peak RSS is the
pipeline's: the 50 MB message is written to a file first and read by the measuring process
(`pipeline.process`, one message, committed, into a fresh PostgreSQL database); the long
import reads `bench/mailmix.py`'s mix from a pipe (another process generates it) through
`ingest_many`, and prints the resident set every --every messages. Targets: peak RSS
<= 250 MB with the 50 MB attachment; RSS flat over the import.

`--worker imap|lmtp|maildir`: the same message taken by a real `mailticket run` process with
that one source (a fresh database each), built and delivered by this process, never by the
measured one: (imap) a file put into a private Dovecot's Maildir, which the worker hears of by
IDLE and FETCHes; (lmtp) sent by an LMTP client here to the worker's receiver; (maildir) a
file renamed into the worker's MAILDIR_PATH new/. `--count N`: N such messages at once (over
LMTP one after the other by one client, or with `--parallel` each by a client of its own, all
at once; `--inflight-bytes B` sets the worker's LMTP_INFLIGHT_BYTES). Printed: the worker's resident set once it
is up (VmRSS, before the message), and its peak (VmHWM, /proc/<pid>/status) once the message
is committed.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import resource
import shutil
import smtplib
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

_PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_mb() -> float:
    """The resident set now (not the peak)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _PAGE / 2**20


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def write_big_message(path: Path, mb: int) -> str:
    """A mail with an `mb` MB attachment (random bytes, base64), written in pieces.
    Returns the attachment's SHA-256."""
    digest = hashlib.sha256()
    with path.open("wb") as f:
        f.write(
            b"From: Big Sender <big@customer.example>\r\nTo: support@example.com\r\n"
            b"Subject: Core dump attached\r\nDate: Mon, 05 Jan 2026 08:00:00 +0000\r\n"
            + f"Message-ID: <big-{uuid.uuid4().hex}@customer.example>\r\n".encode()
            + b'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b1"\r\n\r\n'
            b"--b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
            b"The service crashed, the core dump is attached.\r\n"
            b'--b1\r\nContent-Type: application/octet-stream; name="core.bin"\r\n'
            b'Content-Disposition: attachment; filename="core.bin"\r\n'
            b"Content-Transfer-Encoding: base64\r\n\r\n"
        )
        left = mb << 20
        while left:
            chunk = os.urandom(min(left, 57 * 4096))  # whole 76-character lines
            left -= len(chunk)
            digest.update(chunk)
            f.write(base64.encodebytes(chunk).replace(b"\n", b"\r\n"))
        f.write(b"--b1--\r\n")
    return digest.hexdigest()


def child_big(path: str, url: str) -> None:
    from mailticket.runtime import build_runtime
    from mailticket.settings import load_settings

    rt = build_runtime(load_settings(database_url=url, _env_file=None))
    before = peak_mb()
    raw = Path(path).read_bytes()
    t = time.perf_counter()
    outcome = rt.pipeline.process(raw, "bench")
    took = time.perf_counter() - t
    rt.close()
    print(json.dumps({"action": outcome.action, "before": before, "peak": peak_mb(),
                      "seconds": took, "raw": len(raw)}))


def _framed(stream: BinaryIO) -> Iterator[tuple[str, bytes]]:
    while head := stream.read(4):
        yield "bench", stream.read(int.from_bytes(head, "big"))


def child_long(url: str, every: int) -> None:
    from mailticket.runtime import build_runtime, settle_heap
    from mailticket.settings import load_settings

    rt = build_runtime(load_settings(database_url=url, _env_file=None))
    settle_heap()  # as `mailticket run` and `mailticket ingest` do at start-up
    t = time.perf_counter()
    print(f"{'messages':>10} {'RSS MB':>7} {'peak MB':>8} {'msg/s':>7}", flush=True)
    for i, _outcome in enumerate(rt.pipeline.ingest_many(_framed(sys.stdin.buffer)), 1):
        if i % every == 0:
            rate = i / (time.perf_counter() - t)
            print(f"{i:>10,} {rss_mb():7.0f} {peak_mb():8.0f} {rate:7.0f}", flush=True)
    rt.close()


def _proc_status(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM (the kernel's peak resident set) of a process, in MB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) / 1024
    return out


def _wait(check: Callable[[], bool], timeout: float, what: str,
          proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if proc.poll() is not None:
            raise RuntimeError(f"the worker exited while waiting for {what}:\n"
                               + log.read_text(errors="replace")[-3000:])
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}:\n"
                               + log.read_text(errors="replace")[-3000:])
        time.sleep(0.05)


def _deliver_file(message: Path, maildir: Path, owner: str | None = None) -> None:
    """Into maildir/new as a delivery agent does: written in tmp/, renamed into new/."""
    tmp = maildir / "tmp" / f"{time.time_ns()}.bench.big"
    shutil.copyfile(message, tmp)
    if owner:
        shutil.chown(tmp, owner, owner)
    tmp.rename(maildir / "new" / tmp.name)


def _send_lmtp(message: Path, port: int) -> str:
    raw = message.read_bytes()  # this process's memory, not the worker's
    with smtplib.LMTP("127.0.0.1", port, timeout=600) as client:
        client.ehlo_or_helo_if_needed()
        client.mail("big@customer.example")
        client.rcpt("support@example.test")
        code, reply = client.data(raw)
    return f"{code} {reply.decode(errors='replace')}"


def _send_lmtp_all(messages: list[Path], port: int) -> str:
    """Each message by a client of its own, all at once; a 451 is sent again (as an MTA
    would, sooner). The replies, counted."""
    replies: list[str] = []

    def send(message: Path) -> None:
        for _ in range(100):
            try:
                reply = _send_lmtp(message, port)
            except smtplib.SMTPDataError as exc:
                reply = f"{exc.smtp_code} {exc.smtp_error.decode(errors='replace')}"
            replies.append(reply[:3])
            if not reply.startswith("451"):
                return
            time.sleep(1.0)

    threads = [threading.Thread(target=send, args=(m,)) for m in messages]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return " ".join(f"{code} x{replies.count(code)}" for code in sorted(set(replies)))


def worker_big(
    path: str, messages: list[Path], url: str, mb: int, workdir: Path,
    parallel: bool = False, inflight_bytes: int | None = None,
) -> dict[str, object]:
    """One `mailticket run` with one source takes the messages (delivered together; over
    LMTP one after the other, by one client, or all at once with `parallel`); its VmRSS
    when up, its VmHWM once they are committed."""
    from sqlalchemy import create_engine, func, select
    from tests.live.dovecot import Dovecot, free_port
    from tests.live.helpers import stop_process
    from tests.smtp_sink import SmtpSink

    from mailticket.store.models import EmailLog

    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("IMAP_", "MAILDIR", "LMTP", "MAILBOXES", "API_", "DATABASE"))}
    env.update(DATABASE_URL=url, LOG_FORMAT="text", MAX_MESSAGE_SIZE=str((mb + 32) << 20),
               EMAIL_UNMATCHED_ACTION="create_ticket", SMTP_TLS="plain")
    dovecot = None
    lmtp_port = 0
    if path == "imap":
        (workdir / "dovecot").mkdir()
        dovecot = Dovecot(workdir / "dovecot", ssl=False).start()
        dovecot.count("INBOX")  # makes Dovecot create the Maildir
        env.update(IMAP_HOST="127.0.0.1", IMAP_PORT=str(dovecot.port), IMAP_TLS="plain",
                   IMAP_USER=dovecot.user, IMAP_PASSWORD=dovecot.password)
    elif path == "lmtp":
        lmtp_port = free_port()
        env["LMTP_LISTEN"] = f"lmtp://127.0.0.1:{lmtp_port}"
        if inflight_bytes is not None:
            env["LMTP_INFLIGHT_BYTES"] = str(inflight_bytes)
    else:
        maildir = workdir / "Maildir"
        env["MAILDIR_PATH"] = str(maildir)
    engine = create_engine(url)
    log = workdir / "worker.log"
    try:
        with SmtpSink() as sink, open(log, "wb") as err:
            env["SMTP_HOST"], env["SMTP_PORT"] = "127.0.0.1", str(sink.port)
            proc = subprocess.Popen([sys.executable, "-m", "mailticket.cli", "run"], env=env,
                                    cwd=workdir, stdout=subprocess.DEVNULL, stderr=err)
            try:
                ready = "connected mailbox=" if path == "imap" else "worker started"
                _wait(lambda: ready in log.read_text(errors="replace"), 120, "start-up",
                      proc, log)
                time.sleep(1.0)  # the first drain and the scheduler's first jobs
                up = _proc_status(proc.pid)
                t = time.perf_counter()
                reply = ""
                if lmtp_port and parallel:
                    reply = _send_lmtp_all(messages, lmtp_port)
                for message in messages if not (lmtp_port and parallel) else ():
                    if dovecot is not None:
                        _deliver_file(message, dovecot.home / dovecot.user / "Maildir",
                                      owner="dovecot")
                    elif lmtp_port:
                        reply = _send_lmtp(message, lmtp_port)
                    else:
                        _deliver_file(message, maildir)

                def stored() -> bool:
                    with engine.connect() as conn:
                        done = conn.scalar(select(func.count()).select_from(EmailLog)) or 0
                    return done >= len(messages)

                _wait(stored, 900, "the messages stored", proc, log)
                took = time.perf_counter() - t
                time.sleep(0.5)  # the server action / rename after the commit
                peak = _proc_status(proc.pid)
            finally:
                stop_process(proc)
    finally:
        engine.dispose()
        if dovecot is not None:
            dovecot.stop()
    return {"up": up["VmRSS"], "peak": peak["VmHWM"], "seconds": took, "reply": reply}


def check_stored(url: str, mb: int, expected: list[tuple[str, int]]) -> bool:
    """Each message's attachment (size, SHA-256) and raw length stored, once each."""
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    with engine.connect() as conn:
        stored = conn.execute(text(
            "SELECT a.size, a.sha256, length(r.raw) FROM tticket_attachments a "
            "JOIN tticket_email_log l ON l.id = a.email_log_id "
            "JOIN mailticket_raw_messages r ON r.id = l.raw_message_id")).all()
    engine.dispose()
    return sorted(tuple(row) for row in stored) == sorted(
        (mb << 20, sha, raw_size) for sha, raw_size in expected
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=50, help="attachment size (0: skip)")
    ap.add_argument("--long", type=int, default=50_000, help="messages to import (0: skip)")
    ap.add_argument("--every", type=int, default=0, help="print RSS every this many (default n/20)")
    ap.add_argument("--worker", nargs="+", default=[], choices=("imap", "lmtp", "maildir"),
                    help="also: a `mailticket run` taking the message from these sources")
    ap.add_argument("--count", type=int, default=1,
                    help="--worker: this many such messages at once (each its own Message-ID)")
    ap.add_argument("--parallel", action="store_true",
                    help="--worker lmtp: the --count messages each by its own client, at once")
    ap.add_argument("--inflight-bytes", type=int, default=None,
                    help="--worker lmtp: the worker's LMTP_INFLIGHT_BYTES (default: its own)")
    ap.add_argument("--no-file", action="store_true",
                    help="skip the in-process pipeline.process measurement")
    ap.add_argument("--child-big", nargs=2, help=argparse.SUPPRESS)
    ap.add_argument("--child-long", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child_big:
        child_big(*args.child_big)
        return
    if args.child_long:
        child_long(args.child_long, args.every)
        return

    from tests.dbutil import create_pg, drop_pg

    import mailticket
    from mailticket.store import migrate

    me = [sys.executable, str(Path(__file__).resolve())]
    # PYTHONPATH=<another tree>/src measures that tree (the workers inherit it).
    print(f"mailticket from {Path(mailticket.__file__).parent}")
    print(f"load before: {os.getloadavg()[0]:.2f} (1 min)")
    name = f"mt_bench_memory_{uuid.uuid4().hex[:6]}"
    url = create_pg(name)
    try:
        migrate.upgrade(url)
        if args.mb:
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "big.eml"
                sha = write_big_message(path, args.mb)
                raw_size = path.stat().st_size
                more = [Path(tmp) / f"big{i}.eml" for i in range(1, args.count)]
                expected = [(sha, raw_size)] + [
                    (write_big_message(extra, args.mb), extra.stat().st_size) for extra in more
                ]
                if not args.no_file:
                    done = subprocess.run([*me, "--child-big", str(path), url], check=True,
                                          capture_output=True, text=True)
                    got = json.loads(done.stdout.strip().splitlines()[-1])
                    ok = check_stored(url, args.mb, [(sha, got["raw"])])
                    print(f"{args.mb} MB attachment ({got['raw'] / 2**20:.0f} MB message):"
                          f" {got['action']} in {got['seconds']:.1f}s,"
                          f" stored {'intact' if ok else 'WRONG'}")
                    print(f"  peak RSS {got['peak']:.0f} MB (after start-up"
                          f" {got['before']:.0f} MB); target <= 250 MB")
                for source in args.worker:
                    wname = f"mt_bench_memory_{uuid.uuid4().hex[:6]}"
                    wurl = create_pg(wname)
                    try:
                        migrate.upgrade(wurl)
                        work = Path(tempfile.mkdtemp(prefix=f"mt-mem-{source}-"))
                        try:
                            w = worker_big(source, [path, *more], wurl, args.mb, work,
                                           args.parallel, args.inflight_bytes)
                        finally:
                            shutil.rmtree(work, ignore_errors=True)
                        ok = check_stored(wurl, args.mb, expected)
                    finally:
                        drop_pg(wname)
                    reply = f", reply {w['reply']!r}" if w["reply"] else ""
                    what = (f"{args.count} messages with a {args.mb} MB attachment each"
                            if args.count > 1 else f"the {args.mb} MB attachment")
                    print(f"{source}: `mailticket run` stored {what}"
                          f" {'intact' if ok else 'WRONG'} in {w['seconds']:.1f}s{reply};"
                          f" load {os.getloadavg()[0]:.2f}")
                    print(f"  peak RSS {w['peak']:.0f} MB (after start-up {w['up']:.0f} MB);"
                          f" target <= 250 MB")
        if args.long:
            every = args.every or max(1, args.long // 20)
            print(f"long import: {args.long:,} messages of the support mix, RSS every {every:,}")
            gen = subprocess.Popen(
                [sys.executable, str(Path(__file__).with_name("mailmix.py")), str(args.long),
                 "--stream", "--seed", "7"], stdout=subprocess.PIPE)
            subprocess.run([*me, "--child-long", url, "--every", str(every)], stdin=gen.stdout,
                           check=True)
            gen.wait()
        print(f"load after: {os.getloadavg()[0]:.2f} (1 min)")
    finally:
        drop_pg(name)


if __name__ == "__main__":
    main()
