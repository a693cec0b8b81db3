"""TLS listeners: certificates are replaced on reload (SIGHUP) without dropping
established connections; a bad replacement is refused; failed handshakes cost
nothing but their own connection."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cryptography.x509.oid import NameOID
from OpenSSL import SSL
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from homeredirect.tools.certs import ensure_test_pki
from tests.integration.support import (
    connect_stream,
    director_config,
    disconnect,
    pki_in,
    register,
    start_director,
)


class TlsReloadTests(TestCase):
    def setUp(self) -> None:
        self.directory = Path(self.mktemp()).resolve()
        self.directory.mkdir()
        self.service = start_director(
            self.directory, director_config(self.directory, transports=("tls",))
        )
        self.addCleanup(self.service.stopService)
        self.port = self.service.listener("tls").address[1]
        self.old_ca = self.directory / "old-ca.pem"
        self.old_ca.write_bytes(pki_in(self.directory).ca_certificate.read_bytes())

    @inlineCallbacks
    def ask(self, client):  # type: ignore[no-untyped-def]
        client.transport.write(register("alice@example.com", transport="TLS", via_port=client.port))
        response = yield client.next()
        return response.status

    @inlineCallbacks
    def test_reload_uses_new_certificate_and_keeps_old_connections(self):  # type: ignore[no-untyped-def]
        established = yield connect_stream(self.port, tls_ca=self.old_ca)
        self.addCleanup(disconnect, established)
        self.assertEqual((yield self.ask(established)), 301)

        renewed = ensure_test_pki(
            self.directory / "pki", ["director.example.com"], ["127.0.0.1"], force=True
        )
        yield self.service.reload()

        fresh = yield connect_stream(self.port, tls_ca=renewed.ca_certificate)
        self.addCleanup(disconnect, fresh)
        self.assertEqual((yield self.ask(fresh)), 301)
        # The connection made before the reload still works.
        self.assertEqual((yield self.ask(established)), 301)
        # A client that only trusts the old CA can no longer connect.
        stale = yield connect_stream(self.port, tls_ca=self.old_ca)
        yield stale.closed
        self.assertEqual(stale.received.pending, [])

    @inlineCallbacks
    def test_broken_replacement_keeps_the_current_certificate(self):  # type: ignore[no-untyped-def]
        pki = pki_in(self.directory)
        pki.server_certificate.write_text("not a certificate\n")
        yield self.service.reload()
        client = yield connect_stream(self.port, tls_ca=self.old_ca)
        self.addCleanup(disconnect, client)
        self.assertEqual((yield self.ask(client)), 301)

    @inlineCallbacks
    def test_plain_tcp_to_tls_port_fails_alone(self):  # type: ignore[no-untyped-def]
        garbage = yield connect_stream(self.port)
        garbage.transport.write(register("alice@example.com", transport="TCP"))
        yield garbage.closed
        client = yield connect_stream(self.port, tls_ca=self.old_ca)
        self.addCleanup(disconnect, client)
        self.assertEqual((yield self.ask(client)), 301)


def _handshake(server_context: SSL.Context, client_context: SSL.Context) -> SSL.Connection | None:
    """Run a TLS handshake in memory; the server side if it completed, else None."""
    server = SSL.Connection(server_context, None)
    server.set_accept_state()
    client = SSL.Connection(client_context, None)
    client.set_connect_state()
    for _ in range(10):
        for side, peer in ((client, server), (server, client)):
            try:
                side.do_handshake()
            except SSL.WantReadError:
                pass
            except SSL.Error:
                return None
            try:
                peer.bio_write(side.bio_read(65536))
            except SSL.WantReadError:
                pass
    try:
        server.do_handshake()
        client.do_handshake()
    except SSL.Error:
        return None
    return server


def _capped_client(client_max: int) -> SSL.Context:
    context = SSL.Context(SSL.TLS_METHOD)
    context.set_min_proto_version(SSL.TLS1_VERSION)
    context.set_max_proto_version(client_max)
    return context


def test_tls_1_2_is_the_minimum(tmp_path: Path) -> None:
    from homeredirect.transport.tls import TlsFiles, build_server_context

    pki = ensure_test_pki(tmp_path, ["director.example.com"], ["127.0.0.1"])
    context = build_server_context(TlsFiles(pki.server_certificate, pki.server_key))
    assert _handshake(context, _capped_client(SSL.TLS1_2_VERSION)) is not None
    assert _handshake(context, _capped_client(SSL.TLS1_1_VERSION)) is None


def _client_context(files: Any | None, ca: Path) -> SSL.Context:
    context = SSL.Context(SSL.TLS_METHOD)
    context.load_verify_locations(str(ca))
    if files is not None:
        context.use_certificate_chain_file(str(files.certificate))
        context.use_privatekey_file(str(files.private_key))
    return context


def _peer_certificate_seen(server_context: SSL.Context, client_context: SSL.Context) -> Any:
    """The client certificate the server saw in a completed handshake (or None)."""
    server = _handshake(server_context, client_context)
    assert server is not None, "handshake failed"
    return server.get_peer_certificate()


def test_client_certificate_is_requested_but_not_required(tmp_path: Path) -> None:
    from homeredirect.tools.certs import ensure_leaf
    from homeredirect.transport.tls import TlsFiles, build_server_context

    pki = ensure_test_pki(tmp_path, ["director.example.com"], ["127.0.0.1"])
    home = ensure_leaf(pki, "home1.example.com")
    asking = build_server_context(
        TlsFiles(pki.server_certificate, pki.server_key, pki.ca_certificate, True)
    )
    seen = _peer_certificate_seen(asking, _client_context(home, pki.ca_certificate))
    assert seen is not None
    names = seen.to_cryptography().subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    assert [name.value for name in names] == ["home1.example.com"]
    # A client without a certificate is still served.
    assert _peer_certificate_seen(asking, _client_context(None, pki.ca_certificate)) is None
    # Without the option, the server does not ask, so a client sends none.
    silent = build_server_context(
        TlsFiles(pki.server_certificate, pki.server_key, pki.ca_certificate)
    )
    assert _peer_certificate_seen(silent, _client_context(home, pki.ca_certificate)) is None
