"""Relays that fail as a whole, on real sockets: one that accepts TCP and never says a word,
one that greets with a 4xx and hangs up. Each counts the connections it accepted."""

from __future__ import annotations

import socket
import threading


class BrokenRelay:
    """`greeting=None`: silent (the client waits for a greeting until its timeout)."""

    def __init__(self, greeting: bytes | None = None) -> None:
        self.greeting = greeting
        self.accepted = 0
        self._server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._server.bind(("127.0.0.1", 0))
        self._server.listen(64)
        self.port = int(self._server.getsockname()[1])
        self._held: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        self._server.settimeout(0.1)
        while not self._stop.is_set():
            try:
                conn, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted += 1
            if self.greeting is None:
                self._held.append(conn)  # open and silent
            else:
                conn.sendall(self.greeting)
                conn.close()

    def __enter__(self) -> BrokenRelay:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self._server.close()
        for conn in self._held:
            conn.close()
