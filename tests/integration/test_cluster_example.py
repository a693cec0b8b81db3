"""The three-process example as an operator starts it (examples/cluster/run.py): a client
finds the director through the DNS service, is redirected to its home server, resolves that
name through the DNS service too, and registers there; Ctrl-C stops everything.

The example uses fixed ports (5170-5176 on 127.0.0.1), so the test fails, saying so, when
something else holds them (a `make cluster` left running, say)."""

from __future__ import annotations

import importlib.util
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from twisted.names import dns

from homeredirect.tools.register import main as register_main

RUN = Path(__file__).resolve().parents[2] / "examples" / "cluster" / "run.py"
DNS_PORT = 5176
PORTS = range(5170, 5177)
START_TIMEOUT = 60.0

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("homeredirect.registrar.registrar") is None,
    reason="the home role (homeredirect.registrar) does not exist yet",
)


def ports_in_use() -> list[str]:
    busy = []
    for port in PORTS:
        for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
            with socket.socket(socket.AF_INET, kind) as probe:
                try:
                    probe.bind(("127.0.0.1", port))
                except OSError:
                    busy.append(f"{'tcp' if kind == socket.SOCK_STREAM else 'udp'} {port}")
    return busy


def ask(name: str, record_type: int) -> list[dns.RRHeader]:
    """One blocking UDP query to the example's DNS service; the answers of a NOERROR reply."""
    query = dns.Message(id=99)
    query.queries = [dns.Query(name, record_type)]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(2.0)
        sock.sendto(query.toStr(), ("127.0.0.1", DNS_PORT))
        reply = dns.Message()
        reply.fromStr(sock.recv(65_535))
    assert (reply.rCode, reply.auth) == (dns.OK, True)
    return list(reply.answers)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Start run.py once for the module; yield its run directory; Ctrl-C it afterwards."""
    busy = ports_in_use()
    assert not busy, f"the cluster example's ports are in use: {', '.join(busy)}"
    run_dir = tmp_path_factory.mktemp("cluster")
    log_path = run_dir / "run.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [sys.executable, str(RUN), "--run-dir", str(run_dir)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while "cluster ready" not in log_path.read_text():
            assert time.monotonic() < deadline, f"not ready:\n{log_path.read_text()}"
            try:
                process.wait(timeout=0.2)
            except subprocess.TimeoutExpired:
                continue
            pytest.fail(f"run.py exited with {process.returncode}:\n{log_path.read_text()}")
        yield run_dir
        process.send_signal(signal.SIGINT)  # what Ctrl-C sends
        assert process.wait(timeout=30) == 0, log_path.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    output = log_path.read_text()
    assert output.rstrip().endswith("run | stopped"), output
    for name in ("dns", "director", "home1", "home2"):
        assert f"{name} exited" not in output
    assert "Traceback" not in output, output
    assert ports_in_use() == [], output


def register(aor: str, server: str, ca: Path, capsys: pytest.CaptureFixture[str]) -> list[str]:
    """REGISTER with the command-line client; the lines it prints."""
    assert register_main([aor, "--server", server, "--ca", str(ca)]) == 0
    return capsys.readouterr().out.splitlines()


def resolve(name: str) -> str:
    (answer,) = ask(name, dns.A)
    return str(answer.payload.dottedQuad())


def test_client_finds_director_by_dns_follows_redirect_and_registers_at_home(
    cluster: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (srv,) = ask("_sipinternaltls._tcp.example.com", dns.SRV)
    director = f"tls:{resolve(srv.payload.target.name.decode())}:{srv.payload.port}"
    assert director == "tls:127.0.0.1:5171"

    redirect = register("sip:alice@example.com", director, cluster / "ca.pem", capsys)
    assert redirect[0] == "301 Redirect request to Home Server"
    # The first Contact, the only one Microsoft clients follow.
    assert redirect[1] == "  Contact: sip:home1.example.com:5173;transport=tls (q=0.7)"

    home = f"tls:{resolve('home1.example.com')}:5173"
    registered = register("sip:alice@example.com", home, cluster / "ca.pem", capsys)
    assert registered[0] == "200 OK"
    assert registered[1].startswith("  Contact: sip:alice@127.0.0.1:")


def test_home_server_redirects_a_user_of_the_other_home(
    cluster: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = register("sip:carol@example.com", "tls:127.0.0.1:5173", cluster / "ca.pem", capsys)
    assert lines[:2] == [
        "301 Redirect request to Home Server",
        "  Contact: sip:home2.example.com:5175;transport=tls (q=0.7)",
    ]
    registered = register("sip:carol@example.com", "udp:127.0.0.1:5174", cluster / "ca.pem", capsys)
    assert registered[0] == "200 OK"
