"""A small SIP client that sends one REGISTER and prints the answer.

    python -m homeredirect.tools.register sip:alice@example.com \\
        --server tls:127.0.0.1:5071 --ca run/ca.pem

It is a command-line tool, not part of the server: it uses blocking sockets
and the standard library's ssl module, and our own parser to read the reply.
Exit status: 0 for any final response, 1 on timeout or transport failure.
"""

from __future__ import annotations

import argparse
import secrets
import socket
import ssl
import sys
from collections.abc import Sequence

from attrs import evolve, field, frozen

from homeredirect.auth.digest import DigestAlgorithm
from homeredirect.auth.digest_client import answer_challenge
from homeredirect.sip.credentials import parse_auth_value
from homeredirect.sip.headers import parse_contacts
from homeredirect.sip.message import Response
from homeredirect.sip.parser import MessageReceived, StreamParser, parse_datagram


@frozen
class Dialogue:
    """What stays the same between a REGISTER and its authenticated retry (RFC 3261
    §10.2: same Call-ID, CSeq incremented; §22.2: credentials added)."""

    call_id: str = field(factory=lambda: secrets.token_hex(8))
    from_tag: str = field(factory=lambda: secrets.token_hex(4))
    cseq: int = 1
    authorization: tuple[str, str] | None = None


def build_register(
    aor: str,
    transport: str,
    local: tuple[str, int],
    extra_vias: int,
    dialogue: Dialogue | None = None,
) -> bytes:
    """A REGISTER for *aor* (RFC 3261 §10.2) with one Via of ours, plus
    *extra_vias* further Vias as if it had come through proxies."""
    dialogue = dialogue or Dialogue()
    domain = aor.split("@", 1)[1]
    host, port = local
    branch = "z9hG4bK" + secrets.token_hex(8)
    vias = [f"Via: SIP/2.0/{transport.upper()} {host}:{port};branch={branch};rport"]
    vias += [
        f"Via: SIP/2.0/{transport.upper()} 127.0.0.{n + 2}:5060"
        f";branch=z9hG4bK{secrets.token_hex(8)}"
        for n in range(extra_vias)
    ]
    lines = [
        f"REGISTER sip:{domain} SIP/2.0",
        *vias,
        "Max-Forwards: 70",
        f"From: <{aor}>;tag={dialogue.from_tag}",
        f"To: <{aor}>",
        f"Call-ID: {dialogue.call_id}@register",
        f"CSeq: {dialogue.cseq} REGISTER",
        *(
            [f"{dialogue.authorization[0]}: {dialogue.authorization[1]}"]
            if dialogue.authorization
            else []
        ),
        (
            f"Contact: <sip:{aor.split(':', 1)[1].split('@', 1)[0]}@{host}:{port}"
            f";transport={transport}>"
        ),
        "Expires: 3600",
        "User-Agent: homeredirect-register",
        "Content-Length: 0",
        "",
        "",
    ]
    return "\r\n".join(lines).encode()


