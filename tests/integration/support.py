"""Real-socket helpers for integration tests: a director started in-process on
loopback ports chosen by the kernel, and small SIP clients over UDP, TCP and TLS
that collect what they receive."""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredQueue
from twisted.internet.endpoints import TCP4ClientEndpoint, wrapClientTLS
from twisted.internet.protocol import DatagramProtocol, Factory, Protocol
from twisted.internet.ssl import Certificate, optionsForClientTLS

from homeredirect.config.load import parse_config
from homeredirect.service import HomeRedirectService, makeService
from homeredirect.sip.message import Message
from homeredirect.sip.parser import MessageReceived, StreamParser, parse_datagram
from homeredirect.tools.certs import TestPki, ensure_test_pki

TIMEOUT = 5.0

ASSIGNMENTS = """user,home_server
alice@example.com,home1.example.com
bob@example.com,home2.example.com
carol@example.com,home1.example.com
"""


def pki_in(directory: Path) -> TestPki:
    return ensure_test_pki(directory / "pki", ["director.example.com"], ["127.0.0.1", "::1"])


def director_config(
    directory: Path,
    *,
    transports: Iterable[str] = ("udp", "tcp", "tls"),
    assignments: str = ASSIGNMENTS,
    server: Mapping[str, Any] | None = None,
    home_servers: Mapping[str, Mapping[str, Any]] | None = None,
    policy: Mapping[str, Any] | None = None,
    limits: Mapping[str, Any] | None = None,
    host: str = "127.0.0.1",
) -> dict[str, Any]:
    """A director configuration (as parsed TOML) listening on free loopback ports."""
    (directory / "assignments.csv").write_text(assignments)
    listeners: list[dict[str, Any]] = []
    for transport in transports:
        listener: dict[str, Any] = {"transport": transport, "host": host, "port": 0}
        if transport == "tls":
            pki = pki_in(directory)
            listener |= {
                "certificate": str(pki.server_certificate),
                "private_key": str(pki.server_key),
                "ca": str(pki.ca_certificate),
            }
        listeners.append(listener)
    return {
        "server": {"role": "director", "fqdn": "director.example.com", "domains": ["example.com"]}
        | dict(server or {}),
        "listen": listeners,
        "assignments": {"backend": "file", "path": "assignments.csv"},
        "policy": dict(policy or {"name": "via-count"}),
        "limits": dict(limits or {}),
        "home_servers": {
            "home1.example.com": {"backup": "home2.example.com"},
            **(home_servers or {}),
        },
    }


def start_director(directory: Path, config: Mapping[str, Any]) -> HomeRedirectService:
    service = makeService(parse_config(config, str(directory / "test.toml"), directory), reactor)
    service.startService()
    return service


def register(
    aor: str = "alice@example.com",
    *,
    transport: str = "UDP",
    via_host: str = "127.0.0.1",
    via_port: int = 5099,
    extra_vias: int = 0,
    branch: str | None = None,
    call_id: str | None = None,
    method: str = "REGISTER",
    max_forwards: int = 70,
) -> bytes:
    """A REGISTER for *aor* (RFC 3261 §10.2), optionally as if via *extra_vias* proxies."""
    branch = branch or "z9hG4bK" + secrets.token_hex(6)
    vias = [f"Via: SIP/2.0/{transport} {via_host}:{via_port};branch={branch};rport"]
    vias += [
        f"Via: SIP/2.0/UDP 127.0.0.{n + 20}:5060;branch=z9hG4bKup{n}" for n in range(extra_vias)
    ]
    return (
        "\r\n".join(
            [
                f"{method} sip:example.com SIP/2.0",
                *vias,
                f"Max-Forwards: {max_forwards}",
                f"From: <sip:{aor}>;tag=ft{secrets.token_hex(3)}",
                f"To: <sip:{aor}>",
                f"Call-ID: {call_id or secrets.token_hex(8)}@test",
                f"CSeq: 1 {method}",
                f"Contact: <sip:{aor.split('@')[0]}@{via_host}:{via_port}>",
                "Expires: 3600",
                "Content-Length: 0",
                "",
                "",
            ]
        )
    ).encode()


class UdpClient(DatagramProtocol):
    """Sends datagrams and queues every message (or raw datagram) it receives."""

    def __init__(self) -> None:
        self.received: DeferredQueue[Message | bytes] = DeferredQueue()

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        event = parse_datagram(datagram)
        self.received.put(event.message if isinstance(event, MessageReceived) else datagram)

    def next(self, timeout: float = TIMEOUT) -> Deferred[Message | bytes]:
        return self.received.get().addTimeout(timeout, reactor)

    @property
    def port(self) -> int:
        return self.transport.getHost().port  # type: ignore[no-any-return]


class StreamClient(Protocol):
    """A TCP or TLS client connection that queues the messages it receives."""

    def __init__(self) -> None:
        self.parser = StreamParser()
        self.received: DeferredQueue[Message | bytes] = DeferredQueue()
        self.closed: Deferred[None] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        if data == b"\r\n":
            self.received.put(data)
            return
        for event in self.parser.feed(data):
            if isinstance(event, MessageReceived):
                self.received.put(event.message)

    def connectionLost(self, reason: Any = None) -> None:
        self.closed.callback(None)

    def next(self, timeout: float = TIMEOUT) -> Deferred[Message | bytes]:
        return self.received.get().addTimeout(timeout, reactor)

    @property
    def port(self) -> int:
        return self.transport.getHost().port  # type: ignore[no-any-return]


def disconnect(client: StreamClient) -> Deferred[None]:
    """Close *client* and fire once the connection is gone (for addCleanup)."""
    client.transport.loseConnection()
    return client.closed


def udp_client() -> UdpClient:
    client = UdpClient()
    reactor.listenUDP(0, client, interface="127.0.0.1")
    return client


def connect_stream(
    port: int, tls_ca: Path | None = None, server_name: str = "director.example.com"
) -> Deferred[StreamClient]:
    endpoint: Any = TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=TIMEOUT)
    if tls_ca is not None:
        trust = Certificate.loadPEM(tls_ca.read_bytes())
        endpoint = wrapClientTLS(optionsForClientTLS(server_name, trustRoot=trust), endpoint)
    return endpoint.connect(Factory.forProtocol(StreamClient))  # type: ignore[no-any-return]
