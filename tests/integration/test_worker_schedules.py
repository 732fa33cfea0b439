"""Schedules and the worker: it declares the schedules of its handlers at start and ticks about once a
second. A schedule made in SQL is the database's; between workers the declaration made last wins; every
worker ticks and each tick is still one job; the database's rule for an expression stops a worker at start.

Time is not waited for: a schedule is made due by moving its next run into the past (white box).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime

import asyncpg
import pytest

import pgrelay
from pgrelay import client
from pgrelay.errors import InvalidArgument
from tests.integration.helpers import run_until


@pytest.fixture
async def admin(dsn):
    conn = await asyncpg.connect(dsn)
    yield conn
    await conn.close()


async def schedule_row(conn: asyncpg.Connection, name: str) -> pgrelay.models.Schedule | None:
    return next((s for s in await client.schedules(conn) if s.name == name), None)


async def make_due(conn: asyncpg.Connection, name: str) -> None:
    # white box: the schedule's next run a second ago, as if its time had come
    await conn.execute("UPDATE pgrelay._schedules SET next_run = now() - interval '1 second' WHERE name = $1", name)


async def jobs_per_tick(conn: asyncpg.Connection, task: str) -> dict[datetime, int]:
    rows = await conn.fetch("SELECT (payload->>'scheduled_for')::timestamptz AS tick, count(*) AS jobs"
                            " FROM pgrelay.jobs WHERE task = $1 GROUP BY 1", task)
    return {row["tick"]: row["jobs"] for row in rows}


def noop_router(name: str, **schedule) -> pgrelay.Router:
    router = pgrelay.Router()
    router.add(name, lambda ctx: None, **schedule)
    return router


async def test_a_worker_declares_the_schedules_of_its_handlers_at_start(dsn, admin, caplog):
    caplog.set_level(logging.INFO, logger="pgrelay.worker")
    router = noop_router("reports.daily", cron="0 6 * * *", timezone="Europe/Berlin", queue="reports",
                         payload={"format": "pdf"}, catch_up="none", priority=3, max_attempts=2, timeout_seconds=60)
    worker = pgrelay.Worker(dsn, router, poll_interval=0.1)

    async def declared() -> bool:
        return await schedule_row(admin, "reports.daily") is not None

    await run_until(worker, declared)
    row = await schedule_row(admin, "reports.daily")
    assert (row.cron, row.task, row.timezone, row.queue, row.payload, row.catch_up, row.priority, row.max_attempts,
            row.timeout_seconds, row.declared_by, row.paused) == (
        "0 6 * * *", "reports.daily", "Europe/Berlin", "reports", {"format": "pdf"}, "none", 3, 2, 60, "worker", False)
    assert await admin.fetchval("SELECT to_char($1::timestamptz AT TIME ZONE 'Europe/Berlin', 'HH24:MI')",
                                row.next_run) == "06:00"

    # the same declaration again (a restart) changes nothing, not even updated_at
    async def declared_twice() -> bool:
        return sum("schedule reports.daily declared" in r.getMessage() for r in caplog.records) == 2

    await run_until(pgrelay.Worker(dsn, router, poll_interval=0.1), declared_twice)
    assert await schedule_row(admin, "reports.daily") == row


async def test_a_schedule_made_in_sql_is_left_alone_by_a_worker_which_says_so(dsn, admin, caplog):
    caplog.set_level(logging.WARNING, logger="pgrelay.worker")
    await client.schedule(admin, "reports.daily", "0 7 * * *", "reports.daily", {"by": "sql"})
    before = await schedule_row(admin, "reports.daily")
    worker = pgrelay.Worker(dsn, noop_router("reports.daily", cron="0 6 * * *"), poll_interval=0.1)

    async def warned() -> bool:
        return any("made or changed in SQL" in r.getMessage() for r in caplog.records)

    await run_until(worker, warned)
    assert await schedule_row(admin, "reports.daily") == before
    warnings = [r for r in caplog.records if "made or changed in SQL" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING and "reports.daily" in warnings[0].getMessage()


async def test_between_two_workers_the_last_started_wins_and_no_tick_is_doubled(dsn, admin):
    # the same ticks written two ways: a change of expression must not enqueue a tick again
    first = pgrelay.Worker(dsn, noop_router("minutely", cron="* * * * *"), poll_interval=0.1, tick_interval=0.02)
    second = pgrelay.Worker(dsn, noop_router("minutely", cron="*/1 * * * *"), poll_interval=0.1, tick_interval=0.02)
    first_run = asyncio.create_task(first.run())
    second_run = None
    try:
        await wait_for(lambda: _cron_is(admin, "minutely", "* * * * *"), first_run)
        await make_due(admin, "minutely")
        await wait_for(lambda: _has_jobs(admin, "minutely"), first_run)
        ticked = (await schedule_row(admin, "minutely")).last_tick

        second_run = asyncio.create_task(second.run())
        await wait_for(lambda: _cron_is(admin, "minutely", "*/1 * * * *"), second_run)
        row = await schedule_row(admin, "minutely")
        assert row.declared_by == "worker" and row.next_run > ticked  # from after the tick already enqueued
        # both tick, every 20 ms, a schedule due again at the same tick
        await make_due(admin, "minutely")
        await asyncio.sleep(1.0)
        assert not first_run.done() and not second_run.done()
    finally:
        first.stop()
        second.stop()
        await asyncio.wait_for(asyncio.gather(first_run, *([second_run] if second_run else [])), timeout=15)
    assert (await schedule_row(admin, "minutely")).cron == "*/1 * * * *"  # the last declaration
    per_tick = await jobs_per_tick(admin, "minutely")
    assert per_tick[ticked] == 1 and set(per_tick.values()) == {1}, per_tick


async def wait_for(condition, task: asyncio.Task, timeout: float = 15.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await condition():
        assert not task.done(), f"worker stopped early: {task.exception()}"
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


async def _cron_is(conn: asyncpg.Connection, name: str, cron: str) -> bool:
    row = await schedule_row(conn, name)
    return row is not None and row.cron == cron


async def _has_jobs(conn: asyncpg.Connection, task: str) -> bool:
    return bool(await jobs_per_tick(conn, task))


async def test_the_worker_ticks_a_due_schedule_and_the_handler_sees_scheduled_for(dsn, admin):
    await client.schedule(admin, "minutely", "* * * * *", "minutely", {"source": "cron"})
    await make_due(admin, "minutely")
    seen: list[dict] = []
    router = pgrelay.Router()

    @router.task("minutely")
    async def minutely(ctx):
        seen.append(ctx.job.payload)

    worker = pgrelay.Worker(dsn, router, poll_interval=0.1)

    async def ran() -> bool:
        return bool(seen)

    await run_until(worker, ran)
    row = await schedule_row(admin, "minutely")
    assert await jobs_per_tick(admin, "minutely") == {row.last_tick: 1}
    [payload] = seen
    assert payload["source"] == "cron" and datetime.fromisoformat(payload["scheduled_for"]) == row.last_tick
    job = await client.get_job(admin, row.last_job_id)
    assert (job.status, job.run_at) == ("succeeded", row.last_tick)
    assert row.last_tick <= await admin.fetchval("SELECT now()") and row.next_run > row.last_tick


async def test_a_worker_with_tick_interval_0_never_ticks(dsn, admin):
    await client.schedule(admin, "minutely", "* * * * *", "minutely")
    await make_due(admin, "minutely")
    worker = pgrelay.Worker(dsn, noop_router("minutely"), poll_interval=0.05, tick_interval=0)
    task = asyncio.create_task(worker.run())
    await asyncio.sleep(1.0)
    worker.stop()
    await asyncio.wait_for(task, timeout=15)
    assert await jobs_per_tick(admin, "minutely") == {}


async def test_a_bad_expression_next_to_a_handler_stops_the_worker_at_start_with_the_databases_reason(dsn, admin):
    waiting = await client.enqueue(admin, "fine")
    with pytest.raises(InvalidArgument) as refused:
        await client.declare_schedule(admin, "fine", "61 * * * *", "fine")
    router = pgrelay.Router()
    router.add("fine", lambda ctx: None, cron="61 * * * *")   # the Router takes any string; the database has the rule
    worker = pgrelay.Worker(dsn, router, poll_interval=0.1)

    with pytest.raises(InvalidArgument) as stopped:
        await asyncio.wait_for(worker.run(), timeout=30)

    assert str(stopped.value) == f"the schedule of task 'fine': {refused.value}"
    assert (await client.get_job(admin, waiting)).status == "pending"   # it claimed nothing
    assert await client.schedules(admin) == []
