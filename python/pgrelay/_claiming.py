"""Claims jobs: one ``consume`` call sized to the free slots, when woken (NOTIFY, recovered jobs) or every
``poll_interval``, and starts each job claimed."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable
from typing import Any

from . import client
from ._backoff import Backoff
from ._connections import DATABASE_ERRORS, Connections
from ._running import Runner
from ._state import Running, State
from ._values import oneline
from .models import ClaimedJob
from .router import Router

__all__ = ["STOP_CLAIM_GRACE", "Claimer"]

log = logging.getLogger("pgrelay.worker")  # the worker's one logger, whichever part logs

# after stop(), how long a claim in flight may still answer before it is abandoned
STOP_CLAIM_GRACE = 2.0


class Claimer:
    """:meth:`loop` claims until the worker stops; each job it claims runs in a task of its own."""

    def __init__(self, state: State, connections: Connections, runner: Runner, router: Router, *,
                 queues: list[str] | None, tasks: list[str] | None, lease_seconds: int | None, concurrency: int,
                 batch_size: int, poll_interval: float) -> None:
        self._state = state
        self._connections = connections
        self._runner = runner
        self._router = router
        self._queues = queues
        self._tasks = tasks
        self._lease_seconds = lease_seconds
        self._concurrency = concurrency
        self._batch_size = batch_size
        self._poll_interval = poll_interval

    async def loop(self, kinds: list[str] | None) -> None:
        state = self._state
        backoff = Backoff()
        handlers = self._router.tasks
        topped_up = False
        while not state.stopping:
            # a slot frees when its handler returns; jobs awaiting their ack (still heartbeated) are
            # bounded separately so a stalled ack path cannot make the worker claim without end
            free = min(self._concurrency - state.busy, 2 * self._concurrency - len(state.running))
            if free <= 0 or not kinds:
                state.slot_free.clear()
                if free <= 0:
                    await state.slot_free.wait()
                else:
                    await state.sleep(self._poll_interval)
                continue
            if free < self._batch_size // 4 and state.busy > 0 and not topped_up:
                # only a few slots are free while many handlers run: give them a moment to finish so
                # the next claim is one batch, not many claims of one job each
                topped_up = True
                await asyncio.sleep(0.002)
                continue
            topped_up = False
            asked = min(free, self._batch_size)
            state.wake.clear()
            started = time.monotonic()
            asked_at = time.time()
            try:
                jobs = await self._claim_unless_stopped(self._connections.call(
                    client.consume, state.worker_id, queues=self._queues, batch=asked,
                    lease_seconds=self._lease_seconds, tasks=self._tasks, handlers=handlers, kinds=kinds,
                ))
                backoff.reset()
            except DATABASE_ERRORS as exc:
                delay = backoff.next()
                log.warning("claim failed (%s); retrying in %.1fs", oneline(exc), delay)
                await state.sleep(delay)
                continue
            if state.metrics is not None:
                state.metrics.claimed(time.monotonic() - started)
            for job in jobs:
                older = state.running.get(job.id)
                if older is not None:  # we hold a newer attempt: the older one's lease is gone
                    state.cancel(older, "lease_expired")
                running = Running(job)
                if self._lease_seconds is None:
                    # the queue's lease: as the database's clock gave it, less the time this claim was
                    # on its way (its now() came after asked_at)
                    running.lease = job.lease_expires_at.timestamp() - asked_at
                    if running.lease < 3 * state.beat_interval:
                        state.beat_soon.set()
                state.running[job.id] = running
                state.busy += 1
                running.task = asyncio.create_task(self._runner.execute(running), name=f"pgrelay-job-{job.id}")
            if len(jobs) < asked:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(state.wake.wait(), timeout=self._poll_interval)

    async def _claim_unless_stopped(self, claim: Awaitable[Any]) -> list[ClaimedJob]:
        """The claimed jobs; none when stop() comes first and the claim gives no answer within
        STOP_CLAIM_GRACE seconds (a stalled connection: without this, stopping waited call_timeout for
        it; jobs it may have leased are recovered when their leases expire)."""
        task = asyncio.ensure_future(claim)
        stopped = asyncio.ensure_future(self._state.stop_requested.wait())
        try:
            await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if not task.done():
                await asyncio.wait({task}, timeout=STOP_CLAIM_GRACE)
            if task.done():
                return task.result()
            task.cancel()
            await asyncio.wait({task}, timeout=5)
            return []
        finally:
            stopped.cancel()
