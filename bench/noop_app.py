"""Handlers for bench/worker_bench.py: `jobs-worker <dsn> --app noop_app:router` (PYTHONPATH=bench)."""

from __future__ import annotations

import time

import pgrelay

router = pgrelay.Router()


@router.task("bench.noop")
async def noop(ctx: pgrelay.JobContext) -> None:
    """Does nothing: the drain measures the queue and the worker, not a handler."""


@router.task("bench.probe")
async def probe(ctx: pgrelay.JobContext) -> dict:
    """Returns the wall-clock time the handler started (stored as the job's result).

    time.time() is CLOCK_REALTIME, the clock PostgreSQL's clock_timestamp() reads on this same host, so
    ``result.t - created_at`` (created_at: now() of the enqueueing transaction) is the pickup latency.
    Taken in the handler, without a round trip to the database, so nothing else is timed.
    """
    return {"t": time.time()}
