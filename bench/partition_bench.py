"""What the partitioned history costs and saves (issue 24, item 4): dropping a day, and the upgrade from 0.4.

One throwaway cluster with durable settings (fsync on, see SERVER_SETTINGS), one database per part,
``--jobs`` N finished jobs (1,000,000) written straight into the history by INSERT ... SELECT from
generate_series (white box: ids from pgrelay._job_id_seq, queue 'default', a handler task, a small
jsonb payload, the lease's worker and start, created 2 s and finished 1 ms apart), and one
pgrelay._counts row at minute -infinity counting them, so that the counters behind queue_stats come
back to 0 when they go. Each part starts after VACUUM ANALYZE and CHECKPOINT.

1. "Removing a day holding 1,000,000 finished jobs takes under 1 second and leaves no dead tuples."
   The current version; pgrelay._make_partitions makes the day 10 days ago and the days ahead that
   purge() makes (so the timed call does only what a routine purge does that day); N succeeded jobs
   finished that day (from 01:00 UTC on). One ``SELECT pgrelay.purge()`` is timed (wall clock around
   the call): the jobs it reports, whether the day's _s partition is gone (pg_partition_tree), and the
   dead tuples of every partition of pgrelay._finished before and after (pgstattuple's exact count
   when the extension is there, and pg_stat_user_tables.n_dead_tup after pg_stat_force_next_flush()).
   The comparison: the row-by-row path, which 0.4 took for every job and 0.5 takes for the default
   partition (a day no partition covered). The same N jobs in another database, written into
   pgrelay._finished_default (their day has no partition), removed by
   ``SELECT pgrelay.purge(max_jobs => 10000000)`` called until it returns 0 (the calls' times summed).
   After either, VACUUM (VERBOSE) of the history, timed, counts the dead item identifiers it removes: what
   the purge left for VACUUM (pgstattuple misses the deleted rows a later read pruned to dead line pointers).
2. "The upgrade converts an existing history without a long lock, tested on 1,000,000 rows."
   A database at 0.4.1 with N succeeded jobs in its (unpartitioned) pgrelay._finished, finished over
   the last 3 days, every tenth at its second attempt, with that first failed attempt in
   pgrelay._attempts (N/10 rows). While another connection reads the history, one
   ``SELECT count(*) FROM pgrelay._finished WHERE id = <a random job>`` every 5 ms, each timed,
   jobs-migrate's code (tests/harness/releases.py's migrate_dsn) upgrades it to the current version,
   timed. The reader's slowest query during the upgrade is how long the history was locked as a client
   sees it. pg_relation_filenode of the old tables before and of _finished_before_YYYYMMDD and
   _attempts_before_YYYYMMDD after: the same number means the rows were not copied.

    .venv/bin/python bench/partition_bench.py                       # 1,000,000 jobs, under a minute
    .venv/bin/python bench/partition_bench.py --jobs 100000 --out bench/results
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import random
import re
import shlex
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.harness.cluster import throwaway_cluster
from tests.harness.releases import migrate_dsn

# As bench/sql_bench.py: closer to production than the tests' settings. fsync=on must be explicit:
# pytest-postgresql's executor (behind throwaway_cluster) starts postgres with -F, which turns fsync off.
SERVER_SETTINGS = "-c fsync=on -c max_connections=300 -c shared_buffers=256MB"
SHOWN_SETTINGS = ["fsync", "synchronous_commit", "full_page_writes", "wal_level", "shared_buffers",
                  "max_wal_size", "checkpoint_timeout", "autovacuum"]

OLD_RELEASE = "0.4.1"
READER_PAUSE = 0.005     # the reader's pause between two queries (seconds)

# N succeeded jobs into ``table``, the first finished at %(start)s, then one every %(step)s seconds;
# with %(retried)s, every tenth at its second attempt.
HISTORY = """
INSERT INTO {table} (id, queue, task, kind, status, priority, run_at, attempt, payload, leased_by, leased_at,
                     created_at, finished_at)
SELECT nextval('pgrelay._job_id_seq'), 'default', 'bench.send_email', 'h', 's', 0, f.at - interval '2 s',
       CASE WHEN %(retried)s AND mod(i, 10) = 0 THEN 2 ELSE 1 END,
       jsonb_build_object('user_id', i, 'template', 'welcome'), 'worker-' || mod(i, 4) || ':' || (1000 + mod(i, 4)),
       f.at - interval '40 ms', f.at - interval '2 s', f.at
