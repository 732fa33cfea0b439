"""The worker's failure paths (issue 22): no loop dies quietly, the worker's own calls never wait behind
handlers, a handler's own error stays its own, plain handlers keep their slot, one wakeup timer.

Failures are the database's own: a read-only server after a failover, a lock held by another session
under lock_timeout, statement_timeout, pg_terminate_backend; nothing here mocks the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Awaitable, Callable

import asyncpg
import pytest

import pgrelay
from pgrelay import client
from tests.integration.helpers import run_until


@pytest.fixture
async def admin(dsn):
    """The test's own connection (opened before any setting below changes what new sessions get)."""
    conn = await asyncpg.connect(dsn)
    yield conn
    await conn.close()


async def wait_until(condition: Callable[[], Awaitable[bool] | bool], what: str, timeout: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = condition()
        if not isinstance(value, bool):
            value = await value
        if value:
            return
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


def logged(caplog: pytest.LogCaptureFixture, *words: str) -> Callable[[], bool]:
    return lambda: any(all(w in r.getMessage() for w in words) for r in caplog.records)


async def outcomes(conn: asyncpg.Connection, job_id: int) -> list[str]:
    return [a.outcome for a in await client.get_attempts(conn, job_id)]


async def status(conn: asyncpg.Connection, job_id: int) -> str:
    return (await client.get_job(conn, job_id)).status


async def terminate_others(conn: asyncpg.Connection) -> None:
    """Drop every other session of this database: the worker's connections come back as new sessions."""
    await conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                       "WHERE datname = current_database() AND pid <> pg_backend_pid()")


def sleepy_router(runs: list[tuple[int, int]], seconds: float) -> pgrelay.Router:
    router = pgrelay.Router()

    @router.task("sleepy")
    async def sleepy(ctx):
        runs.append((ctx.job_id, ctx.attempt))
        await asyncio.sleep(seconds)

    @router.task("quick")
    async def quick(ctx):
        runs.append((ctx.job_id, ctx.attempt))

    return router


# -- 1. no loop dies quietly ----------------------------------------------------------------------


async def test_every_loop_survives_a_read_only_server_after_a_failover(dsn, admin, caplog):
    # 25006 on every write (a standby, or default_transaction_read_only): claim, heartbeat, recover and
    # the ack of the running job all fail for a while; the worker logs, waits and goes on, and the
    # running job keeps its lease and runs once
    caplog.set_level(logging.WARNING, logger="pgrelay.worker")
    runs: list[tuple[int, int]] = []
    dbname = await admin.fetchval("SELECT current_database()")
    long = await client.enqueue(admin, "sleepy")
    worker = pgrelay.Worker(dsn, sleepy_router(runs, 4), lease_seconds=6, poll_interval=0.1, recover_interval=0.5)
    task = asyncio.create_task(worker.run())
    try:
        await wait_until(lambda: bool(runs), "the job to start")
        # due while the server is read-only: the claim of it fails (with none due, consume writes nothing)
        due = await client.enqueue(admin, "quick", run_at=await admin.fetchval("SELECT now() + interval '2 s'"))
        await admin.execute(f'ALTER DATABASE "{dbname}" SET default_transaction_read_only = on')
        await terminate_others(admin)
        await wait_until(logged(caplog, "claim failed", "ReadOnlySQLTransaction"), "a refused claim")
        await wait_until(logged(caplog, "heartbeat failed", "ReadOnlySQLTransaction"), "a refused heartbeat")
        await wait_until(logged(caplog, "recover failed", "ReadOnlySQLTransaction"), "a refused recover")
        assert not task.done(), f"the worker stopped: {task.exception()}"
        await admin.execute(f'ALTER DATABASE "{dbname}" RESET default_transaction_read_only')
        await terminate_others(admin)  # sessions opened meanwhile stay read-only
        await wait_until(lambda: _is(status(admin, long), "succeeded"), "the running job to succeed")
        later = await client.enqueue(admin, "quick")
        await wait_until(lambda: _is(status(admin, later), "succeeded"), "a job enqueued after the failover")
        await wait_until(lambda: _is(status(admin, due), "succeeded"), "the job that fell due meanwhile")
        assert not task.done(), f"the worker stopped: {task.exception()}"
    finally:
        await admin.execute(f'ALTER DATABASE "{dbname}" RESET default_transaction_read_only')
        worker.stop()
        await asyncio.wait_for(task, 20)
    assert await outcomes(admin, long) == ["succeeded"]
    assert [r for r in runs if r[0] == long] == [(long, 1)]


async def _is(value: Awaitable[str], expected: str) -> bool:
    return await value == expected


