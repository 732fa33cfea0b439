"""Maintenance racing live work: recover() against a late ack, purge beside busy workers, an upgrade
applied under live workers, and more expired leases than one recovery batch.

The invariants are read from the database: an ack and a recovery never both happen to one lease,
nothing is lost, and no session ever sees a deadlock (pg_stat_database.deadlocks does not move).
"""

from __future__ import annotations

import asyncio
import random
import threading

import asyncpg
import psycopg
import pytest

from pgrelay import client, schema
from tests.harness.releases import package_with_next_release
from tests.reliability.conftest import size
from tests.sql.factory import attempts, call, expire, make_job, status


def deadlocks(db) -> int:
    db.execute("SELECT pg_stat_clear_snapshot()")
    return db.execute("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()").fetchone()[0]


def test_recover_racing_a_late_ack_lets_exactly_one_of_them_win(db, connect):
    acker, recoverer = connect(), connect()
    outcomes = {"acked": 0, "recovered": 0}
    for _ in range(size(30, 300)):
        job = make_job(db, "leased", max_attempts=5)
        expire(db, job)  # the lease ran out; the worker's ack is late
        start = threading.Barrier(2)
        results: dict[str, object] = {}

        def ack() -> None:
            start.wait()
            results["ack"] = acker.execute("SELECT pgrelay.ack(%s, %s)", (job.id, job.attempt)).fetchone()[0]

        def recover() -> None:
            start.wait()
            results["recover"] = recoverer.execute("SELECT pgrelay.recover()").fetchone()[0]

        threads = [threading.Thread(target=ack), threading.Thread(target=recover)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)

        expired = [a for a in attempts(db, job) if a["outcome"] == "lease_expired"]
        if results["ack"]:
            assert status(db, job) == "succeeded" and expired == [] and results["recover"] == 0
            outcomes["acked"] += 1
        else:
            assert status(db, job) == "pending" and len(expired) == 1 and results["recover"] == 1
            outcomes["recovered"] += 1
    assert sum(outcomes.values()) == size(30, 300)


def test_more_expired_leases_than_one_recovery_batch_are_all_recovered(db):
    n = 2500  # recover() does at most max_jobs (1,000 by default) per call
    db.execute("""SELECT count(*) FROM pgrelay.enqueue_bulk(
                      (SELECT jsonb_agg(jsonb_build_object('task', 'many')) FROM generate_series(1, %s)))""", (n,))
    assert len(call_rows_consume(db, n)) == n
    db.execute("UPDATE pgrelay._jobs SET lease_expires_at = now() - interval '1 second'")

    recovered = [call(db, "recover") for _ in range(4)]  # calling again while a call comes back full

    assert recovered == [1000, 1000, 500, 0]

    assert db.execute("SELECT count(*) FROM pgrelay.jobs WHERE status = 'pending'").fetchone()[0] == n


def call_rows_consume(db, n: int) -> list:
    return db.execute("SELECT id FROM pgrelay.consume('w', batch => %s)", (n,)).fetchall()


# -- live workload: consumers, producers (with and without keys) and maintenance, as asyncio tasks --


class Workload:
    """Connections doing what workers and producers do, each error kept for the test to assert on."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.errors: list[BaseException] = []
        self.enqueued = 0
        self.acked = 0
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task] = []

    async def _loop(self, step) -> None:
        conn = await asyncpg.connect(self.dsn)
        try:
            while not self._stop.is_set():
                try:
                    await step(conn)
                except (asyncpg.PostgresError, OSError) as exc:
                    self.errors.append(exc)
                    await asyncio.sleep(0.01)
        finally:
            await conn.close()

    async def _consume(self, conn) -> None:
        rows = await client.consume(conn, "race-worker", batch=20)
        if rows:
            self.acked += await client.ack_many(conn, [r.id for r in rows], [r.attempt for r in rows])
        else:
            await asyncio.sleep(0.005)

    async def _produce(self, conn) -> None:
        await client.enqueue_bulk(conn, [{"task": "race"} for _ in range(20)])
        self.enqueued += 20

    async def _produce_keyed(self, conn) -> None:
        await client.enqueue(conn, "race.keyed", idempotency_key=f"k{random.randrange(10**9)}")
        self.enqueued += 1

    async def _maintain(self, conn) -> None:
        await client.purge(conn, older_than_days=0, max_jobs=500)
        await client.recover(conn)
        await asyncio.sleep(0.01)

    def start(self, *, consumers: int = 4, maintenance: bool = True) -> None:
        steps = [self._consume] * consumers + [self._produce, self._produce_keyed]
        if maintenance:
            steps.append(self._maintain)
        self._tasks = [asyncio.create_task(self._loop(step)) for step in steps]

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.wait_for(asyncio.gather(*self._tasks), 30)


async def drain(conn: asyncpg.Connection) -> None:
    while rows := await client.consume(conn, "drainer", batch=500):
        await client.ack_many(conn, [r.id for r in rows], [r.attempt for r in rows])


async def test_purge_beside_busy_workers_loses_nothing_and_never_deadlocks(db, dsn):
    before = deadlocks(db)
    work = Workload(dsn)
    work.start(maintenance=True)
    await asyncio.sleep(size(2, 20))
    await work.stop()
    conn = await asyncpg.connect(dsn)
    try:
        await drain(conn)
        left = await conn.fetchval("SELECT count(*) FROM pgrelay.jobs")
        succeeded = await conn.fetchval("SELECT succeeded FROM pgrelay.queue_stats WHERE queue = 'default'")
    finally:
        await conn.close()

    assert work.errors == []
    assert work.enqueued > 0 and work.acked > 0
    assert succeeded == left  # purge kept the counters right while it removed the rest
    assert deadlocks(db) == before


@pytest.fixture
def next_version(tmp_path, monkeypatch):
    """The package as if it shipped one more release: an upgrade script that alters three tables in
    an order no worker locks them in, and replaces a function."""
    return package_with_next_release(tmp_path, monkeypatch, """
        ALTER TABLE pgrelay._finished ADD COLUMN upgrade_note text;
        ALTER TABLE pgrelay._idempotency_keys ADD COLUMN upgrade_note text;
        ALTER TABLE pgrelay._jobs ADD COLUMN upgrade_note text;
    """)


async def test_an_upgrade_under_live_workers_never_deadlocks(db, dsn, next_version):
    before = deadlocks(db)
    work = Workload(dsn)
    work.start(consumers=4, maintenance=True)
    await asyncio.sleep(1.0)
    conn = await asyncpg.connect(dsn)
    try:
        result = await schema.migrate(conn)
        await asyncio.sleep(1.0)
        await work.stop()
        await drain(conn)
        left = await conn.fetchval("SELECT count(*) FROM pgrelay._jobs")
    finally:
        await conn.close()

    assert (result.action, result.current) == ("upgraded", next_version)
    assert work.errors == []
    assert work.acked > 0 and left == 0
    assert deadlocks(db) == before
