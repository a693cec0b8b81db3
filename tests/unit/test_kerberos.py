"""The logic around the Kerberos acceptor that needs no KDC: which AOR a principal is, and
the bounded, expiring table of security associations ([MS-SIPAE] §3.3.1)."""

from __future__ import annotations

from typing import cast

import gssapi
from twisted.internet.task import Clock

from homeredirect.auth.kerberos import KerberosAssociation, KerberosAssociations, PrincipalMapper
from homeredirect.resolve.interfaces import AddressOfRecord

MAPPER = PrincipalMapper("SIPTEST.EXAMPLE", "example.com", {"PARTNER.EXAMPLE": "partner.org"})
NO_CONTEXT = cast(gssapi.SecurityContext, None)
"""The table never touches an association's context."""


def association(table: KerberosAssociations, opaque: str, ticket: float | None = None) -> None:
    table.add(
        KerberosAssociation(
            opaque, NO_CONTEXT, AddressOfRecord("alice", "example.com"), 4, table.deadline(ticket)
        )
    )


def test_principal_of_the_service_realm_is_a_user_of_the_auth_realm() -> None:
    assert MAPPER.aor_of("alice@SIPTEST.EXAMPLE") == AddressOfRecord("alice", "example.com")


def test_mapped_realm_names_its_sip_domain() -> None:
    assert MAPPER.aor_of("bob@PARTNER.EXAMPLE") == AddressOfRecord("bob", "partner.org")


def test_principal_of_an_unmapped_foreign_realm_is_nobody() -> None:
    assert MAPPER.aor_of("alice@EVIL.EXAMPLE") is None


def test_principal_with_an_instance_is_nobody() -> None:
    assert MAPPER.aor_of("alice/admin@SIPTEST.EXAMPLE") is None
    assert MAPPER.aor_of("sip/director.example.com@SIPTEST.EXAMPLE") is None


def test_principal_without_realm_or_user_is_nobody() -> None:
    assert MAPPER.aor_of("alice") is None
    assert MAPPER.aor_of("@SIPTEST.EXAMPLE") is None


def test_principal_user_case_is_kept_as_sip_compares_users_case_sensitively() -> None:
    assert MAPPER.aor_of("Alice@SIPTEST.EXAMPLE") == AddressOfRecord("Alice", "example.com")


def test_associations_expire_after_their_lifetime() -> None:
    clock = Clock()
    table = KerberosAssociations(clock, capacity=10, lifetime=100)
    association(table, "A")
    clock.advance(99)
    assert table.get("A") is not None
    clock.advance(1)
    assert table.get("A") is None
    assert len(table) == 0


def test_association_expires_with_its_ticket_when_that_ends_first() -> None:
    clock = Clock()
    table = KerberosAssociations(clock, capacity=10, lifetime=100)
    association(table, "A", ticket=30)
    association(table, "B")
    clock.advance(30)
    assert "A" not in table
    assert "B" in table


def test_table_is_bounded_and_drops_the_oldest() -> None:
    clock = Clock()
    table = KerberosAssociations(clock, capacity=3, lifetime=100)
    for n in range(5):
        association(table, f"SA{n}")
        clock.advance(1)
    assert len(table) == 3
    assert [opaque for opaque in ("SA0", "SA1", "SA2", "SA3", "SA4") if opaque in table] == [
        "SA2",
        "SA3",
        "SA4",
    ]


def test_expired_associations_are_dropped_while_adding() -> None:
    clock = Clock()
    table = KerberosAssociations(clock, capacity=1000, lifetime=10)
    for n in range(100):
        association(table, f"SA{n}")
    clock.advance(10)
    association(table, "fresh")
    assert len(table) == 1
