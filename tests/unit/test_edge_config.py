"""`[edge]`, the edge role's default policy and `[policy] trusted_edges`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from homeredirect.config.edge import NextHop, parse_next_hop
from homeredirect.config.errors import ConfigError
from homeredirect.config.load import parse_config
from homeredirect.config.schema import (
    Config,
    EdgeConfig,
    FileAssignmentsConfig,
    ListenerConfig,
    PolicyConfig,
    Role,
    ServerConfig,
    default_policy,
)

SOURCE = "edge.toml"
NEXT_HOP = "sip:director.example.com;transport=tls"


def edge(**tables: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "server": {"role": "edge", "fqdn": "edge.example.com", "domains": ["example.com"]},
        "listen": [{"transport": "udp"}],
        "edge": {"next_hop": NEXT_HOP},
    }
    data.update(tables)
    return {key: value for key, value in data.items() if value is not None}


def parse(data: dict[str, Any], base_dir: Path) -> Config:
    (base_dir / "assignments.csv").write_text("")
    return parse_config(data, SOURCE, base_dir)


def error_for(data: dict[str, Any], base_dir: Path) -> str:
    with pytest.raises(ConfigError) as caught:
        parse(data, base_dir)
    return str(caught.value)


def test_an_edge_proxies_everything_by_default(tmp_path: Path) -> None:
    config = parse(edge(), tmp_path)
    assert config.server.role is Role.EDGE
    assert config.policy.name == "always-proxy"
    assert config.edge == EdgeConfig(next_hop=NEXT_HOP, mark=True)
    assert config.assignments is None


def test_an_edge_keeps_a_policy_written_explicitly_even_via_count(tmp_path: Path) -> None:
    config = parse(edge(policy={"name": "via-count"}), tmp_path)
    assert config.policy.name == "via-count"


def test_a_policy_table_without_name_still_gets_the_roles_default(tmp_path: Path) -> None:
    config = parse(edge(policy={"redirect_status": 302}), tmp_path)
    assert (config.policy.name, config.policy.redirect_status) == ("always-proxy", 302)


def test_other_roles_default_to_via_count(tmp_path: Path) -> None:
    data = edge(edge=None, assignments={"path": "assignments.csv"})
    data["server"] = {**data["server"], "role": "director"}
    assert parse(data, tmp_path).policy.name == "via-count"


def test_a_config_built_in_code_gets_the_roles_default_policy() -> None:
    config = Config(
        server=ServerConfig(role="edge", fqdn="edge.example.com", domains=["example.com"]),
        listeners=[ListenerConfig(transport="udp")],
        edge=EdgeConfig(next_hop=NEXT_HOP),
    )
    assert config.policy.name == default_policy(Role.EDGE) == "always-proxy"


def test_an_edge_without_next_hop_uses_assignments(tmp_path: Path) -> None:
    config = parse(edge(edge=None, assignments={"path": "assignments.csv"}), tmp_path)
    assert isinstance(config.assignments, FileAssignmentsConfig)
    assert config.edge is None


def test_an_edge_needs_a_next_hop_or_assignments(tmp_path: Path) -> None:
    assert error_for(edge(edge=None), tmp_path) == (
        'edge.toml: [assignments]: expected an assignments source for role "edge" without'
        " [edge] next_hop, got nothing"
    )


def test_assignments_next_to_a_next_hop_are_refused(tmp_path: Path) -> None:
    message = error_for(edge(assignments={"path": "assignments.csv"}), tmp_path)
    assert message.startswith("edge.toml: [assignments]: expected no [assignments] table")


def test_an_edge_table_on_another_role_is_refused(tmp_path: Path) -> None:
    data = edge(assignments={"path": "assignments.csv"})
    data["server"] = {**data["server"], "role": "director"}
    assert error_for(data, tmp_path).startswith(
        'edge.toml: [edge]: expected no [edge] table unless role = "edge"'
    )


def test_a_next_hop_that_is_the_edge_itself_is_refused(tmp_path: Path) -> None:
    message = error_for(edge(edge={"next_hop": "sip:edge.example.com"}), tmp_path)
    assert message.startswith("edge.toml: [edge].next_hop: expected another server")


@pytest.mark.parametrize(
    "value",
    [
        "director.example.com",  # not a URI
        "tel:+15551234",
        "sip:alice@director.example.com",
        "sip:127.0.0.1:5070",  # an address: TLS verifies an FQDN
        "sip:director.example.com;transport=sctp",
        "sips:director.example.com;transport=udp",
        42,
    ],
)
def test_bad_next_hops_name_the_key(tmp_path: Path, value: object) -> None:
    message = error_for(edge(edge={"next_hop": value}), tmp_path)
    assert message.startswith("edge.toml: [edge].next_hop: expected a SIP URI naming a server")


def test_unknown_edge_keys_are_refused(tmp_path: Path) -> None:
    message = error_for(edge(edge={"next_hop": NEXT_HOP, "nexthop": "x"}), tmp_path)
    assert message.startswith("edge.toml: [edge].nexthop: ")


def test_mark_must_be_a_boolean(tmp_path: Path) -> None:
    message = error_for(edge(edge={"next_hop": NEXT_HOP, "mark": "yes"}), tmp_path)
    assert message == 'edge.toml: [edge].mark: expected true or false, got "yes"'


@pytest.mark.parametrize(
    ("text", "hop"),
    [
        (NEXT_HOP, NextHop("director.example.com", "tls", 5061)),
        ("sip:Director.Example.com:5070", NextHop("director.example.com", "udp", 5070)),
        ("sip:director.example.com;transport=TCP", NextHop("director.example.com", "tcp", 5060)),
        ("sips:director.example.com", NextHop("director.example.com", "tls", 5061)),
    ],
)
def test_next_hop_transport_and_port_follow_rfc_3263(text: str, hop: NextHop) -> None:
    assert parse_next_hop(text) == hop
    assert EdgeConfig(next_hop=text).next_hop_target == hop


def test_edge_trust_needs_trusted_edges(tmp_path: Path) -> None:
    data = edge(edge=None, assignments={"path": "assignments.csv"}, policy={"name": "edge-trust"})
    data["server"] = {**data["server"], "role": "director"}
    assert error_for(data, tmp_path) == (
        "edge.toml: [policy].trusted_edges: expected a non-empty array of edge FQDNs"
        ' (name = "edge-trust"), got []'
    )


def test_trusted_edges_are_lowercased_hostnames(tmp_path: Path) -> None:
    policy = PolicyConfig(
        name="edge-trust", trusted_edges=["Edge1.Example.com", "edge1.example.com"]
    )
    assert policy.trusted_edges == ("edge1.example.com",)
    data = edge(policy={"trusted_edges": ["10.0.0.1"]})
    assert error_for(data, tmp_path) == (
        'edge.toml: [policy].trusted_edges: expected an array of hostnames, got ["10.0.0.1"]'
    )
