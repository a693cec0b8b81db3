"""A home server on loopback: SIPp registration flows (register, refresh, unregister,
expiry, wildcard removal, 423, a second device), a misdirected REGISTER redirected to the
right home, and requests to registered users forwarded to a raw UDP "phone"."""

from __future__ import annotations

import shutil
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import TestCase

from homeredirect.service import HomeRedirectService
from homeredirect.sip.message import Request, Response
from tests.integration.support import (
    connect_stream,
    disconnect,
    register,
    start_director,
    udp_client,
)

SIPP_DATA = Path(__file__).parent.parent / "data" / "sipp"
SIPP = shutil.which("sipp")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def home_config(
    directory: Path,
    *,
    fqdn: str = "home1.example.com",
    assignments: str | None = None,
    transports: tuple[str, ...] = ("udp",),
) -> dict[str, Any]:
    """A home server on a free UDP port with the in-memory store; every user of
    example.com is local unless *assignments* (CSV text) says otherwise."""
    config: dict[str, Any] = {
        "server": {"role": "home", "fqdn": fqdn, "domains": ["example.com"]},
        "listen": [{"transport": t, "host": "127.0.0.1", "port": 0} for t in transports],
        "location": {"backend": "memory"},
        "registrar": {"min_expires": 2, "max_expires": 7200, "default_expires": 3600},
        "home_servers": {
            "home1.example.com": {"transport": "udp", "port": 5060},
            "home2.example.com": {"transport": "udp", "port": 5060},
        },
    }
    if assignments is not None:
        (directory / "assignments.csv").write_text(assignments)
        config["assignments"] = {"backend": "file", "path": "assignments.csv"}
    return config


class _HomeServerCase(TestCase):
    timeout = 60

    def start_home(self, **kwargs: Any) -> HomeRedirectService:
        directory = Path(self.mktemp()).resolve()
        directory.mkdir()
        self.directory = directory
        service = start_director(directory, home_config(directory, **kwargs))
        self.addCleanup(service.stopService)
        return service

    def port(self, service: HomeRedirectService) -> int:
        return service.listener("udp").address[1]


@pytest.mark.skipif(
    SIPP is None, reason="sipp is installed by `make test` (apt package sip-tester)"
)
class SippRegistrationTests(_HomeServerCase):
    """Each scenario's ereg checks make SIPp fail the call when a response is wrong."""

    @inlineCallbacks
    def run_scenario(self, name: str):  # type: ignore[no-untyped-def]
        service = self.start_home()
        directory = self.directory
        args = [
            f"127.0.0.1:{self.port(service)}", "-sf", str(SIPP_DATA / name),
            "-i", "127.0.0.1", "-p", str(free_port()), "-cp", str(free_port()),
            "-mp", str(free_port()), "-t", "u1", "-m", "1",
            "-nostdin", "-nd", "-timeout", "30s", "-timeout_error", "-recv_timeout", "5000",
            "-trace_err", "-error_file", str(directory / "errors.log"),
        ]  # fmt: skip
        assert SIPP is not None
        out, err, code = yield getProcessOutputAndValue(
            SIPP, args, path=str(directory), reactor=reactor
        )
        log = directory / "errors.log"
        errors = log.read_text() if log.exists() else ""
        self.assertEqual(code, 0, (out[-2000:], err[-2000:], errors[-3000:]))
        self.assertIn(b"Successful call", out + err)

    def test_register_refresh_and_unregister(self):  # type: ignore[no-untyped-def]
        return self.run_scenario("reg_lifecycle.xml")

    def test_a_binding_expires(self):  # type: ignore[no-untyped-def]
        return self.run_scenario("reg_expiry.xml")

    def test_wildcard_removal_and_its_400(self):  # type: ignore[no-untyped-def]
        return self.run_scenario("reg_wildcard.xml")

    def test_too_brief_an_interval_gets_423_and_the_retry_succeeds(self):  # type: ignore[no-untyped-def]
        return self.run_scenario("reg_423.xml")

    def test_a_second_device_of_the_same_user(self):  # type: ignore[no-untyped-def]
        return self.run_scenario("reg_second_device.xml")


MESSAGE = (
    "MESSAGE sip:{user}@example.com SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKmsg{user};rport\r\n"
    "Max-Forwards: 70\r\n"
    "From: <sip:zoe@example.com>;tag=z1\r\nTo: <sip:{user}@example.com>\r\n"
    "Call-ID: msg-{user}@test\r\nCSeq: 1 MESSAGE\r\n"
    "Content-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello"
)


