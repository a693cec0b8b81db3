"""The registrar (RFC 3261 §10.3): a REGISTER in, binding changes through the store, a reply out.

The work is split so that the rules can be tested without a network or a store:

- `plan_register` reads a REGISTER into a `RegisterPlan`: the bindings it adds, refreshes
  or removes, with their granted expiry, or the reason it is refused (400, 420, 423, 489).
- `RegisterPlan.apply` is the pure `BindingChange` the location store runs atomically
  over the AOR's current bindings; it enforces the Call-ID/CSeq ordering of §10.3 step 7
  and raises `OutOfOrder` to abort without writing anything.
- `Registrar.register` runs the two against an `ILocationStore` and turns the outcome, or
  any failure, into a `RegisterReply` (status, reason, header fields to add). It never
  fails: a store error becomes 500 with nothing written.

Only the AOR of the To header is ever written (the caller derives it from To and checks
its domain), so a client cannot touch another user's bindings.
"""

from __future__ import annotations

from collections.abc import Iterable
from email.utils import formatdate

from attrs import field, frozen
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

from homeredirect.config.registrar import RegistrarConfig
from homeredirect.logs import FilteredLogger
from homeredirect.registrar.location import Binding, ILocationStore, LocationStoreError
from homeredirect.resolve.interfaces import AddressOfRecord
from homeredirect.sip.errors import SipParseError
from homeredirect.sip.headers import MAX_DELTA_SECONDS, NameAddr, parse_name_addr
from homeredirect.sip.message import Request
from homeredirect.sip.uri import bounded_int

__all__ = [
    "MS_KEEP_ALIVE",
    "SUPPORTED_EXTENSIONS",
    "ContactChange",
    "OutOfOrder",
    "RegisterPlan",
    "RegisterRefused",
    "RegisterReply",
    "Registrar",
    "RegistrarSettings",
    "plan_register",
]

log = FilteredLogger()

#: Option tags a REGISTER may Require of us: Path (RFC 3327 §5.3).
SUPPORTED_EXTENSIONS = frozenset({"path"})

#: What a Microsoft registrar answers to a REGISTER carrying `ms-keep-alive` ([MS-CONMGMT]
#: §2.2.1, §3.4.5; [MS-SIPREGE] §3.1.1.5.1): we are the UAS side, expect no TCP-level
#: keep-alives from it, keep-alives are hop-by-hop, and the client should send one at
#: least every 300 seconds.
MS_KEEP_ALIVE = "UAS; tcp=no; hop-hop=yes; end=no; timeout=300"


@frozen
class RegistrarSettings:
    """How expiry is granted (RFC 3261 §10.3 step 7) and what a 200 adds (RFC 3608)."""

    min_expires: int = 60
    max_expires: int = 7200
    default_expires: int = 3600
    service_route: tuple[str, ...] = ()

    @classmethod
    def from_config(cls, config: RegistrarConfig) -> RegistrarSettings:
        return cls(
            min_expires=config.min_expires,
            max_expires=config.max_expires,
            default_expires=config.default_expires,
            service_route=config.service_route,
        )


@frozen
class RegisterReply:
    """The final response the registrar chose: status, reason (None: the standard
    phrase) and header fields to add to those copied from the request."""

    status: int
    reason: str | None = None
    headers: tuple[tuple[str, str], ...] = ()


class RegisterRefused(Exception):
    """The REGISTER is refused before anything is read from the store."""

    def __init__(
        self, status: int, reason: str | None = None, headers: tuple[tuple[str, str], ...] = ()
    ) -> None:
        super().__init__(status, reason)
        self.reply = RegisterReply(status, reason, headers)


class OutOfOrder(Exception):
    """RFC 3261 §10.3 step 7: a binding was last written by a REGISTER with the same
    Call-ID and a CSeq not lower than this one's: "the update MUST be aborted and the
    request fails". Raised inside the store's atomic change, so nothing is written."""


