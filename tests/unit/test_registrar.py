"""The registrar's rules (RFC 3261 §10.3, RFC 3327, RFC 3608, RFC 5626, [MS-SIPREGE]),
driven with a Clock against the in-memory location store."""

from __future__ import annotations

from collections.abc import Sequence

from twisted.internet.defer import Deferred, fail
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from homeredirect.registrar.location import (
    Binding,
    BindingChange,
    ILocationStore,
    LocationStoreError,
)
from homeredirect.registrar.memory_store import MemoryLocationStore
from homeredirect.registrar.registrar import (
    MS_KEEP_ALIVE,
    RegisterReply,
    Registrar,
    RegistrarSettings,
)
from homeredirect.resolve.interfaces import AddressOfRecord
from homeredirect.sip.message import Request
from homeredirect.sip.parser import MessageReceived, parse_datagram

ALICE = AddressOfRecord("alice", "example.com")
START = 1_700_000_000.0
SETTINGS = RegistrarSettings(min_expires=60, max_expires=7200, default_expires=3600)


PROXY_VIA = "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKproxy"
"""A second Via: the REGISTER came through a proxy, which is what may add Path."""


def register(
    contacts: Sequence[str] = ("<sip:alice@192.0.2.10:5099>",),
    *,
    expires: str | None = "3600",
    call_id: str = "call-1@x",
    cseq: int = 1,
    aor: str = "alice@example.com",
    extra: Sequence[str] = (),
    from_params: str = "",
) -> Request:
    lines = [
        "REGISTER sip:example.com SIP/2.0",
        "Via: SIP/2.0/UDP 192.0.2.10:5099;branch=z9hG4bKreg;rport",
        "Max-Forwards: 70",
        f"From: <sip:{aor}>;tag=ft1{from_params}",
        f"To: <sip:{aor}>",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} REGISTER",
        *(f"Contact: {c}" for c in contacts),
        *([f"Expires: {expires}"] if expires is not None else []),
        *extra,
        "Content-Length: 0",
        "",
        "",
    ]
    event = parse_datagram("\r\n".join(lines).encode())
    assert isinstance(event, MessageReceived), event
    assert isinstance(event.message, Request)
    return event.message


def header(reply: RegisterReply, name: str) -> list[str]:
    return [value for key, value in reply.headers if key.lower() == name.lower()]


class RegistrarTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(START)
        self.store = MemoryLocationStore()
        self.registrar = Registrar(self.store, SETTINGS, self.clock)

    def send(self, request: Request, received: str | None = "UDP:192.0.2.10:5099") -> RegisterReply:
        return self.successResultOf(self.registrar.register(request, ALICE, received))

    def bindings(self) -> tuple[Binding, ...]:
        return self.successResultOf(self.store.lookup(ALICE, self.clock.seconds()))


