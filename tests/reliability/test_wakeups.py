"""Wakeups (issue 7, item 9): the worker's LISTEN connection dies, and big payloads.

- While LISTEN is down (its connection terminated, and refused for a while), jobs are still found by
  polling within the poll interval; when the database takes the connection again, LISTEN comes back.
- LISTEN is re-established after ``pg_terminate_backend`` of the listening connection: with a minute
  between polls, a job enqueued after the new LISTEN runs within seconds, so it was woken.
- A 1 MB payload does not break NOTIFY (the notification carries the queue name, never the payload):
  the job is woken for and runs with its payload intact.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import random
import time
from collections.abc import Iterator
from typing import Any

import asyncpg
import psycopg
import pytest
from psycopg.types.json import Jsonb

import pgrelay
from pgrelay import client
from tests.reliability.conftest import size
from tests.reliability.test_pgbouncer import (
    captured,
    counting_router,
    db_equals,
    running,
    scalar,
    wait_until,
    with_app_name,
)

# generous against a minute between polls: a job that runs this soon was woken, not polled for
WOKEN_WITHIN = 10.0


@pytest.fixture
def executions(db: psycopg.Connection) -> psycopg.Connection:
    db.execute("CREATE TABLE executions (job_id bigint, attempt int, pid int, note text, at timestamptz DEFAULT clock_timestamp())")
    return db


@pytest.fixture
def listener_role(db: psycopg.Connection) -> Iterator[str]:
    """A login role of its own for the worker's LISTEN connection, so a test can refuse it new connections."""
    name = f"pgrelay_listener_{os.getpid()}"
    db.execute(f"DROP ROLE IF EXISTS {name}")
    db.execute(f"CREATE ROLE {name} LOGIN")
    yield name
    db.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", [name])
    deadline = time.monotonic() + 10
    while scalar(db, "SELECT count(*) FROM pg_stat_activity WHERE usename = %s", name) and time.monotonic() < deadline:
        time.sleep(0.05)
    db.execute(f"DROP ROLE {name}")


def listening_pids(db: psycopg.Connection, *, usename: str | None = None, app: str | None = None) -> list[int]:
    """Backends that have run LISTEN (and since then at most their keepalive), by role or application_name."""
    return [r[0] for r in db.execute(
        "SELECT pid FROM pg_stat_activity WHERE (usename = %s OR application_name = %s) AND state = 'idle'"
        " AND (query LIKE 'LISTEN%%' OR query = 'SELECT 1')", [usename, app])]


async def new_listener(db: psycopg.Connection, old: set[int], timeout: float = 30.0, **who: str) -> int:
    """Wait for a listening backend that is not one of ``old``; its pid."""
    found: list[int] = []

    async def check() -> bool:
        found[:] = [p for p in await asyncio.to_thread(listening_pids, db, **who) if p not in old]
        return bool(found)

    await wait_until(check, timeout=timeout, what="the worker to LISTEN (again)")
    return found[0]


def latency(db: psycopg.Connection, job_id: int) -> float:
    """Seconds from enqueue to success, by the database's clock."""
    return float(scalar(db, "SELECT extract(epoch FROM finished_at - created_at) FROM pgrelay.jobs "
                            "WHERE id = %s AND status = 'succeeded'", job_id))


