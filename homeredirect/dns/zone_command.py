"""`homeredirect zone --config FILE`: print the directory service's records as a BIND zone
fragment, for operators who publish them in their own DNS instead of running
`homeredirect dns`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from homeredirect.config.errors import ConfigError
from homeredirect.config.load import load_config
from homeredirect.config.schema import Config
from homeredirect.dns.records import CannotPublish, Zone, zones_for
from homeredirect.dns.zonefile import render_zones

__all__ = ["add_arguments", "read_zones", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", "-c", required=True, type=Path, help="TOML configuration file with [dns]"
    )


def read_zones(path: Path) -> tuple[Config, tuple[Zone, ...]]:
    """Load the configuration at `path` and build its zones.

    Raise `ConfigError` naming the file and the key, whether a table is invalid on its own
    or the tables together cannot be published (`CannotPublish`).
    """
    config = load_config(path)
    try:
        return config, zones_for(config)
    except CannotPublish as error:
        raise ConfigError(str(path), error.location, error.problem) from None


def run(args: argparse.Namespace) -> int:
    """Print the zones; exit status 2 (and one line on stderr) for a bad configuration."""
    try:
        _, zones = read_zones(args.config)
    except ConfigError as error:
        print(f"homeredirect zone: {error}", file=sys.stderr)
        return 2
    heading = (
        f"homeredirect zone --config {args.config}\n"
        "The records `homeredirect dns` serves for this configuration: SOA and NS, NAPTR\n"
        "(RFC 3263), SRV for Microsoft and RFC 3263 clients, and A/AAAA of the servers."
    )
    sys.stdout.write(render_zones(zones, heading))
    return 0
