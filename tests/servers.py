"""Real servers for the tests to talk to: a throwaway `redis-server` on loopback.

    server = RedisServer.start()          # or the `redis_server` pytest fixture (conftest)
    try:
        ... RedisConnection(reactor, server.url) ...
        server.command("FLUSHALL")
    finally:
        server.stop()

From a trial TestCase, start one per class in `setUpClass` (it takes a few tens of
milliseconds, but there is no need to pay that per test) and separate tests by key prefix
or `flush()`. The server keeps nothing on disk (no RDB, no AOF), listens on 127.0.0.1 on a
free port and on a Unix socket in its own temporary directory, and is stopped (SIGTERM,
then SIGKILL) by `stop()`.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import IO

__all__ = ["REDIS_SERVER", "RedisServer", "redis_reply"]

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
"""The binary; `make test` installs Debian's redis-server."""


def _free_tcp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _encode(*args: str | bytes | int) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


def redis_reply(file: IO[bytes]) -> object:
    """Read one RESP reply from a buffered binary file (`socket.makefile("rb")`)."""
    line = file.readline()
    if not line:
        raise ConnectionError("redis-server closed the connection")
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        raise RuntimeError(rest.decode())
    if kind == b":":
        return int(rest)
    if kind == b"$":
        length = int(rest)
        if length < 0:
            return None
        data = file.read(length + 2)
        return data[:-2].decode()
    if kind == b"*":
        count = int(rest)
        return None if count < 0 else [redis_reply(file) for _ in range(count)]
    raise ValueError(f"unexpected RESP line {line!r}")


class RedisServer:
    """One running `redis-server`; see the module docstring."""

    def __init__(self, directory: Path, port: int, process: subprocess.Popen[bytes]) -> None:
        self.directory = directory
        self.port = port
        self.process = process
        self.socket_path = directory / "redis.sock"

    @property
    def url(self) -> str:
        """A ``redis://127.0.0.1:PORT/0`` URL for the server (database 0)."""
        return f"redis://127.0.0.1:{self.port}/0"

    def url_for(self, db: int) -> str:
        """The URL of database *db* (0-15) on this server."""
        return f"redis://127.0.0.1:{self.port}/{db}"

    @property
    def unix_url(self) -> str:
        return f"unix://{self.socket_path}"

    @classmethod
    def start(cls, timeout: float = 10.0) -> RedisServer:
        """Start a server and return once it answers PING; raise if it cannot start."""
        directory = Path(tempfile.mkdtemp(prefix="homeredirect-redis-"))
        last_error = ""
        # A port found free can be taken by someone else before redis-server binds it;
        # try a few, each failure is quick (redis-server exits at once).
        for _attempt in range(5):
            port = _free_tcp_port()
            process = subprocess.Popen(
                [
                    REDIS_SERVER,
                    "--bind", "127.0.0.1",
                    "--port", str(port),
                    "--unixsocket", str(directory / "redis.sock"),
                    "--unixsocketperm", "700",
                    "--save", "",
                    "--appendonly", "no",
                    "--dir", str(directory),
                    "--logfile", str(directory / "redis.log"),
                    "--daemonize", "no",
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )  # fmt: skip
            server = cls(directory, port, process)
            if server._wait_until_ready(timeout):
                return server
            server.stop(remove=False)
            log = directory / "redis.log"
            last_error = log.read_text(errors="replace")[-2000:] if log.exists() else ""
        shutil.rmtree(directory, ignore_errors=True)
        raise RuntimeError(f"redis-server did not start:\n{last_error}")

    def _wait_until_ready(self, timeout: float) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.process.poll() is not None:
                return False
            try:
                if self.command("PING") == "PONG":
                    return True
            except OSError:
                pass
            try:
                # Doubles as the polling interval and notices an early exit at once.
                self.process.wait(timeout=0.02)
            except subprocess.TimeoutExpired:
                pass
        return False

    def command(self, *args: str | bytes | int) -> object:
        """Run one command over a fresh blocking connection (test set-up and checks only,
        never from code under test) and return its reply; raise RuntimeError for an
        error reply."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as conn:
            conn.sendall(_encode(*args))
            with conn.makefile("rb") as file:
                return redis_reply(file)

    def flush(self) -> None:
        """Empty every database."""
        self.command("FLUSHALL")

    def stop(self, remove: bool = True) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 5 s) and remove its directory."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if remove:
            shutil.rmtree(self.directory, ignore_errors=True)
