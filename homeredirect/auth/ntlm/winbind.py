"""NTLMv2 responses checked at an Active Directory domain controller through Samba's winbind.

The directory holds no NT hashes for domain users: the domain controller does. Samba's
`ntlm_auth --helper-protocol=ntlm-server-1` hands a challenge and a response to winbindd,
which has the domain controller check them (NetrLogonSamLogon, [MS-NRPC] §3.5.4.5.1, or
the local SAM on a DC) and returns the verdict with the user session key, which for NTLMv2
is the SessionBaseKey ([MS-NLMP] §3.3.2) that key exchange and MS-SIPAE signing need.

The protocol (Samba's ntlm_auth(1) and `manage_ntlm_server_1_request`): the client writes
`Name: value` lines (`Name:: base64` for values that might hold a newline) and a line `.`;
the helper answers, one request at a time, with

    Authenticated: Yes              Authenticated: No
    User-Session-Key: <32 hex>      Authentication-Error: <text>
    .                               .
                                    .          <- Samba writes a second "." after a failure

or `Error: <text>` and `.` for a request it could not read. A line it cannot read in the
middle of a request also gets `Error: ...` and `.` at once, which would put answers and
requests out of step: so requests are checked here first, an answer this module cannot
read restarts the helper, and a block that is only `.` is skipped.

`WinbindChecker` (an `INtlmResponseChecker` and a `Service`) keeps `helpers` long-running
helper processes, spawned through the reactor (never blocking it), each with at most one
request outstanding; others wait in a bounded queue. A request that gets no verdict
within `timeout` seconds fails with `WinbindUnavailable` (its helper, if it had one, is
killed: it is no longer in step). A helper that exits is started again, after a delay
that doubles while helpers keep failing; a request whose helper died is tried once more.
"""

from __future__ import annotations

import binascii
import re
from base64 import b64encode
from collections import deque
from collections.abc import Sequence
from typing import Any, cast

from attrs import frozen
from twisted.application.service import Service
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.defer import Deferred, DeferredList, fail, succeed
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.interfaces import (
    IDelayedCall,
    IProcessTransport,
    IReactorProcess,
    IReactorTime,
)
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure
from zope.interface import implementer

from homeredirect.auth.ntlm.accounts import AccountNames
from homeredirect.auth.ntlm.interfaces import INtlmResponseChecker, NtlmLogon, VerifiedLogon
from homeredirect.logs import FilteredLogger
from homeredirect.resolve.interfaces import AddressOfRecord

__all__ = [
    "HELPER_PROTOCOL",
    "Accepted",
    "HelperProtocolError",
    "Rejected",
    "ReplyParser",
    "WinbindChecker",
    "WinbindUnavailable",
    "encode_request",
]

log = FilteredLogger()

HELPER_PROTOCOL = "--helper-protocol=ntlm-server-1"
"""Appended to the configured command line."""
MAX_LINE = 4096
"""Longest answer line accepted (the longest real one is an error text of ~200 bytes)."""
MIN_NTLMV2_RESPONSE = 16 + 28
"""NTProofStr and the fixed part of the NTLMv2 client challenge ([MS-NLMP] §2.2.2.7)."""
RESTART_DELAY = 0.1
MAX_RESTART_DELAY = 30.0
STOP_GRACE = 2.0
"""Seconds a helper gets to exit after its stdin is closed before it is killed."""
_STDERR_TAIL = 2048
_HEX32 = re.compile(r"[0-9A-Fa-f]{32}")


class WinbindUnavailable(Exception):
    """No verdict: no helper running, the queue full, no answer in time, an answer that
    cannot be read. Not a wrong password: the client is not to blame."""


class HelperProtocolError(Exception):
    """The helper wrote something that is not an ntlm-server-1 answer."""


@frozen(repr=False)
class Accepted:
    """`Authenticated: Yes` with the user session key."""

    session_key: bytes

    def __repr__(self) -> str:
        return "Accepted()"


@frozen
class Rejected:
    """`Authenticated: No`, with the helper's `Authentication-Error` text."""

    reason: str


Reply = Accepted | Rejected


