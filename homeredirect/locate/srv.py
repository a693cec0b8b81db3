"""Ordering SRV records for a client to try, as RFC 2782 ("Usage rules") says.

Lower priority first; within one priority, a weighted random order in which each server
comes next with a probability proportional to its weight, so that load is spread as the
zone's administrator asked. Weight-0 records are placed first (shuffled) before the draws,
so that they are chosen only when a draw is exactly 0: a very small chance when others
weigh more, and an even chance among themselves when all weigh 0. A target of "." means
the service is decidedly not offered and yields no server.

The randomness is injected (a `random.Random`), so that tests can seed it.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from itertools import groupby

from attrs import frozen

__all__ = ["SrvEntry", "order_srv"]


@frozen
class SrvEntry:
    """The fields of one SRV record that ordering needs (RFC 2782)."""

    priority: int
    weight: int
    port: int
    target: str


def order_srv(records: Iterable[SrvEntry], rng: random.Random) -> list[SrvEntry]:
    """All usable `records`, in the order to try them (module docstring)."""
    usable = sorted(
        (record for record in records if record.target not in ("", ".")),
        key=lambda record: record.priority,
    )
    ordered: list[SrvEntry] = []
    for _, group in groupby(usable, key=lambda record: record.priority):
        ordered.extend(_weighted_order(list(group), rng))
    return ordered


def _weighted_order(records: list[SrvEntry], rng: random.Random) -> list[SrvEntry]:
    """One priority's records in weighted random order (RFC 2782's selection, repeated)."""
    # "In any order, except that all those with weight 0 are placed at the beginning": a
    # shuffle, so that records of weight 0 among themselves share first place evenly.
    remaining = list(records)
    rng.shuffle(remaining)
    remaining.sort(key=lambda record: record.weight != 0)
    chosen: list[SrvEntry] = []
    while remaining:
        draw = rng.randint(0, sum(record.weight for record in remaining))
        running = 0
        for index, record in enumerate(remaining):
            running += record.weight
            if running >= draw:
                chosen.append(remaining.pop(index))
                break
    return chosen
