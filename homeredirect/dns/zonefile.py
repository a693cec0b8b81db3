"""Write zones as a BIND master-file fragment (RFC 1035 §5), for operators who run their own
DNS: `homeredirect zone` prints what `homeredirect dns` would serve.

Every name is written fully qualified with its trailing dot, so a block can be pasted into
an existing zone file whatever its `$ORIGIN`; each zone still opens with `$ORIGIN` and `$TTL`
so that the output also loads as it is.
"""

from __future__ import annotations

from collections.abc import Iterable

from homeredirect.dns.records import (
    AddressRecord,
    NaptrRecord,
    NsRecord,
    Record,
    SoaRecord,
    SrvRecord,
    Zone,
)

__all__ = ["render_zones"]


def _absolute(name: str) -> str:
    return name + "."


def _quoted(text: str) -> str:
    """A <character-string> (RFC 1035 §5.1); ours never hold quotes or backslashes."""
    return f'"{text}"'


def _rdata(record: Record) -> str:
    match record:
        case SoaRecord():
            return (
                f"{_absolute(record.mname)} {_absolute(record.rname)} {record.serial} "
                f"{record.refresh} {record.retry} {record.expire} {record.minimum}"
            )
        case NsRecord():
            return _absolute(record.target)
        case NaptrRecord():
            return (
                f"{record.order} {record.preference} {_quoted(record.flags)} "
                f"{_quoted(record.service)} {_quoted(record.regexp)} "
                f"{_absolute(record.replacement)}"
            )
        case SrvRecord():
            return f"{record.priority} {record.weight} {record.port} {_absolute(record.target)}"
        case AddressRecord():
            return record.address


def render_zones(zones: Iterable[Zone], heading: str = "") -> str:
    """The text of a zone file fragment holding `zones`, after `heading` comment lines."""
    lines = [f"; {line}" if line else ";" for line in heading.splitlines()]
    for zone in zones:
        width = max(len(_absolute(record.name)) for record in zone.records)
        if lines:
            lines.append("")
        lines.append(f"$ORIGIN {_absolute(zone.origin)}")
        lines.append(f"$TTL {zone.soa.ttl}")
        for record in zone.records:
            owner = _absolute(record.name).ljust(width)
            lines.append(f"{owner} {record.ttl} IN {record.type:<5} {_rdata(record)}")
    return "\n".join(lines) + "\n"