class BindingTests(RegistrarTestCase):
    def test_register_adds_a_binding_and_the_200_lists_it_with_expires(self) -> None:
        reply = self.send(register())
        self.assertEqual(reply.status, 200)
        self.assertEqual(header(reply, "Contact"), ["<sip:alice@192.0.2.10:5099>;expires=3600"])
        (binding,) = self.bindings()
        self.assertEqual(binding.contact, "sip:alice@192.0.2.10:5099")
        self.assertEqual(binding.expires_at, START + 3600)
        self.assertEqual((binding.call_id, binding.cseq), ("call-1@x", 1))
        self.assertEqual(binding.received, "UDP:192.0.2.10:5099")

    def test_the_200_carries_an_expires_header_with_the_granted_expiry(self) -> None:
        reply = self.send(register(expires="1800"))
        self.assertEqual(header(reply, "Expires"), ["1800"])
        self.assertEqual(len(header(reply, "Date")), 1)

    def test_refresh_replaces_the_binding_with_the_new_expiry(self) -> None:
        self.send(register())
        self.clock.advance(1000)
        reply = self.send(register(expires="600", cseq=2))
        self.assertEqual(header(reply, "Contact"), ["<sip:alice@192.0.2.10:5099>;expires=600"])
        (binding,) = self.bindings()
        self.assertEqual(binding.expires_at, START + 1600)
        self.assertEqual(binding.cseq, 2)

    def test_expires_zero_header_removes_the_binding(self) -> None:
        self.send(register())
        reply = self.send(register(expires="0", cseq=2))
        self.assertEqual(reply.status, 200)
        self.assertEqual(header(reply, "Contact"), [])
        self.assertEqual(header(reply, "Expires"), ["0"])
        self.assertEqual(self.bindings(), ())

    def test_expires_zero_contact_parameter_removes_only_that_binding(self) -> None:
        self.send(register(["<sip:alice@192.0.2.10:5099>", "<sip:alice@192.0.2.11:5099>"]))
        reply = self.send(register(["<sip:alice@192.0.2.10:5099>;expires=0"], cseq=2))
        self.assertEqual(header(reply, "Contact"), ["<sip:alice@192.0.2.11:5099>;expires=3600"])

    def test_contact_expires_parameter_wins_over_the_header(self) -> None:
        reply = self.send(register(["<sip:alice@192.0.2.10:5099>;expires=120"], expires="3600"))
        self.assertEqual(header(reply, "Contact"), ["<sip:alice@192.0.2.10:5099>;expires=120"])
        self.assertEqual(header(reply, "Expires"), ["120"])

    def test_no_expiry_given_gets_the_default(self) -> None:
        reply = self.send(register(expires=None))
        self.assertEqual(header(reply, "Expires"), ["3600"])

    def test_too_long_an_expiry_is_shortened_to_max_expires(self) -> None:
        reply = self.send(register(expires="100000"))
        self.assertEqual(header(reply, "Expires"), ["7200"])
        self.assertEqual(header(reply, "Contact"), ["<sip:alice@192.0.2.10:5099>;expires=7200"])

    def test_bindings_expire_with_the_clock(self) -> None:
        self.send(register(expires="60"))
        self.clock.advance(59)
        self.assertEqual(len(self.bindings()), 1)
        self.clock.advance(1)
        self.assertEqual(self.bindings(), ())

    def test_a_query_without_contact_lists_the_bindings_and_changes_nothing(self) -> None:
        self.send(register())
        self.clock.advance(100)
        reply = self.send(register([], expires=None, cseq=2))
        self.assertEqual(reply.status, 200)
        self.assertEqual(header(reply, "Contact"), ["<sip:alice@192.0.2.10:5099>;expires=3500"])
        self.assertEqual(header(reply, "Expires"), [])

    def test_all_current_bindings_are_listed_highest_q_first(self) -> None:
        self.send(register(["<sip:alice@192.0.2.10:5099>;q=0.5"], call_id="a"))
        reply = self.send(register(["<sip:alice@192.0.2.20:5099>;q=0.9"], call_id="b"))
        self.assertEqual(
            header(reply, "Contact"),
            [
                "<sip:alice@192.0.2.20:5099>;expires=3600;q=0.9",
                "<sip:alice@192.0.2.10:5099>;expires=3600;q=0.5",
            ],
        )
        self.assertEqual(sorted(b.q or 0 for b in self.bindings()), [0.5, 0.9])


class WildcardTests(RegistrarTestCase):
    def test_star_with_expires_zero_removes_every_binding(self) -> None:
        self.send(register(["<sip:alice@192.0.2.10:5099>"], call_id="a"))
        self.send(register(["<sip:alice@192.0.2.11:5099>"], call_id="b"))
        reply = self.send(register(["*"], expires="0", call_id="c"))
        self.assertEqual(reply.status, 200)
        self.assertEqual(header(reply, "Contact"), [])
        self.assertEqual(header(reply, "Expires"), ["0"])
        self.assertEqual(self.bindings(), ())

    def test_star_without_expires_zero_is_400(self) -> None:
        self.send(register())
        for expires in ("3600", None):
            reply = self.send(register(["*"], expires=expires, call_id="c"))
            self.assertEqual(reply.status, 400)
            self.assertIn("Expires", reply.reason or "")
        self.assertEqual(len(self.bindings()), 1)

    def test_star_with_an_older_cseq_of_the_same_call_id_is_refused(self) -> None:
        self.send(register(cseq=5))
        reply = self.send(register(["*"], expires="0", cseq=5))
        self.assertEqual(reply.status, 500)
        self.assertEqual(len(self.bindings()), 1)


