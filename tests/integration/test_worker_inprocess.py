"""The worker in-process: handlers run once, failures retry or dead-letter, acks commit first."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

import pgrelay
from pgrelay import client
from tests.integration.helpers import run_until


@pytest.fixture
async def pool(dsn):
    p = await asyncpg.create_pool(dsn, min_size=1, max_size=4)
    yield p
    await p.close()


async def count(pool, status: str) -> int:
    return await pool.fetchval("SELECT count(*) FROM pgrelay.jobs WHERE status = $1", status)


async def test_runs_each_job_once_and_stores_results(dsn, pool):
    router = pgrelay.Router()
    seen: list[int] = []

    @router.task("echo")
    async def echo(ctx):
        seen.append(ctx.job_id)
        return {"n": ctx.payload["n"]}

    @router.task("sync.echo")
    def sync_echo(ctx):
        seen.append(ctx.job_id)
        return ctx.payload

    ids = await client.enqueue_bulk(pool, [{"task": "echo", "payload": {"n": i}} for i in range(50)]
                                    + [{"task": "sync.echo", "payload": {"s": i}} for i in range(10)])
    other = await client.enqueue(pool, "not.mine")
    worker = pgrelay.Worker(dsn, router, concurrency=8, poll_interval=0.2)
    await run_until(worker, lambda: _done(pool, 60))
    assert sorted(seen) == sorted(ids)
    assert (await client.get_job(pool, ids[3])).result == {"n": 3}
    assert (await client.get_job(pool, other)).status == "pending"  # no handler here: never claimed


async def _done(pool, n):
    return await count(pool, "succeeded") >= n


async def test_failures_retry_then_succeed_and_permanent_dead_letters(dsn, pool):
    router = pgrelay.Router()

    @router.task("flaky")
    async def flaky(ctx):
        if ctx.attempt < 3:
            raise RuntimeError(f"attempt {ctx.attempt} failed")
        return "ok"

    @router.task("doomed")
    async def doomed(ctx):
        raise pgrelay.Permanent("bad payload")

    @router.task("later")
    async def later(ctx):
        if ctx.attempt == 1:
            raise pgrelay.RetryAfter(0.2)
        return ctx.attempt

    await client.configure_queue(pool, "default", backoff_base_seconds=0.05, backoff_max_seconds=0.1)
    flaky_id = await client.enqueue(pool, "flaky")
    doomed_id = await client.enqueue(pool, "doomed")
    later_id = await client.enqueue(pool, "later")
    worker = pgrelay.Worker(dsn, router, concurrency=4, poll_interval=0.05)

    async def settled():
        return await count(pool, "succeeded") == 2 and await count(pool, "dead_letter") == 1

    await run_until(worker, settled)
    assert [a.outcome for a in await client.get_attempts(pool, flaky_id)] == ["failed", "failed", "succeeded"]
    dead = await client.get_job(pool, doomed_id)
    assert dead.status == "dead_letter" and "bad payload" in dead.last_error and dead.attempt == 1
    assert (await client.get_job(pool, later_id)).result == 2


async def test_timeout_is_enforced(dsn, pool):
    router = pgrelay.Router()

    @router.task("slow", timeout=0.2)
    async def slow(ctx):
        await asyncio.sleep(30)

    job_id = await client.enqueue(pool, "slow", max_attempts=1)
    await run_until(pgrelay.Worker(dsn, router, poll_interval=0.05), lambda: _status(pool, job_id, "dead_letter"))
    [attempt] = await client.get_attempts(pool, job_id)
    assert attempt.outcome == "timeout" and "timed out" in attempt.error


async def _status(pool, job_id, status):
    return (await client.get_job(pool, job_id)).status == status


async def test_transactional_completion_commits_effect_and_ack_together(dsn, pool):
    await pool.execute("CREATE TABLE effects (job_id bigint PRIMARY KEY)")
    router = pgrelay.Router()

    @router.task("tx")
    async def tx(ctx):
        async with ctx.transaction() as conn:
            await conn.execute("INSERT INTO effects VALUES ($1)", ctx.job_id)
            await ctx.enqueue("followup", {"after": ctx.job_id})

    job_id = await client.enqueue(pool, "tx")
    await run_until(pgrelay.Worker(dsn, router, poll_interval=0.05), lambda: _status(pool, job_id, "succeeded"))
    assert await pool.fetchval("SELECT count(*) FROM effects WHERE job_id = $1", job_id) == 1
    assert await pool.fetchval("SELECT count(*) FROM pgrelay.jobs WHERE task = 'followup'") == 1


async def test_wakes_on_notify_without_waiting_for_the_poll(dsn, pool):
    router = pgrelay.Router()
    done = asyncio.Event()

    @router.task("ping")
    async def ping(ctx):
        done.set()

    worker = pgrelay.Worker(dsn, router, poll_interval=60)
    task = asyncio.create_task(worker.run())
    try:
        # idle, listening, and it said so (idle()): producers of its queues send NOTIFY while it waits
        for _ in range(100):
            if [w.waiting for w in await client.workers(pool)] == [True]:
                break
            await asyncio.sleep(0.05)
        assert [w.waiting for w in await client.workers(pool)] == [True]
        await client.enqueue(pool, "ping")
        await asyncio.wait_for(done.wait(), timeout=5)  # far sooner than the 60 s poll
    finally:
        worker.stop()
        await asyncio.wait_for(task, timeout=10)
    # a stopped worker waits no more: producers stop sending NOTIFY for it
    assert [w.waiting for w in await client.workers(pool)] == [False]


async def test_a_busy_worker_claims_again_without_a_notify(dsn, pool):
    """While jobs keep coming a worker claims again as soon as it has free slots: no producer sends a
    NOTIFY (none waits), yet each job starts within milliseconds, far sooner than the 60 s poll."""
    router = pgrelay.Router()
    started: dict[int, float] = {}

    @router.task("ping")
    async def ping(ctx):
        started[ctx.job_id] = asyncio.get_running_loop().time()

    worker = pgrelay.Worker(dsn, router, poll_interval=60, listen_dsn=False)   # no LISTEN: never idle()
    job = await client.enqueue(pool, "ping")   # the first is found by the claim at start
    task = asyncio.create_task(worker.run())
    try:
        for n in range(20):
            if n:
                job = await client.enqueue(pool, "ping")
            sent = asyncio.get_running_loop().time()
            while job not in started:
                assert asyncio.get_running_loop().time() - sent < 5, "a job waited for the poll"
                await asyncio.sleep(0.001)
            await asyncio.sleep(0.01)
    finally:
        worker.stop()
        await asyncio.wait_for(task, timeout=10)
    assert len(started) == 20


async def test_metrics_count_outcomes_durations_and_claims(dsn, pool):
    from prometheus_client import CollectorRegistry

    from pgrelay.metrics import PrometheusMetrics

    registry = CollectorRegistry()
    metrics = PrometheusMetrics(registry)
    router = pgrelay.Router()

    @router.task("m.ok")
    async def ok(ctx):
        return None

    @router.task("m.bad")
    async def bad(ctx):
        raise pgrelay.Permanent("no")

    await client.enqueue_bulk(pool, [{"task": "m.ok"}] * 5 + [{"task": "m.bad"}])
    worker = pgrelay.Worker(dsn, router, poll_interval=0.05, metrics=metrics)

    async def settled():
        return await count(pool, "succeeded") == 5 and await count(pool, "dead_letter") == 1

    await run_until(worker, settled)
    sample = registry.get_sample_value
    assert sample("pgrelay_jobs_total", {"queue": "default", "task": "m.ok", "outcome": "succeeded"}) == 5
    assert sample("pgrelay_jobs_total", {"queue": "default", "task": "m.bad", "outcome": "dead_letter"}) == 1
    assert sample("pgrelay_job_duration_seconds_count", {"queue": "default", "task": "m.ok"}) == 5
    assert sample("pgrelay_jobs_in_flight") == 0
    assert sample("pgrelay_claim_seconds_count") >= 1


async def test_a_success_whose_lease_was_lost_before_the_ack_is_stale_and_runs_again(dsn, pool, caplog):
    router = pgrelay.Router()
    runs: list[int] = []

    @router.task("slow.loser")
    async def loser(ctx):
        runs.append(ctx.attempt)
        if ctx.attempt == 1:
            # the lease expires and is recovered while the handler runs: its ack must change nothing
            await pool.execute("UPDATE pgrelay._jobs SET lease_expires_at = now() - interval '1 second'"
                               " WHERE id = $1", ctx.job_id)
            assert await pool.fetchval("SELECT pgrelay.recover()") == 1
        return {"attempt": ctx.attempt}

    job_id = await client.enqueue(pool, "slow.loser")
    worker = pgrelay.Worker(dsn, router, concurrency=2, poll_interval=0.05)
    with caplog.at_level("DEBUG", logger="pgrelay.worker"):
        await run_until(worker, lambda: _done(pool, 1))

    job = await client.get_job(pool, job_id)
    assert (job.attempt, job.result) == (2, {"attempt": 2})
    assert runs == [1, 2]
    outcomes = [(r.attempt, r.outcome) for r in caplog.records if getattr(r, "job_id", None) == job_id]
    assert outcomes == [(1, "stale"), (2, "succeeded")] or outcomes == [(2, "succeeded"), (1, "stale")]


async def test_an_ack_whose_answer_was_lost_is_retried_and_logged_unconfirmed_not_stale(dsn, pool, caplog, monkeypatch):
    """The ack commits, then the connection drops before its answer arrives: the worker retries it, the
    retry finds the job already finished, and the log says the ack is unconfirmed rather than blaming
    another attempt."""
    router = pgrelay.Router()

    @router.task("answer.lost")
    async def handler(ctx):
        return {"ok": True}

    real_ack_each = client.ack_each
    calls = 0

    async def ack_each_losing_the_first_answer(db, *args, **kwargs):
        nonlocal calls
        calls += 1
        acked = await real_ack_each(db, *args, **kwargs)
        if calls == 1:
            raise ConnectionResetError("the answer was lost")
        return acked

    monkeypatch.setattr(client, "ack_each", ack_each_losing_the_first_answer)
    job_id = await client.enqueue(pool, "answer.lost")
    worker = pgrelay.Worker(dsn, router, poll_interval=0.05)
    with caplog.at_level("DEBUG", logger="pgrelay.worker"):
        await run_until(worker, lambda: _done(pool, 1))

    assert calls == 2
    assert (await client.get_job(pool, job_id)).status == "succeeded"
    [record] = [r for r in caplog.records if getattr(r, "job_id", None) == job_id]
    assert record.outcome == "unconfirmed" and "first try committed" in record.error


async def test_stop_does_not_wait_for_a_claim_that_never_answers(dsn, pool, monkeypatch):
    """A claim on a connection that died silently gets no answer until the call timeout (30 s); a
    SIGTERM must not wait for it: the worker abandons the claim STOP_CLAIM_GRACE seconds after stop()."""
    from pgrelay.worker import STOP_CLAIM_GRACE

    claims = 0

    async def consume_that_hangs(*args, **kwargs):
        nonlocal claims
        claims += 1
        await asyncio.Event().wait()

    monkeypatch.setattr(client, "consume", consume_that_hangs)
    router = pgrelay.Router()
    router.task("never.runs")(lambda ctx: None)
    worker = pgrelay.Worker(dsn, router, poll_interval=0.05)
    task = asyncio.create_task(worker.run())
    while not claims:
        await asyncio.sleep(0.01)
    stopped_at = asyncio.get_running_loop().time()
    worker.stop()
    await asyncio.wait_for(task, timeout=STOP_CLAIM_GRACE + 5)
    assert asyncio.get_running_loop().time() - stopped_at < STOP_CLAIM_GRACE + 5 < worker.call_timeout


async def test_stop_acks_the_successes_still_waiting_for_their_batch(dsn, pool):
    router = pgrelay.Router()
    ran = 0

    @router.task("quick")
    async def quick(ctx):
        nonlocal ran
        ran += 1

    await client.enqueue_bulk(pool, [{"task": "quick"}] * 20)
    # a long ack delay: every handler has returned while its ack still waits for the batch
    worker = pgrelay.Worker(dsn, router, concurrency=20, poll_interval=0.05, ack_delay=1.0)

    async def all_ran():
        return ran == 20

    await run_until(worker, all_ran)
    assert await count(pool, "succeeded") == 20
    assert await count(pool, "leased") == 0


async def test_the_worker_purges_history_past_the_retention_on_its_interval(dsn, pool):
    await client.configure_queue(pool, "short", retention_succeeded_days=1)
    [old, kept] = await client.enqueue_bulk(pool, [{"task": "noop", "queue": "short"}, {"task": "noop"}])
    rows = await client.consume(pool, "setup", batch=2)
    assert await client.ack_many(pool, [r.id for r in rows], [r.attempt for r in rows]) == 2
    # white box: both finished two days ago; only the short queue's retention has run out
    await pool.execute("UPDATE pgrelay._finished SET finished_at = now() - interval '2 days'")
    worker = pgrelay.Worker(dsn, pgrelay.Router(), recover_interval=0.05, maintenance_interval=0.1, listen_dsn=False)

    async def purged() -> bool:
        return await client.get_job(pool, old) is None

    await run_until(worker, purged)
    assert (await client.get_job(pool, kept)).status == "succeeded"


async def test_a_leased_job_cancelled_by_an_operator_stops_its_handler(dsn, pool):
    router = pgrelay.Router()
    started, stopped = asyncio.Event(), asyncio.Event()

    @router.task("slow")
    async def slow(ctx):
        started.set()
        try:
            await asyncio.sleep(60)
        finally:
            stopped.set()

    job_id = await client.enqueue(pool, "slow")
    worker = pgrelay.Worker(dsn, router, lease_seconds=1, listen_dsn=False, poll_interval=0.05)
    task = asyncio.create_task(worker.run())
    try:
        await asyncio.wait_for(started.wait(), 10)
        assert await pool.fetchval("SELECT pgrelay.cancel($1)", job_id) is True
        await asyncio.wait_for(stopped.wait(), 10)  # the next heartbeat (a third of the lease) stops it
        assert (await client.get_job(pool, job_id)).status == "cancelled"
        attempts = await client.get_attempts(pool, job_id)
        assert [a.outcome for a in attempts] == ["cancelled"]
    finally:
        worker.stop()
        await asyncio.wait_for(task, 15)
