"""A real MIT Kerberos KDC for the tests: a throwaway realm on loopback.

    kdc = MitKdc.start(Path(tempdir))        # realm SIPTEST.EXAMPLE, ~0.2 s
    try:
        kdc.activate()                       # KRB5_CONFIG etc. for this process (gssapi)
        ccache = kdc.kinit("alice")          # FILE:... ticket cache of alice's own
        ... SecurityContext(creds=Credentials(usage="initiate", store={"ccache": ccache})) ...
        ... acceptor with store={"keytab": str(kdc.keytab)} ...
    finally:
        kdc.stop()                           # stops krb5kdc, restores the environment

The realm is created with Debian's `krb5-kdc`/`krb5-admin-server` tools (`kdb5_util`,
`kadmin.local`, `krb5kdc`, `kinit` from `krb5-user`), all installed by `make test`:
`kdb5_util create` makes the database, `kadmin.local` adds the SIP service principal
(`sip/director.example.com`, keys exported to `server.keytab`), a second service for
"ticket for another service" tests, and user principals with passwords. `krb5kdc -n`
listens on one free UDP and TCP port on 127.0.0.1 only, and is waited for until a
`kinit` succeeds. Nothing is written outside the given directory: the replay cache of
in-process acceptors goes there too (`KRB5RCACHEDIR`).

Start one per test class (`setUpClass`) or module: it is cheap, but not free.

`MitKdc.start(directory, inside=net.inside)` runs `krb5kdc` (and `kinit`, which talks to
it) through a command wrapper, e.g. `ip netns exec` into the network namespace of
tests/sipe/driver.py, so that clients there reach it on their own loopback.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

__all__ = ["KRB5KDC", "MitKdc", "kdc_available"]

KRB5KDC = shutil.which("krb5kdc") or "/usr/sbin/krb5kdc"
KDB5_UTIL = shutil.which("kdb5_util") or "/usr/sbin/kdb5_util"
KADMIN_LOCAL = shutil.which("kadmin.local") or "/usr/sbin/kadmin.local"
KINIT = shutil.which("kinit") or "/usr/bin/kinit"

REALM = "SIPTEST.EXAMPLE"
SERVICE = "sip/director.example.com"
OTHER_SERVICE = "sip/other.example.com"
USERS: Mapping[str, str] = {"alice": "wonderland-krb", "bob": "builder-krb"}

Wrapper = Callable[[Sequence[str]], list[str]]
"""Turns a command line into the one that runs it where the KDC lives."""

_ENVIRONMENT = ("KRB5_CONFIG", "KRB5_KDC_PROFILE", "KRB5RCACHEDIR", "KRB5CCNAME", "KRB5_KTNAME")


def kdc_available() -> bool:
    """Whether MIT's KDC and tools are installed (Debian krb5-kdc, krb5-admin-server,
    krb5-user; `make test` installs them)."""
    return all(os.access(tool, os.X_OK) for tool in (KRB5KDC, KDB5_UTIL, KADMIN_LOCAL, KINIT))


def _free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1 (the KDC listens on both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            port = int(udp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no port free for both UDP and TCP on 127.0.0.1")


class MitKdc:
    """A running `krb5kdc` for `realm`, its files in `directory`."""

    def __init__(self, directory: Path, realm: str, port: int, inside: Wrapper = list) -> None:
        self.directory = directory
        self.inside = inside
        self.realm = realm
        self.port = port
        self.krb5_conf = directory / "krb5.conf"
        self.kdc_conf = directory / "kdc.conf"
        self.keytab = directory / "server.keytab"
        self.service = SERVICE
        self.other_service = OTHER_SERVICE
        self.users = dict(USERS)
        self._process: subprocess.Popen[bytes] | None = None
        self._saved: dict[str, str | None] | None = None

    # -- life cycle -------------------------------------------------------------

    @classmethod
    def start(
        cls, directory: Path, realm: str = REALM, timeout: float = 10.0, inside: Wrapper = list
    ) -> MitKdc:
        """Create the realm in `directory` (which must exist), start the KDC and return once
        it issues tickets. Raise RuntimeError (with the KDC's log) if it does not.

        `inside` wraps the command lines of `krb5kdc` and `kinit` (default: as they are).
        """
        kdc = cls(directory.resolve(), realm, _free_port(), inside)
        kdc._write_config()
        kdc._create_database()
        kdc._run_kdc(timeout)
        return kdc

    def stop(self) -> None:
        """Stop the KDC (SIGTERM, then SIGKILL) and give back the process environment."""
        self.deactivate()
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)

    def environment(self) -> dict[str, str]:
        """Variables that point MIT krb5 (tools and in-process gssapi) at this realm."""
        return {
            "KRB5_CONFIG": str(self.krb5_conf),
            "KRB5_KDC_PROFILE": str(self.kdc_conf),
            "KRB5RCACHEDIR": str(self.directory / "rcache"),
            "KRB5CCNAME": f"FILE:{self.directory / 'default.ccache'}",
            "KRB5_KTNAME": f"FILE:{self.directory / 'no-default.keytab'}",
        }

    def activate(self) -> None:
        """Point this process at the realm (MIT krb5 reads the variables whenever it makes a
        context, so gssapi calls after this use it); `deactivate` or `stop` undoes it."""
        if self._saved is None:
            self._saved = {name: os.environ.get(name) for name in _ENVIRONMENT}
        os.environ.update(self.environment())

    def deactivate(self) -> None:
        saved, self._saved = self._saved, None
        if saved is None:
            return
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value

    # -- principals and tickets ---------------------------------------------------

    def principal(self, name: str) -> str:
        return f"{name}@{self.realm}"

    def kadmin(self, *queries: str) -> str:
        """Run `kadmin.local` queries against the realm's database; return its output."""
        result = subprocess.run(
            [KADMIN_LOCAL, "-r", self.realm],
            input="\n".join(queries).encode() + b"\n",
            capture_output=True,
            env=self._tool_environment(),
            timeout=30,
            check=False,
        )
        output = (result.stdout + result.stderr).decode(errors="replace")
        if result.returncode != 0:
            raise RuntimeError(f"kadmin.local failed: {output}")
        return output

    def kinit(self, user: str, password: str | None = None, ccache: Path | None = None) -> str:
        """Get a TGT for `user` into a private credential cache; return its name
        (`FILE:...`). Raise RuntimeError if the KDC refuses."""
        path = ccache or self.directory / f"{user.replace('/', '_')}.ccache"
        name = f"FILE:{path}"
        result = subprocess.run(
            self.inside([KINIT, "-c", name, self.principal(user)]),
            input=(password if password is not None else self.users[user]).encode() + b"\n",
            capture_output=True,
            env=self._tool_environment(),
            timeout=10,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"kinit {user} failed: {result.stderr.decode(errors='replace')}")
        return name

    # -- setup ---------------------------------------------------------------------

    def _tool_environment(self) -> dict[str, str]:
        return {**os.environ, **self.environment()}

    def _write_config(self) -> None:
        d, realm, port = self.directory, self.realm, self.port
        (d / "rcache").mkdir(exist_ok=True)
        (d / "kadm5.acl").write_text("")
        self.kdc_conf.write_text(
            f"""[kdcdefaults]
 kdc_listen = 127.0.0.1:{port}
 kdc_tcp_listen = 127.0.0.1:{port}

[realms]
 {realm} = {{
  database_name = {d}/principal
  key_stash_file = {d}/stash
  acl_file = {d}/kadm5.acl
  kdc_listen = 127.0.0.1:{port}
  kdc_tcp_listen = 127.0.0.1:{port}
  max_life = 1h
  supported_enctypes = aes256-cts-hmac-sha1-96:normal aes128-cts-hmac-sha1-96:normal
 }}

[logging]
 kdc = FILE:{d}/kdc.log
 admin_server = FILE:{d}/kadmin.log
 default = FILE:{d}/krb5lib.log
"""
        )
        self.krb5_conf.write_text(
            f"""[libdefaults]
 default_realm = {realm}
 dns_lookup_kdc = false
 dns_lookup_realm = false
 dns_canonicalize_hostname = false
 rdns = false
 udp_preference_limit = 1

[realms]
 {realm} = {{
  kdc = 127.0.0.1:{port}
 }}

[domain_realm]
 .example.com = {realm}
"""
        )

    def _create_database(self) -> None:
        result = subprocess.run(
            [KDB5_UTIL, "create", "-s", "-P", "master-" + os.urandom(8).hex(), "-r", self.realm],
            capture_output=True,
            env=self._tool_environment(),
            timeout=30,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"kdb5_util create failed: {result.stderr.decode(errors='replace')}")
        queries = [f"addprinc -randkey {self.service}", f"addprinc -randkey {self.other_service}"]
        queries += [f"addprinc -pw {password} {user}" for user, password in self.users.items()]
        # Both services' keys go in the keytab, so that a ticket for the other one is
        # refused because the acceptor is bound to its own principal, not for want of a key.
        queries.append(f"ktadd -k {self.keytab} {self.service} {self.other_service}")
        self.kadmin(*queries)

    def _run_kdc(self, timeout: float) -> None:
        log = self.directory / "krb5kdc.stderr"
        with log.open("wb") as stderr:
            self._process = subprocess.Popen(
                self.inside(
                    [KRB5KDC, "-n", "-r", self.realm, "-P", str(self.directory / "kdc.pid")]
                ),
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=stderr,
                env=self._tool_environment(),
            )
        deadline = time.monotonic() + timeout
        probe = self.directory / "probe.ccache"
        user = next(iter(self.users))
        while True:
            try:
                self.kinit(user, ccache=probe)
                return
            except RuntimeError as e:
                failure = e
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                kdc_log = self.directory / "kdc.log"
                detail = kdc_log.read_text() if kdc_log.exists() else log.read_text()
                raise RuntimeError(f"krb5kdc did not come up: {failure}\n{detail}")
            # Each try is a kinit process (a few milliseconds: the connection is refused
            # until the KDC listens), which paces this loop; it is bounded by `timeout`.
