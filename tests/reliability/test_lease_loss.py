"""Lease loss: a handler runs longer than its lease while its worker's heartbeats cannot run (the
handler blocks the event loop, the failure FACTS.md lists). Another worker recovers the job and
completes it; the first worker's late ack is refused by the attempt (fencing), so the database
records one completion, by the second attempt, though the handler ran twice."""

from __future__ import annotations

import asyncio
import logging
import threading
import time

import asyncpg

import pgrelay
from pgrelay import client


async def test_a_late_ack_after_a_lost_lease_is_refused_and_the_job_completes_once(dsn, caplog):
    caplog.set_level(logging.INFO, logger="pgrelay")
    runs: list[tuple[str, int]] = []
    first_started = threading.Event()

    blocked = pgrelay.Router()

    @blocked.task("report")
    async def block_the_loop(ctx):
        runs.append(("blocked", ctx.attempt))
        first_started.set()
        time.sleep(3)  # blocks this worker's event loop: no heartbeat for three lease lengths
        return {"by": "blocked"}

    healthy = pgrelay.Router()

    @healthy.task("report")
    async def run_quickly(ctx):
        runs.append(("healthy", ctx.attempt))
        return {"by": "healthy"}

    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    job_id = await client.enqueue(pool, "report")
    slow = pgrelay.Worker(dsn, blocked, worker_id="blocked-worker", lease_seconds=1, poll_interval=0.05,
                          listen_dsn=False, recover_interval=3600)
    slow_thread = threading.Thread(target=asyncio.run, args=(slow.run(),), daemon=True)
    slow_thread.start()
    assert await asyncio.to_thread(first_started.wait, 15), "the first worker never started the job"

    fast = pgrelay.Worker(dsn, healthy, worker_id="healthy-worker", lease_seconds=5, poll_interval=0.05,
                          listen_dsn=False, recover_interval=0.1)
    fast_task = asyncio.create_task(fast.run())
    try:
        deadline = time.monotonic() + 20
        while not any(r.name == "pgrelay.worker" and "stale" in r.getMessage() for r in caplog.records):
            assert time.monotonic() < deadline, "the blocked worker never tried its ack"
            await asyncio.sleep(0.05)
    finally:
        slow.stop()
        fast.stop()
        await asyncio.wait_for(fast_task, 15)
        await asyncio.to_thread(slow_thread.join, 15)

    job = await client.get_job(pool, job_id)
    attempts = await client.get_attempts(pool, job_id)
    await pool.close()
    assert sorted(runs) == [("blocked", 1), ("healthy", 2)]       # the handler ran twice
    assert (job.status, job.attempt, job.result) == ("succeeded", 2, {"by": "healthy"})  # recorded once
    assert [(a.attempt, a.outcome, a.worker) for a in attempts] == [
        (1, "lease_expired", "blocked-worker"), (2, "succeeded", "healthy-worker")]
