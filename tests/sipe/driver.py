"""Run pidgin-sipe against homeredirect servers, all inside a private network namespace.

    reason = sipe_unavailable()           # None when this machine can run it (root, packages)
    with SipeNetwork.create(["director.example.com", "home1.example.com"], tmp) as net:
        net.start_server("director", director_toml)  # a real `twistd -n homeredirect`
        net.wait_listening([15070])
        result = net.run_client(driver, server="director.example.com:15070", ...)
        assert result.signed_on

Why a namespace: the director's 301 names the home server by FQDN (`home1.example.com`),
and pidgin-sipe resolves it itself. In a namespace of our own (`ip netns add`),
`/etc/netns/<ns>/hosts`, which `ip netns exec` mounts over `/etc/hosts`, maps the test's
names to 127.0.0.1, so the client really resolves and follows the redirect while every
packet stays on that namespace's loopback. The namespace has its own port space too: the
servers use fixed ports there without clashing with anything else on the machine.

The client, purple_driver.c, is compiled here with gcc against libpurple (Debian
libpurple-dev); the protocol plugin is Debian's pidgin-sipe. `make test` installs both.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import attrs

__all__ = [
    "ClientResult",
    "SipeNetwork",
    "build_driver",
    "sipe_unavailable",
]

SOURCE = Path(__file__).with_name("purple_driver.c")
TWISTD = str(Path(sys.executable).with_name("twistd"))
NETNS_ETC = Path("/etc/netns")
# Where Debian's pidgin-sipe puts libsipe.so (/usr/lib/purple-2), besides libpurple's own
# plugin directory (pkg-config's plugindir), which the driver is also told to search.
PLUGIN_DIRS = ("/usr/lib/purple-2",)
_SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])


def _tool(name: str) -> str | None:
    return shutil.which(name, path=_SEARCH_PATH)


def _plugin_dirs() -> list[str]:
    dirs = list(PLUGIN_DIRS)
    pkg_config = _tool("pkg-config")
    if pkg_config is not None:
        found = subprocess.run(
            [pkg_config, "--variable=plugindir", "purple"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
        if found:
            dirs.append(found)
    return dirs


def sipe_unavailable() -> str | None:
    """Why pidgin-sipe cannot be run here (a skip reason), or None when it can.

    It needs root (the network namespace), `ip` and `ss` (iproute2), gcc and pkg-config
    with libpurple's headers (libpurple-dev), and the prpl-sipe plugin (pidgin-sipe).
    """
    if os.geteuid() != 0:
        return "pidgin-sipe runs in a network namespace of its own, which needs root"
    missing = [tool for tool in ("ip", "ss", "gcc", "pkg-config") if _tool(tool) is None]
    if missing:
        return f"pidgin-sipe's test driver needs {', '.join(missing)} (`make apt` installs them)"
    pkg_config = _tool("pkg-config")
    assert pkg_config is not None
    if subprocess.run([pkg_config, "--exists", "purple"], check=False).returncode != 0:
        return "libpurple's headers are missing (Debian libpurple-dev; `make apt` installs it)"
    if not any(Path(d, "libsipe.so").exists() for d in _plugin_dirs()):
        return "the prpl-sipe plugin is missing (Debian pidgin-sipe; `make apt` installs it)"
    return None


def build_driver(directory: Path) -> Path:
    """Compile purple_driver.c into *directory*; return the executable's path.

    Raise RuntimeError with the compiler's output if it fails.
    """
    pkg_config, gcc = _tool("pkg-config"), _tool("gcc")
    assert pkg_config is not None and gcc is not None
    flags = subprocess.run(
        [pkg_config, "--cflags", "--libs", "purple"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    output = directory / "purple_driver"
    built = subprocess.run(
        [gcc, "-std=gnu11", "-Wall", "-Wextra", "-O1", "-o", str(output),
         str(SOURCE), *flags],
        capture_output=True,
        text=True,
        check=False,
    )  # fmt: skip
    if built.returncode != 0:
        raise RuntimeError(f"building the libpurple driver failed:\n{built.stderr[-3000:]}")
    return output


@attrs.frozen
class ClientResult:
    """What one run of the driver did: its exit status, its JSON events, its stderr."""

    status: int
    events: tuple[Mapping[str, str], ...]
    stderr: str

    @property
    def signed_on(self) -> bool:
        return self.status == 0 and any(e["event"] == "signed-on" for e in self.events)

    def named(self, event: str) -> list[Mapping[str, str]]:
        return [e for e in self.events if e["event"] == event]

    def sipe_lines(self) -> list[str]:
        """pidgin-sipe's own milestone lines (see purple_driver.c), in order."""
        return [e["text"] for e in self.named("sipe")]

    def summary(self) -> str:
        """The events, one a line, and the end of stderr: an assertion message."""
        lines = [json.dumps(dict(e)) for e in self.events]
        return "\n".join([f"exit {self.status}", *lines, "--- stderr ---", self.stderr[-4000:]])


