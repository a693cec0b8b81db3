"""Start the three-process example with one command: a director, two home servers and the
DNS service by which clients find the director, all on 127.0.0.1.

    .venv/bin/python examples/cluster/run.py [--run-dir run/cluster]     # or: make cluster

It copies the configuration of this directory into the run directory, makes a test CA and
certificates there (director.example.com, home1.example.com, home2.example.com, all valid
for 127.0.0.1), starts

    dns       homeredirect dns --config director.toml       UDP+TCP 5176
    director  twistd -n homeredirect --config director.toml  UDP+TCP 5170, TLS 5171
    home1     twistd -n homeredirect --config home1.toml     UDP+TCP 5172, TLS 5173
    home2     twistd -n homeredirect --config home2.toml     UDP+TCP 5174, TLS 5175

with their logs interleaved on standard output, each line prefixed by the process's name,
prints "cluster ready" once all four accept connections, and stops them all (SIGTERM, then
SIGKILL after 10 s) on Ctrl-C or SIGTERM, or as soon as one of them exits.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from homeredirect.tools.certs import ensure_leaf, ensure_test_pki

HERE = Path(__file__).resolve().parent
FILES = ("director.toml", "home1.toml", "home2.toml", "assignments.csv")
HOMES = ("home1.example.com", "home2.example.com")
BIN = Path(sys.executable).parent
# name, command, a TCP port that accepts connections once it runs
PROCESSES = (
    ("dns", [str(BIN / "homeredirect"), "dns", "--config", "director.toml"], 5176),
    (
        "director",
        [str(BIN / "twistd"), "-n", "--pidfile=", "homeredirect", "--config", "director.toml"],
        5170,
    ),
    (
        "home1",
        [str(BIN / "twistd"), "-n", "--pidfile=", "homeredirect", "--config", "home1.toml"],
        5172,
    ),
    (
        "home2",
        [str(BIN / "twistd"), "-n", "--pidfile=", "homeredirect", "--config", "home2.toml"],
        5174,
    ),
)
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0

_output = threading.Lock()


def say(name: str, line: str) -> None:
    with _output:
        sys.stdout.write(f"{name:>8} | {line.rstrip()}\n")
        sys.stdout.flush()


def relay(name: str, stream: IO[str]) -> None:
    """Copy one child's output to ours, line by line, prefixed with its name."""
    for line in stream:
        say(name, line)


def prepare(run_dir: Path) -> None:
    """Copy the configuration into `run_dir` and make the certificates it names."""
    run_dir.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        shutil.copyfile(HERE / name, run_dir / name)
    pki = ensure_test_pki(run_dir, ["director.example.com"], ["127.0.0.1", "::1"])
    for home in HOMES:
        ensure_leaf(pki, home, ips=["127.0.0.1"])


def accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def stop(children: dict[str, subprocess.Popen[str]]) -> None:
    for process in children.values():
        if process.poll() is None:
            process.terminate()
    deadline = time.monotonic() + STOP_TIMEOUT
    for name, process in children.items():
        try:
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            say("run", f"{name} did not stop within {STOP_TIMEOUT:.0f} s; killing it")
            process.kill()
            process.wait()


def serve(run_dir: Path) -> int:
    """Run the four processes until interrupted (0) or until one exits (1)."""
    children: dict[str, subprocess.Popen[str]] = {}
    relays: list[threading.Thread] = []
    try:
        for name, command, _ in PROCESSES:
            # Their own session: Ctrl-C reaches only us, and we stop them in order.
            process = subprocess.Popen(
                command,
                cwd=run_dir,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                start_new_session=True,
            )
            assert process.stdout is not None
            children[name] = process
            relays.append(threading.Thread(target=relay, args=(name, process.stdout), daemon=True))
            relays[-1].start()
        waiting = {name: port for name, _, port in PROCESSES}
        deadline = time.monotonic() + START_TIMEOUT
        while waiting:
            for name, process in children.items():
                if process.poll() is not None:
                    say("run", f"{name} exited with status {process.returncode}; stopping")
                    return 1
            waiting = {name: port for name, port in waiting.items() if not accepts(port)}
            if waiting and time.monotonic() > deadline:
                say("run", f"not listening after {START_TIMEOUT:.0f} s: {', '.join(waiting)}")
                return 1
            time.sleep(0.2)
        say("run", f"cluster ready in {run_dir}; Ctrl-C stops it. Try:")
        say("run", "  host -p 5176 -t SRV _sipinternaltls._tcp.example.com 127.0.0.1")
        say(
            "run",
            f"  {BIN / 'python'} -m homeredirect.tools.register sip:alice@example.com "
            f"--server tls:127.0.0.1:5171 --ca {run_dir / 'ca.pem'}",
        )
        while True:
            for name, process in children.items():
                if process.poll() is not None:
                    say("run", f"{name} exited with status {process.returncode}; stopping")
                    return 1
            time.sleep(0.5)
    except KeyboardInterrupt:
        say("run", "stopping")
        return 0
    finally:
        stop(children)
        for thread in relays:  # the last lines of their logs
            thread.join(timeout=2.0)
        say("run", "stopped")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--run-dir",
        type=Path,
        default=HERE.parents[1] / "run" / "cluster",
        help="where configuration copies, certificates and bindings go (default run/cluster)",
    )
    args = parser.parse_args(argv)
    run_dir = args.run_dir.resolve()
    prepare(run_dir)
    # SIGTERM stops the cluster as Ctrl-C does.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    return serve(run_dir)


if __name__ == "__main__":
    sys.exit(main())
