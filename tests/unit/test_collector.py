"""Scheduled garbage collection: young generations on every tick, a full
collection every N ticks, automatic collection off while running."""

from __future__ import annotations

import gc

from twisted.internet.task import Clock

from homeredirect.collector import ScheduledCollection


def test_collects_young_generations_each_tick_and_everything_every_n_ticks() -> None:
    clock = Clock()
    generations: list[int] = []
    service = ScheduledCollection(
        clock, young_interval=0.5, full_every=4, collect=lambda g: generations.append(g) or 0
    )
    was_enabled = gc.isenabled()
    service.startService()
    try:
        assert not gc.isenabled()
        clock.pump([0.5] * 8)
        assert generations == [1, 1, 1, 2, 1, 1, 1, 2]
    finally:
        service.stopService()
    assert gc.isenabled() == was_enabled
    clock.advance(10)
    assert len(generations) == 8
