"""A private PostgreSQL cluster for tests that stop and start the database under a worker.

The shared server on 127.0.0.1:5432 serves every test run on the machine and must never be
stopped; this cluster is initdb'ed into a temp folder, listens on a free loopback port, and
can be stopped (fast or immediate, as an upgrade or an OOM kill would) and started again on
the same port and data directory. PostgreSQL refuses to run as root: when the tests do, its
commands run as the `postgres` OS user (the Debian package creates it) and the folder is
handed to that user. fsync is off: nothing here has to survive the machine (a
killed server's writes do: they are in the OS page cache).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg2
from psycopg2 import sql

from mailticket.store import migrate

OS_USER = "postgres"


def server_bindir() -> Path | None:
    """The newest /usr/lib/postgresql/N/bin holding initdb, pg_ctl and postgres."""
    found = [
        Path(d) for d in glob.glob("/usr/lib/postgresql/*/bin")
        if all(os.access(Path(d) / tool, os.X_OK) for tool in ("initdb", "pg_ctl", "postgres"))
    ]
    found.sort(key=lambda d: int(d.parent.name) if d.parent.name.isdigit() else 0)
    return found[-1] if found else None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgCluster:
    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.as_root = os.geteuid() == 0
        # Not under pytest's temp folder: that one is 0700 root, which `postgres` cannot enter.
        self.base = Path(tempfile.mkdtemp(prefix="mailticket-pg-"))
        self.data = self.base / "data"
        self.socket_dir = self.base / "run"
        self.logfile = self.base / "server.log"
        self.port = free_port()
        self.running = False

    # --- commands ---------------------------------------------------------------------------

    def _run(self, tool: str, *args: str, timeout: float = 120) -> None:
        argv = [str(self.bindir / tool), *args]
        if self.as_root:
            argv = ["runuser", "-u", OS_USER, "--", *argv]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=self.base)
        if done.returncode != 0:
            raise RuntimeError(
                f"{tool} {' '.join(args)} failed ({done.returncode}):\n{done.stdout}{done.stderr}"
                f"\n--- server log ---\n{self.log_tail()}"
            )

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.logfile.read_text(errors="replace")[-chars:]
        except FileNotFoundError:
            return ""

    def init(self) -> PgCluster:
        self.socket_dir.mkdir()
        if self.as_root:
            user = pwd.getpwnam(OS_USER)
            for path in (self.base, self.socket_dir):
                os.chown(path, user.pw_uid, user.pw_gid)
        self._run(
            "initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
            "--locale=C", "--no-sync",
        )
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write(
                "\n# mailticket test cluster\n"
                "listen_addresses = '127.0.0.1'\n"
                f"port = {self.port}\n"
                f"unix_socket_directories = '{self.socket_dir}'\n"
                # fsync off: the OS keeps what a killed server wrote. synchronous_commit
                # stays on: without it an immediate stop loses commits already answered.
                "fsync = off\nfull_page_writes = off\n"
                "max_connections = 60\nshared_buffers = 32MB\n"
            )
        return self

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.logfile), "-w", "-t", "60",
                  "start")
        self.running = True

    def stop(self, mode: str = "fast") -> None:
        """`fast`: clients are disconnected, a clean shutdown; `immediate`: every server
        process is killed at once, as in a crash (the next start recovers from the WAL)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")
        self.running = False

    def destroy(self) -> None:
        if self.running:
            try:
                self.stop("immediate")
            except (RuntimeError, subprocess.TimeoutExpired):
                pass
        shutil.rmtree(self.base, ignore_errors=True)

    # --- databases --------------------------------------------------------------------------

    def dsn(self, dbname: str = "postgres") -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres dbname={dbname}"

    def url(self, dbname: str) -> str:
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/{dbname}"

    def connect(self, dbname: str = "postgres") -> psycopg2.extensions.connection:
        return psycopg2.connect(self.dsn(dbname), connect_timeout=3)

    def terminate(self, pid: int) -> None:
        """End one backend (as a server restart or an admin would) and return once it is
        gone, so the next statement on its connection fails rather than racing it."""
        admin = self.connect()
        admin.autocommit = True
        try:
            with admin.cursor() as cur:
                cur.execute("SELECT pg_terminate_backend(%s)", (pid,))
                while True:
                    cur.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,))
                    if cur.fetchone() is None:
                        return
                    time.sleep(0.01)
        finally:
            admin.close()

    def ready(self) -> bool:
        try:
            self.connect().close()
        except psycopg2.OperationalError:
            return False
        return True

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not self.ready():
            if time.monotonic() > deadline:
                raise RuntimeError(f"the test cluster does not answer:\n{self.log_tail()}")
            time.sleep(0.1)

    def migrated_database(self, name: str) -> str:
        """A new database at the newest migration; its SQLAlchemy URL."""
        conn = self.connect()
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        finally:
            conn.close()
        url = self.url(name)
        migrate.upgrade(url)
        return url
