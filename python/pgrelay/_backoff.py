"""The wait between tries of Python's own reconnects and retries (never a job's backoff: that is SQL's).

Exponential with "equal jitter": after the n-th failure in a row, a random wait between half and all of
``min(cap, first * 2**n)``. The random half keeps workers that lost the database at the same moment from
coming back in lockstep; the fixed half keeps any one of them from hammering it.

Written here rather than taken from a retry library (tenacity, backoff): those wrap a call in a retry
policy, while the worker's loops run for good, reset the backoff on success and sleep in ways that must
wake on stop(); what they need is this one number.
"""

from __future__ import annotations

import random

__all__ = ["Backoff"]


class Backoff:
    """``delay = backoff.next()`` after a failure, ``backoff.reset()`` after a success."""

    def __init__(self, first: float = 0.5, cap: float = 10.0) -> None:
        if not 0 < first <= cap:
            raise ValueError(f"need 0 < first <= cap, not first={first!r}, cap={cap!r}")
        self.first = first
        self.cap = cap
        self.failures = 0

    def next(self) -> float:
        """The wait before the next try (and count this failure)."""
        ceiling = min(self.cap, self.first * 2 ** min(self.failures, 32))
        self.failures += 1
        return ceiling / 2 + random.uniform(0, ceiling / 2)

    def reset(self) -> None:
        self.failures = 0
