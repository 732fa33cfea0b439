"""What one purge() costs when the history keeps many rows that are not due (issue 22, item 9).

A throwaway cluster gets pgrelay and a history of ``--kept`` dead letters finished 10 days ago (kept
for 30 days, the default), followed by ``--due`` succeeded jobs finished 8 days ago (past the 7-day
default). Then it times purge(): the first walk through that history (until the due rows are gone),
purges with nothing due, and the pass over the whole history that starts once a day. Routine purges
(maintain(), pg_cron) run every minute or so; their cost should not grow with what the history keeps.

    .venv/bin/python bench/purge_bench.py                  # 1,000,000 kept, 10,000 due
    .venv/bin/python bench/purge_bench.py --kept 100000
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.harness.cluster import throwaway_cluster  # noqa: E402
from tests.harness.releases import migrate_dsn  # noqa: E402

SETTINGS = "-c fsync=off -c full_page_writes=off -c shared_buffers=256MB"

HISTORY = """
INSERT INTO pgrelay._finished (id, queue, task, kind, status, priority, run_at, attempt, payload, last_error,
                               created_at, finished_at)
SELECT nextval('pgrelay._job_id_seq'), 'bench', 'bench.t', 'h', %(status)s::"char", 0, now(), 1, '{}',
       CASE WHEN %(status)s::"char" = 'd' THEN 'gave up' END, now() - make_interval(days => %(age)s + 1),
       now() - make_interval(days => %(age)s)
FROM generate_series(1, %(n)s)
"""


def timed(db: psycopg.Connection) -> tuple[int, float]:
    started = time.perf_counter()
    removed = db.execute("SELECT pgrelay.purge()").fetchone()[0]
    return removed, time.perf_counter() - started


def timed_until_removed(db: psycopg.Connection, due: int) -> list[float]:
    took, removed = [], 0
    while removed < due:
        n, seconds = timed(db)
        removed += n
        took.append(seconds)
        if len(took) > 10_000:
            raise SystemExit("purge() never reached the due jobs")
    return took


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kept", type=int, default=1_000_000, help="dead letters kept (not due)")
    parser.add_argument("--due", type=int, default=10_000, help="succeeded jobs past their retention")
    parser.add_argument("--repeat", type=int, default=5, help="purges with nothing due timed")
    args = parser.parse_args()
    with throwaway_cluster(SETTINGS) as cluster:
        migrate_dsn(cluster.dsn())
        with psycopg.connect(cluster.dsn(), autocommit=True) as db:
            db.execute("SELECT pgrelay._queue_id('bench')")
            db.execute(HISTORY, {"status": "d", "age": 10, "n": args.kept})
            db.execute(HISTORY, {"status": "s", "age": 8, "n": args.due})
            db.execute("VACUUM ANALYZE pgrelay._finished")
            # the first walk through the history: it notes each kept job once, a bounded share a call
            walk = timed_until_removed(db, args.due)
            idle = [timed(db)[1] for _ in range(args.repeat)]
            # a day on: the daily pass reads the whole history again, a bounded share a call
            db.execute("UPDATE pgrelay._purge_state SET pass_started = now() - interval '25 hours'")
            timed(db)   # at the front: the next call starts the pass from the oldest job
            passing = []
            done = "SELECT s.walked >= (SELECT max(f.id) FROM pgrelay._finished f) FROM pgrelay._purge_state s"
            while not passing or not db.execute(done).fetchone()[0]:
                passing.append(timed(db)[1])
    print(f"history: {args.kept:,} kept dead letters, then {args.due:,} due succeeded jobs")
    print(f"first walk: {len(walk)} purges to remove the {args.due:,} due; "
          f"slowest {max(walk) * 1000:.0f} ms, total {sum(walk) * 1000:.0f} ms")
    print(f"purge with nothing due: median {statistics.median(idle) * 1000:.1f} ms "
          f"(min {min(idle) * 1000:.1f}, max {max(idle) * 1000:.1f}; {args.repeat} calls)")
    print(f"the daily pass: {len(passing)} purges, slowest {max(passing) * 1000:.0f} ms, "
          f"median {statistics.median(passing) * 1000:.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
