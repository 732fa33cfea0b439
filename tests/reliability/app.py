"""The handlers the reliability suite's ``jobs-worker`` processes run.

``reliability.run`` records every execution (job id, attempt, worker pid, time) in the table
``reliability_runs`` before it does anything else, through a pool of its own opened on
``PGRELAY_RELIABILITY_DSN`` (autocommit: each record commits on its own, so an execution counts
even when the worker dies before its ack, or the ack is lost). The harness points that DSN straight
at the database, never through a chaos proxy, so what is measured is not what is being broken.

A record that fails because the database is away (restarted, connection cut) is retried until it
commits, with the same execution id (``ON CONFLICT DO NOTHING``): an insert whose commit was
ambiguous is never counted twice, and the handler itself never fails for it, so every attempt that
does not succeed ends for a reason the test chose (a killed worker, a lost lease), not a recording
error. Then it sleeps ``payload["sleep"]`` seconds, if given, and succeeds.

Only these registered names run: nothing a job row names is ever imported.
"""

from __future__ import annotations

import asyncio
import os
import uuid

import asyncpg

import pgrelay
from pgrelay.worker import CONNECTION_ERRORS

router = pgrelay.Router()

RECORD_DSN_VARIABLE = "PGRELAY_RELIABILITY_DSN"

# the database is away (restart, cut connection, too many clients while it comes back): the same
# errors the worker itself treats as a lost connection
_TRANSIENT = CONNECTION_ERRORS

_pool: asyncpg.Pool | None = None
_pool_lock: asyncio.Lock | None = None


async def _record_pool() -> asyncpg.Pool:
    global _pool, _pool_lock
    if _pool is not None:
        return _pool
    if _pool_lock is None:
        _pool_lock = asyncio.Lock()
    async with _pool_lock:
        if _pool is None:
            _pool = await asyncpg.create_pool(os.environ[RECORD_DSN_VARIABLE], min_size=1, max_size=8, timeout=10)
    return _pool


async def record(job_id: int, attempt: int) -> None:
    """Commit one row for this execution; retried (idempotently) until the database takes it."""
    execution = uuid.uuid4()
    delay = 0.05
    while True:
        try:
            pool = await _record_pool()
            await pool.execute(
                "INSERT INTO reliability_runs (execution, job_id, attempt, pid) VALUES ($1, $2, $3, $4)"
                " ON CONFLICT (execution) DO NOTHING",
                execution, job_id, attempt, os.getpid(), timeout=30,
            )
            return
        except _TRANSIENT:
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)


@router.task("reliability.run")
async def run(ctx: pgrelay.JobContext) -> None:
    await record(ctx.job_id, ctx.attempt)
    seconds = (ctx.payload or {}).get("sleep")
    if seconds:
        await asyncio.sleep(float(seconds))
