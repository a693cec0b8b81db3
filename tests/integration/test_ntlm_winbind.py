"""[MS-SIPAE] NTLM checked at a real Active Directory domain controller through winbind.

tests/samba_ad.py's Samba domain controller runs here with winbindd as well, and alice
(`HRAD\\alice`) gets a known password. A director in this process has `ntlm_backend =
"winbind"`: its `ntlm_auth --helper-protocol=ntlm-server-1` helpers run inside the domain
controller's network namespace. ntlm_auth finds winbindd at the socket directory compiled
into libwbclient (/run/samba/winbindd), so each helper starts in the private mount
namespace `ip netns exec` gives it and bind-mounts the domain controller's socket
directory there first (only an empty /run/samba/winbindd is made on the host).

The gss-ntlmssp datagram initiator (tests/ntlm_initiator.py) signs on with alice's domain
password; the signed 301's `rspauth` verifying with the initiator's session key proves
that the key winbind returned is the right one. Starting the domain controller takes 10
to 20 seconds, once for the module.
"""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any, ClassVar

import pytest
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from homeredirect.auth.ntlm.winbind import WinbindChecker
from homeredirect.sip.credentials import parse_auth_value
from homeredirect.sip.message import Response
from tests.integration.support import director_config, start_director, udp_client
from tests.integration.test_ntlm_register import REALM, TARGET, Dialog, ntlm
from tests.ntlm_initiator import UNAVAILABLE  # first: before anything imports gssapi
from tests.samba_ad import DOMAIN, SambaDomainController, samba_ad_unavailable

if UNAVAILABLE is None:
    from tests.ntlm_initiator import DatagramInitiator

ALICE_PASSWORD = "Al1ce!" + "Samba-test-only"


def _unavailable() -> str | None:
    if UNAVAILABLE is not None:
        return str(UNAVAILABLE)
    return samba_ad_unavailable() or (
        None if Path("/usr/bin/ntlm_auth").exists() else "ntlm_auth missing (Debian winbind)"
    )


pytestmark = pytest.mark.skipif(_unavailable() is not None, reason=_unavailable() or "")


class WinbindDomainController(SambaDomainController):
    """The test domain controller with winbindd, and a password for alice."""

    server_services = "ldap kdc winbindd"

    def _populate(self) -> None:
        super()._populate()
        self._samba_tool(
            "user", "setpassword", "alice", f"--newpassword={ALICE_PASSWORD}",
            "-H", str(self.sam_ldb),
        )  # fmt: skip

    def _start(self, timeout: float) -> None:
        """Return once winbindd answers too (samba starts it after LDAP)."""
        super()._start(timeout)
        deadline = time.monotonic() + timeout
        ping = self.with_winbindd(["/usr/bin/wbinfo", "--ping"])
        while time.monotonic() < deadline:
            if subprocess.run(ping, capture_output=True, check=False, timeout=10).returncode == 0:
                return
            time.sleep(0.1)  # fixture set-up, before the reactor runs
        raise RuntimeError(f"winbindd did not start: {self.log.read_text(errors='replace')}")

    def with_winbindd(self, argv: list[str]) -> list[str]:
        """*argv* in the namespace, with this domain controller's winbindd socket
        directory mounted where libwbclient looks for it."""
        mount = 'mkdir -p /run/samba/winbindd && mount --bind "$0" /run/samba/winbindd && exec "$@"'
        sockets = self.target / "run" / "winbindd"
        return self.in_namespace(["sh", "-c", mount, str(sockets), *argv])

    def ntlm_auth(self) -> list[str]:
        """The `[auth] ntlm_auth` command line: ntlm_auth in the namespace, talking to
        this domain controller's winbindd."""
        return self.with_winbindd(["/usr/bin/ntlm_auth", f"--configfile={self.smb_conf}"])


class WinbindNtlmTests(TestCase):
    dc: ClassVar[WinbindDomainController]

    @classmethod
    def setUpClass(cls) -> None:
        cls.dc = WinbindDomainController.start()

    @classmethod
    def tearDownClass(cls) -> None:
        cls.dc.stop()

    def setUp(self) -> None:
        directory = Path(self.mktemp()).resolve()
        directory.mkdir()
        config = director_config(directory, transports=("udp",))
        config["auth"] = {
            "required": True,
            "realm": "example.com",
            "schemes": ["ntlm"],
            "targetname": TARGET,
            "ntlm_domain": DOMAIN,
            "ntlm_backend": "winbind",
            "ntlm_auth": self.dc.ntlm_auth(),
            "ntlm_auth_helpers": 1,
            "ntlm_auth_timeout": 20,
        }
        self.service = start_director(directory, config)
        self.addCleanup(self.service.stopService)
        self.port = self.service.listener("udp").address[1]
        self.client = udp_client()
        self.addCleanup(self.client.transport.stopListening)
        [self.checker] = [s for s in self.service if isinstance(s, WinbindChecker)]

    @inlineCallbacks
    def exchange(self, data: bytes) -> Any:
        self.client.transport.write(data, ("127.0.0.1", self.port))
        response = yield self.client.next(timeout=25)
        assert isinstance(response, Response)
        return response

    @inlineCallbacks
    def handshake(self, password: str) -> Any:
        dialog = Dialog(self.client.port)
        yield self.exchange(dialog.register())
        initiator = DatagramInitiator("alice", DOMAIN, password, TARGET)
        initiator.first_token()
        second = yield self.exchange(dialog.register(ntlm(gssapi_data="")))
        challenge = parse_auth_value(second.headers.get("WWW-Authenticate") or "")
        token = initiator.answer(base64.b64decode(challenge.params["gssapi-data"]))
        final = yield self.exchange(
            dialog.register(
                ntlm(
                    opaque=challenge.params["opaque"], gssapi_data=base64.b64encode(token).decode()
                )
            )
        )
        return initiator, final

    def assert_signed_for(self, response: Response, initiator: Any) -> None:
        from homeredirect.auth.signature import SignedFields, signature_string

        info = parse_auth_value(response.headers.get("Authentication-Info") or "")
        fields = SignedFields("NTLM", info.params["srand"], info.params["snum"], REALM, TARGET)
        text = signature_string(response, fields, 4)
        self.assertTrue(initiator.verify(text, bytes.fromhex(info.params["rspauth"]), 100))

    @inlineCallbacks
    def test_domain_user_gets_a_301_signed_with_the_key_from_winbind(self) -> Any:
        initiator, final = yield self.handshake(ALICE_PASSWORD)
        self.assertEqual(final.status, 301)
        self.assertIn("home1.example.com", final.headers.get("Contact") or "")
        self.assert_signed_for(final, initiator)

    @inlineCallbacks
    def test_wrong_domain_password_gets_a_fresh_challenge(self) -> Any:
        _, final = yield self.handshake("not-" + ALICE_PASSWORD)
        self.assertEqual(final.status, 401)
        self.assertIsNone(final.headers.get("Authentication-Info"))
        self.assertNotIn("gssapi-data", final.headers.get("WWW-Authenticate") or "")

    @inlineCallbacks
    def test_helper_killed_between_logons_is_restarted(self) -> Any:
        for _ in range(250):
            if self.checker.helper_pids:
                break
            yield deferLater(reactor, 0.02, lambda: None)
        [pid] = self.checker.helper_pids
        os.kill(pid, signal.SIGKILL)
        initiator, final = yield self.handshake(ALICE_PASSWORD)
        self.assertEqual(final.status, 301)
        self.assert_signed_for(final, initiator)
        self.assertNotIn(pid, self.checker.helper_pids)