@frozen
class ContactChange:
    """One Contact of the REGISTER: the binding it writes, or (expires 0) removes."""

    binding: Binding
    granted: int

    @property
    def removes(self) -> bool:
        return self.granted == 0


def _to_changes(value: Iterable[ContactChange]) -> tuple[ContactChange, ...]:
    return tuple(value)


@frozen
class RegisterPlan:
    """What one REGISTER asks of the location service (RFC 3261 §10.3 steps 6-7).

    `wildcard`: `Contact: *` with `Expires: 0`, removing every binding. No changes and
    no wildcard is a query: the 200 lists the current bindings.
    """

    aor: AddressOfRecord
    call_id: str
    cseq: int
    changes: tuple[ContactChange, ...] = field(default=(), converter=_to_changes)
    wildcard: bool = False

    @property
    def granted(self) -> int | None:
        """The `Expires` header of the 200: the expiry granted to the first binding
        registered (0 when the request only removes); None for a query. Microsoft
        clients read only this header."""
        if self.wildcard:
            return 0
        for change in self.changes:
            if not change.removes:
                return change.granted
        return 0 if self.changes else None

    def apply(self, current: tuple[Binding, ...]) -> tuple[Binding, ...]:
        """The AOR's bindings after this REGISTER, as a pure `BindingChange`.

        Raise `OutOfOrder` if a binding it touches was written by the same Call-ID with
        a CSeq at least this one's (§10.3 step 6 for `*`, step 7 otherwise).
        """
        if self.wildcard:
            for binding in current:
                self._check_order(binding)
            return ()
        result = {binding.key: binding for binding in current}
        for change in self.changes:
            key = change.binding.key
            existing = result.get(key)
            if existing is not None:
                self._check_order(existing)
            if change.removes:
                result.pop(key, None)
            else:
                result[key] = change.binding
        return tuple(result.values())

    def _check_order(self, binding: Binding) -> None:
        if binding.call_id == self.call_id and self.cseq <= binding.cseq:
            raise OutOfOrder(f"CSeq {self.cseq} is not above {binding.cseq} for {binding.contact}")


def _strict_seconds(text: str, what: str) -> int:
    """delta-seconds (RFC 3261 §20.19, §20.10); a value that is not digits is refused
    with 400 naming *what* (the issue's rule; §20.19 would read it as 3600), and one past
    2**32 - 1 is taken as that, to be capped to max_expires."""
    stripped = text.strip(" \t")
    if not stripped.isdigit() or not stripped.isascii():
        raise RegisterRefused(400, f"Bad {what}")
    value = bounded_int(stripped, MAX_DELTA_SECONDS)
    return MAX_DELTA_SECONDS if value is None else value


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        return text[1:-1]
    return text


