"""SIPp (Debian's sip-tester) drives REGISTER -> 301 against a director on loopback."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import pytest
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import TestCase

from tests.integration.support import director_config, start_director

SCENARIO = Path(__file__).parent.parent / "data" / "sipp" / "register_301.xml"
SIPP = shutil.which("sipp")


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.skipif(
    SIPP is None, reason="sipp is installed by `make test` (apt package sip-tester)"
)
class SippRegisterTests(TestCase):
    timeout = 120

    @inlineCallbacks
    def test_sipp_register_calls_all_get_301_to_their_home(self):  # type: ignore[no-untyped-def]
        directory = Path(self.mktemp()).resolve()
        directory.mkdir()
        users = [
            (f"user{n}", "home1.example.com" if n % 2 else "home2.example.com") for n in range(200)
        ]
        assignments = "user,home_server\n" + "".join(f"{u}@example.com,{h}\n" for u, h in users)
        service = start_director(
            directory, director_config(directory, transports=("udp",), assignments=assignments)
        )
        self.addCleanup(service.stopService)
        injection = directory / "users.csv"
        injection.write_text("SEQUENTIAL\n" + "".join(f"{u};example.com;{h}\n" for u, h in users))
        port = service.listener("udp").address[1]
        args = [
            f"127.0.0.1:{port}", "-sf", str(SCENARIO), "-inf", str(injection),
            "-i", "127.0.0.1", "-p", str(free_port()), "-cp", str(free_port()),
            "-mp", str(free_port()),
            "-t", "u1", "-m", str(len(users)), "-r", "200", "-l", "200",
            "-nostdin", "-nd", "-timeout", "60s", "-timeout_error", "-recv_timeout", "5000",
            "-trace_err", "-error_file", str(directory / "errors.log"),
        ]  # fmt: skip
        out, err, code = yield getProcessOutputAndValue(
            SIPP, args, path=str(directory), reactor=reactor
        )
        errors = (
            (directory / "errors.log").read_text() if (directory / "errors.log").exists() else ""
        )
        self.assertEqual(code, 0, (out[-2000:], err[-2000:], errors[-2000:]))
        self.assertIn(b"Successful call", out + err)
