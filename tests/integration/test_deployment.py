"""A deployment of separate `twistd -n homeredirect` processes on loopback, each with its own
configuration and certificate (one test CA): an edge, a director and two home servers, with
mutual TLS between every pair of servers (each listener requires a client certificate from
the servers allowed to reach it) and name resolution by static `[home_servers]` entries.

- A client's REGISTER sent directly to the director (one Via) is redirected (301).
- The same REGISTER sent to the edge goes edge -> director -> home over TLS, and the client
  gets the home's 200 with the Path of both proxies recorded (RFC 3327).
- A home server whose certificate names another server (a leaf for home2 on home3) is
  refused: the client gets 503.
- A home server that cannot be reached is failed over to its configured backup (RFC 3263
  §4.3), which registers the user.
"""

from __future__ import annotations

import secrets
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import attrs
import pytest

from homeredirect.sip.message import Response
from homeredirect.tools.certs import CertificateFiles, ensure_leaf, ensure_test_pki
from tests.integration.test_location_persistence import (
    TWISTD,
    Phone,
    free_udp_port,
    stop,
)

START_DEADLINE = 60.0
"""Five twistd processes start at once; a machine busy with other work needs time."""

ASSIGNMENTS = """user,home_server
alice@example.com,home1.example.com
dave@example.com,home9.example.com
mallory@example.com,home3.example.com
"""


def free_tcp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@attrs.frozen
class Deployment:
    """The running processes' ports, for clients."""

    director_udp: int
    edge_udp: int
    logs: dict[str, Path]


def tls_listener(port: int, leaf: CertificateFiles, ca: Path, peers: list[str] | None) -> str:
    """A `[[listen]]` TLS table; with *peers*, only those servers' certificates are let in."""
    text = f"""
[[listen]]
transport = "tls"
host = "127.0.0.1"
port = {port}
certificate = "{leaf.certificate}"
private_key = "{leaf.private_key}"
ca = "{ca}"
"""
    if peers is not None:
        text += f"require_client_certificate = true\nallowed_peers = {peers!r}\n".replace("'", '"')
    return text


def tls_client(leaf: CertificateFiles, ca: Path) -> str:
    return f"""
[tls_client]
ca = "{ca}"
certificate = "{leaf.certificate}"
private_key = "{leaf.private_key}"
"""


def home_config(fqdn: str, port: int, leaf: CertificateFiles, ca: Path) -> str:
    """A home server for every user of example.com, reachable only by the director."""
    return f"""
[server]
role = "home"
fqdn = "{fqdn}"
domains = ["example.com"]
user_agent = "{fqdn}"
{tls_listener(port, leaf, ca, ["director.example.com"])}
{tls_client(leaf, ca)}
[location]
backend = "memory"

[log]
level = "warn"
"""


def wait_for_tcp(port: int, deadline: float, process: subprocess.Popen[bytes], log: Path) -> None:
    """Wait for *process* to listen on TCP *port*; fail at once, with its log, if it exits."""
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            exited = process.poll()
            if exited is not None or time.monotonic() >= deadline:
                state = "nothing listens" if exited is None else f"it exited with {exited}"
                raise AssertionError(f"TCP {port}: {state}:\n{log.read_text()}") from None
            time.sleep(0.05)  # a blocking poll of another process, outside any reactor


