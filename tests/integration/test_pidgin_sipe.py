"""A real Microsoft-family client: pidgin-sipe signs on through the director.

pidgin-sipe (Debian's prpl-sipe, driven headless through libpurple by tests/sipe/
purple_driver.c) connects to the director, authenticates with [MS-SIPAE] NTLM
(REGISTER -> 401 -> REGISTER gssapi-data="" -> 401 challenge -> REGISTER authenticate),
verifies the signature (`rspauth`) of the 301 with its NTLM session key, follows the 301's
Contact to home1.example.com, authenticates there the same way, verifies the signed 200
and signs on. pidgin-sipe drops the connection on a signature that does not verify
("Invalid message signature received"), so a signed-on client is proof the signatures are
right; the driver also reports pidgin-sipe's own "signature of incoming message validated"
lines, which the tests check came before the redirect and before sign-on.

The director and the home server are real `twistd -n homeredirect` processes; everything
runs in a network namespace of its own where director.example.com and home1.example.com
are 127.0.0.1 (tests/sipe/driver.py). Once over TCP, once over TLS with the certificates
verified by libpurple against the test CA (no "accept this certificate?" question).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import attrs
import pytest

from homeredirect.tools.certs import ensure_test_pki
from tests.sipe.driver import ClientResult, SipeNetwork, build_driver, sipe_unavailable

pytestmark = pytest.mark.skipif(sipe_unavailable() is not None, reason=sipe_unavailable() or "")

DIRECTOR = "director.example.com"
HOME = "home1.example.com"
PASSWORD = "Secret123"
# Fixed ports are safe: the namespace has a port space of its own.
DIRECTOR_TCP, DIRECTOR_TLS, HOME_TCP, HOME_TLS = 15070, 15071, 15080, 15081


def auth_table(targetname: str) -> str:
    return f"""
[auth]
required = true
realm = "example.com"
schemes = ["ntlm"]
ntlm_credentials = "ntlm-users.csv"
targetname = "{targetname}"
"""


def listener(transport: str, port: int) -> str:
    tls = (
        'certificate = "pki/server.pem"\nprivate_key = "pki/server.key"\n'
        if transport == "tls"
        else ""
    )
    return f'[[listen]]\ntransport = "{transport}"\nhost = "127.0.0.1"\nport = {port}\n{tls}'


def director_config(transport: str, port: int, home_port: int, auth: str | None = None) -> str:
    """A director on *port* that redirects alice to home1 over *transport*; *auth* is its
    [auth] table (default: NTLM, `auth_table`)."""
    return f"""
[server]
role = "director"
fqdn = "{DIRECTOR}"
domains = ["example.com"]

{listener(transport, port)}
[assignments]
backend = "file"
path = "assignments.csv"

[home_servers."{HOME}"]
transport = "{transport}"
port = {home_port}
{auth if auth is not None else auth_table(DIRECTOR)}"""


def home_config(auth: str) -> str:
    """home1, with TCP and TLS listeners, a memory location service and *auth*."""
    return f"""
[server]
role = "home"
fqdn = "{HOME}"
domains = ["example.com"]