class OrderingTests(RegistrarTestCase):
    """§10.3 step 7: same Call-ID and a CSeq not higher than stored -> the request fails."""

    def test_same_call_id_with_a_lower_or_equal_cseq_fails_and_writes_nothing(self) -> None:
        self.send(register(expires="3600", cseq=5))
        for cseq in (5, 4):
            reply = self.send(register(expires="0", cseq=cseq))
            self.assertEqual((reply.status, reply.reason), (500, "Out of order CSeq"))
        (binding,) = self.bindings()
        self.assertEqual(binding.cseq, 5)

    def test_another_call_id_updates_whatever_its_cseq(self) -> None:
        self.send(register(cseq=5))
        reply = self.send(register(expires="0", cseq=1, call_id="other@x"))
        self.assertEqual(reply.status, 200)
        self.assertEqual(self.bindings(), ())

    def test_one_out_of_order_contact_aborts_the_whole_request(self) -> None:
        self.send(register(["<sip:alice@192.0.2.10:5099>"], cseq=5))
        reply = self.send(
            register(["<sip:alice@192.0.2.11:5099>", "<sip:alice@192.0.2.10:5099>"], cseq=3)
        )
        self.assertEqual(reply.status, 500)
        self.assertEqual([b.contact for b in self.bindings()], ["sip:alice@192.0.2.10:5099"])


class IntervalTests(RegistrarTestCase):
    def test_too_brief_an_expiry_gets_423_with_min_expires(self) -> None:
        reply = self.send(register(expires="30"))
        self.assertEqual((reply.status, reply.reason), (423, "Interval Too Brief"))
        self.assertEqual(header(reply, "Min-Expires"), ["60"])
        self.assertEqual(self.bindings(), ())

    def test_too_brief_a_contact_expires_parameter_gets_423(self) -> None:
        reply = self.send(register(["<sip:alice@192.0.2.10:5099>;expires=10"]))
        self.assertEqual(reply.status, 423)

    def test_the_minimum_itself_is_accepted(self) -> None:
        self.assertEqual(self.send(register(expires="60")).status, 200)


class BadInputTests(RegistrarTestCase):
    def test_an_expires_header_that_does_not_parse_gets_400_naming_it(self) -> None:
        reply = self.send(register(expires="soon"))
        self.assertEqual((reply.status, reply.reason), (400, "Bad Expires header"))
        self.assertEqual(self.bindings(), ())

    def test_a_contact_expires_parameter_that_does_not_parse_gets_400_naming_it(self) -> None:
        reply = self.send(register(["<sip:alice@192.0.2.10:5099>;expires=later"]))
        self.assertEqual(reply.status, 400)
        self.assertIn("Contact", reply.reason or "")

    def test_a_contact_that_does_not_parse_gets_400_naming_the_header(self) -> None:
        # The parser refuses such a message on the wire; a request built another way
        # (an embedding application) still gets 400, not a traceback.
        good = register()
        bad = Request(good.method, good.uri, good.headers.replaced("Contact", "<sip:alice@>"))
        reply = self.send(bad)
        self.assertEqual(reply.status, 400)
        self.assertTrue((reply.reason or "").startswith("Bad Contact header"), reply.reason)

    def test_a_bad_path_gets_400_naming_it(self) -> None:
        reply = self.send(register(extra=[PROXY_VIA, "Path: not a uri"]))
        self.assertEqual((reply.status, reply.reason), (400, "Bad Path header"))

    def test_an_unsupported_required_extension_gets_420(self) -> None:
        reply = self.send(register(extra=["Require: path, foo"]))
        self.assertEqual(reply.status, 420)
        self.assertEqual(header(reply, "Unsupported"), ["foo"])

    def test_two_expires_headers_get_400(self) -> None:
        reply = self.send(register(extra=["Expires: 60"]))
        self.assertEqual(reply.status, 400)


