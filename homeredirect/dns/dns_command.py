"""`homeredirect dns --config FILE`: run the directory service in the foreground.

Serves the `[dns]` records on `[dns].host`:`[dns].port` over UDP and TCP until SIGTERM or
SIGINT, logging to standard output. This is the program's entry point, so it, and only it,
uses the global reactor.
"""

from __future__ import annotations

import argparse
import sys

from twisted.internet.error import CannotListenError
from twisted.logger import globalLogBeginner, textFileLogObserver

from homeredirect.config.dns import DnsConfig
from homeredirect.config.errors import ConfigError
from homeredirect.dns.server import DnsService
from homeredirect.dns.zone_command import add_arguments as add_arguments
from homeredirect.dns.zone_command import read_zones
from homeredirect.logs import set_level

__all__ = ["add_arguments", "run"]


def run(args: argparse.Namespace) -> int:
    """Serve until stopped by a signal (exit status 0); 2 for a bad configuration, 1 when
    the address cannot be bound, each with one line on stderr."""
    try:
        config, zones = read_zones(args.config)
    except ConfigError as error:
        print(f"homeredirect dns: {error}", file=sys.stderr)
        return 2
    from twisted.internet import reactor

    set_level(config.log.level)
    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stdout)], redirectStandardIO=False)
    dns = config.dns or DnsConfig()
    service = DnsService(zones, dns.host, dns.port, reactor)
    try:
        service.startService()
    except CannotListenError as error:
        address = f"{error.interface or '*'}:{error.port}"
        print(f"homeredirect dns: cannot listen on {address}: {error.socketError}", file=sys.stderr)
        return 1
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
    reactor.run()
    return 0