async def test_jobs_are_polled_for_while_listen_is_down_and_listen_comes_back(
        db, dsn, executions, listener_role):
    poll_interval = 2.0
    role_dsn = dsn.replace("postgresql://postgres@", f"postgresql://{listener_role}@", 1)
    assert role_dsn != dsn
    seen: list[int] = []
    worker = pgrelay.Worker(dsn, counting_router(seen), listen_dsn=role_dsn, poll_interval=poll_interval,
                            concurrency=4)
    with captured() as log:
        async with running(worker):
            first = await new_listener(db, set(), usename=listener_role)
            # the database refuses the role new connections, then drops the listening one
            db.execute(f"ALTER ROLE {listener_role} NOLOGIN")
            db.execute("SELECT pg_terminate_backend(%s)", [first])
            await wait_until(lambda: any("listen connection failed" in m for m in log.messages(logging.WARNING)),
                             timeout=15, what="the worker to fail to listen again")
            n = size(5, 50)
            ids = []
            for _ in range(n):
                ids.append(await asyncio.to_thread(scalar, db, "SELECT pgrelay.enqueue('record')"))
                await asyncio.sleep(poll_interval / 5)  # spread over the poll cycle
            await wait_until(lambda: db_equals(
                db, "SELECT count(*) FROM pgrelay.jobs WHERE status = 'succeeded' AND id = ANY (%s)", n, ids),
                timeout=30, what="the jobs to be found by polling")
            assert listening_pids(db, usename=listener_role) == [], "LISTEN was not down after all"
            # within the poll interval (and a generous margin for a busy machine)
            slowest = max(latency(db, i) for i in ids)
            assert slowest < poll_interval + 5, slowest

            # the database takes the role again: LISTEN comes back (reconnect backoff is at most 10 s)
            db.execute(f"ALTER ROLE {listener_role} LOGIN")
            again = await new_listener(db, {first}, timeout=30, usename=listener_role)
            assert again != first
    assert sorted(seen) == sorted(ids)
    assert scalar(executions, "SELECT count(*) FROM executions") == n


async def test_listen_is_reestablished_after_its_connection_is_terminated(db, dsn, executions):
    app = "pgrelay-test-relisten"
    worker = pgrelay.Worker(dsn, counting_router(), listen_dsn=with_app_name(dsn, app), poll_interval=60,
                            concurrency=4)
    ids = []
    with captured() as log:
        async with running(worker):
            pid = await new_listener(db, set(), app=app)
            killed: set[int] = set()
            for _ in range(size(2, 10)):
                assert scalar(db, "SELECT pg_terminate_backend(%s)", pid) is True
                killed.add(pid)
                pid = await new_listener(db, killed, app=app)
                # a job enqueued now is found only by a wakeup: the next poll is a minute away
                job = await asyncio.to_thread(scalar, db, "SELECT pgrelay.enqueue('record')")
                ids.append(job)
                await wait_until(lambda: db_equals(db, "SELECT status FROM pgrelay.jobs WHERE id = %s", "succeeded", job),
                                 timeout=WOKEN_WITHIN, what="the job to be woken for after LISTEN came back")
    assert sum("listen connection lost" in m for m in log.messages(logging.WARNING)) >= len(ids), log.messages()
    assert max(latency(db, i) for i in ids) < WOKEN_WITHIN
    assert db.execute("SELECT count(*), count(DISTINCT job_id) FROM executions").fetchone() == (len(ids), len(ids))


async def test_a_1mb_payload_does_not_break_notify(db, dsn):
    app = "pgrelay-test-big-payload"
    received: dict[int, tuple[int, str]] = {}
    router = pgrelay.Router()

    @router.task("big")
    async def big(ctx: pgrelay.JobContext) -> dict[str, Any]:
        text = json.dumps(ctx.payload, sort_keys=True)
        received[ctx.job_id] = (len(text), hashlib.sha256(text.encode()).hexdigest())
        return {"bytes": len(text)}

    payloads = [{"blob": "x" * 1_000_000, "n": 1}, {"blob": "é" * 500_000, "n": 2}]  # 1 MB each (UTF-8)
    expected = {}
    worker = pgrelay.Worker(dsn, router, listen_dsn=with_app_name(dsn, app), poll_interval=60)
    async with running(worker):
        await new_listener(db, set(), app=app)
        await asyncio.sleep(0.5)  # the claim right after LISTEN is over; the next waits for a wakeup
        # through the Python client and through SQL
        conn = await asyncpg.connect(dsn)
        first = await client.enqueue(conn, "big", payloads[0])
        await conn.close()
        second = await asyncio.to_thread(scalar, db, "SELECT pgrelay.enqueue('big', %s)", Jsonb(payloads[1]))
        for job_id, payload in zip((first, second), payloads):
            text = json.dumps(payload, sort_keys=True)
            expected[job_id] = (len(text), hashlib.sha256(text.encode()).hexdigest())
        await wait_until(lambda: len(received) == 2, timeout=WOKEN_WITHIN, what="both 1 MB jobs to be woken for")
    assert received == expected
    assert all(size_ > 1_000_000 for size_, _ in received.values())
    for job_id in (first, second):
        assert latency(db, job_id) < WOKEN_WITHIN
        assert scalar(db, "SELECT result->>'bytes' FROM pgrelay.jobs WHERE id = %s", job_id) == str(expected[job_id][0])


