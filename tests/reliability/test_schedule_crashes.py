"""Issue 23: workers SIGKILLed while they tick a schedule's backlog neither miss nor double a tick.

A schedule (every minute, catch_up all) is set 10,000 minutes behind (50,000 in make
test-reliability; white box: its next_run), so ticking it takes tick() calls of 1,000 jobs each. Three ``jobs-worker`` processes tick every
50 ms while a chaos loop SIGKILLs a random one every 0.3-0.8 s (each kill may land inside a tick's
transaction, which then rolls back) and starts a replacement. At the end, from the database alone:
one job per minute from the first tick to now, none twice.
"""

from __future__ import annotations

import os
import random
import time

from tests.reliability.conftest import size
from tests.reliability.harness import (  # noqa: F401  (database is a fixture)
    Workers,
    cluster_fixture,
    database,
)

cluster = cluster_fixture()

SEED = int(os.environ.get("PGRELAY_RELIABILITY_SEED", "7"))
MINUTES_BEHIND = size(10_000, 50_000)   # tick() calls of 1,000 jobs each: 10 (make test), 50

TICKS = """
    SELECT count(*), count(DISTINCT payload->>'scheduled_for'),
           min((payload->>'scheduled_for')::timestamptz), max((payload->>'scheduled_for')::timestamptz)
    FROM pgrelay.jobs WHERE task = 'chaos.minutely'
"""


def test_sigkilled_workers_miss_no_tick_and_double_none(database, tmp_path):
    rng = random.Random(SEED)
    with database.connect() as conn:
        # the jobs go to a queue no worker here claims: they stay to be counted
        conn.execute("SELECT pgrelay.schedule('chaos.minutely', '* * * * *', 'chaos.minutely', queue => 'elsewhere',"
                     " catch_up => 'all')")
        first = conn.execute("UPDATE pgrelay._schedules SET next_run = date_trunc('minute', now())"
                             " - make_interval(mins => %s) RETURNING next_run", [MINUTES_BEHIND]).fetchone()[0]
    kills = 0

    with Workers(database.dsn, database.dsn, tmp_path, extra_args=["--tick-interval", "0.05"]) as workers:
        workers.start(3)
        deadline = time.monotonic() + size(180, 900)
        while database.scalar("SELECT count(*) FROM pgrelay.jobs WHERE task = 'chaos.minutely'") < MINUTES_BEHIND \
                and time.monotonic() < deadline:
            time.sleep(rng.uniform(0.3, 0.8))
            if workers.kill_random(rng) is not None:
                kills += 1
                workers.start(1)
        workers.stop()   # (how a worker still starting takes SIGTERM is test_crashes.py's business)

    with database.connect() as conn:
        # the rest, if the chaos outlasted the deadline, and up to now (the clock may have passed a minute)
        while conn.execute("SELECT pgrelay.tick()").fetchone()[0] == 1000:
            pass
        made, distinct, earliest, latest = conn.execute(TICKS).fetchone()
        now = conn.execute("SELECT date_trunc('minute', now())").fetchone()[0]
    assert kills >= 3, "the chaos never struck"
    assert made == distinct, f"{made - distinct} ticks were enqueued twice"
    assert earliest == first
    assert (now - latest).total_seconds() in (0, 60)   # the minute of the last tick() (or the one before)
    assert made == round((latest - first).total_seconds() / 60) + 1, "a tick was missed"
