"""RFC 2782 ordering of SRV records: priority first, then weighted random order."""

from __future__ import annotations

import random
from collections import Counter

from homeredirect.locate.srv import SrvEntry, order_srv


def entry(target: str, priority: int = 10, weight: int = 0, port: int = 5061) -> SrvEntry:
    return SrvEntry(priority=priority, weight=weight, port=port, target=target)


def test_lower_priority_always_comes_first() -> None:
    records = [entry("b", priority=20, weight=1000), entry("a", priority=10, weight=1)]
    rng = random.Random(1)
    for _ in range(50):
        assert [r.target for r in order_srv(records, rng)] == ["a", "b"]


def test_weights_share_first_place_in_proportion() -> None:
    records = [entry("heavy", weight=60), entry("middle", weight=30), entry("light", weight=10)]
    rng = random.Random(20_260_101)
    draws = 3_000
    first = Counter(order_srv(records, rng)[0].target for _ in range(draws))
    # Expected 60% / 30% / 10%; bounds are over 5 standard deviations wide.
    assert 0.55 < first["heavy"] / draws < 0.65
    assert 0.25 < first["middle"] / draws < 0.35
    assert 0.06 < first["light"] / draws < 0.14


def test_every_record_is_listed_once() -> None:
    records = [entry(name, weight=w) for name, w in (("a", 5), ("b", 0), ("c", 50), ("d", 1))]
    ordered = order_srv(records, random.Random(7))
    assert sorted(r.target for r in ordered) == ["a", "b", "c", "d"]


def test_weight_zero_is_rarely_first_among_weighted_records() -> None:
    records = [entry("zero", weight=0), entry("some", weight=100)]
    rng = random.Random(3)
    first = Counter(order_srv(records, rng)[0].target for _ in range(1_000))
    assert first["zero"] < 30  # a 1-in-101 chance per draw


def test_all_zero_weights_are_chosen_evenly() -> None:
    records = [entry("a"), entry("b")]
    rng = random.Random(11)
    first = Counter(order_srv(records, rng)[0].target for _ in range(2_000))
    assert 0.45 < first["a"] / 2_000 < 0.55


def test_target_dot_means_no_service() -> None:
    assert order_srv([entry(".")], random.Random(0)) == []


def test_same_seed_gives_same_order() -> None:
    records = [entry(str(n), weight=n + 1) for n in range(6)]
    assert order_srv(records, random.Random(42)) == order_srv(records, random.Random(42))
