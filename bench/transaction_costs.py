#!/usr/bin/env python3
"""CPU and memory cost of the non-INVITE server transaction path (RFC 3261 §17.2.2).

Measures, per transaction, over UDP (Timer J = 32 s) on a task.Clock:

* absorb (a miss) + create + respond (a 301, serialized once);
* absorb a retransmission (the 301 is resent);
* the Timer J expiry that removes the transaction from the table;
* the same for the INVITE path a redirect takes (302, ACK, Timer I);
* bytes held per completed transaction (tracemalloc), excluding the request,
  which the caller parsed, and the request's own size, which the transaction
  keeps alive until Timer J fires.

Requests and responses are parsed and built before timing: parsing and the TU
are not part of the transaction layer.  Standard library and homeredirect only.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
import tracemalloc

from twisted.internet.task import Clock
from zope.interface import implementer

from homeredirect.sip.message import Headers, Request, Response
from homeredirect.sip.parser import MessageReceived, parse_datagram
from homeredirect.transaction.server import ServerTransactionTable
from homeredirect.transport.flows import IFlow

REGISTER = (
    "REGISTER sip:example.com SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 192.0.2.4:5060;branch=z9hG4bK{n:08x};rport\r\n"
    "Max-Forwards: 70\r\n"
    "To: <sip:user{n}@example.com>\r\n"
    "From: <sip:user{n}@example.com>;tag=456248{n}\r\n"
    "Call-ID: 843817637684230@998sdasdh09-{n}\r\n"
    "CSeq: 1826 REGISTER\r\n"
    "Contact: <sip:user{n}@192.0.2.4:5060;transport=udp>\r\n"
    "Expires: 7200\r\n"
    "User-Agent: bench\r\n"
    "Content-Length: 0\r\n"
    "\r\n"
)
INVITE = REGISTER.replace("REGISTER", "INVITE")
ACK = REGISTER.replace("REGISTER", "ACK")


def parse(template: str, n: int) -> Request:
    event = parse_datagram(template.format(n=n).encode())
    assert isinstance(event, MessageReceived)
    message = event.message
    assert isinstance(message, Request)
    return message


def redirect(request: Request, status: int = 301) -> Response:
    fields = [
        (name, f"{value};tag=srv" if name == "To" else value)
        for name, value in request.headers
        if name in ("Via", "From", "To", "Call-ID", "CSeq")
    ]
    fields.append(("Contact", "<sip:pool1.example.com:5061;transport=tls>;q=0.7"))
    return Response(status, "Redirect request to Home Server", Headers(fields))


@implementer(IFlow)
class DiscardingFlow:
    """A UDP flow whose sends go nowhere: only the transaction layer is timed."""

    transport = "UDP"
    reliable = False
    peer_identity = None
    remote = ("192.0.2.4", 5060)
    local = ("127.0.0.1", 5070)

    def send(self, data: bytes, destination: tuple[str, int] | None = None) -> None:
        pass


FLOW = DiscardingFlow()


def non_invite_round(count: int) -> tuple[float, float, float]:
    """Seconds per transaction for (absorb + create + respond, absorb a retransmission, Timer J)."""
    requests = [parse(REGISTER, n) for n in range(count)]
    retransmissions = [parse(REGISTER, n) for n in range(count)]
    responses = [redirect(r) for r in requests]
    clock = Clock()
    table = ServerTransactionTable(clock)
    gc.collect()
    gc.disable()
    start = time.perf_counter()
    for request, response in zip(requests, responses, strict=True):
        if not table.absorb(request):
            table.create(request, FLOW, FLOW.remote).respond(response)
    created = time.perf_counter()
    for retransmission in retransmissions:
        table.absorb(retransmission)
    absorbed = time.perf_counter()
    clock.advance(32)
    end = time.perf_counter()
    gc.enable()
    assert len(table) == 0
    return (created - start) / count, (absorbed - created) / count, (end - absorbed) / count


def invite_round(count: int) -> tuple[float, float]:
    """Seconds per INVITE transaction for (create + 302 + ACK, Timer I expiry)."""
    requests = [parse(INVITE, n) for n in range(count)]
    acks = [parse(ACK, n) for n in range(count)]
    responses = [redirect(r, 302) for r in requests]
    clock = Clock()
    table = ServerTransactionTable(clock)
    gc.collect()
    gc.disable()
    start = time.perf_counter()
    for request, ack, response in zip(requests, acks, responses, strict=True):
        if not table.absorb(request):
            table.create(request, FLOW, FLOW.remote).respond(response)
        table.absorb(ack)
    middle = time.perf_counter()
    clock.advance(5)
    end = time.perf_counter()
    gc.enable()
    assert len(table) == 0
    return (middle - start) / count, (end - middle) / count


def memory(count: int) -> tuple[float, float]:
    """Bytes per completed non-INVITE transaction (request excluded), and per parsed request."""
    requests = [parse(REGISTER, n) for n in range(count)]
    responses = [redirect(r) for r in requests]
    clock = Clock()
    table = ServerTransactionTable(clock)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for request, response in zip(requests, responses, strict=True):
        table.create(request, FLOW, FLOW.remote).respond(response)
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert len(table) == count
    del requests, responses, table
    gc.collect()
    tracemalloc.start()
    before_parse = tracemalloc.get_traced_memory()[0]
    parsed = [parse(REGISTER, n) for n in range(count)]
    after_parse = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert len(parsed) == count
    return (after - before) / count, (after_parse - before_parse) / count


def main() -> None:
    options = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    options.add_argument("--count", type=int, default=20_000)
    options.add_argument("--repeat", type=int, default=7)
    args = options.parse_args()
    runs = [non_invite_round(args.count) for _ in range(args.repeat)]
    invites = [invite_round(args.count) for _ in range(args.repeat)]
    per_tx, per_request = memory(args.count)
    us = 1e6
    print(f"non-INVITE, {args.count} transactions x {args.repeat} runs (best / median):")
    labels = ("absorb (miss) + create + respond 301", "absorb a retransmission", "Timer J expiry")
    for index, label in enumerate(labels):
        values = [run[index] * us for run in runs]
        print(f"  {label:52} {min(values):6.2f} / {statistics.median(values):6.2f} us")
    total = [sum(run) * us for run in runs]
    print(f"  {'total':52} {min(total):6.2f} / {statistics.median(total):6.2f} us")
    print("INVITE redirect (302, ACK, Timer I):")
    for label, index in (("absorb + create + respond 302 + absorb ACK", 0), ("Timer I", 1)):
        values = [run[index] * us for run in invites]
        print(f"  {label:52} {min(values):6.2f} / {statistics.median(values):6.2f} us")
    print(f"memory per completed non-INVITE transaction (request excluded): {per_tx:.0f} bytes")
    print(
        f"memory per parsed REGISTER (kept alive by the transaction):     {per_request:.0f} bytes"
    )


if __name__ == "__main__":
    main()
