"""(7) of bench/compare.py: the debris a held snapshot leaves in the hot table, pgrelay and pgmq.

While a transaction holds a snapshot, no VACUUM (autovacuum included) may remove a row version that
snapshot could still see, nor mark its index entries dead: every job enqueued, claimed and completed
meanwhile leaves its row versions in the hot table and its entries in the claim index, and claims that
scan the index in claim order walk over them. One run, for one system and a size P, all SQL under
pgbench with 1 client (pgrelay: bench/pgbench/consume_ack_100.sql, pgrelay.consume of 100 +
pgrelay.ack_many; pgmq: bench/peers.py's read_archive_100, pgmq.read of 100 + pgmq.archive):

    1. clean rate: the system's tables emptied; MEASURE_FILL (10,000) jobs enqueued (pgrelay.enqueue_bulk,
       pgmq.send_batch, 10,000 per call); VACUUM ANALYZE, CHECKPOINT; the claim-and-complete script
       -t MEASURE_TX (50: 5,000 jobs) -> jobs/s = tps x 100.
    2. the tables emptied again, VACUUM ANALYZE, CHECKPOINT; another connection opens
       BEGIN ISOLATION LEVEL REPEATABLE READ, reads a small table (pgrelay._queues, pgmq.meta) and stays
       idle in transaction until the end of step 4 (bench/worker_bench.py's held_snapshot).
    3. push-through: P jobs enqueued (10,000 per call; timed: the enqueue part) and all claimed and
       completed by the same script, -t P/100 -> push-through rate = P / the script's time (tps x 100).
       pgbench is stopped, and the run fails, after max(PUSH_TIMEOUT, P / PUSH_FLOOR_RATE) seconds
       (900 s, or an average under 200 jobs/s): each claim walks the debris of the jobs before it, so
       the time grows with about the square of P (measured 2026-12-07, 200,000 -> 400,000 jobs:
       pgrelay 26 -> 87 s, pgmq 61 -> 228 s).
    4. debris rate: with the snapshot still held, MEASURE_FILL jobs enqueued, VACUUM ANALYZE and
       CHECKPOINT as in step 1 (VACUUM can remove none of the debris: it only makes the two measurements
       alike in everything else), and the script -t MEASURE_TX again -> jobs/s. The hot table's size
       (pg_total_relation_size, heap and indexes) and its n_live_tup/n_dead_tup are read (the VACUUM
       just before set n_dead_tup to the dead versions it could not remove; the pgbench backends have
       exited, so their counts are in), then the held transaction is rolled back.

Reported: the clean and the debris rate and their ratio, the push-through rate and its ratio to the
clean rate (same run), the enqueue part's time, and the hot table's size and tuples after step 1
and after step 4. Checked after every pgbench run: every job enqueued so far was completed exactly once
(pgrelay: a pgrelay._finished row, succeeded at attempt 1; pgmq: a row in its archive with read_ct 1)
or is still waiting untouched (pgrelay: not leased, attempt 0; pgmq: read_ct 0), the counts adding up
to what was enqueued; and at the end, that the snapshot was held by one transaction throughout.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg

BENCH = Path(__file__).resolve().parent
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

import peers
import sql_bench
import worker_bench

SYSTEMS = ("pgrelay", "pgmq")
MEASURE_FILL = 10_000        # jobs waiting when the clean and the debris rates are measured
MEASURE_TX = 50              # pgbench -t of those measurements: 50 x 100 = 5,000 jobs
CHUNK = 10_000               # jobs per enqueue call (enqueue_bulk takes at most 10,000)
# pgbench's time limit for a push-through: this many seconds at the least, or P / PUSH_FLOOR_RATE
PUSH_TIMEOUT = 900
PUSH_FLOOR_RATE = 200

HOT_TABLE = {"pgrelay": "pgrelay._jobs", "pgmq": f"pgmq.q_{peers.PGMQ_QUEUE}"}
SNAPSHOT_TABLE = {"pgrelay": "pgrelay._queues", "pgmq": "pgmq.meta"}
TABLES = {"pgrelay": peers.TABLES["pgrelay-client"], "pgmq": peers.TABLES["pgmq"]}
HOW = {"pgrelay": "pgbench -c 1: pgrelay.consume(batch => 100); pgrelay.ack_many(...) (consume_ack_100.sql); "
                  "enqueued with pgrelay.enqueue_bulk",
       "pgmq": "pgbench -c 1: pgmq.read(queue, 30, 100); pgmq.archive(queue, ids); enqueued with pgmq.send_batch"}

# Constants, no input: one call enqueues $1 jobs.
ENQUEUE_SQL = {
    "pgrelay": f"""SELECT count(*) FROM pgrelay.enqueue_bulk(
                       (SELECT jsonb_agg(jsonb_build_object('task', 'bench.noop', 'queue', '{sql_bench.QUEUE}',
                                                            'payload', jsonb_build_object('n', i)))
                        FROM generate_series(1, $1::int) i))""",
    "pgmq": f"""SELECT count(*) FROM pgmq.send_batch('{peers.PGMQ_QUEUE}',
                    (SELECT array_agg('{{"n":1}}'::jsonb) FROM generate_series(1, $1::int)))""",
}
# (completed exactly once, all rows that left the queue, waiting untouched, all rows still queued)
COUNTS_SQL = {
    "pgrelay": """SELECT (SELECT count(*) FROM pgrelay._finished WHERE status = 's' AND attempt = 1) AS done_once,
                         (SELECT count(*) FROM pgrelay._finished) AS done,
                         (SELECT count(*) FROM pgrelay._jobs WHERE leased_by IS NULL AND attempt = 0) AS fresh,
                         (SELECT count(*) FROM pgrelay._jobs) AS waiting""",
    "pgmq": f"""SELECT (SELECT count(*) FROM pgmq.a_{peers.PGMQ_QUEUE} WHERE read_ct = 1) AS done_once,
                       (SELECT count(*) FROM pgmq.a_{peers.PGMQ_QUEUE}) AS done,
                       (SELECT count(*) FROM pgmq.q_{peers.PGMQ_QUEUE} WHERE read_ct = 0) AS fresh,
                       (SELECT count(*) FROM pgmq.q_{peers.PGMQ_QUEUE}) AS waiting""",
}


class DebrisBenchError(RuntimeError):
    pass


def script(system: str, workdir: Path) -> str:
    if system == "pgrelay":
        return "consume_ack_100.sql"
    return str(peers.pgmq_scripts(workdir)["read_archive_100"])


async def _empty(conn: asyncpg.Connection, system: str) -> None:
    await conn.execute(f"TRUNCATE {', '.join(TABLES[system])} CASCADE")
    await _settle(conn, system)


async def _settle(conn: asyncpg.Connection, system: str) -> None:
    # this backend's counts of the rows it just inserted reach the statistics first (when this statement
    # ends), else they would be added on top of what VACUUM counts
    await conn.execute("SELECT pg_stat_force_next_flush()")
    await conn.execute(f"VACUUM ANALYZE {', '.join(TABLES[system])}")
    await conn.execute("CHECKPOINT")


async def _enqueue(conn: asyncpg.Connection, system: str, n: int) -> None:
    left = n
    while left > 0:
        await conn.execute(ENQUEUE_SQL[system], min(left, CHUNK))
        left -= CHUNK


async def _check(conn: asyncpg.Connection, system: str, step: str, done: int, waiting: int) -> None:
    """``done`` jobs completed, each exactly once, and ``waiting`` jobs waiting untouched; nothing else."""
    row = await conn.fetchrow(COUNTS_SQL[system])
    if (row["done_once"], row["done"], row["fresh"], row["waiting"]) != (done, done, waiting, waiting):
        raise DebrisBenchError(f"{system}, {step}: expected {done:,} jobs completed once and {waiting:,} waiting "
                               f"untouched; found {dict(row)}")


async def _hot_table(conn: asyncpg.Connection, system: str) -> dict[str, int]:
    """Size and tuple counts of the hot table, once the pgbench backends have exited (they flush their
    statistics as they go) and this backend's own counts are flushed."""
    deadline = time.monotonic() + 15
    while await conn.fetchval("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgbench'"):
        if time.monotonic() > deadline:
            raise DebrisBenchError("pgbench's backend still connected 15 s after pgbench ended")
        await asyncio.sleep(0.05)
    await conn.execute("SELECT pg_stat_force_next_flush()")
    row = await conn.fetchrow(
        """SELECT pg_total_relation_size(relid) AS total_bytes, pg_relation_size(relid) AS heap_bytes,
                  pg_indexes_size(relid) AS index_bytes, n_live_tup AS live_tuples, n_dead_tup AS dead_tuples
           FROM pg_stat_user_tables WHERE relid = $1::regclass""", HOT_TABLE[system])
    return dict(row)


