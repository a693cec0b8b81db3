"""Bindings outlive the process that wrote them: real `twistd -n homeredirect` home
servers with `[location] backend = "sqlite"` (stopped and started again on the same file)
and `"redis"` (two processes sharing one real redis-server, as the home servers of a pool
do). A "phone" is a plain UDP socket that registers and then receives the requests the
home server forwards to it."""

from __future__ import annotations

import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from homeredirect.sip.message import Request, Response
from homeredirect.sip.parser import MessageReceived, parse_datagram
from tests.integration.support import register
from tests.servers import RedisServer

TWISTD = str(Path(sys.executable).with_name("twistd"))
START_DEADLINE = 20.0


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def write_home_config(directory: Path, name: str, port: int, location: str) -> Path:
    """A home server for every user of example.com, on UDP *port*, keeping bindings where
    the `[location]` table (TOML text) says."""
    path = directory / f"{name}.toml"
    path.write_text(
        f"""
[server]
role = "home"
fqdn = "home1.example.com"
domains = ["example.com"]

[[listen]]
transport = "udp"
host = "127.0.0.1"
port = {port}

[location]
{location}

[log]
level = "warn"
"""
    )
    return path


class Phone:
    """A UDP socket on loopback that sends SIP and reads what comes back."""

    def __init__(self) -> None:
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.socket.bind(("127.0.0.1", 0))
        self.port = int(self.socket.getsockname()[1])

    def close(self) -> None:
        self.socket.close()

    def receive(self, timeout: float) -> Request | Response | None:
        self.socket.settimeout(timeout)
        try:
            event = parse_datagram(self.socket.recv(65536))
        except TimeoutError:
            return None
        assert isinstance(event, MessageReceived)
        return event.message

    def exchange(
        self, data: bytes, port: int, want: type[Request] | type[Response] = Response
    ) -> Request | Response:
        """Send *data* to the server on *port* until something of type *want* arrives here
        (the server may still be starting: resend the same bytes, which it treats as a
        retransmission if it did get them)."""
        end = time.monotonic() + START_DEADLINE
        while time.monotonic() < end:
            self.socket.sendto(data, ("127.0.0.1", port))
            message = self.receive(0.3)
            while message is not None and not isinstance(message, want):
                message = self.receive(0.3)
            if message is not None:
                return message
        raise AssertionError(f"nothing came back from port {port} within {START_DEADLINE}s")


def message_to(user: str, sender: Phone) -> bytes:
    return (
        f"MESSAGE sip:{user}@example.com SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{sender.port};branch=z9hG4bK{secrets.token_hex(6)};rport\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:zoe@example.com>;tag=z1\r\n"
        f"To: <sip:{user}@example.com>\r\n"
        f"Call-ID: msg-{secrets.token_hex(6)}@test\r\nCSeq: 1 MESSAGE\r\n"
        "Content-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello"
    ).encode()


def contacts_of(response: Request | Response) -> list[str]:
    assert isinstance(response, Response) and response.status == 200, response
    return response.headers.get_all("Contact")


def forwarded_to(phone: Phone, caller: Phone, user: str, port: int) -> Request:
    """Send a MESSAGE for *user* from *caller* to the server on *port*; return what
    *phone* receives (the server's forwarding of it)."""
    end = time.monotonic() + START_DEADLINE
    while time.monotonic() < end:
        caller.socket.sendto(message_to(user, caller), ("127.0.0.1", port))
        received = phone.receive(0.3)
        if isinstance(received, Request):
            return received
    raise AssertionError(f"no MESSAGE for {user} reached the phone through port {port}")


@pytest.fixture
def twistd(tmp_path: Path) -> Iterator[object]:
    processes: list[subprocess.Popen[bytes]] = []

    def start(config: Path) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            [TWISTD, "-n", "--pidfile=", "homeredirect", "--config", str(config)],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        processes.append(process)
        return process

    yield start
    for process in processes:
        stop(process)


def stop(process: subprocess.Popen[bytes]) -> bytes:
    """SIGTERM (twistd stops its services, closing the store), wait; return its output."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    if process.stdout is None or process.stdout.closed:
        return b""
    output = process.stdout.read()
    process.stdout.close()
    return output


@pytest.fixture
def phones() -> Iterator[list[Phone]]:
    made = [Phone() for _ in range(3)]
    yield made
    for phone in made:
        phone.close()


def test_sqlite_bindings_survive_a_restart(tmp_path: Path, twistd, phones) -> None:  # type: ignore[no-untyped-def]
    phone, laptop, caller = phones
    port = free_udp_port()
    config = write_home_config(
        tmp_path, "home", port, 'backend = "sqlite"\npath = "bindings.sqlite"'
    )
    first = twistd(config)
    registered = phone.exchange(register("alice@example.com", via_port=phone.port), port)
    assert len(contacts_of(registered)) == 1
    output = stop(first)
    # twistd ends by re-raising the SIGTERM it handled: a clean stop.
    assert first.returncode in (0, -15), output.decode(errors="replace")
    assert b"Traceback" not in output, output.decode(errors="replace")
    assert (tmp_path / "bindings.sqlite").exists()

    twistd(config)
    # The new process routes to the binding the old one stored...
    forwarded = forwarded_to(phone, caller, "alice", port)
    assert forwarded.method == "MESSAGE"
    assert str(forwarded.uri) == f"sip:alice@127.0.0.1:{phone.port}"
    # ...and a second device's REGISTER is answered with both bindings.
    second = laptop.exchange(register("alice@example.com", via_port=laptop.port), port)
    listed = " ".join(contacts_of(second))
    assert f"127.0.0.1:{phone.port}" in listed
    assert f"127.0.0.1:{laptop.port}" in listed


def test_two_home_processes_share_bindings_through_redis(  # type: ignore[no-untyped-def]
    tmp_path: Path, twistd, phones, redis_server: RedisServer
) -> None:
    phone, laptop, caller = phones
    prefix = f"pool{secrets.token_hex(4)}:"
    location = f'backend = "redis"\nurl = "{redis_server.url}"\nkey_prefix = "{prefix}"'
    port_a, port_b = free_udp_port(), free_udp_port()
    twistd(write_home_config(tmp_path, "home-a", port_a, location))
    twistd(write_home_config(tmp_path, "home-b", port_b, location))

    # alice registers at A; a request for her that reaches B is forwarded to her phone.
    phone.exchange(register("alice@example.com", via_port=phone.port), port_a)
    forwarded = forwarded_to(phone, caller, "alice", port_b)
    assert str(forwarded.uri) == f"sip:alice@127.0.0.1:{phone.port}"

    # bob registers at B; A sees him.
    laptop.exchange(register("bob@example.com", via_port=laptop.port), port_b)
    forwarded = forwarded_to(laptop, caller, "bob", port_a)
    assert str(forwarded.uri) == f"sip:bob@127.0.0.1:{laptop.port}"
    assert redis_server.command("EXISTS", prefix + "alice@example.com") == 1
    assert redis_server.command("EXISTS", prefix + "bob@example.com") == 1
