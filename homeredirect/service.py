"""`makeService(config)`: the whole server as one `IService` (the embedding API).

The tree (STYLE b.8): a MultiService holding the thread pool for blocking
work, one `ListenerService` per `[[listen]]` entry, the transaction
table's timers and, for `role = "home"`, the location store (purged on a
timer, closed on stop) behind the registrar that is the core's local
handler; `reload()` re-reads certificates and the assignment file
without dropping traffic (the twistd plugin calls it on SIGHUP).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import attrs
from twisted.application.service import IService, MultiService, Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.threadpool import ThreadPool

from homeredirect.auth.asserted_identity import AssertedIdentityGate
from homeredirect.auth.factory import build_authenticator
from homeredirect.config.schema import Config, ListenerConfig, Role
from homeredirect.director.core import DirectorCore, DirectorSettings, LocalHandler
from homeredirect.director.edge import EdgeTrustGate, next_hop_home_servers, refuse_local
from homeredirect.director.interfaces import IRoutingPolicy, PolicyContext
from homeredirect.director.policy import load_policy
from homeredirect.director.responses import ResponseFactory, TagSource
from homeredirect.director.targets import HomeServerTargets
from homeredirect.logs import FilteredLogger, set_level
from homeredirect.proxy.stateful import ProxySettings, StatefulProxy
from homeredirect.registrar.factory import build_location_store
from homeredirect.registrar.home import EveryoneHereResolver, HomeRequestHandler, LocationService
from homeredirect.registrar.registrar import Registrar, RegistrarSettings
from homeredirect.registrar.routing import UserRouter
from homeredirect.resolve.factory import AssignmentBackend, build_resolver
from homeredirect.resolve.interfaces import IAssignmentResolver
from homeredirect.transaction.client import ClientTransactionTable
from homeredirect.transaction.server import ServerTransactionTable
from homeredirect.transaction.timers import TimerSettings
from homeredirect.transport.listeners import Address, ListenerService
from homeredirect.transport.network import SipNetwork
from homeredirect.transport.sink import IMessageSink
from homeredirect.transport.stream import ConnectionRegistry, SipStreamFactory
from homeredirect.transport.tls import (
    PeerCheck,
    ReloadableServerContext,
    TlsFiles,
    client_tls_creator,
)
from homeredirect.transport.udp import SipDatagramProtocol

log = FilteredLogger()

_WILDCARDS = ("0.0.0.0", "::", "")


class ThreadPoolService(Service):
    """Owns a bounded thread pool for blocking work (file reads; later LDAP, SQL, GSSAPI)."""

    def __init__(self, pool: ThreadPool) -> None:
        self.pool = pool

    def startService(self) -> None:
        self.pool.start()
        super().startService()  # type: ignore[no-untyped-call]

    def stopService(self) -> None:
        super().stopService()  # type: ignore[no-untyped-call]
        self.pool.stop()


class _TransactionTimers(Service):
    def __init__(self, table: ServerTransactionTable | StatefulProxy) -> None:
        self._table = table

    def stopService(self) -> None:
        super().stopService()  # type: ignore[no-untyped-call]
        self._table.stop()


class _AssignmentBackendService(Service):
    """Releases the assignment backend's connections (Redis, SQLite) on stop."""

    def __init__(self, backend: AssignmentBackend) -> None:
        self._backend = backend

    def stopService(self) -> Deferred[None]:
        super().stopService()  # type: ignore[no-untyped-call]
        return self._backend.close()