class HomeRoutingTests(_HomeServerCase):
    @inlineCallbacks
    def test_misdirected_register_gets_301_to_the_right_home(self):  # type: ignore[no-untyped-def]
        service = self.start_home(
            assignments="user,home_server\nbob@example.com,home2.example.com\n"
            "alice@example.com,home1.example.com\n"
        )
        client = udp_client()
        self.addCleanup(client.transport.stopListening)
        client.transport.write(register("bob@example.com"), ("127.0.0.1", self.port(service)))
        response = yield client.next()
        assert isinstance(response, Response)
        self.assertEqual(response.status, 301)
        self.assertEqual(
            response.headers.get("Contact"), "<sip:home2.example.com:5060;transport=udp>;q=0.7"
        )
        # ...while a user assigned here registers.
        client.transport.write(register("alice@example.com"), ("127.0.0.1", self.port(service)))
        response = yield client.next()
        assert isinstance(response, Response)
        self.assertEqual(response.status, 200)

    @inlineCallbacks
    def test_a_request_to_a_registered_user_reaches_its_phone(self):  # type: ignore[no-untyped-def]
        service = self.start_home()
        home = ("127.0.0.1", self.port(service))
        phone = udp_client()
        caller = udp_client()
        self.addCleanup(phone.transport.stopListening)
        self.addCleanup(caller.transport.stopListening)
        phone.transport.write(register("alice@example.com", via_port=phone.port), home)
        registered = yield phone.next()
        assert isinstance(registered, Response)
        self.assertEqual(registered.status, 200)

        caller.transport.write(MESSAGE.format(user="alice", port=caller.port).encode(), home)
        forwarded = yield phone.next()
        assert isinstance(forwarded, Request)
        self.assertEqual(forwarded.method, "MESSAGE")
        self.assertEqual(str(forwarded.uri), f"sip:alice@127.0.0.1:{phone.port}")
        self.assertEqual(forwarded.body, b"hello")
        self.assertEqual(len(forwarded.vias), 2)

        # The phone answers; the home server relays the answer to the caller.
        answer = _response_to(forwarded, 200, "OK")
        phone.transport.write(answer, home)
        relayed = yield caller.next()
        assert isinstance(relayed, Response)
        self.assertEqual(relayed.status, 200)
        self.assertEqual(len(relayed.vias), 1)

    @inlineCallbacks
    def test_a_phone_registered_over_tcp_is_reached_over_its_own_connection(self):  # type: ignore[no-untyped-def]
        service = self.start_home(transports=("udp", "tcp"))
        phone = yield connect_stream(service.listener("tcp").address[1])
        self.addCleanup(disconnect, phone)
        caller = udp_client()
        self.addCleanup(caller.transport.stopListening)
        # The Contact names a port nobody listens on: only the registration's own
        # connection reaches the phone.
        phone.transport.write(register("alice@example.com", transport="TCP", via_port=9))
        registered = yield phone.next()
        assert isinstance(registered, Response)
        self.assertEqual(registered.status, 200)

        caller.transport.write(
            MESSAGE.format(user="alice", port=caller.port).encode(),
            ("127.0.0.1", self.port(service)),
        )
        forwarded = yield phone.next()
        assert isinstance(forwarded, Request)
        self.assertEqual(forwarded.method, "MESSAGE")
        self.assertEqual(str(forwarded.uri), "sip:alice@127.0.0.1:9")
        self.assertTrue(forwarded.vias[0].transport == "TCP", forwarded.vias[0])

    @inlineCallbacks
    def test_a_request_to_an_unregistered_user_gets_480(self):  # type: ignore[no-untyped-def]
        service = self.start_home()
        caller = udp_client()
        self.addCleanup(caller.transport.stopListening)
        caller.transport.write(
            MESSAGE.format(user="nobody", port=caller.port).encode(),
            ("127.0.0.1", self.port(service)),
        )
        response = yield caller.next()
        assert isinstance(response, Response)
        self.assertEqual((response.status, response.reason), (480, "Temporarily Unavailable"))


def _response_to(request: Request, status: int, reason: str) -> bytes:
    copied: Mapping[str, list[str]] = {
        name: request.headers.get_all(name) for name in ("Via", "From", "To", "Call-ID", "CSeq")
    }
    lines = [f"SIP/2.0 {status} {reason}"]
    for name, values in copied.items():
        for value in values:
            suffix = ";tag=phone1" if name == "To" else ""
            lines.append(f"{name}: {value}{suffix}")
    lines += ["Content-Length: 0", "", ""]
    return "\r\n".join(lines).encode()
