"""SIPp drives INVITE dialogs through an edge and a director to a home server stand-in.

A SIPp UAC calls bob@example.com at the edge (`role = "edge"`, `[edge] next_hop` the
director); the edge forwards to the director, which proxies (two Vias) to bob's home
server, a SIPp UAS listening where `[home_servers."home1.example.com"]` says. Both proxies
record-route (`[proxy] record_route = true`), so the 100/180/200 come back through both,
and the caller's ACK and BYE follow the Record-Route path (RFC 3261 §12.1.2, §16.12):
each proxy passes on only a request whose Route carries its own `hr` token.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import TestCase

from homeredirect.service import HomeRedirectService
from tests.integration.support import director_config, start_director
from tests.integration.test_sipp import free_port

DATA = Path(__file__).parent.parent / "data" / "sipp"
SIPP = shutil.which("sipp")
CALLS = 5


def sipp_args(scenario: str, directory: Path, name: str, *extra: str) -> list[str]:
    """Bounded SIPp options: CALLS calls, a global timeout, errors traced to a file."""
    return [
        "-sf", str(DATA / scenario), "-i", "127.0.0.1",
        "-mp", str(free_port()), "-t", "u1", "-m", str(CALLS),
        "-nostdin", "-nd", "-timeout", "30s", "-timeout_error", "-recv_timeout", "10000",
        "-trace_err", "-error_file", str(directory / f"{name}-errors.log"), *extra,
    ]  # fmt: skip


def errors_of(directory: Path, name: str) -> str:
    path = directory / f"{name}-errors.log"
    return path.read_text()[-2000:] if path.exists() else ""


@pytest.mark.skipif(
    SIPP is None, reason="sipp is installed by `make test` (apt package sip-tester)"
)
class SippInviteThroughEdgeAndDirectorTests(TestCase):
    timeout = 60

    def start(self, directory: Path, config: dict[str, Any]) -> HomeRedirectService:
        service = start_director(directory, config)
        self.addCleanup(service.stopService)
        return service

    @inlineCallbacks
    def test_sipp_calls_complete_invite_ack_bye_through_edge_and_director(self):  # type: ignore[no-untyped-def]
        directory = Path(self.mktemp()).resolve()
        directory.mkdir()
        home_port = free_port()
        director = director_config(
            directory,
            transports=("udp",),
            assignments="user,home_server\nbob@example.com,home1.example.com\n",
            home_servers={
                "home1.example.com": {"host": "127.0.0.1", "port": home_port, "transport": "udp"}
            },
        )
        director["proxy"] = {"record_route": True}
        director_service = self.start(directory, director)
        director_port = director_service.listener("udp").address[1]
        edge_directory = directory / "edge"
        edge_directory.mkdir()
        edge_service = self.start(
            edge_directory,
            {
                "server": {"role": "edge", "fqdn": "edge.example.com", "domains": ["example.com"]},
                "listen": [{"transport": "udp", "host": "127.0.0.1", "port": 0}],
                "edge": {"next_hop": f"sip:director.example.com:{director_port};transport=udp"},
                "home_servers": {"director.example.com": {"host": "127.0.0.1"}},
                "proxy": {"record_route": True},
            },
        )
        edge_port = edge_service.listener("udp").address[1]
        assert SIPP is not None
        # The home stand-in first; a UAC INVITE that reaches it before it listens is
        # retransmitted by the director's client transaction (Timer A).
        uas = getProcessOutputAndValue(
            SIPP,
            sipp_args("invite_uas.xml", directory, "uas", "-p", str(home_port)),
            path=str(directory),
            reactor=reactor,
        )
        uac_args = sipp_args("invite_uac.xml", directory, "uac", "-p", str(free_port()))
        uac = getProcessOutputAndValue(
            SIPP,
            [f"127.0.0.1:{edge_port}", *uac_args, "-r", str(CALLS), "-l", str(CALLS)],
            path=str(directory),
            reactor=reactor,
        )
        out, err, code = yield uac
        self.assertEqual(code, 0, (out[-2000:], err[-2000:], errors_of(directory, "uac")))
        uas_out, uas_err, uas_code = yield uas
        self.assertEqual(
            uas_code, 0, (uas_out[-2000:], uas_err[-2000:], errors_of(directory, "uas"))
        )
        # Every dialog ended: nothing left in either proxy's transaction tables but what
        # waits out its timers.
        for service in (edge_service, director_service):
            assert service.proxy is not None
            self.assertEqual(len(service.proxy), 0)