def encode_request(logon: NtlmLogon) -> bytes:
    """The ntlm-server-1 request for `logon`. Names go base64-encoded (`Name::`), so a
    newline in a client's user name cannot start a line of its own; the caller checks
    the lengths the helper would otherwise answer with an extra `Error:` block."""
    lines = [
        b"LANMAN-Challenge: " + logon.server_challenge.hex().encode("ascii"),
        b"NT-Response: " + logon.nt_response.hex().encode("ascii"),
        b"Username:: " + b64encode(logon.user.encode("utf-8")),
    ]
    if logon.domain:
        # Without one the helper uses winbind's own domain.
        lines.append(b"NT-Domain:: " + b64encode(logon.domain.encode("utf-8")))
    lines += [b"Request-User-Session-Key: Yes", b".", b""]
    return b"\n".join(lines)


def _interpret(block: list[str]) -> Reply:
    first, rest = block[0], block[1:]
    fields: dict[str, str] = {}
    for line in rest:
        name, colon, value = line.partition(": ")
        if not colon:
            raise HelperProtocolError(f"unreadable line {line[:80]!r}")
        fields[name] = value
    if first == "Authenticated: No":
        return Rejected(fields.get("Authentication-Error", ""))
    if first == "Authenticated: Yes":
        key = fields.get("User-Session-Key")
        if key is None or not _HEX32.fullmatch(key):
            raise HelperProtocolError("Authenticated: Yes without a 16-byte User-Session-Key")
        return Accepted(binascii.unhexlify(key))
    raise HelperProtocolError(f"unexpected answer {first[:200]!r}")


class ReplyParser:
    """Sans-IO: helper output in, replies out.

    `feed` returns the replies completed by `data`, in order; it raises
    `HelperProtocolError` for an over-long line, a line that is not UTF-8, or a block
    that is not an answer (`Error: ...` included), after which the parser is not to be
    fed again (the helper is restarted)."""

    def __init__(self, max_line: int = MAX_LINE) -> None:
        self._buffer = b""
        self._block: list[str] = []
        self._max_line = max_line

    def feed(self, data: bytes) -> list[Reply]:
        self._buffer += data
        replies: list[Reply] = []
        while True:
            line, newline, rest = self._buffer.partition(b"\n")
            if not newline:
                if len(self._buffer) > self._max_line:
                    raise HelperProtocolError(f"a line longer than {self._max_line} bytes")
                return replies
            self._buffer = rest
            if len(line) > self._max_line:
                raise HelperProtocolError(f"a line longer than {self._max_line} bytes")
            try:
                text = line.decode("utf-8").rstrip("\r")
            except UnicodeDecodeError:
                raise HelperProtocolError("a line that is not UTF-8") from None
            if text != ".":
                self._block.append(text)
                continue
            block, self._block = self._block, []
            if block:  # a lone "." is the extra one Samba writes after a failure
                replies.append(_interpret(block))


class _Request:
    __slots__ = ("account", "deferred", "logon", "retried", "timer")

    def __init__(self, logon: NtlmLogon, account: AddressOfRecord) -> None:
        self.logon = logon
        self.account = account
        self.deferred: Deferred[VerifiedLogon] = Deferred()
        self.timer: IDelayedCall | None = None
        self.retried = False


class _Helper(ProcessProtocol):
    """One ntlm_auth process; `request` is the one it is answering, if any."""

    def __init__(self, checker: WinbindChecker, number: int) -> None:
        self.checker = checker
        self.number = number
        self.parser = ReplyParser()
        self.request: _Request | None = None
        self.broken = False
        self.stderr = b""
        self.ended: Deferred[None] = Deferred()

    @property
    def process(self) -> IProcessTransport:
        return cast(IProcessTransport, self.transport)

    def connectionMade(self) -> None:
        self.checker._ready(self)

    def outReceived(self, data: bytes) -> None:
        if self.broken:
            return
        try:
            replies = self.parser.feed(data)
        except HelperProtocolError as e:
            self.checker._misbehaved(self, str(e))
            return
        for reply in replies:
            if self.broken:
                return
            self.checker._replied(self, reply)

    def errReceived(self, data: bytes) -> None:
        self.stderr = (self.stderr + data)[-_STDERR_TAIL:]

    def kill(self) -> None:
        self.broken = True
        try:
            self.process.signalProcess("KILL")
        except ProcessExitedAlready:
            pass

    def processEnded(self, reason: Failure) -> None:
        self.checker._ended(self, reason)
        self.ended.callback(None)