@implementer(ILocationStore)
class BrokenStore:
    """A store whose writes fail (the one case a stub stands in for a real store: the
    registrar's mapping of the failure is logic; the stores' own atomicity is tested
    against them)."""

    def __init__(self, error: Exception) -> None:
        self.error = error
        self.changes: list[BindingChange] = []

    def lookup(self, aor: AddressOfRecord, now: float) -> Deferred[tuple[Binding, ...]]:
        return fail(self.error)

    def modify(
        self, aor: AddressOfRecord, change: BindingChange, now: float
    ) -> Deferred[tuple[Binding, ...]]:
        self.changes.append(change)
        return fail(self.error)

    def purge(self, now: float) -> Deferred[int]:
        return fail(self.error)

    def close(self) -> Deferred[None]:
        return fail(self.error)


class StoreFailureTests(SynchronousTestCase):
    def test_a_store_write_failure_gets_500(self) -> None:
        store = BrokenStore(LocationStoreError("disk full"))
        registrar = Registrar(store, SETTINGS, Clock())
        reply = self.successResultOf(registrar.register(register(), ALICE))
        self.assertEqual((reply.status, reply.reason), (500, "Location service unavailable"))
        self.assertEqual(len(store.changes), 1)

    def test_an_unexpected_store_error_gets_500_and_is_logged(self) -> None:
        registrar = Registrar(BrokenStore(RuntimeError("bug")), SETTINGS, Clock())
        reply = self.successResultOf(registrar.register(register(), ALICE))
        self.assertEqual(reply.status, 500)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


class DeviceTests(RegistrarTestCase):
    """RFC 5626 §6 / [MS-SIPREGE]: a device re-registering replaces its own binding."""

    INSTANCE = '+sip.instance="<urn:uuid:00000000-0000-0000-0000-000000000001>"'

    def test_the_same_instance_and_reg_id_replaces_its_binding_with_a_new_contact(self) -> None:
        self.send(register([f"<sip:alice@192.0.2.10:5099>;{self.INSTANCE};reg-id=1"]))
        reply = self.send(
            register([f"<sip:alice@192.0.2.99:6000>;{self.INSTANCE};reg-id=1"], call_id="new")
        )
        self.assertEqual(
            header(reply, "Contact"),
            [
                "<sip:alice@192.0.2.99:6000>;expires=3600;"
                '+sip.instance="<urn:uuid:00000000-0000-0000-0000-000000000001>";reg-id=1'
            ],
        )
        (binding,) = self.bindings()
        self.assertEqual(binding.instance, "urn:uuid:00000000-0000-0000-0000-000000000001")
        self.assertEqual(binding.reg_id, 1)

    def test_a_second_device_adds_a_binding(self) -> None:
        other = '+sip.instance="<urn:uuid:00000000-0000-0000-0000-000000000002>"'
        self.send(register([f"<sip:alice@192.0.2.10:5099>;{self.INSTANCE}"]))
        reply = self.send(register([f"<sip:alice@192.0.2.20:5099>;{other}"], call_id="d2"))
        self.assertEqual(len(header(reply, "Contact")), 2)
        self.assertEqual(len(self.bindings()), 2)

    def test_a_bad_reg_id_gets_400(self) -> None:
        reply = self.send(register([f"<sip:alice@192.0.2.10:5099>;{self.INSTANCE};reg-id=x"]))
        self.assertEqual(reply.status, 400)


