"""The directory service on a real loopback port: a client following SRV then A finds the
director, unknown names get an authoritative NXDOMAIN, and `homeredirect zone` prints exactly
what is served. Also the `homeredirect dns` command as an operator runs it."""

from __future__ import annotations

import contextlib
import io
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from twisted.application.service import IService
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import deferLater
from twisted.names import client, dns, error
from twisted.names.authority import BindAuthority
from twisted.trial.unittest import TestCase
from zope.interface.verify import verifyObject

from homeredirect.cli import main as cli_main
from homeredirect.config.load import load_config
from homeredirect.dns.server import make_dns_service

HOMEREDIRECT = str(Path(sys.executable).with_name("homeredirect"))

CONFIG = """
[server]
fqdn = "director.example.com"
domains = ["example.com"]

[[listen]]
transport = "udp"
port = 0

[assignments]
path = "assignments.csv"

[home_servers."home1.example.com"]
host = "127.0.0.1"
port = 5173

[dns]
host = "127.0.0.1"
port = {port}

[[dns.servers]]
fqdn = "director.example.com"
addresses = ["127.0.0.1", "::1"]
transports = {{ tls = 5171, tcp = 5170, udp = 5170 }}
"""


def write_config(directory: Path, port: int = 0) -> Path:
    (directory / "assignments.csv").write_text("user,home_server\n")
    path = directory / "director.toml"
    path.write_text(CONFIG.format(port=port))
    return path


def payloads(records: list[dns.RRHeader]) -> list[Any]:
    return [record.payload for record in records]


class DirectoryServiceTests(TestCase):
    def setUp(self) -> None:
        self.directory = Path(self.mktemp()).resolve()
        self.directory.mkdir()
        self.config_path = write_config(self.directory)
        self.service = make_dns_service(load_config(self.config_path), reactor)
        self.service.startService()
        self.addCleanup(self.service.stopService)
        self.server = ("127.0.0.1", self.service.address[1])
        self.resolver = client.Resolver(servers=[self.server])

    def test_service_provides_iservice(self) -> None:
        self.assertTrue(verifyObject(IService, self.service))

    @inlineCallbacks
    def test_client_following_sipinternaltls_srv_then_a_finds_the_director(self):  # type: ignore[no-untyped-def]
        answers, _, additional = yield self.resolver.lookupService(
            "_sipinternaltls._tcp.example.com"
        )
        (srv,) = payloads(answers)
        self.assertEqual((srv.target.name, srv.port), (b"director.example.com", 5171))
        self.assertTrue(answers[0].auth)
        # The target's addresses come along (RFC 2782), and a separate A query agrees.
        self.assertIn(
            dns.Record_A("127.0.0.1", ttl=300),
            payloads(additional),
        )
        addresses, _, _ = yield self.resolver.lookupAddress(srv.target.name)
        self.assertEqual(payloads(addresses), [dns.Record_A("127.0.0.1", ttl=300)])

    @inlineCallbacks
    def test_sip_tls_srv_names_the_director_tls_port(self):  # type: ignore[no-untyped-def]
        answers, _, _ = yield self.resolver.lookupService("_sip._tls.example.com")
        self.assertEqual(
            payloads(answers), [dns.Record_SRV(10, 100, 5171, b"director.example.com", ttl=300)]
        )

    @inlineCallbacks
    def test_naptr_on_the_domain_offers_sips_then_tcp_then_udp(self):  # type: ignore[no-untyped-def]
        answers, _, _ = yield self.resolver.lookupNamingAuthorityPointer("example.com")
        self.assertEqual(
            sorted((r.order, r.service.string, r.replacement.name) for r in payloads(answers)),
            [
                (50, b"SIPS+D2T", b"_sips._tcp.example.com"),
                (90, b"SIP+D2T", b"_sip._tcp.example.com"),
                (100, b"SIP+D2U", b"_sip._udp.example.com"),
            ],
        )

    @inlineCallbacks
    def test_home_server_named_in_a_redirect_resolves(self):  # type: ignore[no-untyped-def]
        answers, _, _ = yield self.resolver.lookupAddress("home1.example.com")
        self.assertEqual(payloads(answers), [dns.Record_A("127.0.0.1", ttl=300)])

    @inlineCallbacks
    def test_unknown_name_gets_authoritative_nxdomain_with_the_soa(self):  # type: ignore[no-untyped-def]
        started = time.monotonic()
        failure = yield self.assertFailure(
            self.resolver.lookupService("_sipfederationtls._tcp.example.com"), error.DNSNameError
        )
        self.assertLess(time.monotonic() - started, 1.0)  # an answer, not a timeout
        message = failure.args[0]
        self.assertTrue(message.auth)
        (soa,) = message.authority
        self.assertEqual((soa.name.name, soa.type), (b"example.com", dns.SOA))

    @inlineCallbacks
    def test_missing_type_gets_authoritative_nodata(self):  # type: ignore[no-untyped-def]
        message = yield self.resolver.queryUDP([dns.Query(b"director.example.com", dns.MX)])
        self.assertEqual((message.rCode, message.auth, message.answers), (dns.OK, True, []))
        self.assertEqual([r.type for r in message.authority], [dns.SOA])

    @inlineCallbacks
    def test_name_outside_our_zones_is_refused(self):  # type: ignore[no-untyped-def]
        yield self.assertFailure(
            self.resolver.lookupAddress("www.example.net"), error.DNSQueryRefusedError
        )

    @inlineCallbacks
    def test_tcp_gets_the_same_answer(self):  # type: ignore[no-untyped-def]
        message = yield self.resolver.queryTCP([dns.Query(b"_sip._tls.example.com", dns.SRV)])
        # The resolver keeps its TCP connection for further queries: close it.
        for connection in self.resolver.connections:
            connection.transport.abortConnection()
        yield deferLater(reactor, 0, lambda: None)  # abortConnection completes next turn
        self.assertTrue(message.auth)
        self.assertEqual(
            payloads(message.answers),
            [dns.Record_SRV(10, 100, 5171, b"director.example.com", ttl=300)],
        )

    @inlineCallbacks
    def test_zone_command_prints_the_served_records(self):  # type: ignore[no-untyped-def]
        output = io.StringIO()
        with contextlib.redirect_stdout(output):
            status = cli_main(["zone", "--config", str(self.config_path)])
        self.assertEqual(status, 0)
        zone_file = self.directory / "example.com"
        zone_file.write_text(output.getvalue())
        printed = BindAuthority(str(zone_file)).records
        self.assertEqual(len(printed), 9)  # the apex, six SRV names, director, home1
        for name, records in printed.items():
            for record_type in {record.TYPE for record in records}:
                message = yield self.resolver.queryUDP([dns.Query(name, record_type)])
                self.assertEqual(
                    sorted(canonical(r.payload) for r in message.answers),
                    sorted(canonical(r) for r in records if r.TYPE == record_type),
                    f"{name!r} {dns.QUERY_TYPES[record_type]}",
                )


