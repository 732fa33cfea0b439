"""What the parts of one worker share: the jobs it holds, its slots, whether it is stopping, and the one
place a job's end is counted and logged."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from .models import ClaimedJob

__all__ = ["DEFAULT_LEASE_SECONDS", "Running", "State"]

log = logging.getLogger("pgrelay.worker")  # the worker's one logger, whichever part logs

# What the worker's own timers (recover, call timeout, heartbeat while idle) assume of a lease until its
# jobs say theirs (each claimed job's lease is read from its lease_expires_at): a timing choice, which
# happens to be the SQL's default lease too, though nothing relies on the two agreeing.
DEFAULT_LEASE_SECONDS = 30

# How each outcome of a job is logged; anything not listed at INFO.
_LOG_LEVELS = {"succeeded": logging.DEBUG, "error": logging.WARNING, "stale": logging.WARNING,
               "lease_expired": logging.WARNING}


@dataclass
class Running:
    """A job this worker holds, from its claim until its outcome is reported."""

    job: ClaimedJob
    task: asyncio.Task[None] | None = None
    started: float = field(default_factory=time.monotonic)
    acking: bool = False               # the handler succeeded; the ack loop owns the job from here
    result: Any = None
    slot_released: bool = False
    cancel_reason: str | None = None
    lease: float = DEFAULT_LEASE_SECONDS  # the lease's length in seconds (heartbeats come 3 times in it)
    thread: concurrent.futures.Future[Any] | None = None  # a plain handler's call, in its thread


class State:
    """The jobs of one worker, its slots and stop flags, shared by its parts."""

    def __init__(self, worker_id: str, metrics: Any, *, beat_interval: float) -> None:
        self.worker_id = worker_id
        self.metrics = metrics
        self.running: dict[int, Running] = {}
        self.busy = 0  # handlers running now; jobs waiting only for their ack do not hold a slot
        self.slot_free = asyncio.Event()
        self.wake = asyncio.Event()              # claim now: a NOTIFY, recovered jobs, stop()
        self.listening = False                   # LISTEN is in place (NOTIFYs reach this worker)
        self.listens = 0                         # how many times LISTEN was put in place: a new one asks
                                                 # for idle() again
        self.stopping = False
        self.stop_requested = asyncio.Event()    # set by stop(): what a call in flight races against
        self.killed = False
        self.beat_soon = asyncio.Event()         # a job with a shorter lease than the heartbeat planned for
        self.beat_interval = beat_interval

    async def sleep(self, seconds: float) -> None:
        """Sleep, but wake early when stopping."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.stop_requested.wait(), timeout=seconds)

    def cancel(self, running: Running, reason: str) -> None:
        if running.task is not None and not running.acking and not running.task.done():
            running.cancel_reason = reason
            running.task.cancel()

    def finished(self, running: Running, outcome: str, error: str | None) -> None:
        """The job is done with here: forget it, count it and log it."""
        job = running.job
        if self.running.get(job.id) is running:
            del self.running[job.id]
        self.slot_free.set()
        duration = time.monotonic() - running.started
        if self.metrics is not None:
            self.metrics.finished(job, outcome, duration)
        # a success is routine (DEBUG: logging each one would cost more than running it); any
        # other outcome is worth an operator's attention
        level = _LOG_LEVELS.get(outcome, logging.INFO)
        if log.isEnabledFor(level):
            log.log(
                level,
                "job %s %s (task %s, queue %s, attempt %s, %.1f ms)%s", job.id, outcome, job.task, job.queue,
                job.attempt, duration * 1000, f": {error}" if error else "",
                extra={"job_id": job.id, "task": job.task, "queue": job.queue, "attempt": job.attempt,
                       "outcome": outcome, "duration_ms": round(duration * 1000, 3), "error": error,
                       "trace_id": job.trace_id, "worker": self.worker_id},
            )