def plan_register(
    request: Request,
    aor: AddressOfRecord,
    now: float,
    settings: RegistrarSettings,
    received: str | None = None,
) -> RegisterPlan:
    """Read a REGISTER for *aor* into a plan (RFC 3261 §10.3 steps 6-7); raise
    `RegisterRefused` with the response to send instead.

    *received* is where the request came from (`TRANSPORT:host:port`), kept with each
    binding for routing back over the same flow (RFC 5626 §5.3).
    """
    _check_extensions(request)
    event = request.headers.get("Event")
    if event is not None and event.split(";")[0].strip(" \t").lower() != "registration":
        # [MS-SIPREGE] §3.1.2.5.1: ErrorId 4055, Event header is not "registration".
        raise RegisterRefused(
            489,
            "Bad Event",
            (
                ("Allow-Events", "registration"),
                ("ms-diagnostics", '4055;reason="Event header is not set to registration"'),
            ),
        )
    expires_values = request.headers.get_all("Expires")
    if len(expires_values) > 1:
        raise RegisterRefused(400, "Bad Expires header: more than one")
    header_expires = (
        _strict_seconds(expires_values[0], "Expires header") if expires_values else None
    )
    try:
        contacts = request.contacts
    except SipParseError as error:
        raise RegisterRefused(400, f"Bad Contact header: {error.reason}"[:120]) from None
    call_id = request.call_id
    cseq = request.cseq.number
    if contacts == "*":
        # §10.3 step 6: "*" only alone (the parser enforces that) and only with Expires 0.
        if header_expires != 0:
            raise RegisterRefused(400, "Contact * requires Expires: 0")
        return RegisterPlan(aor, call_id, cseq, wildcard=True)
    if not contacts or isinstance(contacts, str):
        return RegisterPlan(aor, call_id, cseq)
    path = _path(request)
    epid = request.from_addr.param("epid")
    user_agent = request.headers.get("User-Agent")
    changes = []
    for contact in contacts:
        requested = _requested_expiry(contact, header_expires, settings)
        if 0 < requested < settings.min_expires:
            # §10.3 step 7 and §21.4.17: 423 with the shortest interval we accept.
            raise RegisterRefused(
                423, "Interval Too Brief", (("Min-Expires", str(settings.min_expires)),)
            )
        granted = min(requested, settings.max_expires)
        changes.append(
            ContactChange(
                Binding(
                    aor=aor,
                    contact=str(contact.uri),
                    expires_at=now + granted,
                    call_id=call_id,
                    cseq=cseq,
                    q=_q_value(contact),
                    path=path,
                    instance=_instance(contact),
                    reg_id=_reg_id(contact),
                    received=received,
                    user_agent=user_agent,
                    epid=_unquote(epid) if epid else None,
                ),
                granted,
            )
        )
    return RegisterPlan(aor, call_id, cseq, changes)


def _check_extensions(request: Request) -> None:
    """RFC 3261 §8.2.2.3: 420 listing in Unsupported what Require names and we lack."""
    try:
        required = request.headers.get_list("Require")
    except SipParseError:
        raise RegisterRefused(400, "Bad Require header") from None
    unsupported = [tag for tag in required if tag.lower() not in SUPPORTED_EXTENSIONS]
    if unsupported:
        raise RegisterRefused(420, None, (("Unsupported", ", ".join(unsupported)),))


def _requested_expiry(
    contact: NameAddr, header_expires: int | None, settings: RegistrarSettings
) -> int:
    """§10.3 step 7: the Contact's expires parameter, else the Expires header, else our
    default."""
    param = contact.param("expires")
    if param is not None:
        return _strict_seconds(param, "expires parameter in Contact header")
    if header_expires is not None:
        return header_expires
    return settings.default_expires


def _q_value(contact: NameAddr) -> float | None:
    q = contact.param("q")
    return float(q) if q else None  # the parser checked the qvalue grammar


def _instance(contact: NameAddr) -> str | None:
    """The `+sip.instance` Contact parameter's URN, without its quotes and angle
    brackets (RFC 5626 §4.1, [MS-SIPREGE] endpoint identity)."""
    value = contact.param("+sip.instance")
    if not value:
        return None
    return _unquote(value).strip("<>") or None


def _reg_id(contact: NameAddr) -> int | None:
    value = contact.param("reg-id")
    if value is None:
        return None
    number = bounded_int(value, 2**31 - 1) if value.isdigit() else None
    if number is None or number == 0:
        raise RegisterRefused(400, "Bad reg-id parameter in Contact header")
    return number


def _path(request: Request) -> tuple[str, ...]:
    """The Path values, first hop first, as written (RFC 3327 §5.3 stores them).

    Only proxies add Path (RFC 3327 §5.2), so a REGISTER that reached us directly (one
    Via) has none that we may trust: its Path is ignored, or a client could have requests
    for its user sent to any host it names.
    """
    if len(request.vias) < 2:
        return ()
    try:
        values = request.headers.get_list("Path")
        for value in values:
            parse_name_addr(value, "Path")
    except SipParseError:
        raise RegisterRefused(400, "Bad Path header") from None
    return tuple(values)


