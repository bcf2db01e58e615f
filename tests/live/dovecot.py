"""A private Dovecot on loopback for tests and the bench: own config, own Maildir, own ports.

`Dovecot(workdir).start()` writes a config into `workdir`, generates a self-signed
certificate with openssl, and runs `dovecot -F -c conf` as a child process. One instance
listens three ways: plain IMAP (STARTTLS offered), implicit TLS (imaps), and a second plain
listener on an instance with `ssl = no` is made by `Dovecot(workdir, ssl=False)`.
"""

from __future__ import annotations

import imaplib
import os
import shutil
import signal
import smtplib
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

DOVECOT = "/usr/sbin/dovecot"
USER = "support@example.test"
PASSWORD = "s3cret-pass"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# What the tests run, by file: dovecot-core has the master, dovecot-imapd the imap process.
REQUIRED = {
    DOVECOT: "dovecot-core", "/usr/lib/dovecot/imap": "dovecot-imapd",
    "/usr/lib/dovecot/lmtp": "dovecot-lmtpd",
}


def ensure_installed() -> None:
    """./scripts/test installs what is missing (scripts/bootstrap.sh); say so if it is not."""
    missing = sorted(package for path, package in REQUIRED.items() if not Path(path).exists())
    if missing:
        raise RuntimeError(
            f"Dovecot is not installed ({', '.join(missing)} missing): ./scripts/test installs"
            f" it, or run: apt-get install {' '.join(missing)}"
        )


def _signal_group(group: int, sig: signal.Signals) -> None:
    try:
        os.killpg(group, sig)
    except ProcessLookupError:
        pass


def _group_alive(group: int) -> bool:
    # Zombies count as gone: the kernel closed their sockets when they exited.
    for status in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = status.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == group and fields[0] != "Z":
            return True
    return False


def _certificate(workdir: Path) -> tuple[Path, Path]:
    cert, key = workdir / "cert.pem", workdir / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    return cert, key