FROM generate_series(1, %(n)s) i
CROSS JOIN LATERAL (SELECT %(start)s::timestamptz + make_interval(secs => i * %(step)s) AS at) f
"""

# the first, failed attempt of the jobs that succeeded at their second (0.4.1's _attempts)
ATTEMPTS = """
INSERT INTO pgrelay._attempts (job_id, attempt, worker, started_at, finished_at, outcome, error)
SELECT f.id, 1, f.leased_by, f.created_at, f.created_at + interval '30 ms', 'failed', 'TimeoutError: smtp'
FROM pgrelay._finished f WHERE f.attempt = 2
"""

COUNTED = """
INSERT INTO pgrelay._counts AS c (queue, minute, backend, succeeded) VALUES ('default', '-infinity', 0, %(n)s)
ON CONFLICT (queue, minute, backend) DO UPDATE SET succeeded = c.succeeded + excluded.succeeded
"""

DAY_START = "SELECT date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' - make_interval(days => %s)"
LEAVES = "SELECT relid::regclass::text FROM pg_partition_tree('pgrelay._finished') WHERE isleaf ORDER BY 1"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def seconds(s: float) -> str:
    return f"{s * 1000:,.0f} ms" if s < 10 else f"{s:,.1f} s"


def settle(db: psycopg.Connection) -> None:
    db.execute("VACUUM ANALYZE")
    db.execute("CHECKPOINT")


@dataclass
class History:
    """What the history holds: leaves, dead tuples (pgstattuple's and the statistics'), size."""
    leaves: int
    dead_exact: int | None
    dead_stats: int
    size: int

    @classmethod
    def read(cls, db: psycopg.Connection, exact: bool) -> History:
        leaves = [r[0] for r in db.execute(LEAVES).fetchall()]
        dead_exact = None
        if exact:
            dead_exact = sum(db.execute("SELECT dead_tuple_count FROM pgstattuple(%s::regclass)", (leaf,)).fetchone()[0]
                             for leaf in leaves)
        db.execute("SELECT pg_stat_force_next_flush()")
        db.execute("SELECT pg_stat_clear_snapshot()")
        dead_stats = db.execute("""SELECT coalesce(sum(s.n_dead_tup), 0) FROM pg_stat_user_tables s
                                   WHERE s.relid IN (SELECT relid FROM pg_partition_tree('pgrelay._finished'))""").fetchone()[0]
        size = db.execute("SELECT coalesce(sum(pg_total_relation_size(relid)), 0) FROM pg_partition_tree('pgrelay._finished')"
                          ).fetchone()[0]
        return cls(len(leaves), dead_exact, int(dead_stats), int(size))

    def dead(self) -> str:
        exact = f"{self.dead_exact:,} (pgstattuple)" if self.dead_exact is not None else "pgstattuple not installed"
        return f"{exact}; n_dead_tup {self.dead_stats:,}"


def vacuum_history(db: psycopg.Connection) -> tuple[float, int, int]:
    """VACUUM (VERBOSE) every partition of the history: its time, the dead item identifiers it removed
    (deleted rows, whether still stored or already pruned to dead line pointers: each with its index
    entries), and the autovacuum runs the history had before it."""
    autovacuums = db.execute("""SELECT coalesce(sum(s.autovacuum_count), 0) FROM pg_stat_user_tables s
                                WHERE s.relid IN (SELECT relid FROM pg_partition_tree('pgrelay._finished'))""").fetchone()[0]
    messages: list[str] = []

    def note(diagnostic: psycopg.errors.Diagnostic) -> None:
        messages.append(diagnostic.message_primary or "")

    db.add_notice_handler(note)
    started = time.perf_counter()
    db.execute("VACUUM (VERBOSE) pgrelay._finished")
    took = time.perf_counter() - started
    db.remove_notice_handler(note)
    dead = sum(int(m) for text in messages for m in re.findall(r"(\d+) dead item identifiers", text))
    return took, dead, int(autovacuums)


def vacuum_row(vacuum: tuple[float, int, int]) -> str:
    took, dead, autovacuums = vacuum
    return (f"| VACUUM (VERBOSE) of `_finished` after | {seconds(took)}; {dead:,} dead item identifiers removed | "
            f"{autovacuums} autovacuum runs on the history before it |")


def fresh_database(admin: psycopg.Connection, cluster, name: str, version: str | None) -> tuple[str, psycopg.Connection]:
    admin.execute(f"CREATE DATABASE {name}")
    dsn = cluster.dsn(name)
    migrate_dsn(dsn, version)
    db = psycopg.connect(dsn, autocommit=True)
    db.execute("SELECT pgrelay._queue_id('default')")
    return dsn, db


def have_pgstattuple(db: psycopg.Connection) -> bool:
    try:
        db.execute("CREATE EXTENSION IF NOT EXISTS pgstattuple")
        return True
    except psycopg.Error:
        return False


def succeeded_counted(db: psycopg.Connection) -> int:
    return int(db.execute("SELECT coalesce(sum(succeeded), 0) FROM pgrelay._counts WHERE queue = 'default'").fetchone()[0])


def part_drop(admin: psycopg.Connection, cluster, n: int, out: list[str]) -> None:
    log(f"1a. dropping a day: {n:,} succeeded jobs finished 10 days ago in their day's partition")
    _, db = fresh_database(admin, cluster, "bench_drop", None)
    with db:
        exact = have_pgstattuple(db)
        day = db.execute(DAY_START, (10,)).fetchone()[0]
        name = f"_finished_{day:%Y%m%d}"
        db.execute("SELECT pgrelay._make_partitions(%s, 1)", (day,))
        db.execute("SELECT pgrelay._make_partitions(now() + interval '1 day', 3)")  # what purge() makes ahead
        started = time.perf_counter()
        db.execute(HISTORY.format(table="pgrelay._finished"),
                   {"n": n, "start": day + datetime.timedelta(hours=1), "step": 0.001, "retried": False})
        db.execute(COUNTED, {"n": n})
        log(f"    written in {time.perf_counter() - started:.1f} s; VACUUM ANALYZE, CHECKPOINT")
        in_day = db.execute(f"SELECT count(*) FROM pgrelay.{name}_s").fetchone()[0]
        settle(db)
        before = History.read(db, exact)
        started = time.perf_counter()
        removed = db.execute("SELECT pgrelay.purge()").fetchone()[0]
        took = time.perf_counter() - started
        gone = db.execute("SELECT NOT EXISTS (SELECT 1 FROM pg_partition_tree('pgrelay._finished') WHERE relid::regclass::text = %s)",
                          (f"pgrelay.{name}_s",)).fetchone()[0]
        day_left = db.execute("SELECT to_regclass(%s) IS NOT NULL", (f"pgrelay.{name}",)).fetchone()[0]
        after = History.read(db, exact)
        vacuum = vacuum_history(db)
        counted = succeeded_counted(db)
    admin.execute("DROP DATABASE bench_drop")
    log(f"    purge() took {took:.3f} s, removed {removed:,}")
    out += [
        f"### 1. Removing a day of {n:,} succeeded jobs",
        "",
        f"`pgrelay.{name}_s` held {in_day:,} jobs (finished 10 days ago; the succeeded retention is 7 days).",
        "",
        "| | partition dropped: one `SELECT pgrelay.purge()` | |",
        "|---|---:|---|",
        f"| time | **{seconds(took)}** | wall clock around the call |",
        f"| jobs purge() reported | {removed:,} | |",
        f"| `{name}_s` gone | {'yes' if gone else 'NO'} | the day's table (and its `_x`) {'kept' if day_left else 'gone'} |",
        f"| dead tuples in `_finished`, before | {before.dead()} | {before.leaves} leaf partitions |",
        f"| dead tuples in `_finished`, after | {after.dead()} | {after.leaves} leaf partitions |",
        vacuum_row(vacuum),
        f"| history size (heap + indexes), before → after | {before.size / 2**20:,.1f} MB → {after.size / 2**20:,.1f} MB | |",
        f"| succeeded in `_counts` after | {counted:,} | 0: the counters lost what went |",
        "",
    ]


def part_rowwise(admin: psycopg.Connection, cluster, n: int, out: list[str]) -> None:
    log(f"1b. row by row: {n:,} succeeded jobs finished 10 days ago in _finished_default")
    _, db = fresh_database(admin, cluster, "bench_rowwise", None)
    with db:
        exact = have_pgstattuple(db)
        day = db.execute(DAY_START, (10,)).fetchone()[0]
        db.execute("SELECT pgrelay._make_partitions(now() + interval '1 day', 3)")  # before the default fills
        started = time.perf_counter()
        db.execute(HISTORY.format(table="pgrelay._finished_default"),
                   {"n": n, "start": day + datetime.timedelta(hours=1), "step": 0.001, "retried": False})
        db.execute(COUNTED, {"n": n})
        log(f"    written in {time.perf_counter() - started:.1f} s; VACUUM ANALYZE, CHECKPOINT")
        settle(db)
        before = History.read(db, exact)
        calls, total, removed = [], 0.0, 0
        while True:
            started = time.perf_counter()
            got = db.execute("SELECT pgrelay.purge(max_jobs => 10000000)").fetchone()[0]
            took = time.perf_counter() - started
            calls.append((got, took))
            total += took
            removed += got
            log(f"    purge(max_jobs => 10000000): {got:,} in {took:.2f} s")
            if got == 0:
                break
            if len(calls) > 1000:
                raise SystemExit("purge() never came to 0")
        after = History.read(db, exact)
        vacuum = vacuum_history(db)
        left = db.execute("SELECT count(*) FROM pgrelay._finished_default").fetchone()[0]
        counted = succeeded_counted(db)
    admin.execute("DROP DATABASE bench_rowwise")
    out += [
        f"### 1, compared: the same {n:,} jobs removed row by row (`_finished_default`, as 0.4 did every job)",
        "",
        "| | row by row: `SELECT pgrelay.purge(max_jobs => 10000000)` until 0 | |",
        "|---|---:|---|",
        f"| time | **{seconds(total)}** | {len(calls)} calls: " + ", ".join(f"{g:,} in {seconds(t)}" for g, t in calls) + " |",
        f"| jobs removed | {removed:,} | {left:,} left |",
        f"| dead tuples in `_finished`, before | {before.dead()} | |",
        f"| dead tuples in `_finished`, after | {after.dead()} | until a VACUUM |",
        vacuum_row(vacuum),
        f"| history size (heap + indexes), before → after | {before.size / 2**20:,.1f} MB → {after.size / 2**20:,.1f} MB | |",
        f"| succeeded in `_counts` after | {counted:,} | |",
        "",
        "pgstattuple counts the dead tuples a table still stores; a page a later statement reads (here purge()'s",
        "next call) is pruned, its deleted rows cut down to dead line pointers, which VACUUM still has to remove",
        "with their index entries. n_dead_tup and VACUUM's dead item identifiers count them all.",
        "",
    ]


@dataclass
class Reader:
    """A client reading the history by id every READER_PAUSE seconds, each query timed."""
    dsn: str
    low: int
    high: int
    samples: list[tuple[float, float]] = field(default_factory=list)   # (start, seconds), perf_counter
    errors: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        rng = random.Random(24)
        with psycopg.connect(self.dsn, autocommit=True, prepare_threshold=None) as db:
            while not self.stop.is_set():
                started = time.perf_counter()
                try:
                    db.execute("SELECT count(*) FROM pgrelay._finished WHERE id = %s",
                               (rng.randint(self.low, self.high),)).fetchone()
                except psycopg.Error as e:
                    self.errors.append(f"{type(e).__name__}: {e}".splitlines()[0])
                self.samples.append((started, time.perf_counter() - started))
                time.sleep(READER_PAUSE)

    def during(self, start: float, end: float) -> list[float]:
        """The queries that overlapped [start, end]."""
        return [s for t, s in self.samples if t <= end and t + s >= start]


def part_upgrade(admin: psycopg.Connection, cluster, n: int, out: list[str]) -> None:
    log(f"2. upgrade: {OLD_RELEASE} with {n:,} finished jobs and {n // 10:,} attempts, to the current version")
    dsn, db = fresh_database(admin, cluster, "bench_upgrade", OLD_RELEASE)
    with db:
        start = db.execute("SELECT now() - interval '3 days'").fetchone()[0]
        started = time.perf_counter()
        db.execute(HISTORY.format(table="pgrelay._finished"),
                   {"n": n, "start": start, "step": 3 * 86400 / n, "retried": True})
        db.execute(ATTEMPTS)
        db.execute(COUNTED, {"n": n})
        attempts = db.execute("SELECT count(*) FROM pgrelay._attempts").fetchone()[0]
        log(f"    written in {time.perf_counter() - started:.1f} s; VACUUM ANALYZE, CHECKPOINT")
        settle(db)
        version_before = db.execute("SELECT pgrelay.version()").fetchone()[0]
        kind_before = db.execute("SELECT relkind FROM pg_class WHERE oid = 'pgrelay._finished'::regclass").fetchone()[0]
        node_f, node_a = db.execute("SELECT pg_relation_filenode('pgrelay._finished'), pg_relation_filenode('pgrelay._attempts')"
                                    ).fetchone()
        low, high = db.execute("SELECT min(id), max(id) FROM pgrelay._finished").fetchone()

        reader = Reader(dsn, low, high)
        thread = threading.Thread(target=reader.run, daemon=True)
        thread.start()
        time.sleep(2)
        up_start = time.perf_counter()
        result = migrate_dsn(dsn)
        up_end = time.perf_counter()
        time.sleep(2)
        reader.stop.set()
        thread.join()
        log(f"    upgrade took {up_end - up_start:.2f} s: {result.describe()}")

        version_after = db.execute("SELECT pgrelay.version()").fetchone()[0]
        legacy_f, legacy_a, node_lf, node_la = db.execute(
            "SELECT finished::text, attempts::text, pg_relation_filenode(finished), pg_relation_filenode(attempts) "
            "FROM pgrelay._legacy_history()").fetchone()
        kind_after = db.execute("SELECT relkind FROM pg_class WHERE oid = 'pgrelay._finished'::regclass").fetchone()[0]
        rows_after = db.execute("SELECT count(*) FROM pgrelay._finished").fetchone()[0]
        attempts_after = db.execute("SELECT count(*) FROM pgrelay._attempts").fetchone()[0]
    admin.execute("DROP DATABASE bench_upgrade")

    before = [s for t, s in reader.samples if t + s < up_start]
    during = reader.during(up_start, up_end)
    after = [s for t, s in reader.samples if t > up_end]
    worst = max(during) if during else float("nan")
    ms = 1000
    out += [
        f"### 2. Upgrading {version_before} → {version_after} with {n:,} finished jobs and {attempts:,} attempts",
        "",
        "| | | |",
        "|---|---:|---|",
        f"| upgrade (`migrate_dsn`, jobs-migrate's code) | **{seconds(up_end - up_start)}** | {result.describe()} |",
        f"| reader's slowest query during the upgrade | **{seconds(worst)}** | the history's lock as a client sees it |",
        f"| reader's queries during the upgrade | {len(during):,} | a query every {READER_PAUSE * ms:.0f} ms plus its time |",
        (f"| reader before / after the upgrade, median (max) | "
         f"{statistics.median(before) * ms:.2f} ms ({max(before) * ms:.1f}) / "
         f"{statistics.median(after) * ms:.2f} ms ({max(after) * ms:.1f}) | {len(before):,} / {len(after):,} queries |"),
        f"| reader's errors | {len(reader.errors)} | {'; '.join(sorted(set(reader.errors))) or ''} |",
        f"| `pgrelay._finished` | relkind {kind_before} → {kind_after}; {rows_after:,} rows after | p: partitioned |",
        (f"| filenode: `_finished` before → `{legacy_f}` after | {node_f} → {node_lf} | "
         f"{'same: not copied' if node_f == node_lf else 'DIFFERENT: rewritten'} |"),
        (f"| filenode: `_attempts` before → `{legacy_a}` after | {node_a} → {node_la} | "
         f"{'same: not copied' if node_a == node_la else 'DIFFERENT: rewritten'}; {attempts_after:,} rows after |"),
        "",
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1_000_000, help="finished jobs in the history (1,000,000)")
    parser.add_argument("--out", type=Path, help="also write the report there (a folder)")
    args = parser.parse_args()
    if args.jobs < 10:
        parser.error("--jobs: at least 10")
    command = " ".join(shlex.quote(a) for a in [".venv/bin/python", "bench/partition_bench.py", *sys.argv[1:]])
    began, load_before = time.time(), os.getloadavg()
    out: list[str] = []
    with throwaway_cluster(SERVER_SETTINGS) as cluster, psycopg.connect(cluster.dsn(), autocommit=True) as admin:
        version = admin.execute("SHOW server_version").fetchone()[0]
        shown = {name: admin.execute(f"SHOW {name}").fetchone()[0] for name in SHOWN_SETTINGS}
        part_drop(admin, cluster, args.jobs, out)
        part_rowwise(admin, cluster, args.jobs, out)
        part_upgrade(admin, cluster, args.jobs, out)
    load_after = os.getloadavg()
    header = [
        f"## The partitioned history: dropping a day, and the upgrade from {OLD_RELEASE} (issue 24, item 4)",
        "",
        (f"- command: `{command}` ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(began))}, "
         f"{time.time() - began:.0f} s in all)"),
        (f"- machine: {platform.platform()}, {os.cpu_count()} CPUs; load average (1, 5, 15 min) "
         f"{', '.join(f'{x:.2f}' for x in load_before)} at the start, {', '.join(f'{x:.2f}' for x in load_after)} at the end"),
        f"- server: PostgreSQL {version}, started with `{SERVER_SETTINGS}`",
        "- settings: " + ", ".join(f"{k}={v}" for k, v in shown.items()),
    ]
    if shown["fsync"] != "on" or shown["synchronous_commit"] != "on":
        header.append("- WARNING: fsync or synchronous_commit is off: commits are not durable, figures are optimistic")
    report = "\n".join(header + [""] + out)
    print(report)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        path = args.out / f"{time.strftime('%Y-%m-%d', time.gmtime(began))}-partitions.md"
        path.write_text(report)
        log(f"written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