def contact_value(binding: Binding, now: float) -> str:
    """A 200's Contact for *binding* (RFC 3261 §10.3 step 8: with its expires), echoing
    q and the device identity it was registered with (RFC 5626 §6)."""
    text = f"<{binding.contact}>;expires={binding.expires_in(now)}"
    if binding.q is not None:
        text += f";q={binding.q:g}"
    if binding.instance is not None:
        text += f';+sip.instance="<{binding.instance}>"'
    if binding.reg_id is not None:
        text += f";reg-id={binding.reg_id}"
    return text


def _supports_path(request: Request) -> bool:
    try:
        return "path" in (tag.lower() for tag in request.headers.get_list("Supported"))
    except SipParseError:
        return False


class _HttpDate:
    """The `Date` header value (RFC 3261 §20.17) for a time, formatted once per second:
    `formatdate` costs a few microseconds, paid per 200 at thousands a second otherwise."""

    def __init__(self) -> None:
        self._second: int | None = None
        self._text = ""

    def __call__(self, now: float) -> str:
        second = int(now)
        if second != self._second:
            self._text = formatdate(second, usegmt=True)
            self._second = second
        return self._text


class Registrar:
    """Runs REGISTERs against a location store (RFC 3261 §10.3)."""

    def __init__(
        self, store: ILocationStore, settings: RegistrarSettings, clock: IReactorTime
    ) -> None:
        self.store = store
        self.settings = settings
        self._clock = clock
        self._date = _HttpDate()

    def register(
        self, request: Request, aor: AddressOfRecord, received: str | None = None
    ) -> Deferred[RegisterReply]:
        """Fire with the reply to *request*, a REGISTER for *aor*; never fails."""
        now = self._clock.seconds()
        try:
            plan = plan_register(request, aor, now, self.settings, received)
        except RegisterRefused as refused:
            return succeed(refused.reply)
        try:
            stored = self.store.modify(aor, plan.apply, now)
        except Exception:
            stored = Deferred()
            stored.errback(Failure())
        return stored.addCallbacks(self._registered, self._failed, (request, plan, now), {}, (aor,))

    def _registered(
        self, bindings: tuple[Binding, ...], request: Request, plan: RegisterPlan, now: float
    ) -> RegisterReply:
        ordered = sorted(bindings, key=lambda b: -(1.0 if b.q is None else b.q))
        headers: list[tuple[str, str]] = [
            ("Contact", contact_value(binding, now)) for binding in ordered
        ]
        if plan.granted is not None:
            headers.append(("Expires", str(plan.granted)))
        if plan.changes and _supports_path(request):
            headers.extend(("Path", hop) for hop in plan.changes[0].binding.path)
        headers.extend(("Service-Route", f"<{route}>") for route in self.settings.service_route)
        if "ms-keep-alive" in request.headers:
            headers.append(("ms-keep-alive", MS_KEEP_ALIVE))
        headers.append(("Date", self._date(now)))
        log.info(
            "registered {aor}: {count} bindings",
            aor=str(plan.aor),
            count=len(bindings),
            granted=plan.granted,
        )
        return RegisterReply(200, None, tuple(headers))

    def _failed(self, failure: Failure, aor: AddressOfRecord) -> RegisterReply:
        if failure.check(OutOfOrder):
            log.info(
                "out-of-order REGISTER for {aor}: {reason}", aor=str(aor), reason=str(failure.value)
            )
            return RegisterReply(500, "Out of order CSeq")
        if failure.check(LocationStoreError):
            log.warn(
                "location store failed for {aor}: {reason}", aor=str(aor), reason=str(failure.value)
            )
            return RegisterReply(500, "Location service unavailable")
        log.failure("registrar failed for {aor}", failure, aor=str(aor))
        return RegisterReply(500, "Registrar failed")