async def test_a_worker_configured_by_the_libpq_variables_listens_too(db, dsn, postgresql_proc, monkeypatch, executions):
    """No DSN at all (``jobs-worker`` with PGHOST, PGPORT, ...): the LISTEN connection uses them as well."""
    for name, value in {"PGHOST": postgresql_proc.host, "PGPORT": str(postgresql_proc.port),
                        "PGUSER": db.info.user, "PGDATABASE": db.info.dbname}.items():
        monkeypatch.setenv(name, value)
    worker = pgrelay.Worker(None, counting_router(), poll_interval=60)
    async with running(worker):
        await new_listener(db, set(), timeout=15, usename=db.info.user)  # (asyncpg has no PGAPPNAME)
        await asyncio.sleep(0.5)  # the claim right after LISTEN is over; the next waits for a wakeup
        job = await asyncio.to_thread(scalar, db, "SELECT pgrelay.enqueue('record')")
        await wait_until(lambda: db_equals(db, "SELECT status FROM pgrelay.jobs WHERE id = %s", "succeeded", job),
                         timeout=WOKEN_WITHIN, what="the job to be woken for")
    assert latency(db, job) < WOKEN_WITHIN


async def test_no_wakeup_is_lost_while_jobs_arrive_as_the_listener_reconnects(db, dsn, executions):
    """Producers NOTIFY only a waiting worker (idle()). Jobs arrive one at a time, spaced so the worker goes
    idle between them (over its 50 ms linger), while its LISTEN connection is terminated again and again: jobs
    enqueued while it was not listening, while it listened again but had not yet called idle() again, and
    while it waited must all run within seconds, with a minute between polls."""
    app = "pgrelay-test-relisten-under-load"
    worker = pgrelay.Worker(dsn, counting_router(), listen_dsn=with_app_name(dsn, app), poll_interval=60,
                            concurrency=4)
    ids: list[int] = []
    stop = asyncio.Event()

    async def produce() -> None:
        rng = random.Random(7)
        while not stop.is_set():
            ids.append(await asyncio.to_thread(scalar, db, "SELECT pgrelay.enqueue('record')"))
            await asyncio.sleep(rng.uniform(0.06, 0.3))

    async with running(worker):
        pid = await new_listener(db, set(), app=app)
        producer = asyncio.create_task(produce())
        killed: set[int] = set()
        for _ in range(size(3, 15)):
            await asyncio.sleep(random.uniform(0.2, 1.0))
            await asyncio.to_thread(scalar, db, "SELECT pg_terminate_backend(%s)", pid)
            killed.add(pid)
            pid = await new_listener(db, killed, app=app)
        await asyncio.sleep(1.0)
        stop.set()
        await producer
        await wait_until(lambda: db_equals(
            db, "SELECT count(*) FROM pgrelay.jobs WHERE status = 'succeeded' AND id = ANY (%s)", len(ids), ids),
            timeout=WOKEN_WITHIN + 5, what="every job to run")
    assert len(ids) >= 10
    assert max(latency(db, i) for i in ids) < WOKEN_WITHIN
    assert db.execute("SELECT count(*), count(DISTINCT job_id) FROM executions").fetchone() == (len(ids), len(ids))
    assert scalar(db, "SELECT count(*) FROM pgrelay._waiting") == 0, "the stopped worker still counts as waiting"