class HomeRedirectService(MultiService):
    """The running server; its children are listed in the module docstring."""

    def __init__(
        self,
        config: Config,
        core: DirectorCore,
        resolver: IAssignmentResolver,
        connections: ConnectionRegistry,
        clock: Any,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.config = config
        self.core = core
        self.resolver = resolver
        # The configured [assignments] backend (None without one): reloaded on SIGHUP.
        self.assignments: AssignmentBackend | None = None
        self.connections = connections
        self._clock = clock
        self.listeners: list[ListenerService] = []
        # The server and client transaction tables (set by makeService), for inspection.
        self.transactions: ServerTransactionTable | None = None
        self.proxy: StatefulProxy | None = None
        self.tls_contexts: list[ReloadableServerContext] = []

    def stopService(self) -> Deferred[None]:
        """Stop listening, then close the connections that are still open."""
        # A DeferredList over the children's stopService results.
        stopping: Deferred[object] = super().stopService()  # type: ignore[no-untyped-call]
        return stopping.addCallback(lambda _: self.connections.close_all(self._clock))

    def reload(self) -> Deferred[Any]:
        """Reload TLS certificates and the assignment file; established connections stay."""
        log.info("reloading certificates and assignments")
        for context in self.tls_contexts:
            context.reload()
        if self.running and self.assignments is not None:
            return self.assignments.reload()
        return succeed(None)

    def listener(self, transport: str, index: int = 0) -> ListenerService:
        """The *index*-th running listener of *transport* ("udp", "tcp", "tls")."""
        matching = [s for s in self.listeners if s.description.startswith(transport + " ")]
        return matching[index]


def makeService(config: Config, reactor: Any = None) -> HomeRedirectService:
    """Build the server for *config*. Start-up work that may fail (loading the
    assignment file, the policy, certificates) happens here, so that a bad
    configuration is reported before anything listens."""
    if reactor is None:
        from twisted.internet import reactor as global_reactor

        reactor = global_reactor
    set_level(config.log.level)
    pool = ThreadPool(minthreads=0, maxthreads=4, name="homeredirect")
    resolver: IAssignmentResolver
    assignments: AssignmentBackend | None = None
    # An edge with [edge] next_hop sends everyone there: the next hop is every user's
    # "home server" (reached like one), and no assignments are resolved.
    hop = None if config.edge is None else config.edge.next_hop_target
    routing_config = config
    if hop is not None:
        resolver = EveryoneHereResolver(hop.fqdn)
        routing_config = attrs.evolve(
            config, home_servers=next_hop_home_servers(config.home_servers, hop)
        )
    elif config.assignments is None:
        # Only a home (or edge) server may omit [assignments]: every user of our
        # domains is then assigned here, and the same policy keeps them all local.
        resolver = EveryoneHereResolver(config.server.fqdn)
    else:
        assignments = build_resolver(config, reactor, pool)
        resolver = assignments.resolver
    policy: IRoutingPolicy = load_policy(
        config.policy.name, PolicyContext(fqdn=config.server.fqdn, role=str(config.server.role))
    )
    proxying = config.proxy
    timers = TimerSettings(t1=proxying.t1, t2=proxying.t2, t4=proxying.t4)
    transactions = ServerTransactionTable(reactor, timers)
    registry = ConnectionRegistry()
    network = SipNetwork(reactor, registry, _client_tls_factory(config))
    responses = ResponseFactory(config.server.user_agent, TagSource())
    proxy = StatefulProxy(
        network=network,
        clients=ClientTransactionTable(reactor, timers, timer_c=proxying.timer_c),
        responses=responses,
        secret=os.urandom(16),
        settings=ProxySettings(
            record_route=proxying.record_route,
            path=proxying.path,
            retry_after=config.server.retry_after,
            assert_identity=config.tls_client is not None
            and config.tls_client.certificate is not None,
            failover_timeout=proxying.failover_timeout,
        ),
        clock=reactor,
    )
    location: LocationService | None = None
    local_handler: LocalHandler | None = None
    if config.server.role is Role.EDGE:
        local_handler = refuse_local
    elif config.server.role is Role.HOME:
        store = build_location_store(config.location, reactor, pool)
        location = LocationService(store, reactor, config.registrar.purge_interval)
        local_handler = HomeRequestHandler(
            Registrar(store, RegistrarSettings.from_config(config.registrar), reactor),
            UserRouter(store, proxy, reactor),
        )
    # The same view of [home_servers] names redirect targets and locates proxy targets.
    home_servers = HomeServerTargets(routing_config, reactor=reactor)
    # Services the authenticator needs running (the winbind NTLM backend's helpers).
    auth_services: list[IService] = []
    core = DirectorCore(
        settings=DirectorSettings(
            domains=frozenset(config.server.domains),
            unknown_domain_status=config.server.unknown_domain_status,
            retry_after=config.server.retry_after,
            redirect_status=config.policy.redirect_status,
            redirect_reason=config.policy.redirect_reason,
        ),
        resolver=resolver,
        policy=policy,
        transactions=transactions,
        responses=responses,
        proxy=proxy,
        targets=home_servers,
        locator=home_servers,
        clock=reactor,
        local_handler=local_handler,
        authenticator=None
        if config.auth is None
        else build_authenticator(
            config.auth,
            reactor,
            reactor=reactor,
            pool=pool,
            services=auth_services,
            assignments=config.assignments,
        ),
    )
    top = HomeRedirectService(config, core, resolver, registry, reactor)
    for auth_service in auth_services:
        auth_service.setServiceParent(top)
    if assignments is not None:
        top.assignments = assignments
        # Before the pool: children stop in reverse order, so the pool's threads are done
        # with the backend's connections by the time they are closed.
        _AssignmentBackendService(assignments).setServiceParent(top)  # type: ignore[no-untyped-call]
    ThreadPoolService(pool).setServiceParent(top)  # type: ignore[no-untyped-call]
    top.transactions = transactions
    top.proxy = proxy
    _TransactionTimers(transactions).setServiceParent(top)  # type: ignore[no-untyped-call]
    _TransactionTimers(proxy).setServiceParent(top)  # type: ignore[no-untyped-call]
    if location is not None:
        location.setServiceParent(top)  # type: ignore[no-untyped-call]
    # [MS-SIPRE] §2.2.15: ms-edge-proxy-message-trust is kept only from trusted edges,
    # before the core sees a request; an edge marks its clients' requests.
    marking = config.server.role is Role.EDGE and (config.edge is None or config.edge.mark)
    sink: IMessageSink = EdgeTrustGate(
        core,
        frozenset(config.policy.trusted_edges),
        mark=config.server.fqdn if marking else None,
    )
    # RFC 3325 §5: an asserted identity is believed only from trusted servers, and removed
    # from every other request before anything reads it.
    sink = AssertedIdentityGate(sink, _identity_asserters(config))
    for listener in config.listeners:
        service = _listener_service(listener, config, sink, network, registry, reactor, top)
        service.setServiceParent(top)  # type: ignore[no-untyped-call]
        top.listeners.append(service)
    return top


def _advertised(listener: ListenerConfig, bound: Address, fqdn: str) -> Address:
    """What our Vias say for a listener: its host unless it is a wildcard, then our FQDN."""
    host = listener.host if listener.host not in _WILDCARDS else fqdn
    return host, bound[1]


def _listener_service(
    listener: ListenerConfig,
    config: Config,
    core: IMessageSink,
    network: SipNetwork,
    registry: ConnectionRegistry,
    reactor: Any,
    top: HomeRedirectService,
) -> ListenerService:
    limits = config.limits
    transport = str(listener.transport).upper()
    description = f"{listener.transport} {listener.host}:{listener.port}"

    if transport == "UDP":
        protocol = SipDatagramProtocol(
            core,
            (listener.host, listener.port),
            limits.max_message_size,
            limits.udp_receive_buffer,
            limits.udp_send_buffer,
        )

        def bound_udp(address: Address) -> None:
            protocol.advertised = _advertised(listener, address, config.server.fqdn)
            network.add_listener("UDP", protocol.advertised, address)
            network.add_datagram_protocol(protocol, address[0])

        return ListenerService(
            description,
            lambda: reactor.listenUDP(listener.port, protocol, interface=listener.host),
            bound_udp,
        )

    factory = SipStreamFactory(
        sink=core,
        transport_name=transport,
        advertised=(listener.host, listener.port),
        registry=registry,
        max_message_size=limits.max_message_size,
        max_connections=limits.max_connections,
        idle_timeout=limits.idle_timeout,
        clock=reactor,
        peer_check=(
            PeerCheck(listener.allowed_peers) if listener.require_client_certificate else None
        ),
    )
    serving: Any = factory
    if transport == "TLS":
        assert listener.certificate is not None and listener.private_key is not None
        context = ReloadableServerContext(
            TlsFiles(
                listener.certificate,
                listener.private_key,
                listener.ca,
                listener.request_client_certificate,
                listener.require_client_certificate,
            )
        )
        top.tls_contexts.append(context)
        serving = TLSMemoryBIOFactory(context, False, factory)

    def bound_stream(address: Address) -> None:
        factory.advertised = _advertised(listener, address, config.server.fqdn)
        network.add_listener(transport, factory.advertised, address)
        network.add_stream_factory(transport, factory)

    return ListenerService(
        description,
        lambda: reactor.listenTCP(listener.port, serving, backlog=1024, interface=listener.host),
        bound_stream,
    )


def _identity_asserters(config: Config) -> frozenset[str]:
    """The servers whose P-Asserted-Identity is believed: `[auth] trusted_peers`, by
    default the `allowed_peers` of the TLS listeners; none without `[auth]`."""
    if config.auth is None:
        return frozenset()
    if config.auth.trusted_peers is not None:
        return frozenset(config.auth.trusted_peers)
    return frozenset(peer for listener in config.listeners for peer in listener.allowed_peers)


def _client_tls_factory(config: Config) -> Callable[[str], IOpenSSLClientConnectionCreator]:
    """How we verify the servers we connect to over TLS, by FQDN (RFC 5922 §7.2): against
    `[tls_client].ca`; without one, the first `ca` of a TLS listener (what a small
    deployment with one private CA wants), else the platform's trust store. Our
    `[tls_client]` certificate is presented to servers that ask (mutual TLS)."""
    settings = config.tls_client
    ca = None if settings is None else settings.ca
    if ca is None:
        ca = next((listener.ca for listener in config.listeners if listener.ca is not None), None)
    if settings is None:
        return client_tls_creator(ca)
    return client_tls_creator(ca, settings.certificate, settings.private_key)
