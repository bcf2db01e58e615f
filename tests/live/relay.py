"""A TCP relay in front of the test database, for the outage tests: it can stop forwarding
while keeping every socket open (`freeze`, a server that hangs) or drop everything and give
up its port (`cut`, a server that is gone)."""

from __future__ import annotations

import socket
import threading


def close_listener(sock: socket.socket) -> None:
    # A thread blocked in accept() keeps the socket listening past close(); shutdown wakes it.
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


class Relay:
    """Forwards 127.0.0.1:`port` (0: any free one, see `self.port`) to `upstream`."""

    def __init__(self, upstream: int, port: int = 0) -> None:
        self.upstream = upstream
        self.sock = socket.create_server(("127.0.0.1", port))
        self.port = self.sock.getsockname()[1]
        self.flowing = threading.Event()
        self.flowing.set()
        self.open: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            # While frozen a new connection is accepted and then hears nothing either.
            self.flowing.wait()
            server = socket.create_connection(("127.0.0.1", self.upstream))
            self.open += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                self.flowing.wait()
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def freeze(self) -> None:
        """Stop forwarding in both directions: what was read is held, nothing is closed."""
        self.flowing.clear()

    def thaw(self) -> None:
        self.flowing.set()

    def cut(self) -> None:
        """Close every connection through the relay and give up its port, as when the server
        behind an address is gone."""
        self.flowing.set()
        close_listener(self.sock)
        for s in self.open:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
