"""A real DNS server on loopback answering from a dict, so the sender checks run their
actual resolver code (dnspython over UDP/TCP) without the outside network."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from dnslib import AAAA, MX, QTYPE, RCODE, RR, TXT, A, DNSRecord
from dnslib.server import BaseResolver, DNSLogger, DNSServer


def _txt_chunks(value: str) -> list[bytes]:
    raw = value.encode("ascii")
    return [raw[i : i + 255] for i in range(0, len(raw), 255)] or [b""]


@dataclass
class Zone:
    """name -> qtype -> values. TXT values longer than 255 octets are split into several
    strings, as real zones do with DKIM keys."""

    records: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    servfail: set[str] = field(default_factory=set)
    queries: list[tuple[str, str]] = field(default_factory=list)

    def add(self, name: str, qtype: str, value: str) -> None:
        self.records.setdefault(name.lower().rstrip("."), {}).setdefault(qtype, []).append(value)

    def txt(self, name: str, value: str) -> None:
        self.add(name, "TXT", value)


class _Resolver(BaseResolver):  # type: ignore[misc]
    def __init__(self, zone: Zone) -> None:
        self.zone = zone

    def resolve(self, request: DNSRecord, handler: object) -> DNSRecord:
        reply = request.reply()
        name = str(request.q.qname).lower().rstrip(".")
        qtype = QTYPE[request.q.qtype]
        self.zone.queries.append((name, qtype))
        if name in self.zone.servfail:
            reply.header.rcode = RCODE.SERVFAIL
            return reply
        by_type = self.zone.records.get(name)
        if by_type is None:
            reply.header.rcode = RCODE.NXDOMAIN
            return reply
        for value in by_type.get(qtype, []):
            if qtype == "TXT":
                rdata = TXT(_txt_chunks(value))
            elif qtype == "A":
                rdata = A(value)
            elif qtype == "AAAA":
                rdata = AAAA(value)
            elif qtype == "MX":
                pref, host = value.split()
                rdata = MX(host, int(pref))
            else:
                continue
            reply.add_answer(RR(request.q.qname, QTYPE.reverse[qtype], rdata=rdata, ttl=60))
        return reply


@contextmanager
def dns_stub(zone: Zone) -> Iterator[str]:
    """Serve `zone` on 127.0.0.1 (UDP and TCP, same port); yields "127.0.0.1:PORT"."""
    resolver = _Resolver(zone)
    quiet = DNSLogger(logf=lambda _line: None)
    for _attempt in range(20):
        udp = DNSServer(resolver, address="127.0.0.1", port=0, logger=quiet)
        port = udp.server.server_address[1]
        try:
            tcp = DNSServer(resolver, address="127.0.0.1", port=port, tcp=True, logger=quiet)
            break
        except OSError:  # the UDP port's TCP twin is taken: try another port
            udp.server.server_close()
    else:
        raise RuntimeError("no free port for the stub DNS server")
    for server in (udp, tcp):
        # A short poll interval: shutdown() waits for one, once per test.
        threading.Thread(
            target=server.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        ).start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        for server in (udp, tcp):
            server.server.shutdown()
            server.server.server_close()