def canonical(record: Any) -> tuple[Any, ...]:
    """A twisted.names record as comparable values: the zone file's NAPTR strings keep their
    quotes and its names their trailing dots."""
    values = []
    for attribute in record.compareAttributes:
        value = getattr(record, attribute)
        if isinstance(value, dns.Name):
            value = value.name.rstrip(b".").lower()
        elif isinstance(value, dns.Charstr):
            value = value.string.strip(b'"')
        values.append(value)
    return (record.TYPE, *values)


def free_port() -> int:
    """A port free for both UDP and TCP on loopback, at the time of asking."""
    for _ in range(20):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            port = int(udp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise AssertionError("no port free for both UDP and TCP")


def ask(port: int, name: bytes, record_type: int, timeout: float) -> dns.Message | None:
    """One blocking UDP query; None on timeout."""
    query = dns.Message(id=4242)
    query.queries = [dns.Query(name, record_type)]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(query.toStr(), ("127.0.0.1", port))
        try:
            data = sock.recv(65_535)
        except (TimeoutError, ConnectionRefusedError):
            return None
    answer = dns.Message()
    answer.fromStr(data)
    return answer


def test_dns_command_serves_until_sigterm(tmp_path: Path) -> None:
    port = free_port()
    process = subprocess.Popen(
        [HOMEREDIRECT, "dns", "--config", str(write_config(tmp_path, port))],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 15
        answer = None
        while answer is None and time.monotonic() < deadline and process.poll() is None:
            answer = ask(port, b"_sipinternaltls._tcp.example.com", dns.SRV, timeout=0.2)
        assert answer is not None, "no answer from homeredirect dns"
        assert [r.payload.port for r in answer.answers] == [5171]
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, output
    assert f"DNS service answering for example.com on 127.0.0.1 port {port}" in output
    assert "DNS service stopped" in output
    assert "Traceback" not in output


def test_dns_command_refuses_a_bad_config_in_one_line(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    path.write_text(path.read_text().replace('addresses = ["127.0.0.1", "::1"]', ""))
    result = subprocess.run(
        [HOMEREDIRECT, "dns", "--config", str(path)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == (
        f"homeredirect dns: {path}: [[dns.servers]][1].addresses: expected at least one IPv4 "
        "or IPv6 address: director.example.com is inside the zone example.com, which this "
        "service answers for, got []\n"
    )


def test_dns_command_reports_a_port_in_use_in_one_line(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        result = subprocess.run(
            [HOMEREDIRECT, "dns", "--config", str(write_config(tmp_path, port))],
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert result.returncode == 1
    assert result.stderr.startswith(f"homeredirect dns: cannot listen on 127.0.0.1:{port}: ")
    assert len(result.stderr.splitlines()) == 1