async def test_a_heartbeat_refused_by_lock_timeout_is_tried_again_before_the_lease_ends(dsn, admin, caplog):
    # another session holds the worker's row in pgrelay._workers; under lock_timeout the heartbeat's
    # upsert fails with 55P03. Before: the heartbeat loop ended there, nothing noticed, the lease ran
    # out and the job ran twice.
    caplog.set_level(logging.WARNING, logger="pgrelay.worker")
    runs: list[tuple[int, int]] = []
    job = await client.enqueue(admin, "sleepy")
    worker = pgrelay.Worker(f"{dsn}?lock_timeout=200", sleepy_router(runs, 5), worker_id="locked-out",
                            lease_seconds=3, poll_interval=0.1, recover_interval=0.5)
    locker = await asyncpg.connect(dsn)
    task = asyncio.create_task(worker.run())
    try:
        await wait_until(lambda: bool(runs), "the job to start")
        await wait_until(lambda: _exists(admin, "SELECT 1 FROM pgrelay._workers WHERE worker = 'locked-out'"),
                         "the worker's first heartbeat")
        async with locker.transaction():
            await locker.execute("SELECT 1 FROM pgrelay._workers WHERE worker = 'locked-out' FOR UPDATE")
            # held until a heartbeat failed on it (or, when none reports it, for longer than the lease)
            with contextlib.suppress(AssertionError):
                await wait_until(logged(caplog, "heartbeat failed", "LockNotAvailable"), "", timeout=4)
        await wait_until(lambda: _is(status(admin, job), "succeeded"), "the job to succeed")
        assert not task.done(), f"the worker stopped: {task.exception()}"
    finally:
        worker.stop()
        await asyncio.wait_for(task, 20)
        await locker.close()
    assert logged(caplog, "heartbeat failed", "LockNotAvailable")()
    assert await outcomes(admin, job) == ["succeeded"]
    assert runs == [(job, 1)]


async def _exists(conn: asyncpg.Connection, sql: str) -> bool:
    return await conn.fetchval(sql) is not None


async def test_statement_timeouts_on_the_workers_calls_are_survived(dsn, admin, caplog):
    # a session locks pgrelay._jobs against writes; under statement_timeout every claim, heartbeat and
    # recover is cancelled (57014) until it lets go
    caplog.set_level(logging.WARNING, logger="pgrelay.worker")
    runs: list[tuple[int, int]] = []
    job = await client.enqueue(admin, "sleepy")
    worker = pgrelay.Worker(f"{dsn}?statement_timeout=300", sleepy_router(runs, 3), lease_seconds=6,
                            poll_interval=0.1, recover_interval=0.5)
    locker = await asyncpg.connect(dsn)
    task = asyncio.create_task(worker.run())
    try:
        await wait_until(lambda: bool(runs), "the job to start")
        # due while the table is locked: its claim waits for the lock (with none due, consume locks nothing)
        due = await client.enqueue(admin, "quick", run_at=await admin.fetchval("SELECT now() + interval '1 s'"))
        async with locker.transaction():
            await locker.execute("LOCK TABLE pgrelay._jobs IN EXCLUSIVE MODE")
            await wait_until(logged(caplog, "claim failed", "QueryCanceled"), "a cancelled claim", timeout=15)
            await wait_until(logged(caplog, "heartbeat failed", "QueryCanceled"), "a cancelled heartbeat", timeout=15)
        later = await client.enqueue(admin, "quick")
        await wait_until(lambda: _is(status(admin, later), "succeeded"), "a job enqueued after the lock")
        await wait_until(lambda: _is(status(admin, job), "succeeded"), "the running job to succeed")
        await wait_until(lambda: _is(status(admin, due), "succeeded"), "the job that fell due meanwhile")
        assert not task.done(), f"the worker stopped: {task.exception()}"
    finally:
        worker.stop()
        await asyncio.wait_for(task, 20)
        await locker.close()
    assert await outcomes(admin, job) == ["succeeded"]


async def test_a_loop_that_cannot_go_on_stops_the_whole_worker(dsn, admin):
    # a failure that is not the database's (here a metrics sink that raises, in the ack loop) must not
    # leave a worker that claims but never acks: run() raises and the jobs it held are handed back
    from pgrelay.worker import WorkerFailed

    class BrokenMetrics:
        def claimed(self, seconds: float) -> None: ...

        def started(self, job) -> None: ...

        def finished(self, job, outcome: str, seconds: float) -> None:
            raise RuntimeError("metrics sink is gone")

    runs: list[tuple[int, int]] = []
    router = sleepy_router(runs, 60)
    held = await client.enqueue(admin, "sleepy")
    worker = pgrelay.Worker(dsn, router, concurrency=4, poll_interval=0.1, metrics=BrokenMetrics())
    task = asyncio.create_task(worker.run())
    try:
        await wait_until(lambda: bool(runs), "the long job to start")
        await client.enqueue(admin, "quick")  # its ack's bookkeeping raises in the ack loop
        done, _ = await asyncio.wait({task}, timeout=20)
        assert done, "the worker went on with a dead ack loop"
        with pytest.raises(WorkerFailed) as failed:
            task.result()
        assert isinstance(failed.value.__cause__, RuntimeError)
    finally:
        if not task.done():
            worker.stop()
            await asyncio.wait({task}, timeout=20)
    assert await status(admin, held) == "pending"  # handed back at once, not left to its lease
    assert await outcomes(admin, held) == ["cancelled"]


