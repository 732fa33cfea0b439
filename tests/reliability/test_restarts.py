"""Issue 7, item 2: the database restarts mid-run; the workers reconnect and finish; nothing is lost.

Four ``jobs-worker`` processes drain N jobs (2,000 with one restart in make test, 20,000 with three
in make test-reliability) while the server is restarted with ``pg_ctl restart -m fast`` (sessions
terminated, a clean shutdown checkpoint) or ``-m immediate`` (no shutdown at all: crash recovery
from the WAL on start). The cluster is durable (fsync and full_page_writes on), as a crash test
needs. Then the invariants: every job succeeded, and every duplicate execution belongs to an attempt
whose lease expired while the server was away.
"""

from __future__ import annotations

import os
import random

import pytest

from tests.reliability.conftest import size
from tests.reliability.harness import (  # noqa: F401  (database is a fixture)
    DURABLE_SETTINGS,
    Workers,
    assert_invariants,
    cluster_fixture,
    database,
    enqueue,
    pg_ctl_restart,
    wait_until_drained,
)

cluster = cluster_fixture(DURABLE_SETTINGS)

JOBS = size(2_000, 20_000)
RESTARTS = size(1, 3)
SEED = int(os.environ.get("PGRELAY_RELIABILITY_SEED", "7"))


def postmaster_started(database) -> str:
    return str(database.scalar("SELECT pg_postmaster_start_time()"))


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_workers_survive_a_database_restart(cluster, database, tmp_path, mode):
    ids = enqueue(database, JOBS, sleep=lambda r: r.uniform(0.0, 0.05), seed=SEED)
    rng = random.Random(SEED)
    # restart k happens once about k/(RESTARTS+1) of the jobs are done, so the workers are busy then
    thresholds = sorted(int(JOBS * (k + rng.uniform(0.7, 1.0)) / (RESTARTS + 1)) for k in range(RESTARTS))
    starts = [postmaster_started(database)]

    with Workers(database.dsn, database.dsn, tmp_path, concurrency=10, lease_seconds=3, poll_interval=0.5) as workers:
        workers.start(4)

        def restart_when_due(progress):
            if thresholds and progress.finished >= thresholds[0]:
                thresholds.pop(0)
                pg_ctl_restart(cluster, mode)
                starts.append(postmaster_started(database))

        wait_until_drained(database, JOBS, workers, timeout=size(300, 1200), during=restart_when_due)
        workers.stop()
        workers.assert_stopped_cleanly()

    summary = assert_invariants(database, ids)
    assert not thresholds, f"only {RESTARTS - len(thresholds)} of {RESTARTS} restarts happened: {summary.describe()}"
    assert len(set(starts)) == RESTARTS + 1, f"the server did not restart each time: {starts}"
