"""pgbench the SQL hot path of pgrelay against plain-SQL baselines, on a throwaway cluster.

    make bench-sql                          # quick (the default): about 2 minutes
    make bench-sql BENCH_ARGS=--full        # longer runs, about 6 minutes

Starts a throwaway PostgreSQL with durable settings (fsync and synchronous_commit on), installs
pgrelay with the real installer (``pgrelay.schema.migrate``) and a plain job table next to it
(bench/pgbench/baseline_schema.sql), then runs the pgbench scripts in bench/pgbench/:

    (a) enqueue_one.sql                 vs (b) baseline_insert_one.sql          1 job per transaction
    (c) consume_ack_100.sql             vs (d) baseline_claim_delete_100.sql    100 jobs per script run
    (e) enqueue_bulk_1000.sql           vs     baseline_insert_1000.sql         1000 jobs per statement

(bench/compare.py's cycle_reference runs consume_ack_100.sql against baseline_claim_archive_100.sql: a
plain claim of 100 in one transaction and their move to plain_jobs_archive in a second one.)

Every run starts from the same state: both job tables emptied, refilled when the workload consumes
(so it never runs dry: consumers run a fixed number of transactions, -t, the baseline 4x as many as
it is faster), vacuumed, checkpointed.
Each pair is measured ``--runs`` times (3), alternating pgrelay and the baseline (ABBAAB...), and
every run is checked afterwards (the jobs enqueued, acked or deleted are counted in the tables).
The table shows jobs/s = pgbench tps x jobs per script run: median, then min-max.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pgrelay.schema import migrate  # noqa: E402
from tests.harness.cluster import pg_bindir, throwaway_cluster  # noqa: E402

SCRIPTS = ROOT / "bench" / "pgbench"

# Closer to production than the tests' settings: fsync, full_page_writes and synchronous_commit on,
# room for connections and a realistic buffer cache. fsync=on must be explicit: pytest-postgresql's
# executor (behind throwaway_cluster) starts postgres with -F, which turns fsync off.
SERVER_SETTINGS = "-c fsync=on -c max_connections=300 -c shared_buffers=256MB"
SHOWN_SETTINGS = ["fsync", "synchronous_commit", "full_page_writes", "wal_level", "shared_buffers",
                  "max_wal_size", "checkpoint_timeout", "autovacuum", "max_connections"]

QUEUE = "bench"          # the queue the consume workload reads (pre-filled)
FILL_CHUNK = 10_000      # enqueue_bulk takes at most 10000 jobs per call


@dataclass(frozen=True)
class Side:
    script: str
    verify: str             # "enqueued", "acked", "deleted" or "archived"


@dataclass(frozen=True)
class Workload:
    name: str
    jobs_per_tx: int
    clients: tuple[int, ...]
    consumes: bool          # True: pre-fill and run -t transactions; False: run -T seconds
    pgrelay: Side
    baseline: Side
    baseline_label: str
    baseline_tx_factor: int = 1   # the baseline runs this many times pgrelay's -t (it is faster; same jobs/s maths)


WORKLOADS = [
    Workload("enqueue, 1 job per transaction", 1, (1, 8), False,
             Side("enqueue_one.sql", "enqueued"), Side("baseline_insert_one.sql", "enqueued"),
             "single-row INSERT"),
    Workload("consume 100 + ack_many (2 transactions)", 100, (1, 2), True,
             Side("consume_ack_100.sql", "acked"), Side("baseline_claim_delete_100.sql", "deleted"),
             "claim 100 SKIP LOCKED + DELETE (1 statement)", baseline_tx_factor=4),
    Workload("enqueue_bulk, 1000 jobs per call", 1000, (1,), False,
             Side("enqueue_bulk_1000.sql", "enqueued"), Side("baseline_insert_1000.sql", "enqueued"),
             "INSERT 1000 rows from generate_series"),
]


@dataclass
class Result:
    jobs_per_s: list[float] = field(default_factory=list)

    def cell(self) -> str:
        values = self.jobs_per_s
        return f"{statistics.median(values):,.0f} ({min(values):,.0f}–{max(values):,.0f})"

    @property
    def median(self) -> float:
        return statistics.median(self.jobs_per_s)


class BenchError(RuntimeError):
    pass


def pgbench(dsn: str, script: str, clients: int, *, seconds: int | None = None,
            transactions: int | None = None, timeout: float = 900) -> tuple[float, int]:
    """Run one pgbench (stopped after ``timeout`` seconds); returns (tps, transactions processed)."""
    cmd = [str(Path(pg_bindir()) / "pgbench"), "--no-vacuum", "--protocol=simple",
           f"--client={clients}", f"--jobs={min(clients, 2)}", f"--file={SCRIPTS / script}"]
    cmd += [f"--time={seconds}"] if seconds else [f"--transactions={transactions}"]
    cmd.append(dsn)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    out = proc.stdout + proc.stderr
    tps = re.search(r"^tps = ([0-9.]+) \(without initial connection time\)", out, re.MULTILINE)
    processed = re.search(r"^number of transactions actually processed: (\d+)", out, re.MULTILINE)
    failed = re.search(r"^number of failed transactions: (\d+)", out, re.MULTILINE)
    if proc.returncode != 0 or not tps or not processed or (failed and int(failed.group(1))):
        raise BenchError(f"pgbench failed ({' '.join(cmd[1:-1])}):\n{out}")
    return float(tps.group(1)), int(processed.group(1))


async def reset(conn: asyncpg.Connection, who: str, fill: int) -> None:
    """Empty both job tables (and the baseline's archive), pre-fill ``who``'s with ``fill`` due jobs in
    QUEUE, vacuum, checkpoint."""
    await conn.execute("TRUNCATE pgrelay._jobs, pgrelay._finished, pgrelay._attempts, pgrelay._idempotency_keys,"
                       " plain_jobs, plain_jobs_archive")
    left = fill if who == "pgrelay" else 0
    while left > 0:
        n = min(left, FILL_CHUNK)
        await conn.execute(
            """SELECT count(*) FROM pgrelay.enqueue_bulk(
                   (SELECT jsonb_agg(jsonb_build_object('task', 'bench.noop', 'queue', $1::text,
                                                        'payload', jsonb_build_object('n', i)))
                    FROM generate_series(1, $2::int) i))""", QUEUE, n)
        left -= n
    if fill and who == "baseline":
        await conn.execute(
            """INSERT INTO plain_jobs (queue, task, payload, priority, run_at, status)
               SELECT $1::text, 'bench.noop', jsonb_build_object('n', i), 0, now(), 'pending'
               FROM generate_series(1, $2::int) i""", QUEUE, fill)
    await conn.execute("VACUUM ANALYZE pgrelay._jobs, pgrelay._finished, pgrelay._attempts, plain_jobs,"
                       " plain_jobs_archive")
    await conn.execute("CHECKPOINT")


async def verify(conn: asyncpg.Connection, side: Side, expected: int, fill: int) -> None:
    """Check that the run did what it claims: count the jobs it enqueued, acked, deleted or archived."""
    if side.verify == "enqueued":
        table = "pgrelay._jobs" if side.script.startswith("enqueue") else "plain_jobs"
        got = await conn.fetchval(f"SELECT count(*) FROM {table}")
    elif side.verify == "acked":
        got = await conn.fetchval("SELECT count(*) FROM pgrelay._finished WHERE status = 's'")
        leased = await conn.fetchval("SELECT count(*) FROM pgrelay._jobs WHERE leased_by IS NOT NULL")
        if leased:
            raise BenchError(f"{side.script}: {leased} jobs were left leased (an ack did not land)")
    elif side.verify == "archived":
        got = await conn.fetchval("SELECT count(*) FROM plain_jobs_archive")
        row = await conn.fetchrow("SELECT count(*) FILTER (WHERE status = 'pending') AS pending,"
                                  " count(*) FILTER (WHERE status <> 'pending') AS taken FROM plain_jobs")
        if row["taken"] or got + row["pending"] != fill:
            raise BenchError(f"{side.script}: of {fill} jobs, {got} archived, {row['pending']} pending and "
                             f"{row['taken']} left taken (a move did not land)")
    else:
        got = fill - await conn.fetchval("SELECT count(*) FROM plain_jobs")
    if got != expected:
        raise BenchError(f"{side.script}: expected {expected} jobs {side.verify}, found {got}")


async def run(args: argparse.Namespace) -> int:
    seconds = 10 if args.full else 3
    transactions = 500 if args.full else 150   # per client, consume workloads (baseline: 4x)
    settings = SERVER_SETTINGS + (f" {args.postgres_options}" if args.postgres_options else "")
    started = time.monotonic()
    print("pgrelay SQL benchmark (pgbench against plain-SQL baselines)\n", flush=True)
    with throwaway_cluster(settings) as cluster:
        conn = await asyncpg.connect(cluster.dsn())
        try:
            await conn.execute("CREATE DATABASE bench")
        finally:
            await conn.close()
        dsn = cluster.dsn("bench")
        conn = await asyncpg.connect(dsn)
        try:
            result = await migrate(conn)
            await conn.execute((SCRIPTS / "baseline_schema.sql").read_text())
            version = await conn.fetchval("SHOW server_version")
            shown = {name: await conn.fetchval(f"SHOW {name}") for name in SHOWN_SETTINGS}
            pgbench_version = subprocess.run([str(Path(pg_bindir()) / "pgbench"), "--version"],
                                             capture_output=True, text=True).stdout.strip()
            print(f"server:   PostgreSQL {version}, started with: {settings}")
            if shown["fsync"] != "on" or shown["synchronous_commit"] != "on":
                print("WARNING:  fsync or synchronous_commit is off: commits are not durable, figures are optimistic")
            print("settings: " + ", ".join(f"{k}={v}" for k, v in shown.items()))
            print(f"client:   {pgbench_version}, {os.cpu_count()} CPUs, {platform.platform()}")
            print(f"schema:   {result.describe()}")
            print(f"mode:     {'full' if args.full else 'quick'}: -T {seconds}s runs for enqueue workloads, "
                  f"-t {transactions} per client for consume workloads (baseline -t {transactions * 4}), "
                  f"{args.runs} runs each\n", flush=True)

            rows = []
            for w in WORKLOADS:
                for clients in w.clients:
                    res = {"pgrelay": Result(), "baseline": Result()}
                    for i in range(args.runs):
                        order = ["pgrelay", "baseline"] if i % 2 == 0 else ["baseline", "pgrelay"]
                        for who in order:
                            side = getattr(w, who)
                            tx = transactions * (w.baseline_tx_factor if who == "baseline" else 1)
                            fill = int(clients * tx * w.jobs_per_tx * 1.1) + 1000 if w.consumes else 0
                            await reset(conn, who, fill)
                            if w.consumes:
                                tps, done = pgbench(dsn, side.script, clients, transactions=tx)
                            else:
                                tps, done = pgbench(dsn, side.script, clients, seconds=seconds)
                            await verify(conn, side, done * w.jobs_per_tx, fill)
                            res[who].jobs_per_s.append(tps * w.jobs_per_tx)
                            print(f"  {w.name:<42} {clients} client(s)  {who:<8} run {i + 1}: "
                                  f"{tps * w.jobs_per_tx:>10,.0f} jobs/s", flush=True)
                    rows.append((w, clients, res))
        finally:
            await conn.close()

    print(f"\n{args.runs} runs each, alternating; jobs/s = tps x jobs per script run; median (min–max)\n")
    print("| workload | clients | pgrelay jobs/s | baseline | baseline jobs/s | pgrelay/baseline |")
    print("|---|---:|---:|---|---:|---:|")
    for w, clients, res in rows:
        ratio = res["pgrelay"].median / res["baseline"].median
        print(f"| {w.name} | {clients} | {res['pgrelay'].cell()} | {w.baseline_label} | "
              f"{res['baseline'].cell()} | {ratio:.2f} |")
    print("\nenqueue: pgrelay.enqueue checks its arguments and NOTIFYs pgrelay_jobs (NOTIFY serialises commits);")
    print("         the baseline is a bare INSERT into plain_jobs (bench/pgbench/baseline_schema.sql).")
    print("consume: pgrelay leases 100 in one transaction and acks them in a second (2 commits per batch; acked jobs")
    print("         move to pgrelay._finished with a row each in pgrelay._attempts); the baseline claims and deletes")
    print("         100 in one statement (1 commit, no history).")
    print(f"scripts: bench/pgbench/*.sql; total time {time.monotonic() - started:.0f}s")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="short runs, about 2 minutes (the default)")
    mode.add_argument("--full", action="store_true", help="longer runs, about 6 minutes")
    parser.add_argument("--runs", type=int, default=3, help="runs per workload and side (default 3)")
    parser.add_argument("--postgres-options", default="",
                        help="extra server options appended to the defaults, e.g. '-c synchronous_commit=off'")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    try:
        return asyncio.run(run(args))
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
