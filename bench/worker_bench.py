"""Benchmark real `jobs-worker` processes on a throwaway cluster with durable settings.

    make bench-worker                        # quick (the default): N = 20,000 jobs per drain, a few minutes
    make bench-worker BENCH_ARGS=--full      # N = 100,000 jobs per drain, more tuned settings tried (about 15-20 minutes)

Starts a throwaway PostgreSQL with fsync on (bench/sql_bench.py's settings), installs pgrelay with the
real installer, and runs `jobs-worker <dsn> --app noop_app:router` processes (bench/noop_app.py: a no-op
async handler, and a probe that returns the time it started):

(a) drain throughput: N no-op jobs enqueued with pgrelay.enqueue_bulk into the paused queue; 1 or 2
    worker processes started and connected (listening); then pgrelay.resume() and the clock runs until
    the last job succeeded (max(finished_at) of the N jobs). Default settings (--concurrency 10), and
    tuned settings (several --concurrency/--batch-size pairs tried, the best reported). Also shown:
    jobs/s counted from the moment the worker processes were launched (so including their start-up).
(b) pickup latency, idle queue: 1 idle worker with default settings, listening; PROBES jobs enqueued one
    at a time (each its own autocommit statement, IDLE_PROBE_GAP = 0.1 s apart: after a job a worker
    keeps polling every 2 ms for about 50 ms before it calls pgrelay.idle() and waits for a NOTIFY, so
    probes 20 ms apart would never find it idle). Latency = the handler's start (wall clock) - the
    job's created_at (now() of the enqueueing transaction, so the commit, its fsync and the NOTIFY are
    included); p50/p95/p99.
(c) pickup latency under load: the same probes, PROBE_GAP (20 ms) apart, at priority 10 (consume takes
    higher priority first; at the default priority they would wait behind the whole backlog, FIFO),
    while 1 worker drains a backlog of no-op jobs sized by (a)'s rate to last about 2 s longer than the
    probes. Probes stop when no no-op job is pending any more; only probes enqueued until then count.

bench/compare.py also runs latency_loaded, latency_steady (its figure 5 under a steady load: 1 worker
with tuned settings drains probe jobs enqueued at a fixed rate, in batches every 5 ms; the latency of
every job), steady_load (its figure 6: a fixed enqueue rate drained by workers for minutes, with the
size and tuple statistics of pgrelay._jobs and pgrelay._finished sampled) and steady_snapshot (its figure
8: the same steady load of probe jobs while another session holds a REPEATABLE READ snapshot for part of
the window, held_snapshot; per phase before, during and after: jobs/s, pickup latency, the hot table's
size), which this script's own report leaves out.

Every figure: median of --runs runs (3), with min-max. Each run starts from emptied tables, vacuumed and
checkpointed, with new worker processes, stopped afterwards with SIGTERM (they must exit 0).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import math
import os
import platform
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pgrelay.schema import migrate  # noqa: E402
from tests.harness.cluster import throwaway_cluster  # noqa: E402

# The same durable settings as bench/sql_bench.py. fsync=on must be explicit: pytest-postgresql's
# executor (behind throwaway_cluster) starts postgres with -F, which turns fsync off.
SERVER_SETTINGS = "-c fsync=on -c max_connections=300 -c shared_buffers=256MB"
SHOWN_SETTINGS = ["fsync", "synchronous_commit", "full_page_writes", "shared_buffers", "max_connections"]

WORKER = str(Path(sys.executable).parent / "jobs-worker")
APP = "noop_app:router"          # bench/noop_app.py, on PYTHONPATH
QUEUE = "default"
FILL_CHUNK = 10_000              # enqueue_bulk takes at most 10000 jobs per call
PROBES = 200                     # latency probes per run
PROBE_GAP = 0.020                # seconds between probes under load
# Seconds between probes on an idle queue. After a job a worker keeps polling (every 2 ms) for about
# 50 ms before it calls pgrelay.idle() and waits for a NOTIFY; probes PROBE_GAP apart would find it
# still polling every time, never idle.
IDLE_PROBE_GAP = 0.100

DEFAULT_ARGS: tuple[str, ...] = ()   # jobs-worker's defaults: --concurrency 10, batch = concurrency


def tuned(concurrency: int, batch: int) -> tuple[str, ...]:
    return ("--concurrency", str(concurrency), "--batch-size", str(batch))


TUNED_QUICK = [tuned(200, 200), tuned(1000, 1000)]
TUNED_FULL = [tuned(100, 100), tuned(200, 200), tuned(500, 500), tuned(1000, 1000), tuned(2000, 2000)]


class BenchError(RuntimeError):
    pass


@dataclass
class Figures:
    values: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    def cell(self, fmt: str = ",.0f") -> str:
        if len(self.values) == 1:
            return format(self.values[0], fmt)
        return f"{format(self.median, fmt)} ({format(min(self.values), fmt)}–{format(max(self.values), fmt)})"


def describe(args: Sequence[str]) -> str:
    return " ".join(args) if args else "defaults (--concurrency 10)"


# -- workers ---------------------------------------------------------------------------------

class Workers:
    """jobs-worker processes, logging to files; stopped with SIGTERM, which must end them with 0."""

    def __init__(self, dsn: str, logdir: Path) -> None:
        self.dsn = dsn
        self.logdir = logdir
        self.procs: list[tuple[subprocess.Popen[bytes], Path]] = []
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("PGRELAY_")}
        self.env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "bench"), os.environ.get("PYTHONPATH")]))

    def command(self, args: Sequence[str]) -> list[str]:
        return [WORKER, self.dsn, "--app", APP, *args]

    def start(self, count: int, args: Sequence[str]) -> None:
        for _ in range(count):
            log = self.logdir / f"worker-{len(self.procs) + 1}.log"
            with open(log, "wb") as out:
                proc = subprocess.Popen(self.command(args), cwd=ROOT / "bench", env=self.env,
                                        stdout=out, stderr=subprocess.STDOUT)
            self.procs.append((proc, log))

    def check_alive(self) -> None:
        for proc, log in self.procs:
            if proc.poll() is not None:
                raise BenchError(f"a worker exited early with code {proc.returncode}:\n{tail(log)}")

    async def wait_ready(self, conn: asyncpg.Connection, timeout: float = 30) -> None:
        """Until every worker is connected and LISTENing (its first consume has run by then or soon)."""
        deadline = time.monotonic() + timeout
        while True:
            self.check_alive()
            listening = await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'LISTEN %'")
            if listening >= len(self.procs):
                return
            if time.monotonic() > deadline:
                raise BenchError(f"workers not listening after {timeout:.0f}s:\n{tail(self.procs[-1][1])}")
            await asyncio.sleep(0.02)

    @contextlib.contextmanager
    def running(self, count: int, args: Sequence[str]) -> Iterator[None]:
        """Start ``count`` workers; stop them on the way out (an error inside wins over theirs)."""
        self.start(count, args)
        try:
            yield
        except BaseException:
            with contextlib.suppress(BenchError):
                self.stop()
            raise
        self.stop()

    def stop(self) -> None:
        for proc, _ in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        failures = []
        for proc, log in self.procs:
            try:
                code = proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                code = "killed after 60 s"
            if code != 0:
                failures.append(f"worker exited with {code} after SIGTERM:\n{tail(log)}")
        self.procs = []
        if failures:
            raise BenchError("\n".join(failures))


def tail(log: Path, lines: int = 20) -> str:
    text = log.read_text(errors="replace").splitlines() if log.exists() else []
    return "\n".join(text[-lines:])


# -- database --------------------------------------------------------------------------------

async def fresh(conn: asyncpg.Connection) -> None:
    # (_counts too: queue_stats reads it, and the steady-load check compares it with what was enqueued)
    await conn.execute("TRUNCATE pgrelay._jobs, pgrelay._finished, pgrelay._attempts, pgrelay._idempotency_keys,"
                       " pgrelay._workers, pgrelay._counts")
    await conn.execute("SELECT pgrelay.resume($1)", QUEUE)


async def settle(conn: asyncpg.Connection) -> None:
    await conn.execute("VACUUM ANALYZE pgrelay._jobs, pgrelay._finished, pgrelay._attempts")
    await conn.execute("CHECKPOINT")


async def fill(conn: asyncpg.Connection, n: int) -> None:
    left = n
    while left > 0:
        chunk = min(left, FILL_CHUNK)
        await conn.execute(
            """SELECT count(*) FROM pgrelay.enqueue_bulk(
                   (SELECT jsonb_agg(jsonb_build_object('task', 'bench.noop', 'queue', $1::text))
                    FROM generate_series(1, $2::int)))""", QUEUE, chunk)
        left -= chunk


async def wait_drained(conn: asyncpg.Connection, workers: Workers, timeout: float,
                       task: str = "bench.noop") -> None:
    deadline = time.monotonic() + timeout
    while await conn.fetchval("SELECT EXISTS (SELECT 1 FROM pgrelay._jobs WHERE task = $1)", task):
        workers.check_alive()
        if time.monotonic() > deadline:
            left = await conn.fetchval("SELECT count(*) FROM pgrelay._jobs")
            raise BenchError(f"{left} jobs still unfinished after {timeout:.0f}s")
        await asyncio.sleep(0.1)


async def verify_noop(conn: asyncpg.Connection, n: int) -> None:
    row = await conn.fetchrow(
        """SELECT count(*) FILTER (WHERE status = 'succeeded') AS ok, count(*) FILTER (WHERE status <> 'succeeded') AS bad,
                  count(*) FILTER (WHERE attempt <> 1) AS retried
           FROM pgrelay._finished WHERE task = 'bench.noop'""")
    if row["ok"] != n or row["bad"] or row["retried"]:
        raise BenchError(f"expected {n} no-op jobs succeeded at attempt 1; got {dict(row)}")


# -- measurements ----------------------------------------------------------------------------

async def drain(conn: asyncpg.Connection, workers: Workers, n: int, count: int,
                args: Sequence[str]) -> tuple[float, float]:
    """One drain of n jobs by ``count`` workers; returns (jobs/s from resume, jobs/s from launch)."""
    await fresh(conn)
    await conn.execute("SELECT pgrelay.pause($1)", QUEUE)
    await fill(conn, n)
    await settle(conn)
    launched = time.time()
    with workers.running(count, args):
        await workers.wait_ready(conn)
        resumed = await conn.fetchval("SELECT extract(epoch FROM clock_timestamp())::float8 FROM pgrelay.resume($1)",
                                      QUEUE)
        await wait_drained(conn, workers, timeout=max(120.0, n / 100))
    await verify_noop(conn, n)
    last = await conn.fetchval("SELECT extract(epoch FROM max(finished_at))::float8 FROM pgrelay._finished")
    return n / (last - resumed), n / (last - launched)


async def probe_latencies(conn: asyncpg.Connection, *, during_backlog: bool,
                          gap: float = PROBE_GAP) -> list[float]:
    """Enqueue up to PROBES probe jobs ``gap`` apart; returns their pickup latencies in ms."""
    sent = 0
    sql = ("SELECT pgrelay.enqueue('bench.probe', priority => 10)" if during_backlog
           else "SELECT pgrelay.enqueue('bench.probe')")
    next_at = time.monotonic()
    while sent < PROBES:
        if during_backlog and not await conn.fetchval(
                "SELECT EXISTS (SELECT 1 FROM pgrelay._jobs WHERE task = 'bench.noop' AND leased_by IS NULL)"):
            break
        await conn.execute(sql)
        sent += 1
        next_at += gap
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))
    deadline = time.monotonic() + 60
    while await conn.fetchval("SELECT count(*) FROM pgrelay._finished WHERE task = 'bench.probe'") < sent:
        if time.monotonic() > deadline:
            raise BenchError("probe jobs not finished within 60 s")
        await asyncio.sleep(0.05)
    rows = await conn.fetch(
        """SELECT ((result ->> 't')::float8 - extract(epoch FROM created_at)::float8) * 1000 AS ms
           FROM pgrelay._finished WHERE task = 'bench.probe' AND status = 's' AND attempt = 1""")
    if len(rows) != sent:
        raise BenchError(f"{sent} probes sent, {len(rows)} succeeded at their first attempt")
    return [r["ms"] for r in rows]


def percentiles(values: list[float]) -> tuple[float, float, float]:
    if len(values) < 2:
        raise BenchError(f"too few probes ({len(values)}) to compute percentiles")
    q = statistics.quantiles(values, n=100, method="inclusive")
    return statistics.median(values), q[94], q[98]


async def latency_idle(conn: asyncpg.Connection, workers: Workers) -> tuple[tuple[float, float, float], int]:
    await fresh(conn)
    await settle(conn)
    with workers.running(1, DEFAULT_ARGS):
        await workers.wait_ready(conn)
        await asyncio.sleep(1.0)            # idle: nothing to do, waiting on LISTEN
        values = await probe_latencies(conn, during_backlog=False, gap=IDLE_PROBE_GAP)
    return percentiles(values), len(values)


async def latency_loaded(conn: asyncpg.Connection, workers: Workers, n: int,
                         args: Sequence[str]) -> tuple[tuple[float, float, float], int]:
    await fresh(conn)
    await conn.execute("SELECT pgrelay.pause($1)", QUEUE)
    await fill(conn, n)
    await settle(conn)
    with workers.running(1, args):
        await workers.wait_ready(conn)
        await conn.execute("SELECT pgrelay.resume($1)", QUEUE)
        await asyncio.sleep(0.5)            # let the drain reach its pace
        values = await probe_latencies(conn, during_backlog=True)
        await wait_drained(conn, workers, timeout=max(120.0, n / 100))
    await verify_noop(conn, n)
    return percentiles(values), len(values)


# -- pickup latency under a steady load (bench/compare.py's latency_steady_tuned) -------------------

STEADY_LATENCY_INTERVAL = 0.005      # seconds between the producer's batches (exactly: batch / rate)
STEADY_LATENCY_WARMUP = 2.0          # seconds at the start of the window whose jobs are not counted


async def latency_steady(conn: asyncpg.Connection, workers: Workers, args: Sequence[str], rate: int,
                         seconds: float) -> dict:
    """Pickup latency of every job while 1 worker with ``args`` drains a steady ``rate`` jobs/s.

    Emptied, vacuumed tables; the worker started and listening. Then ``conn`` enqueues bench.probe jobs
    (their handler returns the time it started) with pgrelay.enqueue_bulk, round(rate x 5 ms) jobs per
    call (at least 1), one call every batch / rate seconds (5 ms but for the rounding), each its own
    transaction, on a fixed schedule for ``seconds`` (when late it catches up; the worst lateness is
    returned). Once the window is over it waits until every job has finished. Latency of a job = its
    handler's start (result ->> 't') - its created_at (now() of the enqueueing transaction), in ms:
    p50/p95/p99/max over the jobs created after the first STEADY_LATENCY_WARMUP seconds (the warm-up:
    the worker reaches its pace, the caches fill). Drain rate = jobs that succeeded within the window /
    window. Checked: every job enqueued succeeded at its first attempt.
    """
    batch = max(1, round(rate * STEADY_LATENCY_INTERVAL))
    interval = batch / rate
    calls = max(1, round(seconds / interval))
    await fresh(conn)
    await settle(conn)
    sent = 0
    late = 0.0
    with workers.running(1, args):
        await workers.wait_ready(conn)
        wall_start, started = time.time(), time.monotonic()
        for k in range(calls):
            wait = started + k * interval - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            else:
                late = max(late, -wait)
            workers.check_alive()
            await conn.execute(
                """SELECT count(*) FROM pgrelay.enqueue_bulk(
                       (SELECT jsonb_agg(jsonb_build_object('task', 'bench.probe', 'queue', $1::text))
                        FROM generate_series(1, $2::int)))""", QUEUE, batch)
            sent += batch
        # the window ends a batch interval after the last batch went in
        await asyncio.sleep(max(0.0, started + calls * interval - time.monotonic()))
        elapsed = time.monotonic() - started
        await wait_drained(conn, workers, timeout=max(120.0, sent / 100), task="bench.probe")
    # time.time() is the clock PostgreSQL's timestamps read on this same host (see bench/noop_app.py)
    row = await conn.fetchrow(
        """SELECT count(*) FILTER (WHERE status = 's' AND attempt = 1) AS ok,
                  count(*) FILTER (WHERE status = 's' AND finished_at < to_timestamp($1)) AS in_window
           FROM pgrelay._finished WHERE task = 'bench.probe'""", wall_start + elapsed)
    if row["ok"] != sent:
        raise BenchError(f"steady latency: {sent} jobs enqueued, {row['ok']} succeeded at their first attempt")
    rows = await conn.fetch(
        """SELECT ((result ->> 't')::float8 - extract(epoch FROM created_at)::float8) * 1000 AS ms
           FROM pgrelay._finished WHERE task = 'bench.probe' AND created_at >= to_timestamp($1)""",
        wall_start + STEADY_LATENCY_WARMUP)
    values = [r["ms"] for r in rows]
    p50, p95, p99 = percentiles(values)
    return {"seconds": round(elapsed, 2), "target_rate": rate, "batch": batch, "interval_ms": interval * 1000,
            "enqueued": sent, "enqueue_rate": sent / elapsed, "producer_late_s": round(late, 3),
            "drained_in_window": row["in_window"], "drain_rate": row["in_window"] / elapsed,
            "warmup_s": STEADY_LATENCY_WARMUP, "counted": len(values),
            "p50_ms": p50, "p95_ms": p95, "p99_ms": p99, "max_ms": max(values)}


# -- steady load (bench/compare.py's figure 6) ---------------------------------------------------

STEADY_TABLES = ("pgrelay._jobs", "pgrelay._finished")   # the hot table and the history


@contextlib.asynccontextmanager
async def held_snapshot(dsn: str, table: str) -> AsyncIterator[None]:
    """A REPEATABLE READ transaction on a connection of its own, which reads ``table`` (any small
    table: the read takes the transaction's snapshot) and then stays idle in transaction for the whole
    block: while it is open, no VACUUM (autovacuum included) removes a row version deleted or updated
    after that snapshot was taken. Rolled back on the way out, after a check that it was still the same
    transaction (its now(), the transaction's start, is unchanged: a session that was ended, or a
    transaction that was replaced, fails the run instead of measuring nothing)."""
    holder = await asyncpg.connect(dsn)
    try:
        await holder.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        await holder.fetchval(f"SELECT count(*) FROM {table}")
        began = await holder.fetchval("SELECT now()")
        yield
        if await holder.fetchval("SELECT now()") != began:
            raise BenchError("the transaction holding the snapshot ended before its time")
        await holder.execute("ROLLBACK")
    finally:
        await holder.close()


async def table_stats(conn: asyncpg.Connection) -> dict[str, dict[str, int]]:
    """Size and tuple statistics of STEADY_TABLES (pg_relation_size & co., pg_stat_user_tables), each
    summed over its partitions (pgrelay._finished is partitioned by day; a plain table is its own)."""
    rows = await conn.fetch(
        """SELECT t.name,
                  sum(pg_relation_size(s.relid))::bigint AS heap_bytes, sum(pg_indexes_size(s.relid))::bigint AS index_bytes,
                  sum(pg_total_relation_size(s.relid))::bigint AS total_bytes,
                  sum(s.n_live_tup)::bigint AS live_tuples, sum(s.n_dead_tup)::bigint AS dead_tuples,
                  sum(s.autovacuum_count)::bigint AS autovacuums, sum(s.autoanalyze_count)::bigint AS autoanalyzes
           FROM unnest($1::text[]) t(name)
           CROSS JOIN LATERAL pg_partition_tree(t.name::regclass) p
           JOIN pg_stat_user_tables s ON s.relid = p.relid
           GROUP BY t.name""", list(STEADY_TABLES))
    found = {r["name"]: {k: v for k, v in dict(r).items() if k != "name"} for r in rows}
    if set(found) != set(STEADY_TABLES):
        raise BenchError(f"pg_stat_user_tables has no row for {sorted(set(STEADY_TABLES) - set(found))}")
    return found


async def queue_counts(conn: asyncpg.Connection) -> dict[str, int]:
    """QUEUE's row of the public view pgrelay.queue_stats (zeros while the queue has no row)."""
    row = await conn.fetchrow(
        "SELECT pending, scheduled, leased, succeeded, dead_letter, cancelled"
        " FROM pgrelay.queue_stats WHERE queue = $1", QUEUE)
    return dict(row) if row else dict.fromkeys(("pending", "scheduled", "leased", "succeeded", "dead_letter",
                                                "cancelled"), 0)


async def steady_load(conn: asyncpg.Connection, workers: Workers, count: int, args: Sequence[str], *,
                      seconds: float, rate: int, sample_every: float = 10.0, task: str = "bench.noop",
                      hold: tuple[float, float] | None = None, finish: bool = False) -> dict:
    """One steady-load run: a producer enqueues ``rate`` jobs/s (pgrelay.enqueue_bulk, a tenth of a
    second's worth per call, jobs of ``task``) for ``seconds`` while ``count`` workers drain continuously.

    Size and tuple statistics of pgrelay._jobs and pgrelay._finished are sampled at the start, every
    ``sample_every`` seconds and at the end of the window, with the queue's counts (pgrelay.queue_stats).
    The workers' backends report their tuple counts to pg_stat_user_tables only every second or so (and
    later when they are busy), so "end" is taken again once the workers have stopped and their backends
    have exited, which flushes their statistics. Checked then: every job enqueued is accounted for, none
    dead-lettered.

    hold=(begin, end): from ``begin`` to ``end`` seconds into the window another session holds a
    snapshot (held_snapshot, reading pgrelay._queues), with a sample taken as soon as it holds it (marked
    "hold_begin") and one just before it lets go ("hold_end"). finish: once the window is over, the
    workers go on until every job is done before they stop (so "end" is read after that).
    """
    if hold and not 0 <= hold[0] < hold[1] <= seconds:
        raise BenchError(f"steady load: the hold {hold} must lie within the window of {seconds} s")
    batch = max(1, rate // 10)
    calls = max(1, round(seconds * rate / batch))
    interval = batch / rate
    await fresh(conn)
    await settle(conn)
    # This backend's TRUNCATE reaches the shared statistics when it flushes them, and then zeroes the live
    # and dead tuples counted so far: flush now (when this statement ends), not some seconds into the run.
    await conn.execute("SELECT pg_stat_force_next_flush()")
    await conn.execute("SELECT pg_stat_reset_single_table_counters(relid) FROM pg_stat_user_tables"
                       " WHERE relid = ANY($1::text[]::regclass[])", list(STEADY_TABLES))
    producer = await asyncpg.connect(workers.dsn)
    sampler = await asyncpg.connect(workers.dsn)
    sampling = asyncio.Lock()            # the periodic samples and the hold's share the sampler connection
    samples: list[dict] = []
    sent = 0
    late = 0.0                           # how far behind its schedule the producer fell, at worst

    async def sample(started: float, mark: str | None = None) -> dict:
        async with sampling:
            snap = {"t": round(time.monotonic() - started, 2), "enqueued": sent, **await queue_counts(sampler),
                    "tables": await table_stats(sampler)}
        if mark:
            snap["mark"] = mark
        samples.append(snap)
        return snap

    async def produce(started: float) -> None:
        nonlocal sent, late
        for k in range(calls):
            wait = started + k * interval - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            else:
                late = max(late, -wait)
            workers.check_alive()
            await producer.execute(
                """SELECT count(*) FROM pgrelay.enqueue_bulk(
                       (SELECT jsonb_agg(jsonb_build_object('task', $3::text, 'queue', $1::text))
                        FROM generate_series(1, $2::int)))""", QUEUE, batch, task)
            sent += batch

    async def hold_snapshot(started: float) -> None:
        await asyncio.sleep(max(0.0, started + hold[0] - time.monotonic()))
        async with held_snapshot(workers.dsn, "pgrelay._queues"):
            await sample(started, "hold_begin")
            await asyncio.sleep(max(0.0, started + hold[1] - time.monotonic()))
            await sample(started, "hold_end")

    async def sample_periodically(started: float) -> None:
        k = 1
        while True:
            await asyncio.sleep(max(0.0, started + k * sample_every - time.monotonic()))
            await sample(started)
            workers.check_alive()
            k += 1

    try:
        with workers.running(count, args):
            await workers.wait_ready(conn)
            wall_start, started = time.time(), time.monotonic()
            start = await sample(started)
            ticker = asyncio.create_task(sample_periodically(started))
            holding = asyncio.create_task(hold_snapshot(started)) if hold else None
            try:
                await produce(started)
                if holding:
                    await holding
                # the window ends a batch interval after the last batch went in
                await asyncio.sleep(max(0.0, started + calls * interval - time.monotonic()))
                elapsed = time.monotonic() - started
            finally:
                for helper in (ticker, holding):
                    if helper and not helper.done():
                        helper.cancel()
                        with contextlib.suppress(asyncio.CancelledError):
                            await helper
            end = await sample(started)
            if finish:
                await wait_drained(conn, workers, timeout=max(120.0, sent / 100), task=task)
    finally:
        await producer.close()
        await sampler.close()
    await wait_backends_gone(conn)
    after = await queue_counts(conn)
    stopped = await table_stats(conn)
    accounted = sum(after[k] for k in ("pending", "scheduled", "leased", "succeeded", "dead_letter", "cancelled"))
    if accounted != sent or after["dead_letter"] or after["cancelled"]:
        raise BenchError(f"steady load: {sent} jobs enqueued; pgrelay.queue_stats accounts for {accounted}: {after}")
    drained = end["succeeded"] - start["succeeded"]
    return {"seconds": round(elapsed, 2), "wall_start": wall_start, "task": task, "target_rate": rate,
            "batch": batch, "enqueued": sent, "enqueue_rate": sent / elapsed, "producer_late_s": round(late, 3),
            "drained": drained,
            "jobs_per_s": drained / elapsed, "backlog_end": end["pending"] + end["leased"],
            "pending_end": end["pending"], "leased_end": end["leased"],
            "start": start["tables"], "end": stopped, "end_in_window": end["tables"], "samples": samples}


async def wait_backends_gone(conn: asyncpg.Connection, timeout: float = 15) -> None:
    """Until no other client backend is connected to this database (their statistics are flushed on exit)."""
    deadline = time.monotonic() + timeout
    while await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
            " AND backend_type = 'client backend'"):
        if time.monotonic() > deadline:
            raise BenchError(f"other backends still connected {timeout:.0f}s after the workers stopped")
        await asyncio.sleep(0.05)


# -- steady load while a snapshot is held (bench/compare.py's figure 8) ----------------------------

SNAPSHOT_PHASES = ("before", "during", "after")


async def steady_snapshot(conn: asyncpg.Connection, workers: Workers, count: int, *, rate: int, before: float,
                          hold: float, after: float, sample_every: float) -> dict:
    """steady_load of bench.probe jobs (their handler returns the time it started) at ``rate`` jobs/s for
    ``before + hold + after`` seconds, drained by ``count`` workers with default settings, while another
    session holds a snapshot (held_snapshot) from ``before`` to ``before + hold`` seconds into the
    window; after the window the workers finish every job (steady_load's finish).

    Per phase (before, during and after the hold), bounded by the samples taken at the window's start,
    as the snapshot is taken (hold_begin), just before it is let go (hold_end) and at the window's end:
    jobs/s enqueued and drained (pgrelay.queue_stats's succeeded at the bounds / the phase's length);
    the pickup latency (handler start - created_at, in ms) of every job created in the phase,
    p50/p95/p99/max; and at its end the backlog (pending + leased) and pgrelay._jobs's total size and
    n_dead_tup. The timeline: every sample with the jobs/s drained since the one before (None when that
    was less than a second before: a mark next to a periodic sample) and the phase that interval falls
    in. Checked: every job enqueued succeeded at its first attempt (and steady_load's own check).
    """
    result = await steady_load(conn, workers, count, DEFAULT_ARGS, seconds=before + hold + after, rate=rate,
                               sample_every=sample_every, task="bench.probe", hold=(before, before + hold),
                               finish=True)
    samples = sorted(result["samples"], key=lambda smp: smp["t"])
    marks = {smp["mark"]: smp for smp in samples if "mark" in smp}
    bounds = [samples[0], marks["hold_begin"], marks["hold_end"], samples[-1]]
    # created_at as seconds into the window (time.time() is the clock now() reads on this host)
    rows = await conn.fetch(
        """SELECT extract(epoch FROM created_at)::float8 - $1 AS t,
                  ((result ->> 't')::float8 - extract(epoch FROM created_at)::float8) * 1000 AS ms
           FROM pgrelay._finished WHERE task = 'bench.probe' AND status = 's' AND attempt = 1""",
        result["wall_start"])
    if len(rows) != result["enqueued"]:
        raise BenchError(f"steady load with a held snapshot: {result['enqueued']} jobs enqueued, {len(rows)} "
                         "succeeded at their first attempt")

    def phase_of(t: float) -> str:
        return "before" if t < bounds[1]["t"] else "during" if t < bounds[2]["t"] else "after"

    phases = []
    for name, (a, b) in zip(SNAPSHOT_PHASES, itertools.pairwise(bounds), strict=True):
        span = b["t"] - a["t"]
        enqueued, drained = b["enqueued"] - a["enqueued"], b["succeeded"] - a["succeeded"]
        values = [r["ms"] for r in rows if phase_of(r["t"]) == name]
        p50, p95, p99 = percentiles(values)
        hot = b["tables"]["pgrelay._jobs"]
        phases.append({"phase": name, "from_s": a["t"], "to_s": b["t"], "seconds": round(span, 2),
                       "enqueued": enqueued, "enqueue_rate": enqueued / span, "drained": drained,
                       "jobs_per_s": drained / span, "jobs_created": len(values), "p50_ms": p50, "p95_ms": p95,
                       "p99_ms": p99, "max_ms": max(values), "backlog_end": b["pending"] + b["leased"],
                       "jobs_bytes_end": hot["total_bytes"], "jobs_dead_end": hot["dead_tuples"]})
    timeline = []
    for a, b in itertools.pairwise(samples):
        hot = b["tables"]["pgrelay._jobs"]
        timeline.append({"t": b["t"], "mark": b.get("mark"), "phase": phase_of((a["t"] + b["t"]) / 2),
                         "jobs_per_s": (b["succeeded"] - a["succeeded"]) / (b["t"] - a["t"])
                         if b["t"] - a["t"] >= 1 else None,
                         "backlog": b["pending"] + b["leased"], "jobs_bytes": hot["total_bytes"],
                         "jobs_dead": hot["dead_tuples"]})
    return {**result, "before_s": before, "hold_s": hold, "after_s": after, "phases": phases, "timeline": timeline}


# -- main ------------------------------------------------------------------------------------

async def run(args: argparse.Namespace) -> int:
    if not Path(WORKER).exists():
        raise BenchError(f"{WORKER} not found; run `make bench-worker`, which installs pgrelay into .venv first")
    n = args.jobs or (100_000 if args.full else 20_000)
    candidates = TUNED_FULL if args.full else TUNED_QUICK
    settings = SERVER_SETTINGS + (f" {args.postgres_options}" if args.postgres_options else "")
    started = time.monotonic()
    print("pgrelay worker benchmark (real jobs-worker processes, no-op handlers)\n", flush=True)
    with throwaway_cluster(settings) as cluster, tempfile.TemporaryDirectory(prefix="pgrelay-wbench-") as tmp:
        conn = await asyncpg.connect(cluster.dsn())
        try:
            await conn.execute("CREATE DATABASE bench")
        finally:
            await conn.close()
        dsn = cluster.dsn("bench")
        workers = Workers(dsn, Path(tmp))
        conn = await asyncpg.connect(dsn)
        try:
            result = await migrate(conn)
            version = await conn.fetchval("SHOW server_version")
            shown = {name: await conn.fetchval(f"SHOW {name}") for name in SHOWN_SETTINGS}
            print(f"server:   PostgreSQL {version}, started with: {settings}")
            if shown["fsync"] != "on" or shown["synchronous_commit"] != "on":
                print("WARNING:  fsync or synchronous_commit is off: commits are not durable, figures are optimistic")
            print("settings: " + ", ".join(f"{k}={v}" for k, v in shown.items()))
            print(f"machine:  {os.cpu_count()} CPUs, {platform.platform()}, Python {platform.python_version()}, "
                  f"load average {os.getloadavg()[0]:.2f} at the start")
            print(f"schema:   {result.describe()}")
            print(f"worker:   {shlex.join(workers.command(['...']))}")
            print(f"mode:     {'full' if args.full else 'quick'}: N = {n:,} jobs per drain, {PROBES} probes "
                  f"{IDLE_PROBE_GAP * 1000:.0f} ms apart on an idle queue, {PROBE_GAP * 1000:.0f} ms apart under "
                  f"load, {args.runs} runs each\n", flush=True)

            # (a) drain throughput
            # round-robin over the settings, so a disturbance (another process) is spread over them
            drains = {(count, config): (Figures(), Figures()) for count in (1, 2) for config in [DEFAULT_ARGS, *candidates]}
            for i in range(args.runs):
                for (count, config), (resume_rate, launch_rate) in drains.items():
                    a, b = await drain(conn, workers, n, count, config)
                    resume_rate.values.append(a)
                    launch_rate.values.append(b)
                    print(f"  drain {n:,}: {count} worker(s), {describe(config):<40} run {i + 1}: "
                          f"{a:>8,.0f} jobs/s ({b:,.0f} counting start-up)", flush=True)

            def best(count: int) -> tuple[str, ...]:
                return max(candidates, key=lambda c: drains[(count, c)][0].median)

            # (b) idle pickup latency
            idle = [Figures(), Figures(), Figures()]
            for i in range(args.runs):
                (p50, p95, p99), k = await latency_idle(conn, workers)
                for f, v in zip(idle, (p50, p95, p99)):
                    f.values.append(v)
                print(f"  idle pickup, 1 worker, defaults, run {i + 1}: p50 {p50:.1f} ms, p95 {p95:.1f} ms, "
                      f"p99 {p99:.1f} ms ({k} probes)", flush=True)

            # (c) pickup latency while 1 worker drains a backlog
            loaded: dict[tuple[str, ...], tuple[list[Figures], list[int], int]] = {}
            for config in (DEFAULT_ARGS, best(1)):
                figures, probes = [Figures(), Figures(), Figures()], []
                # enough backlog to outlast the probes (+2 s for the warm-up and a margin), by (a)'s rate
                backlog = math.ceil(drains[(1, config)][0].median * (PROBES * PROBE_GAP + 2) / 1000) * 1000
                for i in range(args.runs):
                    (p50, p95, p99), k = await latency_loaded(conn, workers, backlog, config)
                    for f, v in zip(figures, (p50, p95, p99)):
                        f.values.append(v)
                    probes.append(k)
                    print(f"  pickup during a drain of {backlog:,}, 1 worker, {describe(config)}, run {i + 1}: "
                          f"p50 {p50:.1f} ms, p95 {p95:.1f} ms, p99 {p99:.1f} ms ({k} probes)", flush=True)
                loaded[config] = (figures, probes, backlog)
        finally:
            await conn.close()

    print(f"\nmedian of {args.runs} runs (min–max); N = {n:,} no-op jobs per drain; fsync on\n")
    print("| measurement | worker processes | jobs-worker settings | result |")
    print("|---|---:|---|---:|")
    for count in (1, 2):
        for config in [DEFAULT_ARGS, best(count)]:
            label = describe(config) + (" (best tried)" if config else "")
            print(f"| (a) drain throughput, jobs/s | {count} | {label} | {drains[(count, config)][0].cell()} |")
    print(f"| (b) pickup latency, idle queue, ms p50 / p95 / p99 | 1 | defaults (--concurrency 10) | "
          + " / ".join(f.cell(".1f") for f in idle) + " |")
    for config, (figures, probes, backlog) in loaded.items():
        counted = f"{min(probes)}" if min(probes) == max(probes) else f"{min(probes)}–{max(probes)}"
        print(f"| (c) pickup latency during a drain of {backlog:,} jobs, ms p50 / p95 / p99 | 1 | {describe(config)} | "
              + " / ".join(f.cell(".1f") for f in figures) + f" ({counted} probes per run) |")

    print("\nall drains tried (jobs/s from resume; in brackets: counted from the workers' launch, start-up included):\n")
    print("| worker processes | jobs-worker settings | jobs/s | jobs/s incl. start-up |")
    print("|---:|---|---:|---:|")
    for (count, config), (a, b) in drains.items():
        print(f"| {count} | {describe(config)} | {a.cell()} | {b.cell()} |")
    print("\n(a) the queue is paused while N jobs are enqueued and the workers connect; the clock starts at")
    print("    pgrelay.resume() and stops at the last job's finished_at. Every job is checked: succeeded, attempt 1.")
    print(f"(b) one probe at a time, {IDLE_PROBE_GAP * 1000:.0f} ms apart (a worker polls for about 50 ms after a job "
          "before it goes idle),")
    print("    each its own autocommit pgrelay.enqueue; latency = handler start (wall clock, bench/noop_app.py)")
    print("    - created_at (now() of the enqueue: commit, fsync, NOTIFY included).")
    print(f"(c) the same probes, {PROBE_GAP * 1000:.0f} ms apart, at priority 10 (else FIFO puts them behind the "
          "backlog) while 1 worker drains a backlog.")
    given = shlex.join(sys.argv[1:])
    command = "make bench-worker" + (f" BENCH_ARGS={shlex.quote(given)}" if given else "")
    print(f"\ncommand: {command}   (runs: {shlex.join(['.venv/bin/python', 'bench/worker_bench.py', *sys.argv[1:]])})")
    print(f"total time {time.monotonic() - started:.0f}s; load average {os.getloadavg()[0]:.2f} at the end "
          "(another busy process on this machine skews the figures)")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="N = 20,000, two tuned settings (the default)")
    mode.add_argument("--full", action="store_true", help="N = 100,000, five tuned settings")
    parser.add_argument("--jobs", type=int, default=None, help="N, jobs per drain (overrides the mode's)")
    parser.add_argument("--runs", type=int, default=3, help="runs per figure (default 3)")
    parser.add_argument("--postgres-options", default="",
                        help="extra server options appended to the defaults, e.g. '-c synchronous_commit=off'")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    if args.jobs is not None and args.jobs < 1:
        parser.error("--jobs must be at least 1")
    try:
        return asyncio.run(run(args))
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