@implementer(INtlmResponseChecker)
class WinbindChecker(Service):
    """Checks NTLMv2 responses with `ntlm_auth` helpers; see the module docstring.

    `command` is the helper's command line without the protocol option (which is
    appended), e.g. `["/usr/bin/ntlm_auth"]` or one prefixed with `ip netns exec NS`;
    `command[0]` must be a path. `names` maps NTLM names onto AORs, as for the file
    backend. Helpers run between `startService` and `stopService`.
    """

    def __init__(
        self,
        command: Sequence[str],
        names: AccountNames,
        reactor: IReactorProcess,
        clock: IReactorTime,
        *,
        helpers: int = 2,
        timeout: float = 5.0,
        max_pending: int = 64,
        env: dict[str, str] | None = None,
    ) -> None:
        if not command:
            raise ValueError("an empty ntlm_auth command line")
        self._argv = [*command, HELPER_PROTOCOL]
        self._names = names
        self._reactor = reactor
        self._clock = clock
        self._size = helpers
        self._timeout = timeout
        self.max_pending = max_pending
        self._env = env
        self._helpers: list[_Helper] = []
        self._idle: deque[_Helper] = deque()
        self._queue: deque[_Request] = deque()
        self._pending = 0
        self._spawned = 0
        self._failures = 0
        self._restarts: list[IDelayedCall] = []

    # -- INtlmResponseChecker --------------------------------------------------

    def check(self, logon: NtlmLogon) -> Deferred[VerifiedLogon]:
        """Fire with the logon the domain controller accepted; fail with
        `UnauthorizedLogin` for a wrong response or unknown user (alike), or a name that
        maps onto no AOR; with `WinbindUnavailable` when no verdict could be had."""
        candidate = self._names.candidate(logon.user, logon.domain)
        if candidate is None or not logon.user or "\0" in logon.user + logon.domain:
            return fail(UnauthorizedLogin("NTLM logon failed"))
        if len(logon.server_challenge) != 8 or len(logon.nt_response) < MIN_NTLMV2_RESPONSE:
            return fail(UnauthorizedLogin("NTLM logon failed"))
        try:
            account = AddressOfRecord(*candidate)
        except ValueError:
            return fail(UnauthorizedLogin("NTLM logon failed"))
        if not self.running:
            return fail(WinbindUnavailable("the ntlm_auth helpers are not running"))
        if self._pending >= self.max_pending:
            log.warn("ntlm_auth queue full ({pending} requests)", pending=self._pending)
            return fail(WinbindUnavailable("too many NTLM logons waiting for ntlm_auth"))
        request = _Request(logon, account)
        self._pending += 1
        request.timer = self._clock.callLater(self._timeout, self._timed_out, request)
        self._queue.append(request)
        self._dispatch()
        return request.deferred

    # -- Service ---------------------------------------------------------------

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        for _ in range(self._size):
            self._spawn()

    def stopService(self) -> Deferred[Any]:
        """Fail what waits, close the helpers' stdin (ntlm_auth exits at end of input),
        kill those still running after `STOP_GRACE` seconds; fire when all have exited."""
        super().stopService()  # type: ignore[no-untyped-call]
        for call in self._restarts:
            if call.active():
                call.cancel()
        self._restarts.clear()
        while self._queue:
            self._finish(self._queue.popleft(), WinbindUnavailable("stopping"))
        endings = [helper.ended for helper in self._helpers]
        for helper in self._helpers:
            helper.process.closeStdin()
        if not endings:
            return succeed(None)
        killer = self._clock.callLater(STOP_GRACE, self._kill_all)

        def stopped(result: object) -> None:
            if killer.active():
                killer.cancel()

        return DeferredList(endings).addBoth(stopped)

    def _kill_all(self) -> None:
        for helper in list(self._helpers):
            helper.kill()

    @property
    def helper_pids(self) -> list[int]:
        """The process ids of the running helpers (for operators' logs and the tests)."""
        return [h.process.pid for h in self._helpers if h.process.pid is not None]

    # -- helpers ---------------------------------------------------------------

    def _spawn(self) -> None:
        if not self.running:
            return
        self._spawned += 1
        helper = _Helper(self, self._spawned)
        try:
            self._reactor.spawnProcess(helper, self._argv[0], self._argv, env=self._env)
        except OSError as e:
            log.error("cannot start ntlm_auth {argv}: {error}", argv=self._argv, error=str(e))
            self._schedule_restart()
            return
        self._helpers.append(helper)

    def _schedule_restart(self) -> None:
        self._failures += 1
        delay = min(MAX_RESTART_DELAY, RESTART_DELAY * 2 ** (self._failures - 1))
        self._restarts = [call for call in self._restarts if call.active()]
        self._restarts.append(self._clock.callLater(delay, self._spawn))

    def _ready(self, helper: _Helper) -> None:
        self._idle.append(helper)
        self._dispatch()

    def _dispatch(self) -> None:
        while self._queue and self._idle:
            helper = self._idle.popleft()
            request = self._queue.popleft()
            helper.request = request
            helper.process.write(encode_request(request.logon))

    def _replied(self, helper: _Helper, reply: Reply) -> None:
        request, helper.request = helper.request, None
        if request is None:
            self._misbehaved(helper, "an answer to no request")
            return
        self._failures = 0
        self._idle.append(helper)
        if isinstance(reply, Accepted):
            self._finish(request, VerifiedLogon(request.account, reply.session_key))
        else:
            self._finish(request, UnauthorizedLogin(f"NTLM logon failed: {reply.reason}"))
        self._dispatch()

    def _misbehaved(self, helper: _Helper, why: str) -> None:
        log.error(
            "ntlm_auth helper {number} misbehaved ({why}); restarting it",
            number=helper.number,
            why=why,
        )
        request, helper.request = helper.request, None
        if request is not None:
            self._finish(request, WinbindUnavailable(f"ntlm_auth misbehaved: {why}"))
        self._retire(helper)
        helper.kill()

    def _retire(self, helper: _Helper) -> None:
        if helper in self._idle:
            self._idle.remove(helper)

    def _ended(self, helper: _Helper, reason: Failure) -> None:
        self._retire(helper)
        if helper in self._helpers:
            self._helpers.remove(helper)
        request, helper.request = helper.request, None
        if request is not None:
            if request.retried or not self.running:
                self._finish(request, WinbindUnavailable("ntlm_auth exited while answering"))
            else:
                # Samba checks NTLM responses without replay detection: ask again, once.
                request.retried = True
                self._queue.appendleft(request)
                self._dispatch()
        if not self.running:
            return
        if not helper.broken:
            log.warn(
                "ntlm_auth helper {number} exited ({reason}); restarting it: {stderr}",
                number=helper.number,
                reason=str(reason.value),
                stderr=helper.stderr.decode("utf-8", "replace").strip()[-500:],
            )
        self._schedule_restart()

    def _timed_out(self, request: _Request) -> None:
        request.timer = None
        if request in self._queue:
            self._queue.remove(request)
        for helper in self._helpers:
            if helper.request is request:
                helper.request = None
                log.warn(
                    "ntlm_auth helper {number} gave no answer in {timeout} s; restarting it",
                    number=helper.number,
                    timeout=self._timeout,
                )
                self._retire(helper)
                helper.kill()
        self._finish(request, WinbindUnavailable(f"no answer from ntlm_auth in {self._timeout} s"))

    def _finish(self, request: _Request, result: VerifiedLogon | Exception) -> None:
        if request.deferred.called:
            return
        self._pending -= 1
        if request.timer is not None and request.timer.active():
            request.timer.cancel()
        request.timer = None
        if isinstance(result, Exception):
            request.deferred.errback(Failure(result))
        else:
            request.deferred.callback(result)
