"""Run a director inside an existing Twisted application, with a custom policy.

    .venv/bin/python examples/embed.py [PORT]      (default 5072)

homeredirect is an `IService`: build it with `makeService(config)` and attach
it to your own service tree.  Here the application also runs a small
LoopingCall of its own, to show that the director is just one more service.
"""

from __future__ import annotations

import sys
from pathlib import Path

from twisted.application.internet import TimerService
from twisted.application.service import MultiService
from twisted.internet import reactor
from twisted.logger import Logger, globalLogBeginner, textFileLogObserver

from homeredirect.config.load import parse_config
from homeredirect.service import makeService

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # so that "custom_policy:VipPolicy" can be imported

log = Logger()


def main() -> None:
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 5072
    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stdout)])
    config = parse_config(
        {
            "server": {"fqdn": "director.example.com", "domains": ["example.com"]},
            "listen": [{"transport": "udp", "host": "127.0.0.1", "port": port}],
            "assignments": {"backend": "file", "path": "assignments.csv"},
            "policy": {"name": "custom_policy:VipPolicy"},
        },
        source="examples/embed.py",
        base_dir=HERE,
    )
    application = MultiService()
    makeService(config, reactor).setServiceParent(application)
    alive = TimerService(60, lambda: log.info("the host application is alive"))
    alive.setServiceParent(application)
    application.startService()
    reactor.addSystemEventTrigger("before", "shutdown", application.stopService)
    print(f"director embedded on udp:127.0.0.1:{port}; try:", flush=True)
    print(
        "  .venv/bin/python -m homeredirect.tools.register sip:alice@example.com"
        f" --server udp:127.0.0.1:{port}"
    )
    reactor.run()


if __name__ == "__main__":
    main()
