"""Built-in routing policies and loading custom ones (the seed's step 3)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from zope.interface.verify import verifyObject

from homeredirect.director.decision import Local, Proxy, Redirect, Reject
from homeredirect.director.interfaces import IRoutingPolicy, PolicyContext
from homeredirect.director.policy import (
    AlwaysProxyPolicy,
    AlwaysRedirectPolicy,
    PolicyLoadError,
    ViaCountPolicy,
    load_policy,
)
from homeredirect.resolve.interfaces import Assignment
from homeredirect.sip.message import Request
from homeredirect.sip.parser import MessageReceived, parse_datagram

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
CONTEXT = PolicyContext(fqdn="director.example.com")
HOME = Assignment("home1.example.com")
HERE = Assignment("director.example.com")


def register(vias: int, user: str = "alice") -> Request:
    lines = "".join(
        f"Via: SIP/2.0/TLS 192.0.2.{n + 1}:5061;branch=z9hG4bK{n}\r\n" for n in range(vias)
    )
    data = (
        f"REGISTER sip:example.com SIP/2.0\r\n{lines}From: <sip:{user}@example.com>;tag=1\r\n"
        f"To: <sip:{user}@example.com>\r\nCall-ID: x\r\nCSeq: 1 REGISTER\r\n\r\n"
    ).encode()
    event = parse_datagram(data)
    assert isinstance(event, MessageReceived) and isinstance(event.message, Request)
    return event.message


@pytest.mark.parametrize("cls", [ViaCountPolicy, AlwaysRedirectPolicy, AlwaysProxyPolicy])
def test_built_in_policies_provide_the_interface_and_keep_local_users(cls: type) -> None:
    policy = cls(CONTEXT)
    verifyObject(IRoutingPolicy, policy)
    assert policy.decide(register(1), HERE) == Local()
    assert policy.decide(register(3), HERE) == Local()


def test_via_count_redirects_direct_clients_and_proxies_the_rest() -> None:
    policy = ViaCountPolicy(CONTEXT)
    assert policy.decide(register(1), HOME) == Redirect("home1.example.com")
    assert policy.decide(register(2), HOME) == Proxy("home1.example.com")
    assert policy.decide(register(5), HOME) == Proxy("home1.example.com")


def test_always_policies_ignore_via_count() -> None:
    assert AlwaysRedirectPolicy(CONTEXT).decide(register(2), HOME) == Redirect("home1.example.com")
    assert AlwaysProxyPolicy(CONTEXT).decide(register(1), HOME) == Proxy("home1.example.com")


@pytest.mark.parametrize(
    ("name", "cls"),
    [
        ("via-count", ViaCountPolicy),
        ("always-redirect", AlwaysRedirectPolicy),
        ("always-proxy", AlwaysProxyPolicy),
    ],
)
def test_built_in_policies_load_by_name(name: str, cls: type) -> None:
    assert isinstance(load_policy(name, CONTEXT), cls)


def test_custom_policy_loads_from_module_and_class(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(EXAMPLES))
    policy = load_policy("custom_policy:VipPolicy", CONTEXT)
    verifyObject(IRoutingPolicy, policy)
    assert policy.decide(register(2, "vip-alice"), HOME) == Redirect("home1.example.com")
    assert policy.decide(register(2, "alice"), HOME) == Proxy("home1.example.com")
    sys.modules.pop("custom_policy", None)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("round-robin", "unknown policy 'round-robin'"),
        ("no_such_module_xyz:Policy", "cannot import 'no_such_module_xyz'"),
        ("homeredirect.director.policy:Nope", "has no 'Nope'"),
        ("homeredirect.director.decision:Local", "failed to start"),
        ("homeredirect.director.targets:HomeServerTargets", "does not provide IRoutingPolicy"),
    ],
)
def test_bad_policy_names_are_reported(name: str, message: str) -> None:
    with pytest.raises(PolicyLoadError, match=message):
        load_policy(name, CONTEXT)


def test_decisions_validate_their_values() -> None:
    with pytest.raises(ValueError):
        Redirect("not a host!")
    with pytest.raises(ValueError):
        Reject(200)
    assert Redirect("HOME1.Example.com") == Redirect("home1.example.com")
