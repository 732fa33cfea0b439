"""When the claim loop wakes for NOTIFY: at once for a job due now, at its due time for a job due later.

One timer, for the earliest due time announced (a heap holds the others): N future-dated enqueues cost
N heap pushes, not N timers on the event loop. Past ``MAX_WAKEUPS`` remembered due times, later ones
are found by the worker's polling.
"""

from __future__ import annotations

import asyncio
import heapq
import time
from collections.abc import Sequence
from typing import Any

__all__ = ["MAX_WAKEUPS", "Wakeups"]

MAX_WAKEUPS = 10000


class Wakeups:
    """Sets ``wake`` for each NOTIFY of a job in ``queues`` (None: all) when the job is due."""

    def __init__(self, wake: asyncio.Event, queues: Sequence[str] | None) -> None:
        self.wake = wake
        self.queues = set(queues) if queues is not None else None
        self._due: list[float] = []      # future due times (epoch seconds), a heap
        self._due_set: set[float] = set()
        self._timer: asyncio.TimerHandle | None = None

    def on_notify(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        """Payload: "<queue>" for a job due now, "<queue> <epoch seconds>" for one due later."""
        queue, _, due = payload.partition(" ")
        if self.queues is not None and queue not in self.queues:
            return
        if not due:
            self.wake.set()
            return
        self.due_at(float(due))

    def due_at(self, when: float) -> None:
        """Wake at ``when`` (epoch seconds): at once when that has passed."""
        if when <= time.time():
            self.wake.set()
        elif when not in self._due_set and len(self._due) < MAX_WAKEUPS:
            heapq.heappush(self._due, when)
            self._due_set.add(when)
            if self._due[0] == when:  # the earliest now: the one timer moves to it
                self._arm()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _arm(self) -> None:
        self.close()
        if self._due:
            self._timer = asyncio.get_running_loop().call_later(self._due[0] - time.time() + 0.001, self._on_due)

    def _on_due(self) -> None:
        self._timer = None
        now = time.time()
        while self._due and self._due[0] <= now:
            self._due_set.discard(heapq.heappop(self._due))
        self.wake.set()
        self._arm()
