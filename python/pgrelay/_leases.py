"""Keeps the leases of the jobs this worker holds: heartbeats them on a connection of their own, a third
of the shortest lease apart, and cancels the handler of a job no longer held."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time

from . import client
from ._backoff import Backoff
from ._connections import DATABASE_ERRORS, Connections
from ._state import DEFAULT_LEASE_SECONDS, State
from ._values import oneline

__all__ = ["Heartbeat"]

log = logging.getLogger("pgrelay.worker")  # the worker's one logger, whichever part logs


class Heartbeat:
    """:meth:`loop` heartbeats for good; any database error is logged and the heartbeat tried again soon."""

    def __init__(self, state: State, connections: Connections, *, queues: list[str] | None,
                 lease_seconds: int | None) -> None:
        self._state = state
        self._connections = connections
        self._queues = queues
        self._lease_seconds = lease_seconds

    def _interval(self) -> float:
        """A third of the shortest lease held (the worker's --lease-seconds, else each job's queue's)."""
        if self._lease_seconds is not None:
            return max(0.2, self._lease_seconds / 3)
        shortest = min((r.lease for r in self._state.running.values()), default=DEFAULT_LEASE_SECONDS)
        return max(0.2, min(shortest, DEFAULT_LEASE_SECONDS) / 3)

    async def loop(self) -> None:
        state = self._state
        host, pid = socket.gethostname(), os.getpid()
        backoff = Backoff(0.2, 5.0)
        due = time.monotonic()   # at once: the workers view shows a worker from its start
        while True:
            state.beat_soon.clear()
            state.beat_interval = interval = self._interval()
            due = min(due, time.monotonic() + interval)
            if due > time.monotonic():
                # woken early when a job with a shorter lease arrives
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(state.beat_soon.wait(), timeout=due - time.monotonic())
                continue
            ids = list(state.running)
            try:
                lost = await self._connections.heartbeat(
                    client.heartbeat, state.worker_id, ids, lease_seconds=self._lease_seconds,
                    host=host, pid=pid, queues=self._queues,
                )
            except DATABASE_ERRORS as exc:
                # never longer than the interval: the leases still run out at their usual pace
                delay = min(backoff.next(), interval)
                log.warning("heartbeat failed (%s); trying again in %.1fs", oneline(exc), delay)
                due = time.monotonic() + delay
                continue
            backoff.reset()
            due = time.monotonic() + interval
            for job_id in lost:
                running = state.running.get(job_id)
                if running is not None and not running.acking:
                    log.warning("job %s is no longer held (its lease was lost, or an operator cancelled it); "
                                "cancelling its handler", job_id)
                    state.cancel(running, "lease_expired")
