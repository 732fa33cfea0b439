"""Python's own reconnect and retry waits: exponential, capped, jittered, reset by a success."""

from __future__ import annotations

import pytest

from pgrelay._backoff import Backoff


def test_waits_grow_to_the_cap_each_between_half_and_all_of_its_ceiling():
    backoff = Backoff(0.5, 4.0)
    for ceiling in (0.5, 1.0, 2.0, 4.0, 4.0, 4.0):
        assert ceiling / 2 <= backoff.next() <= ceiling


def test_workers_that_failed_together_do_not_retry_in_lockstep():
    waits = {Backoff(1.0, 10.0).next() for _ in range(50)}
    assert len(waits) > 1


def test_a_success_starts_again_from_the_first_wait():
    backoff = Backoff(0.5, 10.0)
    for _ in range(10):
        backoff.next()
    backoff.reset()
    assert backoff.next() <= 0.5


def test_a_long_outage_never_overflows():
    backoff = Backoff(0.5, 10.0)
    for _ in range(5000):
        assert backoff.next() <= 10.0


def test_nonsense_settings_are_refused():
    with pytest.raises(ValueError):
        Backoff(0, 1)
    with pytest.raises(ValueError):
        Backoff(2, 1)
