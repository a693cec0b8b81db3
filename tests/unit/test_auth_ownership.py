"""The authenticated identity must own the AOR a request acts for: To of a REGISTER
(RFC 3261 §10.3 step 3, tested in test_core_auth), From of every other request. A MESSAGE
may go to anyone, but only from the user who authenticated (issue 7, "Authentication
before redirect"); a request sent as someone else gets 403 before anything is looked up.

Requests other than REGISTER are challenged as a proxy challenges (407 and
`Proxy-Authenticate`, answered in `Proxy-Authorization`, RFC 3261 §22.3)."""

from __future__ import annotations

from pathlib import Path

from homeredirect.auth.digest_client import answer_challenge
from homeredirect.sip.credentials import parse_auth_value
from homeredirect.sip.message import Request, Response
from homeredirect.sip.parser import MessageReceived, parse_datagram
from tests.unit.fakes import RecordingFlow
from tests.unit.test_core_auth import last, make


def message(to: str, sender: str, credentials: str | None = None, cseq: int = 1) -> Request:
    """A MESSAGE from `sender` to `to` (users of example.com; `sender` may be empty for a
    From naming no user) with `credentials` in Proxy-Authorization."""
    header = f"Proxy-Authorization: {credentials}\r\n" if credentials else ""
    sender_uri = f"sip:{sender}@example.com" if sender else "sip:example.com"
    data = (
        f"MESSAGE sip:{to}@example.com SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 192.0.2.10:5099;branch=z9hG4bK{cseq}m\r\nMax-Forwards: 70\r\n"
        f"From: <{sender_uri}>;tag=f\r\nTo: <sip:{to}@example.com>\r\n"
        f"Call-ID: m@x\r\nCSeq: {cseq} MESSAGE\r\n{header}Content-Length: 0\r\n\r\n"
    ).encode()
    event = parse_datagram(data)
    assert isinstance(event, MessageReceived) and isinstance(event.message, Request)
    return event.message


def proxy_credentials(challenge: Response, to: str) -> str:
    """alice's answer to a 407, for a MESSAGE to `to`."""
    assert challenge.status == 407
    assert challenge.headers.get("WWW-Authenticate") is None
    value = challenge.headers.get("Proxy-Authenticate") or ""
    return answer_challenge(
        parse_auth_value(value, "Proxy-Authenticate"),
        method="MESSAGE",
        uri=f"sip:{to}@example.com",
        username="alice",
        password="wonderland",
    )


def sent_as_alice(tmp_path: Path, to: str, sender: str) -> tuple[Response, list[str]]:
    """The answer to a MESSAGE from `sender` to `to` once alice has authenticated, and
    the AORs looked up on its way."""
    core, resolver, _ = make(tmp_path)
    flow = RecordingFlow()
    core.message_received(message(to, sender), flow)
    answer = proxy_credentials(last(flow), to)
    core.message_received(message(to, sender, answer, cseq=2), flow)
    return last(flow), [str(aor) for aor in resolver.lookups]


def test_a_message_from_another_users_aor_is_refused_with_403(tmp_path: Path) -> None:
    """alice, authenticated, sends to herself as bob: the Request-URI and To are hers, the
    From is not, and From is what she must own."""
    response, lookups = sent_as_alice(tmp_path, to="alice", sender="bob")
    assert (response.status, response.reason) == (403, "Authenticated identity does not match")
    assert lookups == []


def test_a_message_from_the_users_own_aor_goes_to_anyone(tmp_path: Path) -> None:
    """alice, as herself, to bob: the Request-URI's user is not hers, and that is fine;
    bob is looked up and the MESSAGE redirected to his home server (RFC 3261 §21.3.3)."""
    response, lookups = sent_as_alice(tmp_path, to="bob", sender="alice")
    assert response.status == 302
    assert "home2.example.com" in (response.headers.get("Contact") or "")
    assert lookups == ["bob@example.com"]


def test_a_message_whose_from_names_no_user_is_refused_with_403(tmp_path: Path) -> None:
    response, lookups = sent_as_alice(tmp_path, to="bob", sender="")
    assert response.status == 403
    assert lookups == []
