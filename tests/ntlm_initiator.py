"""A real NTLM initiator for the tests: gss-ntlmssp through python-gssapi, in the
connection-less (datagram) mode [MS-SIPAE] clients use.

python-gssapi's `RequirementFlag` is a closed enum without gss-ntlmssp's
GSS_C_DATAGRAM_FLAG (0x10000, `gssapi_ntlmssp.h`); it is registered through gssapi's own
enum-extension hook, which must run before `gssapi.raw.types` is imported (see
docs/research/ntlm-datagram-acceptor.md). `UNAVAILABLE` says why the tests that need it
skip: gssapi missing, or imported before the flag could be registered.
"""

from __future__ import annotations

import importlib.util
import struct
import sys
from typing import Any

DATAGRAM_FLAG = 0x10000
NTLMSSP_OID = "1.3.6.1.4.1.311.2.2.10"
SET_SEQ_NUM_OID = "1.3.6.1.4.1.7165.655.1.1"  # GSS_NTLMSSP_SET_SEQ_NUM_OID
SESSION_KEY_OID = "1.2.840.113554.1.2.2.5.5"  # GSS_C_INQ_SSPI_SESSION_KEY


def _register_datagram_flag() -> str | None:
    if "gssapi.raw.types" not in sys.modules:
        spec = importlib.util.find_spec("gssapi")
        if spec is None or spec.submodule_search_locations is None:
            return "python-gssapi is not installed (the `kerberos` extra)"
        path = f"{spec.submodule_search_locations[0]}/raw/_enum_extensions/__init__.py"
        ext_spec = importlib.util.spec_from_file_location("gssapi.raw._enum_extensions", path)
        if ext_spec is None or ext_spec.loader is None:
            return "python-gssapi has no enum-extension hook"
        module = importlib.util.module_from_spec(ext_spec)
        sys.modules["gssapi.raw._enum_extensions"] = module
        ext_spec.loader.exec_module(module)
        module.register_value("RequirementFlag", "ntlmssp_datagram", DATAGRAM_FLAG)
    import gssapi.raw

    if DATAGRAM_FLAG not in {int(flag) for flag in gssapi.raw.RequirementFlag}:
        return "gssapi was imported before the NTLM datagram flag could be registered"
    return None


UNAVAILABLE = _register_datagram_flag()


class DatagramInitiator:
    """One NTLM client context (user `DOMAIN\\user`) for target `sip@host`."""

    def __init__(self, user: str, domain: str, password: str, host: str) -> None:
        import gssapi
        import gssapi.raw as gr
        from gssapi.raw import ext_password

        self._gssapi = gssapi
        mech = gssapi.OID.from_int_seq(NTLMSSP_OID)
        name = gssapi.Name(f"{domain}\\{user}", gssapi.NameType.user)
        creds = ext_password.acquire_cred_with_password(
            name, password.encode(), usage="initiate", mechs=[mech]
        ).creds
        flags = (
            int(gr.RequirementFlag.integrity)
            | int(gr.RequirementFlag.replay_detection)
            | int(gr.RequirementFlag.out_of_sequence_detection)
            | DATAGRAM_FLAG
        )
        self.context: Any = gssapi.SecurityContext(
            name=gssapi.Name(f"sip@{host}", gssapi.NameType.hostbased_service),
            creds=gssapi.Credentials(creds),
            mech=mech,
            usage="initiate",
            flags=flags,
        )

    def first_token(self) -> bytes:
        """Connection-less NTLM starts with an empty token ([MS-NLMP] §3.1.5.2)."""
        return bytes(self.context.step() or b"")

    def answer(self, challenge: bytes) -> bytes:
        """The AUTHENTICATE for the server's CHALLENGE."""
        return bytes(self.context.step(challenge))

    def session_key(self) -> bytes:
        from gssapi.raw import ext_ggf

        oid = self._gssapi.OID.from_int_seq(SESSION_KEY_OID)
        return bytes(ext_ggf.inquire_sec_context_by_oid(self.context, oid)[0])

    def _set_sequence(self, sequence: int) -> None:
        from gssapi.raw import ext_ggf

        oid = self._gssapi.OID.from_int_seq(SET_SEQ_NUM_OID)
        ext_ggf.set_sec_context_option(oid, self.context, struct.pack("=I", sequence))

    def sign(self, message: bytes, sequence: int) -> bytes:
        """GSS_GetMIC at an explicit sequence number (datagram mode)."""
        self._set_sequence(sequence)
        return bytes(self.context.get_signature(message))

    def verify(self, message: bytes, signature: bytes, sequence: int) -> bool:
        """GSS_VerifyMIC with the sequence number the application carries."""
        from gssapi.raw.misc import GSSError

        self._set_sequence(sequence)
        try:
            self.context.verify_signature(message, signature)
        except GSSError:
            return False
        return True