async def run(system: str, dsn: str, size: int, workdir: Path) -> dict[str, Any]:
    """One run of steps 1 to 4 (the module's docstring) for ``system`` and P = ``size`` (a multiple of 100)."""
    if size % 100:
        raise DebrisBenchError(f"the size pushed through must be a multiple of 100, not {size}")
    pgbench_script = script(system, workdir)
    measured = MEASURE_TX * 100
    conn = await asyncpg.connect(dsn)
    try:
        # 1. the clean rate
        await _empty(conn, system)
        await _enqueue(conn, system, MEASURE_FILL)
        await _settle(conn, system)
        clean_tps, done = sql_bench.pgbench(dsn, pgbench_script, 1, transactions=MEASURE_TX)
        await _check(conn, system, "clean", done * 100, MEASURE_FILL - done * 100)
        clean_table = await _hot_table(conn, system)
        # 2. empty tables, a snapshot held
        await _empty(conn, system)
        async with worker_bench.held_snapshot(dsn, SNAPSHOT_TABLE[system]):
            # 3. push P jobs through
            started = time.monotonic()
            await _enqueue(conn, system, size)
            enqueue_s = time.monotonic() - started
            push_tps, pushed = sql_bench.pgbench(dsn, pgbench_script, 1, transactions=size // 100,
                                                 timeout=max(PUSH_TIMEOUT, size / PUSH_FLOOR_RATE))
            await _check(conn, system, "push-through", pushed * 100, 0)
            # 4. the debris rate
            await _enqueue(conn, system, MEASURE_FILL)
            await _settle(conn, system)
            debris_tps, done = sql_bench.pgbench(dsn, pgbench_script, 1, transactions=MEASURE_TX)
            await _check(conn, system, "with debris", size + done * 100, MEASURE_FILL - done * 100)
            debris_table = await _hot_table(conn, system)
    finally:
        await conn.close()
    clean, debris, push = clean_tps * 100, debris_tps * 100, push_tps * 100
    return {"system": system, "workload": "debris", "size": size, "measured_jobs": measured,
            "measure_fill": MEASURE_FILL, "script": Path(pgbench_script).name,
            "clean_rate": clean, "debris_rate": debris, "debris_ratio": debris / clean,
            "push_rate": push, "push_ratio": push / clean, "push_s": size / push,
            "enqueue_s": enqueue_s, "enqueue_rate": size / enqueue_s,
            "hot_table": HOT_TABLE[system], "clean_table": clean_table, "debris_table": debris_table}
