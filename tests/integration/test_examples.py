"""The shipped examples work: the embedding example answers with its custom
policy, and the command-line client prints a redirect."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

from homeredirect.tools.register import main as register_main

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_embedded_director_redirects_with_the_custom_policy(capsys) -> None:  # type: ignore[no-untyped-def]
    port = free_udp_port()
    process = subprocess.Popen(
        [sys.executable, str(EXAMPLES / "embed.py"), str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 20
        code = 1
        while time.monotonic() < deadline and code != 0:
            code = register_main(
                ["sip:alice@example.com", "--server", f"udp:127.0.0.1:{port}", "--timeout", "0.5"]
            )
        assert code == 0
        output = capsys.readouterr().out
        assert "301 Redirect request to Home Server" in output
        assert "Contact: sip:home1.example.com:5061;transport=tls (q=0.7)" in output
        # Through a proxy, the custom policy still redirects a VIP (via-count would proxy)...
        through_proxy = ["--server", f"udp:127.0.0.1:{port}", "--extra-vias", "1"]
        assert register_main(["sip:vip-erin@example.com", *through_proxy]) == 0
        assert "301 Redirect request to Home Server" in capsys.readouterr().out
        # ...and proxies anyone else (this example has no TLS listener to forward over: 502).
        assert register_main(["sip:alice@example.com", *through_proxy]) == 0
        assert capsys.readouterr().out.startswith("502 ")
    finally:
        process.terminate()
        process.wait(timeout=10)
        assert process.stdout is not None
        process.stdout.close()
