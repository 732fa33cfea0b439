"""Maintenance from inside the database: pg_cron runs pgrelay.maintain(), and the workers then leave
purging to it. Needs the pg_cron extension (Debian: postgresql-15-cron, which `make test` installs
when it runs as root); without it the test skips, saying so, or fails under CI."""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path

import asyncpg
import pytest

import pgrelay
from pgrelay import client
from pgrelay.schema import migrate
from tests.harness.cluster import TEST_SETTINGS, pg_bindir, throwaway_cluster
from tests.harness.tools import missing


def pg_cron_library() -> Path:
    libdir = subprocess.run([str(Path(pg_bindir()) / "pg_config"), "--pkglibdir"], capture_output=True, text=True)
    return Path(libdir.stdout.strip() or "/nonexistent") / "pg_cron.so"


pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", autouse=True)
def pg_cron_installed() -> None:
    if not pg_cron_library().exists():
        missing(f"pg_cron is not installed ({pg_cron_library()} missing; apt-get install postgresql-15-cron)")


async def fresh_database(conn: asyncpg.Connection) -> None:
    """pgrelay and pg_cron installed, no cron jobs left from another test."""
    await migrate(conn)
    await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_cron")
    await conn.execute("SELECT cron.unschedule(jobid) FROM cron.job")


@pytest.fixture(scope="module")
def cron_dsn():
    options = f"{TEST_SETTINGS} -c shared_preload_libraries=pg_cron -c cron.database_name=postgres " \
              "-c cron.use_background_workers=on -c max_worker_processes=16"
    with throwaway_cluster(options) as cluster:
        yield cluster.dsn("postgres")


async def test_pg_cron_runs_maintain(cron_dsn):
    conn = await asyncpg.connect(cron_dsn)
    try:
        await fresh_database(conn)
        assert await client.maintenance_scheduled(conn) is False

        # an expired lease and a job finished long ago, for maintain() to find
        [expired_id, old_id] = await client.enqueue_bulk(conn, [{"task": "a"}, {"task": "b"}])
        rows = await client.consume(conn, "gone-worker", batch=2)
        old = next(r for r in rows if r.id == old_id)
        assert await client.ack(conn, old.id, old.attempt) is True
        await conn.execute("UPDATE pgrelay._finished SET finished_at = now() - interval '8 days'")
        await conn.execute("UPDATE pgrelay._jobs SET lease_expires_at = now() - interval '1 second'")

        # the documented schedule (README, Operating): every minute
        await conn.fetchval("SELECT cron.schedule('pgrelay-maintain', '* * * * *', 'SELECT pgrelay.maintain()')")
        assert await client.maintenance_scheduled(conn) is True

        deadline = time.monotonic() + 75  # pg_cron 1.4 runs on the minute
        while time.monotonic() < deadline:
            done = await conn.fetchval("SELECT count(*) FROM cron.job_run_details WHERE status = 'succeeded'")
            if done:
                break
            await asyncio.sleep(0.5)
        failures = await conn.fetch("SELECT return_message FROM cron.job_run_details WHERE status <> 'succeeded'")
        assert done, f"pg_cron did not run the job within 75 s; failures: {[r[0] for r in failures]}"

        assert (await client.get_job(conn, expired_id)).status == "pending"
        assert await client.get_job(conn, old_id) is None
    finally:
        await conn.close()


async def test_workers_leave_purging_to_a_pg_cron_job(cron_dsn):
    conn = await asyncpg.connect(cron_dsn)
    try:
        await fresh_database(conn)
        [old_id] = await client.enqueue_bulk(conn, [{"task": "c"}])
        [row] = await client.consume(conn, "w", tasks=["c"])
        assert await client.ack(conn, row.id, row.attempt) is True
        await conn.execute("UPDATE pgrelay._finished SET finished_at = now() - interval '8 days' WHERE id = $1", old_id)
        # scheduled, but not due before next New Year: only the workers could purge now
        await conn.fetchval("SELECT cron.schedule('pgrelay-purge', '0 0 1 1 *', 'SELECT pgrelay.purge()')")

        worker = pgrelay.Worker(cron_dsn, pgrelay.Router(), recover_interval=0.05, maintenance_interval=0.1,
                                listen_dsn=False)
        task = asyncio.create_task(worker.run())
        await asyncio.sleep(1.0)  # ten maintenance intervals
        worker.stop()
        await asyncio.wait_for(task, 15)

        assert (await client.get_job(conn, old_id)).status == "succeeded"
        await conn.execute("SELECT cron.unschedule('pgrelay-purge')")
        assert await client.maintenance_scheduled(conn) is False
    finally:
        await conn.close()