class MicrosoftTests(RegistrarTestCase):
    """[MS-SIPREGE]: what Lync clients and pidgin-sipe send is accepted and answered."""

    def lync_register(self, **kwargs: object) -> Request:
        return register(
            [
                "<sip:192.0.2.10:5099;transport=tls;ms-opaque=d3470f2e1d>;"
                'methods="INVITE, MESSAGE, INFO, OPTIONS, BYE, CANCEL, NOTIFY, ACK, REFER";'
                'proxy=replace;+sip.instance="<urn:uuid:5d9e2d8b-7c2f-5a5e-9b39-1f1a0c1e5d11>"'
            ],
            expires=None,
            from_params=";epid=01010101",
            extra=[
                "Supported: gruu-10, adhoclist, msrtc-event-categories",
                "Event: registration",
                "ms-keep-alive: UAC;hop-hop=yes",
            ],
        )

    def test_a_lync_register_is_accepted_and_keeps_the_epid(self) -> None:
        reply = self.send(self.lync_register())
        self.assertEqual(reply.status, 200)
        (binding,) = self.bindings()
        self.assertEqual(binding.epid, "01010101")
        self.assertEqual(binding.instance, "urn:uuid:5d9e2d8b-7c2f-5a5e-9b39-1f1a0c1e5d11")

    def test_ms_keep_alive_is_answered_as_uas(self) -> None:
        reply = self.send(self.lync_register())
        self.assertEqual(header(reply, "ms-keep-alive"), [MS_KEEP_ALIVE])
        self.assertEqual(header(reply, "Expires"), ["3600"])

    def test_no_ms_keep_alive_in_the_request_none_in_the_reply(self) -> None:
        self.assertEqual(header(self.send(register()), "ms-keep-alive"), [])

    def test_an_event_other_than_registration_gets_489_with_diagnostics(self) -> None:
        reply = self.send(register(extra=["Event: presence"]))
        self.assertEqual(reply.status, 489)
        self.assertTrue(header(reply, "ms-diagnostics")[0].startswith("4055;"))


class PathAndServiceRouteTests(RegistrarTestCase):
    def test_path_is_stored_per_binding_and_echoed_when_supported(self) -> None:
        reply = self.send(
            register(
                extra=[
                    PROXY_VIA,
                    "Path: <sip:edge1.example.com;lr>",
                    "Path: <sip:edge2.example.com;lr>",
                    "Supported: path",
                ]
            )
        )
        self.assertEqual(
            header(reply, "Path"), ["<sip:edge1.example.com;lr>", "<sip:edge2.example.com;lr>"]
        )
        (binding,) = self.bindings()
        self.assertEqual(binding.path, ("<sip:edge1.example.com;lr>", "<sip:edge2.example.com;lr>"))

    def test_path_is_stored_but_not_echoed_to_a_client_that_does_not_support_it(self) -> None:
        reply = self.send(register(extra=[PROXY_VIA, "Path: <sip:edge1.example.com;lr>"]))
        self.assertEqual(header(reply, "Path"), [])
        self.assertEqual(self.bindings()[0].path, ("<sip:edge1.example.com;lr>",))

    def test_path_from_a_directly_connected_client_is_ignored(self) -> None:
        reply = self.send(
            register(extra=["Path: <sip:attacker.example.net;lr>", "Supported: path"])
        )
        self.assertEqual(reply.status, 200)
        self.assertEqual(header(reply, "Path"), [])
        self.assertEqual(self.bindings()[0].path, ())

    def test_service_route_is_returned_when_configured(self) -> None:
        registrar = Registrar(
            self.store,
            RegistrarSettings(service_route=("sip:home1.example.com;lr",)),
            self.clock,
        )
        reply = self.successResultOf(registrar.register(register(), ALICE))
        self.assertEqual(header(reply, "Service-Route"), ["<sip:home1.example.com;lr>"])

    def test_no_service_route_by_default(self) -> None:
        self.assertEqual(header(self.send(register()), "Service-Route"), [])


def test_settings_come_from_the_registrar_table() -> None:
    from homeredirect.config.registrar import RegistrarConfig

    settings = RegistrarSettings.from_config(
        RegistrarConfig(min_expires=30, max_expires=600, default_expires=300)
    )
    assert (settings.min_expires, settings.max_expires, settings.default_expires) == (30, 600, 300)
