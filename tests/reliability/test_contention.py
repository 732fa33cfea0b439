"""Contention: 32 consumers on one queue with a concurrency limit of 3, and 8 producers enqueueing
with overlapping dedupe and idempotency keys. No deadlock or unique-violation reaches anyone, the
limit holds at every sampled instant, every key is honoured, and every job succeeds exactly once."""

from __future__ import annotations

import asyncio
import collections
import random

import asyncpg

from pgrelay import client
from tests.reliability.conftest import size

LIMIT = 3
QUEUE = "limited"


async def test_many_consumers_and_producers_on_one_limited_queue(dsn):
    admin = await asyncpg.connect(dsn)
    await client.configure_queue(admin, QUEUE, concurrency=LIMIT)
    deadlocks_before = await admin.fetchval("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()")

    per_producer = size(60, 600)
    idem_ids: dict[str, set[int]] = collections.defaultdict(set)
    dedupe_calls: dict[str, list[int]] = collections.defaultdict(list)
    created: set[int] = set()
    acked = collections.Counter()
    errors: list[BaseException] = []
    producing = 8
    max_leased = 0
    stop = asyncio.Event()

    async def producer(n: int) -> None:
        nonlocal producing
        conn = await asyncpg.connect(dsn)
        rng = random.Random(n)
        try:
            for _ in range(per_producer):
                idem = f"idem-{rng.randrange(per_producer)}" if rng.random() < 0.5 else None
                dedupe = f"dd-{rng.randrange(10)}" if rng.random() < 0.3 else None
                job_id = await client.enqueue(conn, "contended", queue=QUEUE, idempotency_key=idem, dedupe_key=dedupe)
                created.add(job_id)
                if idem:
                    idem_ids[idem].add(job_id)
                if dedupe:
                    dedupe_calls[dedupe].append(job_id)
        except asyncpg.PostgresError as exc:
            errors.append(exc)
        finally:
            producing -= 1
            await conn.close()

    async def consumer(n: int) -> None:
        conn = await asyncpg.connect(dsn)
        try:
            while not stop.is_set():
                rows = await client.consume(conn, f"consumer-{n}", queues=[QUEUE], batch=2)
                if not rows:
                    await asyncio.sleep(0.002)
                    continue
                await asyncio.sleep(0.002)  # the work
                for row in rows:
                    if await client.ack(conn, row.id, row.attempt):
                        acked[row.id] += 1
        except asyncpg.PostgresError as exc:
            errors.append(exc)
        finally:
            await conn.close()

    async def sampler() -> None:
        nonlocal max_leased
        conn = await asyncpg.connect(dsn)
        try:
            while not stop.is_set():
                leased = await conn.fetchval(
                    "SELECT count(*) FROM pgrelay._jobs WHERE queue = $1 AND leased_by IS NOT NULL", QUEUE)
                max_leased = max(max_leased, leased)
        finally:
            await conn.close()

    tasks = [asyncio.create_task(consumer(i)) for i in range(32)] + [asyncio.create_task(sampler())]
    await asyncio.gather(*(producer(i) for i in range(8)))
    deadline = asyncio.get_running_loop().time() + 120
    while await admin.fetchval("SELECT count(*) FROM pgrelay._jobs WHERE queue = $1", QUEUE):
        assert asyncio.get_running_loop().time() < deadline, "the queue did not drain"
        await asyncio.sleep(0.05)
    stop.set()
    await asyncio.gather(*tasks)

    try:
        assert errors == []
        assert 0 < max_leased <= LIMIT
        # idempotency: every call with one key got the same job
        assert all(len(ids) == 1 for ids in idem_ids.values())
        # dedupe: a key's calls got the job that was active then; never two active at once (the
        # unique index), so every returned id is a real job, and each job ran once
        assert set().union(*dedupe_calls.values()) <= created
        assert set(acked) == created and set(acked.values()) == {1}
        statuses = await admin.fetch("SELECT status, count(*) FROM pgrelay.jobs WHERE queue = $1 GROUP BY 1", QUEUE)
        assert {r["status"]: r["count"] for r in statuses} == {"succeeded": len(created)}
        deadlocks = await admin.fetchval("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()")
        assert deadlocks == deadlocks_before
    finally:
        await admin.close()