def distinct_ports(names: list[str], pick: Callable[[], int]) -> dict[str, int]:
    """A free port per name, no two alike (the kernel may hand out a port it gave before)."""
    ports: dict[str, int] = {}
    while len(ports) < len(names):
        port = pick()
        if port not in ports.values():
            ports[names[len(ports)]] = port
    return ports


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    directory = tmp_path_factory.mktemp("deployment")
    pki = ensure_test_pki(directory / "pki", ["director.example.com"], ["127.0.0.1"])
    ca = pki.ca_certificate
    director_leaf = pki.server
    edge_leaf = ensure_leaf(pki, "edge.example.com")
    home_leaves = {
        name: ensure_leaf(pki, name) for name in ("home1.example.com", "home2.example.com")
    }
    ports = distinct_ports(["home1", "home2", "home3", "director", "edge", "down"], free_tcp_port)
    udp = distinct_ports(["director", "edge"], free_udp_port)
    director_udp, edge_udp = udp["director"], udp["edge"]
    (directory / "assignments.csv").write_text(ASSIGNMENTS)
    configs = {
        "home1": home_config(
            "home1.example.com", ports["home1"], home_leaves["home1.example.com"], ca
        ),
        "home2": home_config(
            "home2.example.com", ports["home2"], home_leaves["home2.example.com"], ca
        ),
        # A home server with a certificate for another name (home2's).
        "home3": home_config(
            "home3.example.com", ports["home3"], home_leaves["home2.example.com"], ca
        ),
        "director": f"""
[server]
role = "director"
fqdn = "director.example.com"
domains = ["example.com"]

[[listen]]
transport = "udp"
host = "127.0.0.1"
port = {director_udp}
{tls_listener(ports["director"], director_leaf, ca, ["edge.example.com"])}
{tls_client(director_leaf, ca)}
[assignments]
backend = "file"
path = "assignments.csv"

[home_servers."home1.example.com"]
host = "127.0.0.1"
port = {ports["home1"]}

[home_servers."home2.example.com"]
host = "127.0.0.1"
port = {ports["home2"]}

# Down: nothing listens there; its backup takes its users.
[home_servers."home9.example.com"]
host = "127.0.0.1"
port = {ports["down"]}
backup = "home2.example.com"

# An impostor answers there, with a certificate for home2, not home3.
[home_servers."home3.example.com"]
host = "127.0.0.1"
port = {ports["home3"]}

[log]
level = "warn"
""",
        "edge": f"""
[server]
role = "edge"
fqdn = "edge.example.com"
domains = ["example.com"]

[[listen]]
transport = "udp"
host = "127.0.0.1"
port = {edge_udp}
{tls_listener(ports["edge"], edge_leaf, ca, None)}
{tls_client(edge_leaf, ca)}
[edge]
next_hop = "sip:director.example.com:{ports["director"]};transport=tls"

[home_servers."director.example.com"]
host = "127.0.0.1"

[log]
level = "warn"
""",
    }
    processes: dict[str, subprocess.Popen[bytes]] = {}
    logs: dict[str, Path] = {}
    try:
        for name, text in configs.items():
            path = directory / f"{name}.toml"
            path.write_text(text)
            logs[name] = directory / f"{name}.log"
            with open(logs[name], "wb") as log:
                processes[name] = subprocess.Popen(
                    [TWISTD, "-n", "--pidfile=", "homeredirect", "--config", str(path)],
                    cwd=directory,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
        deadline = time.monotonic() + START_DEADLINE
        for name in ("home1", "home2", "home3", "director", "edge"):
            wait_for_tcp(ports[name], deadline, processes[name], logs[name])
        yield Deployment(director_udp, edge_udp, logs)
    finally:
        for process in processes.values():
            stop(process)
    for name, log_path in logs.items():
        output = log_path.read_text()
        assert "Traceback" not in output, f"{name}:\n{output}"


@pytest.fixture
def phone() -> Iterator[Phone]:
    made = Phone()
    yield made
    made.close()


def register(aor: str, phone: Phone) -> bytes:
    """A REGISTER from *phone* that supports Path (RFC 3327 §4)."""
    return (
        f"REGISTER sip:example.com SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{phone.port};branch=z9hG4bK{secrets.token_hex(6)};rport\r\n"
        f"Max-Forwards: 70\r\nFrom: <sip:{aor}>;tag={secrets.token_hex(3)}\r\n"
        f"To: <sip:{aor}>\r\nCall-ID: {secrets.token_hex(8)}@deployment\r\nCSeq: 1 REGISTER\r\n"
        f"Contact: <sip:{aor.split('@')[0]}@127.0.0.1:{phone.port}>\r\n"
        "Supported: path\r\nExpires: 600\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def final_response(phone: Phone, data: bytes, port: int) -> Response:
    response = phone.exchange(data, port)
    assert isinstance(response, Response)
    while response.status < 200:
        later = phone.receive(START_DEADLINE)
        assert isinstance(later, Response), later
        response = later
    return response


def test_a_register_sent_directly_to_the_director_is_redirected(
    deployment: Deployment, phone: Phone
) -> None:
    response = final_response(phone, register("alice@example.com", phone), deployment.director_udp)
    assert (response.status, response.reason) == (301, "Redirect request to Home Server")
    assert response.headers.get_all("Contact")[0].startswith("<sip:home1.example.com:")


def test_a_register_through_the_edge_gets_the_homes_200_with_both_paths(
    deployment: Deployment, phone: Phone
) -> None:
    response = final_response(phone, register("alice@example.com", phone), deployment.edge_udp)
    assert response.status == 200, response
    assert response.headers.get("Server") == "home1.example.com"
    paths = response.headers.get_list("Path")
    # RFC 3327 §5.3: the registrar stores (and echoes) the Path, nearest proxy first.
    assert len(paths) == 2 and all(";transport=tls" in path for path in paths), paths
    assert f"127.0.0.1:{phone.port}" in (response.headers.get("Contact") or "")


def test_a_home_with_a_certificate_for_another_name_is_refused(
    deployment: Deployment, phone: Phone
) -> None:
    response = final_response(phone, register("mallory@example.com", phone), deployment.edge_udp)
    assert response.status == 503
    assert response.headers.get("Retry-After") is not None


def test_a_home_that_is_down_is_failed_over_to_its_backup(
    deployment: Deployment, phone: Phone
) -> None:
    response = final_response(phone, register("dave@example.com", phone), deployment.edge_udp)
    assert response.status == 200, response
    assert response.headers.get("Server") == "home2.example.com"


def test_a_call_sent_directly_to_the_director_is_redirected_to_the_user_at_home(
    deployment: Deployment, phone: Phone
) -> None:
    message = (
        "MESSAGE sip:alice@example.com SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{phone.port};branch=z9hG4bK{secrets.token_hex(6)};rport\r\n"
        "Max-Forwards: 70\r\nFrom: <sip:zoe@example.com>;tag=z1\r\n"
        "To: <sip:alice@example.com>\r\nCall-ID: m1@deployment\r\nCSeq: 1 MESSAGE\r\n"
        "Content-Type: text/plain\r\nContent-Length: 2\r\n\r\nhi"
    ).encode()
    response = final_response(phone, message, deployment.director_udp)
    assert response.status == 302
    (contact, *_) = response.headers.get_all("Contact")
    assert contact.startswith("<sip:alice@home1.example.com:")
