"""Claims jobs: one ``consume`` call sized to the free slots, and starts each job claimed.

While jobs come, it claims again as soon as a claim leaves slots free (every ``BUSY_POLL`` seconds when
the queue was empty), and costs producers nothing: they send NOTIFY only to a waiting worker. After
``LINGER`` seconds without a job it waits: it calls ``idle()`` (only while its LISTEN is in place),
claims once more, and then sleeps until a NOTIFY, the time the next job not yet due becomes due, the end
of a transaction ``idle()`` named (``idle_check()``: it may have enqueued without a NOTIFY), or
``poll_interval``. The first claim that finds a job makes it ``awake()`` again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable
from datetime import datetime
from typing import Any

from . import client
from ._backoff import Backoff
from ._connections import DATABASE_ERRORS, Connections
from ._running import Runner
from ._state import Running, State
from ._values import oneline
from ._wakeups import Wakeups
from .models import ClaimedJob
from .router import Router

__all__ = ["STOP_CLAIM_GRACE", "Claimer"]

log = logging.getLogger("pgrelay.worker")  # the worker's one logger, whichever part logs

# after stop(), how long a claim in flight may still answer before it is abandoned
STOP_CLAIM_GRACE = 2.0
# after a claim that left slots free: claim again this soon while jobs came within LINGER seconds
BUSY_POLL = 0.002
LINGER = 0.05
# a wait lapses after this long unless renewed (idle() is called again at half of it)
IDLE_SECONDS = 300
# first delay before asking which of the transactions idle() named still run (doubling, up to the
# poll interval)
IDLE_CHECK_DELAY = 0.002


class Claimer:
    """:meth:`loop` claims until the worker stops; each job it claims runs in a task of its own."""

    def __init__(self, state: State, connections: Connections, runner: Runner, router: Router, wakeups: Wakeups, *,
                 queues: list[str] | None, tasks: list[str] | None, lease_seconds: int | None, concurrency: int,
                 batch_size: int, poll_interval: float) -> None:
        self._state = state
        self._wakeups = wakeups
        self._connections = connections
        self._runner = runner
        self._router = router
        self._queues = queues
        self._tasks = tasks
        self._lease_seconds = lease_seconds
        self._concurrency = concurrency
        self._batch_size = batch_size
        self._poll_interval = poll_interval
        self._found_at = 0.0                 # monotonic time of the last claim that found a job
        self._waiting_since: int | None = None   # state.listens when idle() was called (None: not waiting)
        self._renew_at = 0.0                 # when to call idle() again
        self._running: list[int] = []        # transactions idle() named that were still running
        self._check_delay = IDLE_CHECK_DELAY

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
            if jobs:
                self._found_at = time.monotonic()
                if self._waiting_since is not None:
                    await self._awake()
            if len(jobs) < asked:
                await self._wait()
        if self._waiting_since is not None:   # stopping: producers need not wake this worker any more
            # (not waited for longer than a claim in flight is: the wait lapses by itself)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._awake(), timeout=STOP_CLAIM_GRACE)

    async def _wait(self) -> None:
        """After a claim that left slots free: when to claim again (see the module's docstring)."""
        state = self._state
        now = time.monotonic()
        if self._waiting_since is None or self._waiting_since != state.listens or now >= self._renew_at:
            if now - self._found_at < LINGER:
                await self._sleep(BUSY_POLL)
            elif state.listening and not state.stopping:
                await self._idle()   # then claim once more: what committed before idle() is seen by it
            else:
                await self._sleep(self._poll_interval)
            return
        if not self._running:
            await self._sleep(self._poll_interval)
            return
        if await self._sleep(min(self._check_delay, self._poll_interval)):
            return
        try:
            checked = await self._connections.call(client.idle_check, self._running, queues=self._queues)
        except DATABASE_ERRORS as exc:
            log.warning("checking for jobs enqueued without a wakeup failed (%s); claiming", oneline(exc))
            return
        self._due(checked.next_due)
        if len(checked.running) < len(self._running):   # one ended: it may have enqueued, unannounced
            self._running = checked.running
            self._check_delay = IDLE_CHECK_DELAY
            return
        self._check_delay *= 2

    async def _sleep(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; True when woken first (NOTIFY, a job due, recovered jobs, stop)."""
        state = self._state
        if state.wake.is_set():
            return True
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(state.wake.wait(), timeout=seconds)
            return True
        return False

    async def _idle(self) -> None:
        """Ask producers to NOTIFY this worker (it waits on its LISTEN); polls on if the call fails."""
        state = self._state
        listens = state.listens
        try:
            idle = await self._connections.call(client.idle, state.worker_id, queues=self._queues,
                                                seconds=IDLE_SECONDS)
        except DATABASE_ERRORS as exc:
            log.warning("could not ask for wakeups (%s); polling", oneline(exc))
            await self._sleep(self._poll_interval)
            return
        self._waiting_since = listens
        self._renew_at = time.monotonic() + IDLE_SECONDS / 2
        self._running = idle.running
        self._check_delay = IDLE_CHECK_DELAY
        self._due(idle.next_due)

    async def _awake(self) -> None:
        """Producers may stop sending NOTIFY for this worker: it claims as it runs what it found."""
        self._waiting_since = None
        try:
            await self._connections.call(client.awake, self._state.worker_id)
        except DATABASE_ERRORS as exc:   # its wait lapses by itself; until then NOTIFYs only cost a little
            log.debug("awake() failed (%s)", oneline(exc))

    def _due(self, when: datetime | None) -> None:
        if when is not None:
            self._wakeups.due_at(when.timestamp())

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