# -- 2. the worker's own calls have their own connections ---------------------------------------


async def test_heartbeats_never_wait_behind_handlers_holding_transactions(dsn, admin):
    # 50 handlers each hold ctx.transaction() open for longer than the lease: more than the handlers'
    # pool has connections, so most wait for one; the heartbeats must not wait with them
    runs: list[tuple[int, int]] = []
    router = pgrelay.Router()

    @router.task("holder")
    async def holder(ctx):
        async with ctx.transaction() as conn:
            runs.append((ctx.job_id, ctx.attempt))
            await conn.execute("SELECT 1")
            await asyncio.sleep(2.5)

    ids = await client.enqueue_bulk(admin, [{"task": "holder"}] * 50)
    worker = pgrelay.Worker(dsn, router, concurrency=50, lease_seconds=2, poll_interval=0.1)

    async def done() -> bool:
        return await admin.fetchval("SELECT count(*) FROM pgrelay.jobs WHERE status = 'succeeded'") == 50

    await run_until(worker, done, timeout=90)
    assert sorted(runs) == sorted((i, 1) for i in ids)  # each ran once, on its first attempt
    expired = await admin.fetchval("SELECT count(*) FROM pgrelay._attempts WHERE outcome <> 'succeeded'")
    assert expired == 0


# -- 3. a handler's own error is its error ---------------------------------------------------------


async def test_a_timeout_error_from_a_handler_without_a_timeout_is_recorded_as_its_error(dsn, admin):
    router = pgrelay.Router()

    @router.task("upstream")
    async def upstream(ctx):
        raise TimeoutError("the upstream service took too long")

    job = await client.enqueue(admin, "upstream", max_attempts=1)
    await run_until(pgrelay.Worker(dsn, router, lease_seconds=2, poll_interval=0.05),
                    lambda: _is(status(admin, job), "dead_letter"), timeout=30)
    [attempt] = await client.get_attempts(admin, job)
    assert attempt.outcome == "failed"
    assert "TimeoutError: the upstream service took too long" in attempt.error


async def test_a_timeout_error_raised_inside_a_handler_is_not_the_jobs_timeout(dsn, admin):
    router = pgrelay.Router()

    @router.task("upstream", timeout=30)
    async def upstream(ctx):
        raise TimeoutError("the upstream service took too long")

    job = await client.enqueue(admin, "upstream", max_attempts=1)
    await run_until(pgrelay.Worker(dsn, router, poll_interval=0.05), lambda: _is(status(admin, job), "dead_letter"))
    [attempt] = await client.get_attempts(admin, job)
    assert attempt.outcome == "failed" and "the upstream service took too long" in attempt.error


# -- 4. plain (sync) handlers ---------------------------------------------------------------------


async def test_a_timed_out_sync_handler_keeps_its_slot_until_its_thread_returns(dsn, admin):
    release = threading.Event()
    lock = threading.Lock()
    state = {"now": 0, "most": 0}
    started: list[str] = []
    router = pgrelay.Router()

    def enter(name: str) -> None:
        with lock:
            started.append(name)
            state["now"] += 1
            state["most"] = max(state["most"], state["now"])

    def leave() -> None:
        with lock:
            state["now"] -= 1

    @router.task("stuck", timeout=0.2)
    def stuck(ctx):
        enter("stuck")
        try:
            release.wait(30)  # a blocking call nothing can interrupt
        finally:
            leave()

    @router.task("next")
    def following(ctx):
        enter("next")
        leave()

    first = await client.enqueue(admin, "stuck", max_attempts=1)
    worker = pgrelay.Worker(dsn, router, concurrency=1, poll_interval=0.05)
    task = asyncio.create_task(worker.run())
    try:
        await wait_until(lambda: _is(status(admin, first), "dead_letter"), "the stuck job to time out")
        second = await client.enqueue(admin, "next")
        # the timed-out function still runs in its thread: the one slot is still taken
        with contextlib.suppress(AssertionError):
            await wait_until(lambda: "next" in started, "", timeout=1.5)
        release.set()
        await wait_until(lambda: _is(status(admin, second), "succeeded"), "the next job once the thread returned")
    finally:
        release.set()
        worker.stop()
        await asyncio.wait_for(task, 20)
    assert state["most"] == 1, "two handlers ran at once with concurrency 1"
    assert (await client.get_attempts(admin, first))[0].outcome == "timeout"