def exchange(
    aor: str,
    transport: str,
    host: str,
    port: int,
    ca: str | None,
    timeout: float,
    extra_vias: int,
    dialogue: Dialogue | None = None,
) -> Response:
    """Send the REGISTER and wait for the first final response."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    if transport == "udp":
        sock = socket.socket(family, socket.SOCK_DGRAM)
        sock.settimeout(timeout)
        sock.connect((host, port))
        local = sock.getsockname()[:2]
        sock.send(build_register(aor, transport, local, extra_vias, dialogue))
        while True:
            event = parse_datagram(sock.recv(65_536))
            if isinstance(event, MessageReceived) and isinstance(event.message, Response):
                if event.message.status >= 200:
                    return event.message
    raw = socket.create_connection((host, port), timeout=timeout)
    if transport == "tls":
        context = ssl.create_default_context(cafile=ca)
        if ca is None:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        raw = context.wrap_socket(raw, server_hostname=host)
    local = raw.getsockname()[:2]
    raw.sendall(build_register(aor, transport, local, extra_vias, dialogue))
    parser = StreamParser()
    while True:
        data = raw.recv(65_536)
        if not data:
            raise ConnectionError("connection closed before a final response")
        for event in parser.feed(data):
            if isinstance(event, MessageReceived) and isinstance(event.message, Response):
                if event.message.status >= 200:
                    return event.message


def describe(response: Response) -> str:
    lines = [f"{response.status} {response.reason}"]
    contacts = response.headers.get_all("Contact")
    if contacts:
        parsed = parse_contacts(contacts)
        if isinstance(parsed, list):  # else "*"
            for contact in parsed:
                q = contact.param("q")
                lines.append(f"  Contact: {contact.uri}" + (f" (q={q})" if q else ""))
    for name in ("Retry-After", "Server"):
        value = response.headers.get(name)
        if value is not None:
            lines.append(f"  {name}: {value}")
    return "\n".join(lines)


def _answer(response: Response, aor: str, username: str | None, password: str) -> tuple[str, str]:
    """The Authorization (or Proxy-Authorization) header answering the strongest Digest
    challenge we can (RFC 8760 §2.4: the server lists them in its order of preference)."""
    proxy = response.status == 407
    challenges = response.headers.get_all("Proxy-Authenticate" if proxy else "WWW-Authenticate")
    user = username or aor.split(":", 1)[1].split("@", 1)[0]
    for value in challenges:
        challenge = parse_auth_value(value, "WWW-Authenticate")
        if challenge.scheme_is("Digest") and DigestAlgorithm.named(challenge.get("algorithm")):
            domain = aor.split("@", 1)[1]
            credentials = answer_challenge(
                challenge, method="REGISTER", uri=f"sip:{domain}", username=user, password=password
            )
            return ("Proxy-Authorization" if proxy else "Authorization", credentials)
    raise ValueError("no Digest challenge with an algorithm we know")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m homeredirect.tools.register", description=__doc__.split("\n")[0]
    )
    parser.add_argument("aor", help="address of record, e.g. sip:alice@example.com")
    parser.add_argument(
        "--server", required=True, help="TRANSPORT:HOST:PORT, e.g. tls:127.0.0.1:5071"
    )
    parser.add_argument("--ca", help="CA certificate (PEM) to verify a TLS server against")
    parser.add_argument("--timeout", type=float, default=5.0)
    parser.add_argument(
        "--extra-vias", type=int, default=0, help="pretend to come through N proxies"
    )
    parser.add_argument("--password", help="answer a Digest challenge (401/407) with this password")
    parser.add_argument("--username", help="the Digest username (default: the AOR's user part)")
    args = parser.parse_args(argv)
    transport, _, hostport = args.server.partition(":")
    host, _, port_text = hostport.rpartition(":")
    aor = args.aor if args.aor.startswith(("sip:", "sips:")) else f"sip:{args.aor}"
    if (
        transport not in ("udp", "tcp", "tls")
        or not host
        or not port_text.isdigit()
        or "@" not in aor
    ):
        parser.error(
            "expected --server udp|tcp|tls:HOST:PORT and an AOR like sip:alice@example.com"
        )
    target = (transport, host.strip("[]"), int(port_text), args.ca, args.timeout, args.extra_vias)
    try:
        dialogue = Dialogue()
        response = exchange(aor, *target, dialogue)
        if response.status in (401, 407) and args.password is not None:
            authorization = _answer(response, aor, args.username, args.password)
            retry = evolve(dialogue, cseq=dialogue.cseq + 1, authorization=authorization)
            response = exchange(aor, *target, retry)
    except ValueError as error:
        print(f"cannot authenticate: {error}", file=sys.stderr)
        return 1
    except (OSError, ConnectionError) as error:
        print(f"no answer from {args.server}: {error}", file=sys.stderr)
        return 1
    print(describe(response))
    return 0


if __name__ == "__main__":
    sys.exit(main())
