"""examples/director.toml, the documented default, loads as documented."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from homeredirect.config.load import load_config
from homeredirect.config.schema import Config, Role, Transport
from homeredirect.resolve.file_source import read_assignment_file
from homeredirect.tools.certs import ensure_test_pki

EXAMPLES = Path(__file__).parents[2] / "examples"


@pytest.fixture
def example(tmp_path: Path) -> Path:
    """A copy of examples/ next to a run/ holding the certificates it refers to."""
    copy = tmp_path / "examples"
    shutil.copytree(EXAMPLES, copy)
    ensure_test_pki(tmp_path / "run", ["director.example.com"], ["127.0.0.1"])
    return copy


@pytest.fixture
def config(example: Path) -> Config:
    return load_config(example / "director.toml")


def test_example_is_a_director_for_example_com(config: Config) -> None:
    assert config.server.role is Role.DIRECTOR
    assert config.server.fqdn == "director.example.com"
    assert config.server.domains == ("example.com",)


def test_example_listens_on_udp_tcp_and_tls(config: Config, example: Path) -> None:
    summary = [(item.transport, item.host, item.port) for item in config.listeners]
    assert summary == [
        (Transport.UDP, "127.0.0.1", 5070),
        (Transport.TCP, "127.0.0.1", 5070),
        (Transport.TLS, "127.0.0.1", 5071),
    ]
    tls = config.listeners[2]
    run = example.parent / "run"
    assert (tls.certificate, tls.private_key, tls.ca) == (
        example / "../run/server.pem",
        example / "../run/server.key",
        example / "../run/ca.pem",
    )
    assert tls.certificate is not None and tls.certificate.resolve() == run / "server.pem"


def test_example_uses_the_file_backend_and_via_count(config: Config, example: Path) -> None:
    assert config.assignments is not None
    assert config.assignments.path == example / "assignments.csv"
    assert (config.policy.name, config.policy.redirect_status) == ("via-count", 301)


def test_example_home1_falls_back_to_home2(config: Config) -> None:
    home1 = config.home_server("home1.example.com")
    assert (home1.host, home1.port, home1.transport) == ("home1.example.com", 5061, Transport.TLS)
    assert home1.backup == "home2.example.com"
    assert config.home_server(home1.backup).backup is None


def test_example_assignments_cover_five_users_on_two_homes() -> None:
    table = read_assignment_file(EXAMPLES / "assignments.csv")
    assert {user: a.home_server for user, a in table.items()} == {
        "alice@example.com": "home1.example.com",
        "bob@example.com": "home1.example.com",
        "carol@example.com": "home2.example.com",
        "dave@example.com": "home2.example.com",
        "vip-erin@example.com": "home2.example.com",  # for examples/custom_policy.py
    }