class SipeNetwork:
    """A network namespace with the names of the test's servers, and the processes in it."""

    def __init__(self, namespace: str, directory: Path) -> None:
        self.namespace = namespace
        self.directory = directory
        self.processes: dict[str, tuple[subprocess.Popen[bytes], Path]] = {}

    @classmethod
    @contextmanager
    def create(cls, names: Sequence[str], directory: Path) -> Iterator[SipeNetwork]:
        """A namespace where each of *names* is 127.0.0.1; processes and namespace are
        removed on exit, whatever happened."""
        net = cls(f"hr-sipe-{secrets.token_hex(4)}", directory)
        try:
            net._run(["ip", "netns", "add", net.namespace])
            net._run(["ip", "-n", net.namespace, "link", "set", "lo", "up"])
            etc = NETNS_ETC / net.namespace
            etc.mkdir(parents=True)
            (etc / "hosts").write_text(f"127.0.0.1\tlocalhost {' '.join(names)}\n::1\tlocalhost\n")
            yield net
        finally:
            net.close()

    def _run(self, argv: Sequence[str]) -> str:
        result = subprocess.run(
            [_tool(argv[0]) or argv[0], *argv[1:]],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed: {result.stdout}{result.stderr}")
        return result.stdout

    def inside(self, argv: Sequence[str]) -> list[str]:
        """*argv* run inside the namespace."""
        return [_tool("ip") or "ip", "netns", "exec", self.namespace, *argv]

    def start_server(
        self, name: str, config: str, environment: Mapping[str, str] | None = None
    ) -> None:
        """Write *config* (TOML) to `<directory>/<name>.toml` and run `twistd -n homeredirect`
        on it inside the namespace, logging to `<name>.log`; *environment* is added to ours
        (e.g. KRB5_CONFIG for a Kerberos realm of the test's own)."""
        path = self.directory / f"{name}.toml"
        path.write_text(config)
        log = self.directory / f"{name}.log"
        with log.open("wb") as output:
            process = subprocess.Popen(
                self.inside([TWISTD, "-n", "--pidfile=", "homeredirect", "--config", str(path)]),
                cwd=self.directory,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(environment or {})},
                start_new_session=True,
            )
        self.processes[name] = (process, log)

    def log(self, name: str) -> str:
        return self.processes[name][1].read_text(errors="replace")

    def wait_listening(self, ports: Sequence[int], timeout: float = 30.0) -> None:
        """Return once something listens on each TCP port of *ports* in the namespace;
        raise RuntimeError (with the servers' logs) if a server exits or time runs out."""
        wanted = {f"127.0.0.1:{port}" for port in ports}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            listening = self._run(self.inside([_tool("ss") or "ss", "-Hltn"])).split()
            if wanted <= set(listening):
                return
            for name, (process, _) in self.processes.items():
                if process.poll() is not None:
                    raise RuntimeError(f"{name} exited early:\n{self.log(name)[-3000:]}")
            # Doubles as the polling interval.
            first = next(iter(self.processes.values()))[0]
            try:
                first.wait(timeout=0.1)
            except subprocess.TimeoutExpired:
                pass
        logs = "\n".join(f"--- {n} ---\n{self.log(n)[-2000:]}" for n in self.processes)
        raise RuntimeError(f"servers not listening on {sorted(wanted)} in {timeout}s:\n{logs}")

    def run_client(
        self,
        driver: Path,
        *,
        server: str,
        password: str,
        username: str = "alice@example.com,EXAMPLE\\alice",
        transport: str = "tcp",
        authentication: str = "ntlm",
        ca_dir: Path | None = None,
        timeout: int = 20,
        linger: int = 0,
        environment: Mapping[str, str] | None = None,
    ) -> ClientResult:
        """Run the driver once inside the namespace, with a fresh libpurple user directory;
        see purple_driver.c for what the options mean (*authentication*: pidgin-sipe's
        "ntlm" or "krb5"); *environment* is added to ours."""
        user_dir = self.directory / f"purple-{secrets.token_hex(4)}"
        user_dir.mkdir()
        argv: list[Any] = [
            driver,
            "--user-dir", user_dir,
            "--username", username,
            "--password", password,
            "--server", server,
            "--transport", transport,
            "--authentication", authentication,
            "--timeout", timeout,
            "--linger", linger,
        ]  # fmt: skip
        if ca_dir is not None:
            argv += ["--ca-dir", ca_dir]
        for plugin_dir in _plugin_dirs():
            argv += ["--plugin-dir", plugin_dir]
        env = dict(os.environ)
        # No desktop session: keep libpurple from trying to start a D-Bus daemon.
        env.pop("DBUS_SESSION_BUS_ADDRESS", None)
        env.update(environment or {})
        result = subprocess.run(
            self.inside([str(a) for a in argv]),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout + linger + 15,
            check=False,
        )
        events = tuple(json.loads(line) for line in result.stdout.splitlines() if line.strip())
        return ClientResult(result.returncode, events, result.stderr)

    def close(self) -> None:
        """Stop every process (SIGTERM to its group, SIGKILL after 10 s), delete the
        namespace and its hosts file. Safe to call more than once."""
        for process, _ in self.processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process, _ in self.processes.values():
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        if Path("/run/netns", self.namespace).exists():
            subprocess.run(
                [_tool("ip") or "ip", "netns", "delete", self.namespace],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                check=False,
            )
        shutil.rmtree(NETNS_ETC / self.namespace, ignore_errors=True)
