"""twistd glue: ``twistd -n homeredirect --config FILE``.

Only maps options onto `homeredirect.service.makeService` (STYLE b.8-9): the
configuration is validated while options are parsed, so a bad file stops
twistd with a message naming the file, the key and what was expected.
"""

from __future__ import annotations

import gc
import signal
from typing import Any, cast

from twisted.application.service import IService, MultiService
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IReactorThreads
from twisted.python import usage

from homeredirect.auth.credentials_file import CredentialsFileError
from homeredirect.collector import ScheduledCollection
from homeredirect.config.errors import ConfigError
from homeredirect.config.load import load_config
from homeredirect.config.schema import Config
from homeredirect.director.policy import PolicyLoadError
from homeredirect.registrar.location import LocationStoreError
from homeredirect.resolve.errors import AssignmentFileError
from homeredirect.transport.tls import CertificateError


class Options(usage.Options):
    synopsis = "--config FILE"
    longdesc = "Run a homeredirect SIP director, edge or home server."
    optParameters = [["config", "c", "homeredirect.toml", "TOML configuration file"]]

    loaded: Config

    def postOptions(self) -> None:
        try:
            self.loaded = load_config(self["config"])
        except ConfigError as error:
            raise usage.UsageError(str(error)) from None
        except OSError as error:
            raise usage.UsageError(f"cannot read {self['config']}: {error.strerror}") from None


class _TwistdRoot(MultiService):
    """What twistd runs: the server plus process-wide tuning.  A listener that
    cannot bind stops start-up with one line naming it, not a traceback."""

    def startService(self) -> None:
        try:
            super().startService()  # type: ignore[no-untyped-call]
        except CannotListenError as error:
            address = f"{error.interface or '*'}:{error.port}"
            reason = error.socketError
            raise SystemExit(f"homeredirect: cannot listen on {address}: {reason}") from None


def makeService(options: Options) -> IService:
    from twisted.internet import reactor

    from homeredirect import service

    try:
        top = service.makeService(options.loaded, reactor)
    except PolicyLoadError as error:
        raise SystemExit(f"homeredirect: {options['config']}: [policy].name: {error}") from None
    except (
        AssignmentFileError,
        CertificateError,
        CredentialsFileError,
        LocationStoreError,
    ) as error:
        raise SystemExit(f"homeredirect: {options['config']}: {error}") from None

    # Everything loaded at start-up (modules, the assignment table) lives as long as
    # the process: keep it out of every collection (gc.freeze); from then on the
    # collector runs on a schedule (see homeredirect.collector).
    gc.collect()
    gc.freeze()
    root = _TwistdRoot()  # type: ignore[no-untyped-call]
    top.setServiceParent(root)  # type: ignore[no-untyped-call]
    ScheduledCollection(reactor).setServiceParent(root)  # type: ignore[no-untyped-call]

    # Twisted types the global reactor without IReactorThreads, which every reactor
    # twistd can install provides.
    threads = cast(IReactorThreads, reactor)

    def reload_on_sighup(signum: int, frame: Any) -> None:
        threads.callFromThread(top.reload)

    signal.signal(signal.SIGHUP, reload_on_sighup)
    return root
