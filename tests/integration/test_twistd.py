"""The twistd plugin as an operator runs it: a real ``twistd -n homeredirect``
process, a bad configuration refused with a clear message, and SIGHUP reloading
the assignment file without dropping traffic."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from homeredirect.sip.message import Response
from homeredirect.sip.parser import MessageReceived, parse_datagram
from tests.integration.support import register

TWISTD = str(Path(sys.executable).with_name("twistd"))


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def write_config(directory: Path, port: int, **server: str) -> Path:
    (directory / "assignments.csv").write_text(
        "user,home_server\nalice@example.com,home1.example.com\n"
    )
    extra = "".join(f'{key} = "{value}"\n' for key, value in server.items())
    path = directory / "director.toml"
    path.write_text(
        f"""
[server]
fqdn = "director.example.com"
domains = ["example.com"]
{extra}
[[listen]]
transport = "udp"
host = "127.0.0.1"
port = {port}

[assignments]
backend = "file"
path = "assignments.csv"
"""
    )
    return path


def ask(port: int, aor: str, timeout: float = 1.0) -> Response | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.bind(("127.0.0.1", 0))
        client.settimeout(timeout)
        client.sendto(register(aor, via_port=client.getsockname()[1]), ("127.0.0.1", port))
        try:
            event = parse_datagram(client.recv(65536))
        except TimeoutError:
            return None
    assert isinstance(event, MessageReceived) and isinstance(event.message, Response)
    return event.message


def wait_for_answer(port: int, aor: str, deadline: float = 15.0) -> Response:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        response = ask(port, aor, timeout=0.3)
        if response is not None:
            return response
    raise AssertionError(f"no answer on port {port} within {deadline}s")


def refused_output(config: Path) -> str:
    """Run twistd on *config*, expecting it to refuse to start; return what it printed."""
    result = subprocess.run(
        [TWISTD, "-n", "--pidfile=", "homeredirect", "--config", str(config)],
        cwd=config.parent,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode != 0
    return result.stdout + result.stderr


@pytest.fixture
def twistd(tmp_path: Path):  # type: ignore[no-untyped-def]
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
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process.stdout is not None:
            process.stdout.close()


def test_twistd_plugin_serves_and_sighup_reloads_assignments(tmp_path: Path, twistd) -> None:  # type: ignore[no-untyped-def]
    port = free_udp_port()
    config = write_config(tmp_path, port)
    process = twistd(config)
    first = wait_for_answer(port, "alice@example.com")
    assert first.status == 301
    assert "home1.example.com" in first.headers.get_all("Contact")[0]
    assert ask(port, "bob@example.com").status == 404  # type: ignore[union-attr]

    (tmp_path / "assignments.csv").write_text(
        "user,home_server\nalice@example.com,home2.example.com\nbob@example.com,home1.example.com\n"
    )
    os.kill(process.pid, signal.SIGHUP)
    end = time.monotonic() + 10
    while time.monotonic() < end:
        response = ask(port, "bob@example.com")
        if response is not None and response.status == 301:
            break
    else:
        raise AssertionError("bob was not found after SIGHUP")
    moved = ask(port, "alice@example.com")
    assert moved is not None and "home2.example.com" in moved.headers.get_all("Contact")[0]

    # A broken file on reload is refused; the previous table keeps serving.
    (tmp_path / "assignments.csv").write_text("user,home_server\nthis line is wrong\n")
    os.kill(process.pid, signal.SIGHUP)
    time.sleep(0.5)
    still = ask(port, "bob@example.com")
    assert still is not None and still.status == 301
    assert process.poll() is None


@pytest.mark.parametrize(
    ("server", "expected"),
    [
        (
            {"role": "proxy"},
            '[server].role: expected one of "director", "home", "edge", got "proxy"',
        ),
        ({"unknown_key": "x"}, "unknown_key"),
    ],
)
def test_bad_config_is_refused_naming_file_and_key(
    tmp_path: Path, server: dict[str, str], expected: str
) -> None:
    config = write_config(tmp_path, free_udp_port(), **server)
    output = refused_output(config)
    assert "director.toml" in output
    assert expected in output
    assert "Traceback" not in output


def test_bad_assignment_file_is_refused_with_file_and_line(tmp_path: Path) -> None:
    config = write_config(tmp_path, free_udp_port())
    (tmp_path / "assignments.csv").write_text(
        "user,home_server\nalice@example.com,home1.example.com\nbroken\n"
    )
    output = refused_output(config)
    assert "assignments.csv:3" in output
    assert "Traceback" not in output


def test_port_in_use_is_refused_with_one_line(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        config = write_config(tmp_path, port)
        output = refused_output(config)
    assert f"homeredirect: cannot listen on 127.0.0.1:{port}" in output
    assert "Traceback" not in output


def test_bad_credentials_file_is_refused_with_file_and_line(tmp_path: Path) -> None:
    config = write_config(tmp_path, free_udp_port())
    (tmp_path / "users.csv").write_text("user,password\nnot-an-aor,secret\n")
    with config.open("a") as file:
        file.write('\n[auth]\nrealm = "example.com"\ncredentials = "users.csv"\n')
    output = refused_output(config)
    assert "users.csv:2" in output
    assert "Traceback" not in output


def test_home_server_whose_bindings_directory_is_missing_is_refused(tmp_path: Path) -> None:
    config = write_config(tmp_path, free_udp_port(), role="home")
    with config.open("a") as file:
        file.write('\n[location]\nbackend = "sqlite"\npath = "missing/bindings.sqlite"\n')
    output = refused_output(config)
    assert "missing/bindings.sqlite" in output
    assert "does not exist" in output
    assert "Traceback" not in output
