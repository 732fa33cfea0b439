"""Issue 7, item 1: workers SIGKILLed at random while they drain a backlog lose no job.

Four ``jobs-worker`` processes drain N jobs (2,000 in make test, 20,000 in make test-reliability)
while a chaos loop SIGKILLs a random worker every 0.2-0.6 s and starts a replacement. Leases are 2 s,
so a killed worker's jobs come back quickly (every worker runs ``recover()``). At the end, from the
database alone: every job succeeded exactly once in the history, and every duplicate execution was
an attempt of a killed worker that ended ``lease_expired``.
"""

from __future__ import annotations

import os
import random
import time

from tests.reliability.conftest import size
from tests.reliability.harness import (  # noqa: F401  (database is a fixture)
    Workers,
    assert_invariants,
    cluster_fixture,
    database,
    enqueue,
    wait_until_drained,
)

cluster = cluster_fixture()

JOBS = size(2_000, 20_000)
WORKERS = 4
SEED = int(os.environ.get("PGRELAY_RELIABILITY_SEED", "7"))


def test_sigkilled_workers_lose_no_job(database, tmp_path):
    rng = random.Random(SEED)
    # a few ms of "work" per job, so that every kill catches jobs in flight
    ids = enqueue(database, JOBS, sleep=lambda r: r.uniform(0.0, 0.05), seed=SEED)
    kills = 0
    next_kill = time.monotonic() + rng.uniform(0.2, 0.6)

    with Workers(database.dsn, database.dsn, tmp_path, concurrency=10, lease_seconds=2, poll_interval=0.5) as workers:
        workers.start(WORKERS)

        def chaos(progress):
            nonlocal kills, next_kill
            # stop near the end: the last jobs then finish instead of being chased round the workers
            if progress.finished >= 0.95 * JOBS or time.monotonic() < next_kill:
                return
            # a worker still importing and connecting holds no jobs yet (on a loaded machine that
            # takes seconds): kill one that has run jobs, or the chaos would only kill newcomers
            if workers.kill_random(rng, among=workers.busy(database)) is not None:
                kills += 1
                workers.start(1)
            next_kill = time.monotonic() + rng.uniform(0.2, 0.6)

        wait_until_drained(database, JOBS, workers, timeout=size(300, 1200), during=chaos, interval=0.05)
        workers.stop()
        workers.assert_stopped_cleanly()

    summary = assert_invariants(database, ids, killed_pids=workers.killed_pids)
    # the chaos really struck: workers died holding leases, and their jobs came back
    assert kills >= size(3, 30), f"only {kills} kills (seed {SEED}): {summary.describe()}"
    assert summary.attempts["lease_expired"] > 0, f"no lease expired in {kills} kills (seed {SEED}): {summary.describe()}"
