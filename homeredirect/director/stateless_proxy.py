"""Stateless forwarding of requests to home servers (RFC 3261 §16.11).

A stateless proxy keeps nothing between a request and its responses: the
branch of the Via it adds is a hash of the request's identifying fields, so a
retransmitted request is forwarded with the same branch, and a response is
relayed back by popping our Via and following the next one (§16.11, §18.2.2).
Loop detection (§16.3 step 4) compares that hash with the branches of any Via
of ours already in the request.
"""

from __future__ import annotations

import hashlib

from homeredirect.director.targets import Target
from homeredirect.logs import FilteredLogger
from homeredirect.sip.headers import split_list
from homeredirect.sip.message import Headers, Request, Response
from homeredirect.sip.serialize import serialize
from homeredirect.transport.flows import replace_top_via, response_destination
from homeredirect.transport.interfaces import ISipNetwork

log = FilteredLogger()

MAGIC_COOKIE = "z9hG4bK"
DEFAULT_MAX_FORWARDS = 70


class StatelessProxy:
    def __init__(self, network: ISipNetwork, secret: bytes) -> None:
        self._network = network
        self._secret = secret

    def branch_for(self, request: Request, top_via: str) -> str:
        """§16.11: a branch that is the same for retransmissions of *request* (and
        for its CANCEL and non-2xx ACK, which must match the same downstream
        transaction) and differs for every other request and for each spiral.

        It has two parts: a hash over the request's identity *with* the Via it
        arrived with (uniqueness), and a hash of what routes it *without* that Via
        (§16.6 step 8), so that a request that comes back to us unchanged can be
        recognised as a loop even though it arrives with a different top Via.
        """
        routing = self._digest(
            request.to_addr.tag or "",
            request.from_addr.tag or "",
            request.call_id,
            str(request.uri),
            str(request.cseq.number),
            *request.headers.get_all("Route"),
            *request.headers.get_all("Proxy-Require"),
        )
        return f"{MAGIC_COOKIE}-hr-{self._digest(routing, top_via)}.{routing}"

    def _digest(self, *parts: str) -> str:
        digest = hashlib.blake2b(key=self._secret, digest_size=8)
        for part in parts:
            digest.update(part.encode("utf-8", "surrogateescape"))
            digest.update(b"\x00")
        return digest.hexdigest()

    def _looped(self, request: Request, branch: str) -> bool:
        """§16.3 step 4: one of our Vias carries this request's routing hash."""
        routing = branch.rpartition(".")[2]
        for via in request.vias:
            theirs = via.branch or ""
            if theirs.startswith(MAGIC_COOKIE + "-hr-") and theirs.rpartition(".")[2] == routing:
                if self._network.is_local(via.host, via.port):
                    return True
        return False

    def forward(self, request: Request, top_via: str, target: Target) -> tuple[int, str] | None:
        """Forward *request* to *target*; return (status, reason) if it must be
        refused instead (483 Too Many Hops, 482 Loop Detected, 502)."""
        max_forwards = request.max_forwards
        if max_forwards == 0:
            return 483, "Too Many Hops"
        transport = target.transport.upper()
        try:
            host, port = self._network.local_via(transport)
        except LookupError:
            log.warn(
                "no {transport} listener to forward to {target}",
                transport=transport,
                target=target.fqdn,
            )
            return 502, f"No {transport} transport to the home server"
        branch = self.branch_for(request, top_via)
        if self._looped(request, branch):
            return 482, "Loop Detected"
        own_via = f"SIP/2.0/{transport} {_hostport(host, port)};branch={branch};rport"
        rebuilt: list[tuple[str, str]] = []
        seen_via = False
        for name, value in request.headers:
            if name == "Via" and not seen_via:
                seen_via = True
                rebuilt += [("Via", own_via), ("Via", replace_top_via(value, top_via))]
            elif name != "Max-Forwards":
                rebuilt.append((name, value))
        rebuilt.append(
            (
                "Max-Forwards",
                str(DEFAULT_MAX_FORWARDS if max_forwards is None else max_forwards - 1),
            )
        )
        forwarded = Request(
            request.method, request.uri, Headers._trusted_copy(tuple(rebuilt)), request.body
        )
        self._network.send(transport, (target.host, target.port), serialize(forwarded), target.fqdn)
        return None

    def relay_response(self, response: Response) -> None:
        """Send a response back along the Via path (§16.11, §16.7 step 9)."""
        vias = response.vias
        top = vias[0]
        if not self._network.is_local(top.host, top.port) or len(vias) < 2:
            log.info(
                "dropped a response whose top Via {via} is not ours",
                via=str(top),
                status=response.status,
            )
            return
        fields = list(response.headers)
        for index, (name, value) in enumerate(fields):
            if name == "Via":
                rest = split_list(value)[1:]
                if rest:
                    fields[index] = ("Via", ", ".join(rest))
                else:
                    del fields[index]
                break
        relayed = Response(
            response.status, response.reason, Headers._trusted_copy(tuple(fields)), response.body
        )
        following = vias[1]
        destination = response_destination(
            following, (following.host, following.port or 5060), following.transport
        )
        self._network.send(following.transport, destination, serialize(relayed))


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