class Dovecot:
    def __init__(
        self,
        workdir: Path,
        *,
        ssl: bool = True,
        oauth2_introspection_url: str | None = None,
        settings: dict[str, str] | None = None,
        lmtp: bool = False,
        push_url: str | None = None,
        more_push_urls: tuple[str, ...] = (),
    ) -> None:
        self.workdir = workdir
        # Further dovecot.conf settings (the bench tries the IDLE ones).
        self.settings = settings or {}
        self.ssl = ssl
        # XOAUTH2 tokens are checked by POSTing them to this URL (RFC 7662 introspection).
        self.oauth2_url = oauth2_introspection_url
        self.port = free_port()
        # An LMTP listener: mail arrives the way an MTA hands it to a real mailbox server.
        self.lmtp_port = free_port() if lmtp or push_url else 0
        # Dovecot's push_notification plugin (ox driver) PUTs to this URL on every message
        # delivered over LMTP; the user must also have the http-notify METADATA set.
        self.push_url = push_url
        # Further URLs pushed to as well (push_notification_driver2, 3...): several workers.
        self.more_push_urls = more_push_urls if push_url else ()
        self.ssl_port = free_port() if ssl else 0
        self.user = USER
        self.password = PASSWORD
        self.cert: Path | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.base_dir = Path(tempfile.mkdtemp(prefix="mtdc-"))
        self.base_dir.chmod(0o755)
        self.home = self.base_dir / "home"

    @property
    def log_path(self) -> Path:
        return self.workdir / "dovecot.log"

    def _config(self) -> str:
        ssl_lines = "ssl = no\n"
        if self.ssl:
            self.cert, key = _certificate(self.workdir)
            ssl_lines = f"ssl = yes\nssl_cert = <{self.cert}\nssl_key = <{key}\n"
        w = self.workdir
        oauth2 = ""
        mechanisms = "plain login"
        if self.oauth2_url:
            mechanisms += " xoauth2 oauthbearer"
            (w / "oauth2.conf").write_text(
                f"introspection_url = {self.oauth2_url}\nintrospection_mode = post\n"
                "username_attribute = username\nactive_attribute = active\nactive_value = true\n"
            )
            oauth2 = (
                f"passdb {{\n  driver = oauth2\n  mechanisms = xoauth2 oauthbearer\n"
                f"  args = {w}/oauth2.conf\n}}\n"
            )
        extra = ""
        protocols = "imap"
        if self.lmtp_port:
            protocols = "imap lmtp"
            extra += (
                "service lmtp {\n  inet_listener lmtp {\n    address = 127.0.0.1\n"
                f"    port = {self.lmtp_port}\n  }}\n}}\n"
            )
        if self.push_url:
            extra += (
                "mail_attribute_dict = file:%h/dovecot-attributes\n"
                "protocol imap {\n  imap_metadata = yes\n}\n"
                "protocol lmtp {\n  mail_plugins = $mail_plugins notify push_notification\n}\n"
                "plugin {\n"
                # Plugin settings expand %variables: a literal % in a URL is written %%.
                + "".join(
                    f"  push_notification_driver{n if n > 1 else ''} = "
                    f"ox:url={url.replace('%', '%%')}\n"
                    for n, url in enumerate((self.push_url, *self.more_push_urls), start=1)
                )
                + "}\n"
            )
        # Dovecot refuses root for login and mail processes, and the test's temp dirs are
        # private to root: sockets and mail live in a short, world-traversable base_dir.
        return f"""
base_dir = {self.base_dir}
state_dir = {w}/state
log_path = {w}/dovecot.log
instance_name = mt-test-{self.port}
protocols = {protocols}
listen = 127.0.0.1
default_internal_user = root
default_internal_group = root
default_login_user = dovenull
disable_plaintext_auth = no
first_valid_uid = 100
auth_mechanisms = {mechanisms}
{ssl_lines}
{oauth2}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {w}/passwd
}}
userdb {{
  driver = static
  args = uid=dovecot gid=dovecot home={self.home}/%u
}}
mail_location = maildir:~/Maildir
namespace inbox {{
  inbox = yes
  separator = /
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {self.port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {self.ssl_port}
    ssl = yes
  }}
}}
service anvil {{
  chroot =
}}
service imap-login {{
  chroot =
}}
{extra}""" + "".join(f"{key} = {value}\n" for key, value in self.settings.items())

    def start(self) -> Dovecot:
        ensure_installed()
        (self.workdir / "state").mkdir(parents=True, exist_ok=True)
        self._make_home()
        self.base_dir.mkdir(mode=0o755, exist_ok=True)
        (self.workdir / "passwd").write_text(f"{self.user}:{{PLAIN}}{self.password}::::::\n")
        conf = self.workdir / "dovecot.conf"
        conf.write_text(self._config())
        # Its own session and process group: the master and every process it forks (login,
        # imap, auth) can be stopped together, see halt().
        with open(self.workdir / "stderr.log", "ab") as stderr:
            self.proc = subprocess.Popen(
                [DOVECOT, "-F", "-c", str(conf)],
                stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True,
            )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"dovecot exited: {self.diagnostics()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    if s.recv(100).startswith(b"* OK"):
                        return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"dovecot did not answer on {self.port}: {self.diagnostics()}")

    def diagnostics(self) -> str:
        parts = []
        for name in ("stderr.log", "dovecot.log"):
            path = self.workdir / name
            if path.exists():
                parts.append(path.read_text(errors="replace")[-3000:])
        return "\n".join(parts)

    def stop(self) -> None:
        self.halt()
        shutil.rmtree(self.base_dir, ignore_errors=True)

    def halt(self) -> None:
        """Stop the server but keep its mail: `start()` brings the same mailbox back.

        Every process of the server goes, not only the master: an `imap` process serving a
        connected client outlives a SIGTERM to its master and keeps answering. When this
        returns, no process of the group is left, so every client connection is closed."""
        if self.proc is None:
            return
        group = self.proc.pid  # start_new_session: the master leads its own group
        _signal_group(group, signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            pass
        _signal_group(group, signal.SIGKILL)  # whatever is left of the group, at once
        if self.proc.poll() is None:
            self.proc.wait()
        deadline = time.monotonic() + 10
        while _group_alive(group):
            if time.monotonic() > deadline:
                raise RuntimeError(f"dovecot processes of group {group} survived SIGKILL")
            time.sleep(0.01)
        self.proc = None

    def reset_mail(self) -> None:
        """Empty the user's mail store between tests (Dovecot notices on next login)."""
        shutil.rmtree(self.home, ignore_errors=True)
        self._make_home()

    def _make_home(self) -> None:
        self.home.mkdir(exist_ok=True)
        shutil.chown(self.home, "dovecot", "dovecot")

    # --- a plain imaplib client for the test side ------------------------------------------

    def client(self) -> imaplib.IMAP4:
        imap = imaplib.IMAP4("127.0.0.1", self.port, timeout=10)
        imap.login(self.user, self.password)
        return imap

    def append(self, raw: bytes, folder: str = "INBOX") -> None:
        imap = self.client()
        try:
            typ, data = imap.append(folder, None, None, raw)
            if typ != "OK":
                raise RuntimeError(f"APPEND failed: {data!r}")
        finally:
            imap.logout()

    def append_many(self, raws: list[bytes], folder: str = "INBOX") -> None:
        imap = self.client()
        try:
            for raw in raws:
                typ, data = imap.append(folder, None, None, raw)
                if typ != "OK":
                    raise RuntimeError(f"APPEND failed: {data!r}")
        finally:
            imap.logout()

    def deliver_many(self, raws: Iterable[bytes]) -> None:
        """Put messages straight into INBOX's Maildir new/, as a local delivery agent does.
        Much faster than APPEND for big benchmark mailboxes (Dovecot rewrites its uid list
        on every APPEND); Dovecot indexes them at the next SELECT."""
        imap = self.client()
        try:
            imap.select("INBOX")  # makes Dovecot create ~/Maildir
        finally:
            imap.logout()
        new = self.home / self.user / "Maildir" / "new"
        for i, raw in enumerate(raws):
            path = new / f"{time.time_ns()}.{i}.bench"
            path.write_bytes(raw)
            shutil.chown(path, "dovecot", "dovecot")

    def lmtp_deliver(self, raw: bytes, recipient: str | None = None) -> None:
        """Deliver through Dovecot's LMTP (as an MTA does); raises unless accepted."""
        with smtplib.LMTP("127.0.0.1", self.lmtp_port, timeout=10) as client:
            refused = client.sendmail("sender@example.org", [recipient or self.user], raw)
            if refused:
                raise RuntimeError(f"LMTP refused: {refused!r}")

    def set_metadata(self, entry: str, value: str) -> None:
        """SETMETADATA on the server (mailbox ""), e.g. the ox driver's http-notify entry."""
        imap = self.client()
        try:
            # imaplib has no METADATA (RFC 5464) method; xatom sends any command.
            typ, data = imap.xatom("SETMETADATA", '""', f'({entry} "{value}")')
            if typ != "OK":
                raise RuntimeError(f"SETMETADATA failed: {data!r}")
        finally:
            imap.logout()

    def create(self, folder: str) -> None:
        imap = self.client()
        try:
            imap.create(folder)
        finally:
            imap.logout()

    def delete(self, folder: str) -> None:
        imap = self.client()
        try:
            typ, data = imap.delete(folder)
            if typ != "OK":
                raise RuntimeError(f"DELETE failed: {data!r}")
        finally:
            imap.logout()

    def flags(self, folder: str = "INBOX") -> dict[int, str]:
        """UID -> FLAGS text, for every message in the folder."""
        imap = self.client()
        try:
            imap.select(folder, readonly=True)
            typ, data = imap.uid("FETCH", "1:*", "(FLAGS)")
            out: dict[int, str] = {}
            for line in data:
                if not isinstance(line, bytes):
                    continue
                text = line.decode()
                uid = int(text.split("UID ", 1)[1].split()[0].rstrip(")"))
                out[uid] = text.split("FLAGS (", 1)[1].split(")", 1)[0]
            return out
        finally:
            imap.logout()

    def count(self, folder: str = "INBOX") -> int:
        imap = self.client()
        try:
            typ, data = imap.select(folder, readonly=True)
            return int(data[0] or 0)
        finally:
            imap.logout()
