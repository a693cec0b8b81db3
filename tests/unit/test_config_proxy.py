"""`[proxy]`: defaults, values and precise errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from homeredirect.config.errors import ConfigError
from homeredirect.config.load import parse_config


def _load(proxy: dict[str, Any] | None) -> Any:
    data: dict[str, Any] = {
        "server": {"role": "home", "fqdn": "home1.example.com", "domains": ["example.com"]},
        "listen": [{"transport": "udp", "port": 0}],
    }
    if proxy is not None:
        data["proxy"] = proxy
    return parse_config(data, "proxy.toml", Path("."))


def test_proxy_defaults_follow_rfc_3261() -> None:
    proxy = _load(None).proxy
    assert (proxy.record_route, proxy.path, proxy.timer_c) == (False, "supported", 180.0)
    assert (proxy.t1, proxy.t2, proxy.t4) == (0.5, 4.0, 5.0)


def test_proxy_keys_are_read() -> None:
    proxy = _load({"record_route": True, "path": "always", "timer_c": 200, "t1": 0.1}).proxy
    assert (proxy.record_route, proxy.path, proxy.timer_c, proxy.t1) == (True, "always", 200.0, 0.1)


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"path": "sometimes"}, '[proxy].path: expected one of "supported", "always", "never"'),
        ({"record_route": "yes"}, "[proxy].record_route: expected true or false"),
        ({"t1": 0}, "[proxy].t1: expected a positive number of seconds"),
        ({"t1": 5, "t2": 4}, "[proxy].t2: expected at least t1 (5.0)"),
        ({"failover_timeout": 0}, "[proxy].failover_timeout: expected a positive number"),
        ({"failover_timeout": "4s"}, "[proxy].failover_timeout: expected a positive number"),
        ({"timer": 1}, "[proxy]"),
    ],
)
def test_bad_proxy_values_are_named(table: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _load(table)
    assert message in str(caught.value)


def test_failover_timeout_defaults_to_8_t1_and_is_read() -> None:
    assert _load(None).proxy.failover_timeout == 4.0
    assert _load({"failover_timeout": 2}).proxy.failover_timeout == 2.0
    assert _load({"failover_timeout": 1.5}).proxy.failover_timeout == 1.5