async def test_ctx_enqueue_in_a_sync_handler_fails_loudly_not_silently(dsn, admin):
    router = pgrelay.Router()

    @router.task("sync.followup")
    def followup(ctx):
        ctx.enqueue("never")  # a plain function has no event loop to run it on

    job = await client.enqueue(admin, "sync.followup", max_attempts=1)
    await run_until(pgrelay.Worker(dsn, router, poll_interval=0.05), lambda: _is(status(admin, job), "dead_letter"))
    [attempt] = await client.get_attempts(admin, job)
    assert "async handlers only" in attempt.error
    assert await admin.fetchval("SELECT count(*) FROM pgrelay.jobs WHERE task = 'never'") == 0


# -- 6. one timer for scheduled wakeups -----------------------------------------------------------


async def test_future_jobs_share_one_wakeup_timer_and_all_run_without_polling(dsn, admin):
    runs: list[tuple[int, int]] = []
    router = sleepy_router(runs, 0)
    # no polling to speak of: only the NOTIFYs' due times wake the worker
    worker = pgrelay.Worker(dsn, router, poll_interval=3600, recover_interval=3600)
    task = asyncio.create_task(worker.run())
    try:
        await wait_until(lambda: _exists(admin, "SELECT 1 FROM pg_stat_activity WHERE datname = current_database() "
                                                "AND (query LIKE 'LISTEN%' OR query = 'SELECT 1')"),
                         "the worker to listen")
        base = await admin.fetchval("SELECT extract(epoch FROM now())::float8")
        ids = [await admin.fetchval("SELECT pgrelay.enqueue('quick', run_at => to_timestamp($1))", base + 4 + i / 100)
               for i in range(200)]
        # a job due now, NOTIFYed after all of them on the same session: once it ran, the worker had
        # read every earlier notification
        marker = await client.enqueue(admin, "quick")
        await wait_until(lambda: _is(status(admin, marker), "succeeded"), "the marker job")
        loop = asyncio.get_running_loop()
        # the timers whose callback is a method of the worker or of one of its parts
        parts = [worker, *vars(worker).values()]
        mine = [h for h in loop._scheduled  # type: ignore[attr-defined]
                if not h.cancelled() and any(getattr(h._callback, "__self__", None) is part
                                             for part in parts if part is not None)]
        assert len(mine) <= 1, f"{len(mine)} wakeup timers for 200 future jobs"

        async def all_ran() -> bool:
            return await admin.fetchval("SELECT count(*) FROM pgrelay.jobs WHERE id = ANY($1) AND status = 'succeeded'",
                                        ids) == len(ids)

        await wait_until(all_ran, "every future job to run when due", timeout=60)
    finally:
        worker.stop()
        await asyncio.wait_for(task, 20)


# -- 17. metrics use the SQL's outcome names ------------------------------------------------------


async def test_metrics_count_a_lost_lease_as_lease_expired(dsn, admin):
    from prometheus_client import CollectorRegistry

    from pgrelay.metrics import PrometheusMetrics

    registry = CollectorRegistry()
    runs: list[tuple[int, int]] = []
    job = await client.enqueue(admin, "sleepy", max_attempts=1)
    worker = pgrelay.Worker(dsn, sleepy_router(runs, 60), lease_seconds=1, poll_interval=0.05,
                            metrics=PrometheusMetrics(registry), recover_interval=3600)
    labels = {"queue": "default", "task": "sleepy", "outcome": "lease_expired"}

    async def counted() -> bool:
        return registry.get_sample_value("pgrelay_jobs_total", labels) == 1

    async def lose_the_lease() -> bool:
        if runs and (await client.get_job(admin, job)).status == "leased":
            # the lease runs out behind the worker's back and another recover() takes the job away
            await admin.execute("UPDATE pgrelay._jobs SET lease_expires_at = now() - interval '1 s' WHERE id = $1", job)
            await admin.fetchval("SELECT pgrelay.recover()")
        return await counted()

    await run_until(worker, lose_the_lease, timeout=30)
    assert await outcomes(admin, job) == ["lease_expired"]


# -- 17. the task name rule is the database's ----------------------------------------------------


async def test_a_handler_no_job_could_name_stops_the_worker_at_start_with_the_databases_reason(dsn, admin):
    waiting = await client.enqueue(admin, "fine")
    router = pgrelay.Router()
    router.add("fine", lambda ctx: None)
    router.add("has space", lambda ctx: None)   # the Router takes any string; the database has the rule
    worker = pgrelay.Worker(dsn, router, poll_interval=0.1)

    with pytest.raises(pgrelay.errors.InvalidArgument, match="a handler's task name: invalid task 'has space'"):
        await asyncio.wait_for(worker.run(), timeout=30)

    assert await status(admin, waiting) == "pending"   # it claimed nothing