{listener("tcp", HOME_TCP)}
{listener("tls", HOME_TLS)}
[location]
backend = "memory"
{auth}"""


HOME_CONFIG = home_config(auth_table(HOME))


@attrs.frozen
class Setup:
    net: SipeNetwork
    driver: Path
    ca_dir: Path


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    """The driver, built; a TCP director, a TLS director and a home server with both,
    listening in a namespace of their own; a CA directory for libpurple."""
    directory = tmp_path_factory.mktemp("pidgin-sipe")
    driver = build_driver(directory)
    pki = ensure_test_pki(directory / "pki", [DIRECTOR, HOME], ["127.0.0.1"])
    ca_dir = directory / "ca"
    ca_dir.mkdir()
    (ca_dir / "homeredirect-test-ca.pem").write_bytes(pki.ca_certificate.read_bytes())
    (directory / "ntlm-users.csv").write_text(f"user,password\nalice@example.com,{PASSWORD}\n")
    (directory / "assignments.csv").write_text(f"user,home_server\nalice@example.com,{HOME}\n")
    with SipeNetwork.create([DIRECTOR, HOME], directory) as net:
        net.start_server("home", HOME_CONFIG)
        net.start_server("director-tcp", director_config("tcp", DIRECTOR_TCP, HOME_TCP))
        net.start_server("director-tls", director_config("tls", DIRECTOR_TLS, HOME_TLS))
        net.wait_listening([DIRECTOR_TCP, DIRECTOR_TLS, HOME_TCP, HOME_TLS])
        yield Setup(net, driver, ca_dir)


def in_order(lines: Sequence[str], steps: Sequence[Callable[[str], bool]]) -> bool:
    """Whether *lines* has a line matching each of *steps*, in that order."""
    position = 0
    for step in steps:
        while position < len(lines) and not step(lines[position]):
            position += 1
        if position == len(lines):
            return False
        position += 1
    return True


def has(text: str) -> Callable[[str], bool]:
    return lambda line: text in line


def assert_signed_on_through_the_redirect(result: ClientResult, home_port: int) -> None:
    assert result.signed_on, result.summary()
    lines = result.sipe_lines()
    verified = has("signature of incoming message validated")
    assert in_order(
        lines,
        [
            has(f"sip_transport_connected: '{DIRECTOR}:"),
            verified,  # the signed 301
            has("authentication handshake completed successfully (with redirect)"),
            has(f"redirected to host {HOME} port {home_port}"),
            has(f"sip_transport_connected: '{HOME}:{home_port}'"),
            verified,  # the signed 200
            lambda line: line.endswith("authentication handshake completed successfully"),
        ],
    ), result.summary()
    assert not any("is invalid" in line or "without authentication" in line for line in lines)
    assert not result.named("request"), result.summary()
    assert not result.named("error"), result.summary()


def assert_failed_at_the_director(result: ClientResult) -> None:
    """The client gave up without signing on and never heard of home1."""
    assert result.status == 1, result.summary()
    assert not result.named("signed-on")
    assert not any(HOME in line for line in result.sipe_lines()), result.summary()


def test_pidgin_sipe_signs_on_over_tcp(setup: Setup) -> None:
    """NTLM at the director, the signed 301 verified and followed, NTLM at the home server,
    the signed 200 verified, signed on; still connected a second later."""
    result = setup.net.run_client(
        setup.driver,
        server=f"{DIRECTOR}:{DIRECTOR_TCP}",
        password=PASSWORD,
        transport="tcp",
        linger=1,
    )
    assert_signed_on_through_the_redirect(result, HOME_TCP)
    assert result.named("done") == [{"event": "done", "status": "0"}]


def test_pidgin_sipe_signs_on_over_tls_with_verified_certificates(setup: Setup) -> None:
    result = setup.net.run_client(
        setup.driver,
        server=f"{DIRECTOR}:{DIRECTOR_TLS}",
        password=PASSWORD,
        transport="tls",
        ca_dir=setup.ca_dir,
    )
    assert_signed_on_through_the_redirect(result, HOME_TLS)


def test_untrusted_certificate_is_a_question_the_driver_refuses(setup: Setup) -> None:
    """Without the test CA libpurple asks whether to accept the director's certificate;
    the driver fails instead of answering, so the test above verified TLS for real."""
    result = setup.net.run_client(
        setup.driver,
        server=f"{DIRECTOR}:{DIRECTOR_TLS}",
        password=PASSWORD,
        transport="tls",
    )
    assert result.status == 1, result.summary()
    assert [r["primary"] for r in result.named("request")] == [
        f"Accept certificate for {DIRECTOR}?"
    ], result.summary()


def test_wrong_password_fails_at_the_director(setup: Setup) -> None:
    result = setup.net.run_client(
        setup.driver,
        server=f"{DIRECTOR}:{DIRECTOR_TCP}",
        password="not-" + PASSWORD,
        transport="tcp",
    )
    assert_failed_at_the_director(result)
    # PURPLE_CONNECTION_ERROR_AUTHENTICATION_FAILED
    assert [e["reason"] for e in result.named("error")] == ["2"], result.summary()
