"""A real OpenLDAP `slapd` for tests: an Active Directory-shaped directory on a loopback port.

`SlapdServer` writes a `slapd.conf`, a small test schema with the Lync attributes Active
Directory carries (`msRTCSIP-PrimaryUserAddress`, `msRTCSIP-UserEnabled`,
`msRTCSIP-PrimaryHomeServer`, `dNSHostName`) and the AD object classes the resolver
searches for (`user`, `contact`, `container`, and `msRTCSIP-Pool` for pool objects), bulk
loads the entries with `slapadd` before the server starts (10,000 users in well under a
second), and then starts, kills, pauses and restarts `slapd` on the same port and data.

The directory mimics what matters of AD:

- pools live in the configuration tree, in the Lync shape: the user's home server is the DN
  `CN=LC Services,CN=Microsoft,CN=<pool>,CN=Pools,...`, and the pool's FQDN is in
  `dNSHostName` on that object or on an ancestor;
- an unpaged search by a normal account stops at 1,000 entries (AD's MaxPageSize), while a
  paged one (RFC 2696) may read everything;
- `cn=director` can read but not write; `cn=rebalancer` may also write the home attributes.

`msRTCSIP-PrimaryHomeServer` has DN syntax in AD; here it is a case-insensitive string, so
that the same directory can hold both shapes deployments use: a pool DN and a plain FQDN.
The test schema's OIDs are under OpenLDAP's experimental arc (1.3.6.1.4.1.4203.666), apart
from `dNSHostName`, which keeps AD's.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from homeredirect.tools.certs import TestPki, ensure_test_pki

__all__ = [
    "ADMIN_DN",
    "ADMIN_PASSWORD",
    "BASE_DN",
    "POOLS",
    "READER_DN",
    "SECRET",
    "WRITER_DN",
    "SlapdServer",
    "base_entries",
    "expected_home",
    "pool_dn",
    "service_dn",
    "user_entries",
    "user_ldif",
]

SLAPD = "/usr/sbin/slapd"
BASE_DN = "dc=example,dc=com"
ADMIN_DN = f"cn=admin,{BASE_DN}"
ADMIN_PASSWORD = "admin-secret"
READER_DN = f"cn=director,ou=service,{BASE_DN}"
WRITER_DN = f"cn=rebalancer,ou=service,{BASE_DN}"
SECRET = "s3cret"
"""The password of both service accounts."""

POOLS_DN = f"CN=Pools,CN=RTC Service,CN=Services,CN=Configuration,{BASE_DN}"

POOLS = {
    # pool name: (FQDN, where the FQDN is: "pool" object or the "service" object itself)
    "pool1": ("pool1.example.com", "pool"),
    "pool2": ("pool2.example.com", "service"),
    "pool3": ("pool3.example.com", "pool"),
}
"""The healthy pools every directory has. `broken` (no FQDN anywhere) exists too."""

_OID = "1.3.6.1.4.1.4203.666.777"
_SCHEMA = f"""\
attributetype ( 1.2.840.113556.1.4.619 NAME 'dNSHostName'
    EQUALITY caseIgnoreMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
attributetype ( {_OID}.1.1 NAME 'msRTCSIP-PrimaryUserAddress'
    EQUALITY caseIgnoreMatch SUBSTR caseIgnoreSubstringsMatch
    SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
attributetype ( {_OID}.1.2 NAME 'msRTCSIP-UserEnabled'
    EQUALITY booleanMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.7 SINGLE-VALUE )
attributetype ( {_OID}.1.3 NAME 'msRTCSIP-PrimaryHomeServer'
    EQUALITY caseIgnoreMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
attributetype ( {_OID}.1.4 NAME 'sipHomeServer'
    EQUALITY caseIgnoreMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
objectclass ( {_OID}.2.1 NAME 'user' SUP organizationalPerson STRUCTURAL
    MAY ( mail $ uid $ displayName $ msRTCSIP-PrimaryUserAddress $ msRTCSIP-UserEnabled
        $ msRTCSIP-PrimaryHomeServer $ sipHomeServer ) )
objectclass ( {_OID}.2.2 NAME 'contact' SUP organizationalPerson STRUCTURAL
    MAY ( mail $ displayName $ msRTCSIP-PrimaryUserAddress $ msRTCSIP-UserEnabled
        $ msRTCSIP-PrimaryHomeServer ) )
objectclass ( {_OID}.2.3 NAME 'container' SUP top STRUCTURAL MUST cn MAY dNSHostName )
objectclass ( {_OID}.2.4 NAME 'msRTCSIP-Pool' SUP top STRUCTURAL MUST cn MAY dNSHostName )
"""

_CONFIG = """\
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
include {directory}/homeredirect-test.schema
pidfile {directory}/slapd.pid
argsfile {directory}/slapd.args
modulepath /usr/lib/ldap
moduleload back_mdb
loglevel {loglevel}
logfile {directory}/slapd.log
TLSCACertificateFile {pki.ca_certificate}
TLSCertificateFile {pki.server_certificate}
TLSCertificateKeyFile {pki.server_key}

database mdb
maxsize 268435456
suffix "{base}"
rootdn "{admin}"
rootpw {admin_password}
directory {directory}/data
index objectClass eq
index msRTCSIP-PrimaryUserAddress eq,sub
index mail,uid,dNSHostName eq
# Active Directory's MaxPageSize: an unpaged search returns at most 1,000 entries.
limits users size.soft=1000 size.hard=1000 size.pr=1000 size.prtotal=unlimited
access to attrs=userPassword
    by anonymous auth
    by * none
access to attrs=msRTCSIP-PrimaryHomeServer,sipHomeServer
    by dn.exact="{writer}" write
    by users read
    by * none
access to *
    by users read
    by anonymous auth
    by * none
"""


def pool_dn(pool: str) -> str:
    """The pool object's DN, in the Lync shape."""
    return f"CN={pool},{POOLS_DN}"


def service_dn(pool: str) -> str:
    """The DN that `msRTCSIP-PrimaryHomeServer` names: the pool's Lync service object."""
    return f"CN=LC Services,CN=Microsoft,{pool_dn(pool)}"


def expected_home(number: int) -> str:
    """The home server FQDN of generated user `number` (see `user_entries`)."""
    if number % 10 == 9:
        return f"home{number % 3 + 1}.example.com"
    return POOLS[f"pool{number % 3 + 1}"][0]


def _ldif(dn: str, attributes: Iterable[tuple[str, str]]) -> str:
    return "\n".join([f"dn: {dn}", *(f"{name}: {value}" for name, value in attributes), "", ""])


def base_entries() -> Iterator[str]:
    """The tree, the service accounts and the pools (healthy ones and `broken`)."""
    yield _ldif(BASE_DN, [("objectClass", "dcObject"), ("objectClass", "organization"),
                          ("dc", "example"), ("o", "Example")])  # fmt: skip
    for ou in ("users", "service"):
        yield _ldif(f"ou={ou},{BASE_DN}", [("objectClass", "organizationalUnit"), ("ou", ou)])
    for dn in (READER_DN, WRITER_DN):
        name = dn.split(",")[0][3:]
        yield _ldif(dn, [("objectClass", "person"), ("cn", name), ("sn", name),
                         ("userPassword", SECRET)])  # fmt: skip
    parts = POOLS_DN.split(",")
    for index in range(len(parts) - len(BASE_DN.split(",")) - 1, -1, -1):
        dn = ",".join(parts[index:])
        yield _ldif(dn, [("objectClass", "container"), ("cn", parts[index][3:])])
    for pool, (fqdn, where) in [*POOLS.items(), ("broken", ("", ""))]:
        on_pool = [("dNSHostName", fqdn)] if where == "pool" else []
        on_service = [("dNSHostName", fqdn)] if where == "service" else []
        yield _ldif(pool_dn(pool), [("objectClass", "msRTCSIP-Pool"), ("cn", pool), *on_pool])
        yield _ldif(
            f"CN=Microsoft,{pool_dn(pool)}", [("objectClass", "container"), ("cn", "Microsoft")]
        )
        yield _ldif(
            service_dn(pool),
            [("objectClass", "container"), ("cn", "LC Services"), *on_service],
        )


def user_ldif(
    name: str,
    *,
    address: str | None = None,
    enabled: str | None = "TRUE",
    home: str | None = None,
    object_class: str = "user",
    extra: Iterable[tuple[str, str]] = (),
) -> str:
    """One user entry under ou=users; `address` defaults to `sip:<name>@example.com`."""
    attributes = [("objectClass", object_class), ("cn", name), ("sn", name)]
    attributes.append(("msRTCSIP-PrimaryUserAddress", address or f"sip:{name}@example.com"))
    if enabled is not None:
        attributes.append(("msRTCSIP-UserEnabled", enabled))
    if home is not None:
        attributes.append(("msRTCSIP-PrimaryHomeServer", home))
    return _ldif(f"cn={name},ou=users,{BASE_DN}", [*attributes, *extra])


def user_entries(count: int) -> Iterator[str]:
    """`count` users `user00000@example.com`...: nine in ten homed on a pool by DN (pools in
    turn), one in ten on a plain FQDN, as `expected_home` says; each also has `mail` and
    `uid` and the FQDN in `sipHomeServer` for the generic preset."""
    for number in range(count):
        name = f"user{number:05d}"
        fqdn = expected_home(number)
        home = fqdn if number % 10 == 9 else service_dn(f"pool{number % 3 + 1}")
        extra = [("mail", f"{name}@example.com"), ("uid", name), ("sipHomeServer", fqdn)]
        yield user_ldif(name, home=home, extra=extra)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_for_exit(pid: int, timeout: float) -> None:
    """Wait until process `pid` (not our child: slapd daemonizes) has ended, without polling
    in a sleep loop: a pidfd becomes readable when the process exits."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        readable, _, _ = select.select([fd], [], [], timeout)
        if not readable:
            raise TimeoutError(f"slapd (pid {pid}) did not exit within {timeout} s")
    finally:
        os.close(fd)


class SlapdServer:
    """One slapd on `127.0.0.1:port` with its data in `directory`.

    `setup()` writes the configuration and loads `entries` (LDIF text chunks) with slapadd;
    `start()` returns once slapd accepts connections. `stop()`
    ends it cleanly; `kill()` is a crash (SIGKILL), after which `start()` brings the same
    data back on the same port; `pause()`/`resume()` freeze and thaw it (SIGSTOP/SIGCONT)
    to make a slow directory.
    """

    def __init__(self, directory: Path, *, stats_log: bool = False) -> None:
        self.directory = directory
        self.port = _free_port()
        self.tls_port = _free_port()
        self.pid: int | None = None
        self.pki: TestPki = ensure_test_pki(directory / "pki", ["ldap.example.com"], ["127.0.0.1"])
        self._loglevel = "stats" if stats_log else "none"

    @property
    def uri(self) -> str:
        return f"ldap://127.0.0.1:{self.port}"

    @property
    def ldaps_uri(self) -> str:
        return f"ldaps://127.0.0.1:{self.tls_port}"

    @property
    def log_path(self) -> Path:
        """slapd's log: connections and operations when built with `stats_log=True`."""
        return self.directory / "slapd.log"

    def setup(self, entries: Iterable[str]) -> None:
        """Write the configuration and bulk-load `entries` into a new database."""
        (self.directory / "data").mkdir(parents=True, exist_ok=True)
        (self.directory / "homeredirect-test.schema").write_text(_SCHEMA)
        (self.directory / "slapd.conf").write_text(
            _CONFIG.format(
                directory=self.directory,
                pki=self.pki,
                loglevel=self._loglevel,
                base=BASE_DN,
                admin=ADMIN_DN,
                admin_password=ADMIN_PASSWORD,
                writer=WRITER_DN,
            )
        )
        ldif = self.directory / "entries.ldif"
        with ldif.open("w") as file:
            file.writelines(entries)
        subprocess.run(
            ["/usr/sbin/slapadd", "-q", "-f", str(self.directory / "slapd.conf"), "-l", str(ldif)],
            check=True,
            capture_output=True,
            timeout=60,
        )

    def start(self) -> None:
        """Start slapd and return once it accepts connections."""
        urls = f"{self.uri}/ {self.ldaps_uri}/"
        subprocess.run(
            [SLAPD, "-h", urls, "-f", str(self.directory / "slapd.conf")],
            check=True,
            capture_output=True,
            timeout=30,
        )
        self.pid = int((self.directory / "slapd.pid").read_text())
        # slapd detaches once its listeners are bound, but calls listen() a moment later in
        # its daemon thread: until then a connection is refused. A few milliseconds.
        end = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=5).close()
                return
            except ConnectionRefusedError:
                if time.monotonic() > end:
                    raise
                time.sleep(0.002)

    def _signal(self, signum: int, wait: bool) -> None:
        if self.pid is None:
            return
        pid, self.pid = (self.pid, None) if wait else (self.pid, self.pid)
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            return
        if wait:
            _wait_for_exit(pid, 10)

    def stop(self) -> None:
        """Stop slapd cleanly (SIGTERM) and wait for it; a paused slapd is thawed first."""
        self._signal(signal.SIGCONT, wait=False)
        self._signal(signal.SIGTERM, wait=True)

    def kill(self) -> None:
        """Crash slapd (SIGKILL): connections reset, the port refuses new ones."""
        self._signal(signal.SIGKILL, wait=True)

    def pause(self) -> None:
        """Freeze slapd: connections stay open but nothing is answered."""
        self._signal(signal.SIGSTOP, wait=False)

    def resume(self) -> None:
        self._signal(signal.SIGCONT, wait=False)

    def ldapmodify(self, ldif: str, *, add: bool = False) -> None:
        """Apply `ldif` as the directory's administrator (blocking; test set-up only)."""
        command = ["/usr/bin/ldapmodify", "-x", "-H", self.uri, "-D", ADMIN_DN]
        command += ["-w", ADMIN_PASSWORD] + (["-a"] if add else [])
        subprocess.run(command, input=ldif.encode(), check=True, capture_output=True, timeout=30)
