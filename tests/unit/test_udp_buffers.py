"""UDP socket buffers are sized as configured, or the shortfall is reported."""

from __future__ import annotations

import socket

from twisted.logger import LogEvent, globalLogPublisher

from homeredirect.transport.udp import size_socket_buffer


def test_buffer_is_at_least_the_size_asked_for_or_a_warning_names_the_sysctl() -> None:
    events: list[LogEvent] = []
    globalLogPublisher.addObserver(events.append)
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            granted = size_socket_buffer(sock, "receive", 1 << 20)
            assert granted == sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    finally:
        globalLogPublisher.removeObserver(events.append)
    warnings = [e for e in events if e.get("sysctl") == "net.core.rmem_max"]
    assert granted >= 1 << 20 or warnings


def test_a_small_buffer_is_granted_without_warning() -> None:
    events: list[LogEvent] = []
    globalLogPublisher.addObserver(events.append)
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            assert size_socket_buffer(sock, "send", 16_384) >= 16_384
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert not [e for e in events if "sysctl" in e]
