"""A throwaway Samba Active Directory domain controller, private to the test that starts it.

    reason = samba_ad_unavailable()       # None when this machine can run one (root, samba)
    dc = SambaDomainController.start()    # provisioned, Lync-shaped, listening
    try:
        subprocess.run(dc.in_namespace(["ldapsearch", ...]), env=dc.environment(), ...)
    finally:
        dc.stop()

The domain controller runs in a network namespace of its own (`ip netns add`), on that
namespace's loopback only, so its LDAP (389/636), global catalog and Kerberos (88/464) ports
are reachable from nowhere else, and several test runs can each have one. Whatever talks to
it runs inside the namespace too (`in_namespace()`), where `/etc/netns/<ns>/hosts` (which
`ip netns exec` mounts over `/etc/hosts`) names it `dc1.ad.example.com`: TLS checks the
certificate against that name, and Kerberos asks for `ldap/dc1.ad.example.com`.

What `start()` builds, in a temporary directory, in 10 to 15 seconds on an idle machine
(provisioning is most of it; several times that on a busy one):

- the domain `AD.EXAMPLE.COM` (NetBIOS `HRAD`), provisioned with `samba-tool domain
  provision` with every path in the temporary directory, serving only LDAP and Kerberos
  (`server services = ldap, kdc`) in one process (`-M single`);
- the schema extended offline with the Lync attributes `msRTCSIP-PrimaryUserAddress`,
  `msRTCSIP-UserEnabled` and `msRTCSIP-PrimaryHomeServer` on users, and a pool class
  (tests/data/samba/*.ldif);
- two pools (`POOL1_DN`, Lync 2010 shape in the Configuration partition, and `POOL2_DN`,
  OCS 2007 shape in the System container) and users `alice` (pool 1), `bob` (SIP-disabled),
  `carol` and `erin` (pool 2) and `dave` (no SIP attributes) under `OU=Staff`;
- `BIND_DN`/`BIND_PASSWORD`, an ordinary domain user for simple binds (which the domain
  controller accepts only over TLS), and `SERVICE_ACCOUNT`, a domain user with the SPN
  `SERVICE_SPN`, whose keys are in the keytab `keytab`;
- `krb5_conf`, a client configuration for the realm (`environment()` points `KRB5_CONFIG`
  at it, with a credential cache of its own), and `ca`, the CA certificate of the self-signed
  certificate Samba makes for itself on first start.

Kerberos binds follow Windows' rules: over plain LDAP a SASL bind must sign or seal; over TLS
it must not (the client sets the SASL maximum SSF to 0). Windows accepts the latter; Samba
only with `ldap server require strong auth = allow_sasl_over_tls`, set here (its default
also refuses it). Simple binds are accepted over TLS only, as Samba's default has it.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = [
    "ADMIN_DN",
    "ADMIN_PASSWORD",
    "BASE_DN",
    "BIND_DN",
    "BIND_PASSWORD",
    "DC_HOSTNAME",
    "POOL1_DN",
    "POOL1_FQDN",
    "POOL2_DN",
    "POOL2_FQDN",
    "POOLS_DN",
    "REALM",
    "SERVICE_ACCOUNT",
    "SERVICE_SPN",
    "SambaDomainController",
    "samba_ad_unavailable",
]

REALM = "AD.EXAMPLE.COM"
DOMAIN = "HRAD"
BASE_DN = "DC=ad,DC=example,DC=com"
DC_HOSTNAME = "dc1.ad.example.com"
ADMIN_DN = f"CN=Administrator,CN=Users,{BASE_DN}"
ADMIN_PASSWORD = "Adm1n!" + "Samba-test-only"

BIND_ACCOUNT = "svc-homeredirect"
BIND_DN = f"CN={BIND_ACCOUNT},CN=Users,{BASE_DN}"
BIND_PASSWORD = "Bind!" + "Samba-test-only1"
SERVICE_ACCOUNT = "svc-director"
SERVICE_SPN = "sip/director.example.com"

POOL1_DN = (
    "CN=Lc Services,CN=Microsoft,CN=1:1,CN=Pools,CN=RTC Service,CN=Services,"
    f"CN=Configuration,{BASE_DN}"
)
POOL1_FQDN = "pool1.example.com"
POOLS_DN = f"CN=Pools,CN=RTC Service,CN=Services,CN=Configuration,{BASE_DN}"
"""Where Lync 2010 and later keep pool objects (pool 1 is there)."""
POOL2_DN = (
    f"CN=LC Services,CN=Microsoft,CN=pool2,CN=Pools,CN=RTC Service,CN=Microsoft,CN=System,{BASE_DN}"
)
POOL2_FQDN = "pool2.example.com"

DATA = Path(__file__).parent / "data" / "samba"
# Applied in this order, each in its own ldbmodify/ldbadd run (see the files).
SCHEMA_FILES = ("10-lync-attributes.ldif", "20-lync-classes.ldif", "30-lync-user-class.ldif")
DIRECTORY_FILE = "40-lync-directory.ldif"

TOOLS = ("samba", "samba-tool", "ldbmodify", "ldbadd", "ldapsearch", "ip")
NETNS_ETC = Path("/etc/netns")
# samba and ip are in /usr/sbin, which a root shell has on PATH but other callers may not.
_SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])


def _tool(name: str) -> str:
    """The absolute path of a set-up command (*name* itself if it cannot be found)."""
    return shutil.which(name, path=_SEARCH_PATH) or name


def samba_ad_unavailable() -> str | None:
    """Why a domain controller cannot run here (a skip reason), or None when it can.

    It needs root (network namespaces) and Debian's samba, samba-ad-provision,
    samba-dsdb-modules, ldb-tools and ldap-utils, which `make test` installs.
    """
    if os.geteuid() != 0:
        return "a Samba AD domain controller needs root to make its network namespace"
    missing = [tool for tool in TOOLS if shutil.which(tool, path=_SEARCH_PATH) is None]
    if missing:
        return (
            f"a Samba AD domain controller needs {', '.join(missing)}"
            " (Debian samba, samba-ad-provision, samba-dsdb-modules, ldb-tools, ldap-utils;"
            " `make apt` installs them)"
        )
    if not Path("/usr/share/samba/setup").is_dir():
        return "samba-tool cannot provision: /usr/share/samba/setup is missing (samba-ad-provision)"
    return None


def _run(argv: Sequence[str], what: str, env: Mapping[str, str] | None = None) -> str:
    """Run a set-up command; raise RuntimeError with its output if it fails."""
    result = subprocess.run(
        [_tool(argv[0]), *argv[1:]],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=None if env is None else dict(env),
        timeout=120,
        check=False,
    )
    if result.returncode != 0:
        output = (result.stdout + result.stderr)[-3000:]
        raise RuntimeError(f"{what} failed (exit {result.returncode}): {' '.join(argv)}\n{output}")
    return result.stdout


class SambaDomainController:
    """One running Samba AD domain controller; see the module docstring."""

    server_services = "ldap kdc"
    """Samba's `server services`; a subclass may add some (`winbindd` for ntlm_auth)."""

    def __init__(self, directory: Path, namespace: str) -> None:
        self.directory = directory
        self.namespace = namespace
        self.target = directory / "dc"
        self.smb_conf = self.target / "etc" / "smb.conf"
        self.sam_ldb = self.target / "private" / "sam.ldb"
        self.ca = self.target / "private" / "tls" / "ca.pem"
        self.keytab = directory / "director.keytab"
        self.krb5_conf = directory / "krb5.conf"
        self.log = directory / "samba.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def uri(self) -> str:
        """The LDAP URI of the domain controller, valid inside the namespace."""
        return f"ldap://{DC_HOSTNAME}"

    @classmethod
    def start(cls, timeout: float = 60.0) -> SambaDomainController:
        """Provision, populate and start a domain controller; return once LDAP answers.

        Raise RuntimeError (with the failing command's output) if any step fails; nothing
        is left behind then.
        """
        directory = Path(tempfile.mkdtemp(prefix="homeredirect-samba-"))
        dc = cls(directory, f"hr-ad-{secrets.token_hex(4)}")
        try:
            dc._provision()
            dc._extend_schema()
            dc._populate()
            dc._make_namespace()
            dc._write_krb5_conf()
            dc._start(timeout)
        except BaseException:
            dc.stop()
            raise
        return dc

    def _samba_tool(self, *args: str) -> str:
        return _run(["samba-tool", *args, "-s", str(self.smb_conf)], f"samba-tool {args[0]}")

    def _provision(self) -> None:
        target = self.target
        options = {
            # Everything in the temporary directory; nothing in /var or /run.
            "log file": f"{target}/log.%m",
            "pid directory": f"{target}/run",
            "ncalrpc dir": f"{target}/run/ncalrpc",
            "winbindd socket directory": f"{target}/run/winbindd",
            "ntp signd socket directory": f"{target}/run/ntp_signd",
            # Only what the tests use: LDAP (with the global catalog) and the KDC.
            "server services": self.server_services,
            "interfaces": "lo",
            "bind interfaces only": "yes",
            "dns forwarder": "",
            "panic action": "",
            "tls enabled": "yes",
            # Windows' default: SASL binds over TLS, without sealing, are accepted.
            "ldap server require strong auth": "allow_sasl_over_tls",
        }
        _run(
            [
                "samba-tool", "domain", "provision",
                "--use-rfc2307",
                f"--realm={REALM}",
                f"--domain={DOMAIN}",
                "--server-role=dc",
                "--dns-backend=SAMBA_INTERNAL",
                f"--host-name={DC_HOSTNAME.split('.')[0]}",
                f"--adminpass={ADMIN_PASSWORD}",
                f"--targetdir={target}",
                *(f"--option={key}={value}" for key, value in options.items()),
            ],
            "samba-tool domain provision",
        )  # fmt: skip

    def _ldif(self, name: str) -> Path:
        """A data file with its placeholders filled in, written next to the database."""
        text = (DATA / name).read_text()
        text = text.replace("${SCHEMA_DN}", f"CN=Schema,CN=Configuration,{BASE_DN}")
        text = text.replace("${BASE_DN}", BASE_DN)
        path = self.directory / name
        path.write_text(text)
        return path

    def _extend_schema(self) -> None:
        for name in SCHEMA_FILES:
            _run(
                [
                    "ldbmodify",
                    "-H", str(self.sam_ldb),
                    "--option=dsdb:schema update allowed=true",
                    str(self._ldif(name)),
                ],
                f"schema extension {name}",
            )  # fmt: skip

    def _populate(self) -> None:
        _run(["ldbadd", "-H", str(self.sam_ldb), str(self._ldif(DIRECTORY_FILE))], "ldbadd")
        database = ["-H", str(self.sam_ldb)]
        self._samba_tool("user", "create", BIND_ACCOUNT, BIND_PASSWORD, *database)
        # A random password that cannot be read as an option ("-e..." once was).
        service_password = "Aa1!" + secrets.token_urlsafe(24)
        self._samba_tool("user", "create", SERVICE_ACCOUNT, service_password, *database)
        self._samba_tool("spn", "add", SERVICE_SPN, SERVICE_ACCOUNT, *database)
        # samba_spnupdate adds the domain controller's ldap/ SPNs at run time, from the
        # dnsupdate service this domain controller does not run; GSSAPI binds need this one.
        dc_account = DC_HOSTNAME.split(".")[0].upper() + "$"
        self._samba_tool("spn", "add", f"ldap/{DC_HOSTNAME}", dc_account, *database)
        self._samba_tool(
            "domain", "exportkeytab", str(self.keytab), f"--principal={SERVICE_ACCOUNT}"
        )

    def _make_namespace(self) -> None:
        _run(["ip", "netns", "add", self.namespace], "ip netns add")
        _run(["ip", "-n", self.namespace, "link", "set", "lo", "up"], "ip link set lo up")
        etc = NETNS_ETC / self.namespace
        etc.mkdir(parents=True)
        hostname = DC_HOSTNAME.split(".")[0]
        (etc / "hosts").write_text(
            f"127.0.0.1\tlocalhost\n127.0.0.1\t{DC_HOSTNAME} {hostname}\n::1\tlocalhost\n"
        )

    def _write_krb5_conf(self) -> None:
        # No DNS: the KDC is named, and host names are taken as given (no reverse lookup),
        # so the service principal is ldap/<the name in the URI>.
        self.krb5_conf.write_text(
            "[libdefaults]\n"
            f"    default_realm = {REALM}\n"
            "    dns_lookup_kdc = false\n"
            "    dns_lookup_realm = false\n"
            "    rdns = false\n"
            "    dns_canonicalize_hostname = false\n"
            "[realms]\n"
            f"    {REALM} = {{\n"
            f"        kdc = {DC_HOSTNAME}\n"
            "    }\n"
            "[domain_realm]\n"
            f"    .{REALM.lower()} = {REALM}\n"
            f"    {REALM.lower()} = {REALM}\n"
        )

    def _start(self, timeout: float) -> None:
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                self.in_namespace(
                    ["samba", "--interactive", "-M", "single", "-s", str(self.smb_conf)]
                ),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        # The root DSE answers once the LDAP server listens; in the single process model
        # the KDC has started by then too. The CA is written just before.
        probe = self.in_namespace(
            ["ldapsearch", "-x", "-LLL", "-H", "ldap://127.0.0.1", "-s", "base", "-b", "",
             "dnsHostName"]
        )  # fmt: skip
        while time.monotonic() < deadline and self.process.poll() is None:
            answered = subprocess.run(
                probe, stdin=subprocess.DEVNULL, capture_output=True, check=False, timeout=10
            )
            if answered.returncode == 0 and self.ca.exists():
                return
            try:
                # Doubles as the polling interval and notices an early exit at once.
                self.process.wait(timeout=0.05)
            except subprocess.TimeoutExpired:
                pass
        output = self.log.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"samba did not start in namespace {self.namespace}:\n{output}")

    def in_namespace(self, argv: Sequence[str]) -> list[str]:
        """*argv* run inside the domain controller's network namespace."""
        return [_tool("ip"), "netns", "exec", self.namespace, _tool(argv[0]), *argv[1:]]

    def environment(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """*base* (default: this process's environment) with the Kerberos client pointed at
        this realm: `KRB5_CONFIG`, and a credential cache of the domain controller's own."""
        env = dict(os.environ if base is None else base)
        env["KRB5_CONFIG"] = str(self.krb5_conf)
        env["KRB5CCNAME"] = f"FILE:{self.directory / 'krb5cc'}"
        return env

    def stop(self) -> None:
        """Stop samba (SIGTERM to its process group, SIGKILL after 10 s), delete the
        namespace and remove every file. Safe to call more than once."""
        process, self.process = self.process, None
        if process is not None:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
            else:
                process.wait()
        if Path("/run/netns", self.namespace).exists():
            subprocess.run(
                [_tool("ip"), "netns", "delete", self.namespace],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                check=False,
            )
        shutil.rmtree(NETNS_ETC / self.namespace, ignore_errors=True)
        shutil.rmtree(self.directory, ignore_errors=True)
