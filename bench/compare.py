"""pgrelay against its peers, side by side, on one throwaway cluster (issue 4's benchmark).

    make bench-quick            # about 27 minutes on a 2-core machine
    make bench                  # the full run (N = 100,000 jobs per drain, longer windows, 10-minute steady load,
                                # 1,000,000 jobs pushed through a held snapshot)
    make bench-quick BENCH_ARGS='--figures trigger_ latency_loaded steady_ --steady-seconds 20'   # just (3), (5), (6)
    make bench-quick BENCH_ARGS='--runs 5 --postgres-options "-c synchronous_commit=off"'

Starts one PostgreSQL cluster with durable settings (bench/worker_bench.py's: fsync and
synchronous_commit on), creates a database per system in it (bench_pgrelay, bench_pgqueuer,
bench_procrastinate, bench_pgmq; and bench_baseline, which holds only (3)'s trigger-less table), installs
each with its own installer, and runs the same workloads on every system. For each figure the runs
alternate across systems (A B C D, then D C B A, ...), so drift on a shared machine hits everyone equally;
every figure is the median of --runs runs with min and max.

    (1) enqueue one job per transaction, 1 and 8 concurrent producers, for a fixed time:
        pgrelay's SQL under pgbench (bench/sql_bench.py's enqueue_one.sql) next to pgmq.send under pgbench;
        pgrelay's Python client next to PgQueuer's and Procrastinate's Python APIs, all in the same
        producer harness (bench/peers.py: min(clients, 2) processes, a connection per producer).
        The same two pgbench runs again while a consumer drains the same queue for the whole run
        (enqueue_one_<N>_draining, issue 24): one jobs-worker process with default settings for pgrelay,
        bench/peer_apps/pgmq_drainer.py (pgmq.read of 100 + pgmq.archive in a loop) for pgmq.
    (2) bulk enqueue, 1,000 jobs per call: the same pairs (enqueue_bulk_1000.sql / pgmq.send_batch;
        pgrelay.client.enqueue_bulk / Queries.enqueue(lists) / Task.batch_defer_async).
    (3) enqueue from a trigger on an application table (bench/trigger_bench.py): INSERTs into bench_orders
        under pgbench, one order per transaction (1 and 8 clients) and 1,000 orders per INSERT ... SELECT,
        with an AFTER INSERT FOR EACH ROW trigger: pgrelay.enqueue_trigger; pgmq.send; Procrastinate's
        procrastinate_defer_jobs_v1; PgQueuer's documented SQL enqueue (INSERT into pgqueuer + pgqueuer_log);
        and the same INSERTs without a trigger as the baseline. Every run checks one job per order.
    (SQL) SQL-only consume of 100 + complete them (2 transactions): pgrelay.consume + ack_many next to
        pgmq.read + pgmq.archive, under pgbench, from a pre-filled queue. cycle_reference (issue 24):
        pgrelay's cycle next to its physical reference, plain SQL on a plain table (plain_jobs, in
        pgrelay's database; bench/pgbench/baseline_schema.sql): claim 100 due rows in claim order with
        FOR UPDATE SKIP LOCKED and mark them taken in one transaction, move them to plain_jobs_archive
        (DELETE ... RETURNING into INSERT) in a second (bench/pgbench/baseline_claim_archive_100.sql);
        1 client, the same -t, pre-filled the same way, --sql-runs runs alternating.
    (4) drain N no-op jobs with 1 and 2 worker processes, default and tuned settings: jobs-worker
        (bench/worker_bench.py's drain), PgQueuer and Procrastinate workers (bench/peer_apps/).
    (5) pickup latency, enqueue -> handler start, p50/p95/p99, 1 worker (defaults): on an idle queue, the
        probes worker_bench.IDLE_PROBE_GAP (0.1 s) apart for every system (after a job a pgrelay worker
        polls for about 50 ms before it goes idle; 20 ms apart it never would); and under load, while the
        worker drains a backlog sized by its drain rate in (4) (worker_bench's latency_loaded;
        peers.pickup_latency(backlog=...)), the probes PROBE_GAP (20 ms) apart at a higher priority than
        the backlog (all three claim higher priority first). Full mode adds the tuned settings under load.
        latency_steady_tuned (pgrelay only, issue 24): 1 worker with the tuned settings drains a steady
        load of 80% of this run's tuned 1-worker drain rate in (4) (else of 12,000 jobs/s), enqueued in
        batches every 5 ms for --latency-steady-seconds (quick 15, full 60; worker_bench's
        latency_steady); the latency of every job after a 2 s warm-up, p50/p95/p99/max.
    (6) steady load (pgrelay only): a producer enqueues --steady-rate jobs/s (default 1,000, in batches
        of a tenth of a second) for --steady-seconds (quick 60, full 600) while --steady-workers
        jobs-worker processes (default 2) drain, default and tuned settings; size and tuple statistics
        of pgrelay._jobs and pgrelay._finished (pg_relation_size, pg_indexes_size,
        pg_total_relation_size, n_live_tup, n_dead_tup, autovacuum_count) at the start, every
        --steady-sample-seconds and at the end; throughput achieved and the backlog at the end.
        Run --steady-runs times (default 1: it is long), not --runs.
    (7) the debris a held snapshot leaves in the hot table (issue 24; bench/debris_bench.py), pgrelay and
        pgmq, SQL under pgbench with 1 client (consume_ack_100.sql; pgmq.read of 100 + pgmq.archive), for
        each --debris-sizes P (quick 50,000 and 200,000; full also 1,000,000): the claim-100-and-complete
        rate on 10,000 waiting jobs in empty tables (clean); then, while another session holds a
        REPEATABLE READ snapshot (idle in transaction), P jobs enqueued and all claimed and completed
        (push-through rate), and the rate on 10,000 waiting jobs again (debris rate); the hot table's
        size and n_dead_tup before the snapshot is let go. Run --debris-runs times (default 1).
    (8) steady_snapshot (pgrelay only, issue 24): (6)'s steady load of --steady-rate bench.probe jobs/s
        (their handler returns the time it started), --steady-workers jobs-worker processes with default
        settings, while another session holds a REPEATABLE READ snapshot for --snapshot-hold-seconds
        (quick 60, full 180), in a window with a third of that before the hold and two thirds after;
        sampled every 5 s (jobs/s drained since the last sample, backlog, pgrelay._jobs's size and
        n_dead_tup); per phase (before, during, after): jobs/s, pickup latency p50/p99 of the jobs created
        in the phase, the hot table's size at the phase's end (worker_bench.steady_snapshot). --steady-runs
        runs.

--figures PREFIX ... runs only the figures whose id starts with one of the prefixes (e.g. trigger_,
latency_loaded, steady_, debris_, cycle_reference); --only SYSTEM ... only those systems. The report
states issue 4's targets and issue 24's goals as measured in this run. Writes bench/results/<date>.md
(<date>-quick.md in quick mode), the same as JSON (steady runs with all their samples), and a PNG plot
when matplotlib is installed.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import math
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import asyncpg

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
for _path in (str(ROOT), str(BENCH)):
    if _path not in sys.path:
        sys.path.insert(0, _path)

import debris_bench
import peers  # noqa: E402
import sql_bench  # noqa: E402
import trigger_bench  # noqa: E402
import worker_bench  # noqa: E402
from pgrelay.schema import migrate  # noqa: E402
from tests.harness.cluster import pg_bindir, throwaway_cluster  # noqa: E402

SERVER_SETTINGS = worker_bench.SERVER_SETTINGS
SHOWN_SETTINGS = ["fsync", "synchronous_commit", "full_page_writes", "wal_level", "shared_buffers", "work_mem",
                  "max_wal_size", "checkpoint_timeout", "autovacuum", "max_connections", "commit_delay",
                  "wal_sync_method"]
DATABASES = {"pgrelay": "bench_pgrelay", "pgqueuer": "bench_pgqueuer", "procrastinate": "bench_procrastinate",
             "pgmq": "bench_pgmq", "baseline": "bench_baseline"}
PGRELAY_TUNED = ("--concurrency", "500", "--batch-size", "500")

# "baseline" and "plain" are no systems: (3)'s INSERTs without a trigger, and cycle_reference's plain SQL.
# They are measured whenever their figure is.
NAMES = {"pgrelay": "pgrelay", "pgqueuer": "PgQueuer", "procrastinate": "Procrastinate", "pgmq": "pgmq",
         "baseline": "no trigger (baseline)", "plain": "plain SQL (physical reference)"}
REFERENCES = ("baseline", "plain")

# (5) under load: the backlog should outlast the probes (PROBES x PROBE_GAP) by about 2 s at the worker's
# drain rate; the rate comes from this run's drain figure (4) when it ran, else from these (jobs/s).
FALLBACK_DRAIN_RATES = {"pgrelay": 5000, "pgqueuer": 2000, "procrastinate": 300}
# (5) under a steady load: this share of pgrelay's 1-worker tuned drain rate in (4) (this run's when it
# ran, else FALLBACK_TUNED_DRAIN_RATE jobs/s).
STEADY_LATENCY_SHARE = 0.8
FALLBACK_TUNED_DRAIN_RATE = 12_000
SNAPSHOT_SAMPLE_SECONDS = 5.0        # (8): seconds between samples
# issue 24's goals: (7) both rates with debris at least this share of the clean rate; cycle_reference:
# pgrelay's cycle at least this share of the plain reference's
DEBRIS_GOAL = 0.5
REFERENCE_GOAL = 0.8


class CompareError(RuntimeError):
    pass


# -- one entry = one system measured one way ----------------------------------------------------------

@dataclass
class Entry:
    system: str                        # pgrelay, pgqueuer, procrastinate, pgmq
    how: str                           # the API / tool and settings, shown in the table
    run: Callable[[int], Awaitable[dict[str, Any]]]   # run index -> one measurement (a plain dict)
    key: str = "jobs_per_s"            # the figure read from the dict
    runs: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def values(self) -> list[float]:
        return [r[self.key] for r in self.runs]

    def summary(self, key: str | None = None) -> dict[str, Any] | None:
        values = [r[key or self.key] for r in self.runs]
        if not values:
            return None
        return {"median": statistics.median(values), "min": min(values), "max": max(values), "values": values}


@dataclass
class Figure:
    """One row group of the report: several entries measured the same way, alternating."""
    id: str
    title: str
    unit: str                          # "jobs/s" or "ms"
    entries: list[Entry]
    higher_is_better: bool = True
    note: str = ""
    runs: int | None = None            # runs of this figure; None: --runs


def cell(summary: dict[str, Any] | None, fmt: str = ",.0f") -> str:
    if summary is None:
        return "failed"
    if len(summary["values"]) == 1:
        return format(summary["median"], fmt)
    return f"{format(summary['median'], fmt)} ({format(summary['min'], fmt)}–{format(summary['max'], fmt)})"


# -- pgrelay measurements, through bench/sql_bench.py's and bench/worker_bench.py's functions ----------

class Pgrelay:
    def __init__(self, dsn: str, logdir: Path) -> None:
        self.dsn = dsn
        self.workers = worker_bench.Workers(dsn, logdir)

    async def _conn(self) -> asyncpg.Connection:
        return await asyncpg.connect(self.dsn)

    async def pgbench_timed(self, script: str, jobs_per_tx: int, clients: int, seconds: int) -> dict[str, Any]:
        conn = await self._conn()
        try:
            await sql_bench.reset(conn, "pgrelay", 0)
            tps, done = sql_bench.pgbench(self.dsn, script, clients, seconds=seconds)
            await sql_bench.verify(conn, sql_bench.Side(script, "enqueued"), done * jobs_per_tx, 0)
        finally:
            await conn.close()
        return {"system": "pgrelay", "script": script, "clients": clients, "transactions": done, "tps": tps,
                "jobs_per_s": tps * jobs_per_tx}

    async def enqueue_draining(self, clients: int, seconds: int) -> dict[str, Any]:
        """enqueue_one.sql under pgbench while one jobs-worker (default settings, started and listening
        first) drains the same queue for the whole run. Checked: every job enqueued is in pgrelay._jobs
        or pgrelay._finished when pgbench ends; then, once the worker has drained the queue, every one
        succeeded at its first attempt."""
        conn = await self._conn()
        try:
            await worker_bench.fresh(conn)
            await worker_bench.settle(conn)
            with self.workers.running(1, worker_bench.DEFAULT_ARGS):
                await self.workers.wait_ready(conn)
                tps, done = sql_bench.pgbench(self.dsn, "enqueue_one.sql", clients, seconds=seconds)
                # one snapshot for both tables: a job moves from one to the other in one transaction
                row = await conn.fetchrow("SELECT (SELECT count(*) FROM pgrelay._jobs) AS waiting,"
                                          " (SELECT count(*) FROM pgrelay._finished) AS finished")
                if row["waiting"] + row["finished"] != done:
                    raise worker_bench.BenchError(
                        f"enqueue_one.sql while draining: {done} transactions, pgrelay._jobs holds {row['waiting']} "
                        f"and pgrelay._finished {row['finished']}")
                await worker_bench.wait_drained(conn, self.workers, timeout=max(120.0, done / 100))
            await worker_bench.verify_noop(conn, done)
        finally:
            await conn.close()
        return {"system": "pgrelay", "script": "enqueue_one.sql", "clients": clients, "transactions": done,
                "tps": tps, "jobs_per_s": tps, "worker": worker_bench.describe(worker_bench.DEFAULT_ARGS),
                "drained_in_window": row["finished"]}

    async def consume_ack(self, clients: int, transactions: int) -> dict[str, Any]:
        conn = await self._conn()
        fill = int(clients * transactions * 100 * 1.1) + 1000
        try:
            await sql_bench.reset(conn, "pgrelay", fill)
            tps, done = sql_bench.pgbench(self.dsn, "consume_ack_100.sql", clients, transactions=transactions)
            await sql_bench.verify(conn, sql_bench.Side("consume_ack_100.sql", "acked"), done * 100, fill)
        finally:
            await conn.close()
        return {"system": "pgrelay", "script": "consume_ack_100.sql", "clients": clients, "transactions": done,
                "tps": tps, "jobs_per_s": tps * 100}

    async def plain_cycle(self, transactions: int) -> dict[str, Any]:
        """cycle_reference's physical reference: bench/pgbench/baseline_claim_archive_100.sql on plain_jobs
        (in pgrelay's database), 1 client, pre-filled as consume_ack fills pgrelay._jobs; checked: every
        job claimed was moved to plain_jobs_archive, none left taken."""
        conn = await self._conn()
        fill = int(transactions * 100 * 1.1) + 1000
        script = "baseline_claim_archive_100.sql"
        try:
            await sql_bench.reset(conn, "baseline", fill)
            tps, done = sql_bench.pgbench(self.dsn, script, 1, transactions=transactions)
            await sql_bench.verify(conn, sql_bench.Side(script, "archived"), done * 100, fill)
        finally:
            await conn.close()
        return {"system": "plain", "script": script, "clients": 1, "transactions": done, "tps": tps,
                "jobs_per_s": tps * 100}

    async def drain(self, n: int, count: int, args: tuple[str, ...]) -> dict[str, Any]:
        conn = await self._conn()
        try:
            rate, with_startup = await worker_bench.drain(conn, self.workers, n, count, args)
        finally:
            await conn.close()
        return {"system": "pgrelay", "workload": "drain", "jobs": n, "workers": count,
                "settings": worker_bench.describe(args), "jobs_per_s": rate, "jobs_per_s_incl_startup": with_startup}

    async def latency_idle(self) -> dict[str, Any]:
        conn = await self._conn()
        try:
            (p50, p95, p99), k = await worker_bench.latency_idle(conn, self.workers)
        finally:
            await conn.close()
        return {"system": "pgrelay", "workload": "pickup_latency_idle", "probes": k,
                "gap_ms": worker_bench.IDLE_PROBE_GAP * 1000, "p50_ms": p50, "p95_ms": p95, "p99_ms": p99}

    async def latency_loaded(self, backlog: int, args: tuple[str, ...]) -> dict[str, Any]:
        conn = await self._conn()
        try:
            (p50, p95, p99), k = await worker_bench.latency_loaded(conn, self.workers, backlog, args)
        finally:
            await conn.close()
        return {"system": "pgrelay", "workload": "pickup_latency_loaded", "probes": k, "backlog": backlog,
                "probe_priority": 10, "settings": worker_bench.describe(args), "p50_ms": p50, "p95_ms": p95,
                "p99_ms": p99}

    async def latency_steady(self, rate: int, args: tuple[str, ...], seconds: float) -> dict[str, Any]:
        conn = await self._conn()
        try:
            result = await worker_bench.latency_steady(conn, self.workers, args, rate, seconds)
        finally:
            await conn.close()
        return {"system": "pgrelay", "workload": "pickup_latency_steady", "settings": worker_bench.describe(args),
                **result}

    async def steady(self, count: int, args: tuple[str, ...], seconds: float, rate: int,
                     sample_every: float) -> dict[str, Any]:
        conn = await self._conn()
        try:
            result = await worker_bench.steady_load(conn, self.workers, count, args, seconds=seconds, rate=rate,
                                                    sample_every=sample_every)
        finally:
            await conn.close()
        return {"system": "pgrelay", "workload": "steady_load", "workers": count,
                "settings": worker_bench.describe(args), **result}

    async def steady_snapshot(self, count: int, rate: int, before: float, hold: float,
                              after: float) -> dict[str, Any]:
        conn = await self._conn()
        try:
            result = await worker_bench.steady_snapshot(conn, self.workers, count, rate=rate, before=before,
                                                        hold=hold, after=after, sample_every=SNAPSHOT_SAMPLE_SECONDS)
        finally:
            await conn.close()
        return {"system": "pgrelay", "workload": "steady_snapshot", "workers": count,
                "settings": worker_bench.describe(worker_bench.DEFAULT_ARGS), **result}


# -- the plan -------------------------------------------------------------------------------------------

def plan(args: argparse.Namespace, dsns: dict[str, str], pgrelay: Pgrelay, workdir: Path) -> list[Figure]:
    seconds, tx, n, n_proc = args.seconds, args.transactions, args.jobs, args.procrastinate_jobs
    figures: list[Figure] = []
    counter = iter(range(1_000_000))

    def wd(name: str) -> Path:
        return workdir / f"{name}-{next(counter)}"

    for clients in (1, 8):
        figures.append(Figure(
            f"enqueue_one_{clients}", f"(1) enqueue, 1 job per transaction, {clients} producer(s)", "jobs/s", [
                Entry("pgrelay", "SQL under pgbench: SELECT pgrelay.enqueue(...)",
                      lambda i, c=clients: pgrelay.pgbench_timed("enqueue_one.sql", 1, c, seconds)),
                Entry("pgmq", "SQL under pgbench: SELECT pgmq.send(...)",
                      lambda i, c=clients: peers.pgmq_pgbench(dsns["pgmq"], "send_one", c, wd("pgmq"), seconds=seconds)),
                Entry("pgrelay", "Python: pgrelay.client.enqueue (asyncpg)",
                      lambda i, c=clients: peers.enqueue("pgrelay-client", dsns["pgrelay"], c, seconds)),
                Entry("pgqueuer", "Python: Queries.enqueue (asyncpg)",
                      lambda i, c=clients: peers.enqueue("pgqueuer", dsns["pgqueuer"], c, seconds)),
                Entry("procrastinate", "Python: Task.defer_async (psycopg pool)",
                      lambda i, c=clients: peers.enqueue("procrastinate", dsns["procrastinate"], c, seconds)),
            ]))
        figures.append(Figure(
            f"enqueue_one_{clients}_draining",
            f"(1) enqueue, 1 job per transaction, {clients} producer(s), while workers drain the same queue",
            "jobs/s", [
                Entry("pgrelay", "SQL under pgbench: SELECT pgrelay.enqueue(...); 1 jobs-worker (defaults) draining",
                      lambda i, c=clients: pgrelay.enqueue_draining(c, seconds)),
                Entry("pgmq", "SQL under pgbench: SELECT pgmq.send(...); 1 consumer draining "
                              "(pgmq.read of 100 + pgmq.archive, bench/peer_apps/pgmq_drainer.py)",
                      lambda i, c=clients: peers.pgmq_pgbench(dsns["pgmq"], "send_one", c, wd("pgmq"),
                                                              seconds=seconds, draining=True)),
            ], note="the consumer is started and connected (pgrelay's worker listening) before pgbench starts and "
                    "drains for the whole run. pgrelay's worker waits for a NOTIFY only once it is idle "
                    "(pgrelay.idle() after about 50 ms without a job; busy, it polls every 2 ms), and producers "
                    "send NOTIFY only then. pgmq's consumer reads 100 (visibility timeout 30 s) and archives them, "
                    "sleeps 10 ms when it found none, and stops with SIGTERM after pgbench. \"drained\": jobs finished (pgrelay._finished) or "
                    "messages archived (pgmq.a_bench) when pgbench ended. Checked: pgrelay._jobs + "
                    "pgrelay._finished hold every job enqueued, and all succeed once drained; pgmq.q_bench + "
                    "pgmq.a_bench hold exactly the messages sent"))
    figures.append(Figure(
        "enqueue_bulk_1000", "(2) bulk enqueue, 1,000 jobs per call, 1 producer", "jobs/s", [
            Entry("pgrelay", "SQL under pgbench: pgrelay.enqueue_bulk(<json array literal>)",
                  lambda i: pgrelay.pgbench_timed("enqueue_bulk_1000.sql", 1000, 1, seconds)),
            Entry("pgmq", "SQL under pgbench: pgmq.send_batch(<jsonb[] literal>)",
                  lambda i: peers.pgmq_pgbench(dsns["pgmq"], "send_batch_1000", 1, wd("pgmq"), seconds=seconds)),
            Entry("pgrelay", "Python: pgrelay.client.enqueue_bulk",
                  lambda i: peers.enqueue("pgrelay-client", dsns["pgrelay"], 1, seconds, batch=1000)),
            Entry("pgrelay", "Python: pgrelay.client.enqueue_many(task, 1,000 payloads)",
                  lambda i: peers.enqueue("pgrelay-many", dsns["pgrelay"], 1, seconds, batch=1000)),
            Entry("pgqueuer", "Python: Queries.enqueue(lists of 1,000)",
                  lambda i: peers.enqueue("pgqueuer", dsns["pgqueuer"], 1, seconds, batch=1000)),
            Entry("procrastinate", "Python: Task.batch_defer_async(1,000 kwargs)",
                  lambda i: peers.enqueue("procrastinate", dsns["procrastinate"], 1, seconds, batch=1000)),
        ]))
    trigger_note = (
        "orders/s = jobs/s (one job per order); the baseline is the same INSERTs into the same table without a "
        "trigger. Every peer's trigger is AFTER INSERT FOR EACH ROW; pgrelay's is measured both FOR EACH ROW and FOR "
        "EACH STATEMENT (its transition-table form). Procrastinate: procrastinate_defer_jobs_v1 is the "
        "stored procedure its own Task.defer runs (procrastinate/sql/queries.sql); its docs describe deferring "
        "through its stored procedures from other languages but give no SQL reference for it. PgQueuer has no "
        "SQL enqueue function of its own; its docs (integrations/postgrest.md) give one to create, inserting the "
        "job into pgqueuer and its 'queued' row into pgqueuer_log, and the trigger does just that.")

    def trigger_entries(workload: str, clients: int) -> list[Entry]:
        entries = [Entry(system, trigger_bench.HOW[system],
                         lambda i, s=system: trigger_bench.run(s, dsns[s], workload, clients, seconds))
                   for system in trigger_bench.SYSTEMS]
        entries.insert(1, Entry("pgrelay", trigger_bench.HOW["pgrelay-statement"],
                                lambda i: trigger_bench.run("pgrelay", dsns["pgrelay"], workload, clients, seconds,
                                                            trigger="pgrelay-statement")))
        return entries

    for clients in (1, 8):
        figures.append(Figure(
            f"trigger_one_{clients}", f"(3) enqueue from a trigger, 1 order per transaction, {clients} client(s)",
            "orders/s", trigger_entries("one", clients), note=trigger_note))
    figures.append(Figure(
        "trigger_bulk_1000", "(3) enqueue from a trigger, 1,000 orders per INSERT ... SELECT, 1 client", "orders/s",
        trigger_entries("bulk_1000", 1), note=trigger_note))
    for clients in args.consume_clients:
        figures.append(Figure(
            f"consume_100_{clients}", f"(SQL) claim 100 + complete them (2 transactions), {clients} client(s)",
            "jobs/s", [
                Entry("pgrelay", f"pgbench -t {tx}: pgrelay.consume(batch => 100); pgrelay.ack_many(...)",
                      lambda i, c=clients: pgrelay.consume_ack(c, tx)),
                Entry("pgmq", f"pgbench -t {tx}: pgmq.read(queue, 30, 100); pgmq.archive(queue, ids)",
                      lambda i, c=clients: peers.pgmq_pgbench(dsns["pgmq"], "read_archive_100", c, wd("pgmq"),
                                                              transactions=tx)),
            ], note="no handler and no worker process: the SQL cost of a batched claim-and-complete cycle",
            runs=max(args.runs, args.sql_runs)))
    figures.append(Figure(
        "cycle_reference", "(SQL) claim 100 + complete them (2 transactions), 1 client, against the physical reference",
        "jobs/s", [
            Entry("pgrelay", f"pgbench -t {tx}: pgrelay.consume(batch => 100); pgrelay.ack_many(...)",
                  lambda i: pgrelay.consume_ack(1, tx)),
            Entry("plain", f"pgbench -t {tx}: claim 100 due rows of plain_jobs in claim order (FOR UPDATE SKIP "
                           "LOCKED) and UPDATE them taken; move them to plain_jobs_archive (DELETE ... RETURNING "
                           "into INSERT)",
                  lambda i: pgrelay.plain_cycle(tx)),
        ], note="the physical reference does what any two-transaction claim-and-complete must: one UPDATE of "
                "100 rows found in claim order by a partial index, then their move to a history table with a "
                "primary key (bench/pgbench/baseline_claim_archive_100.sql); pgrelay's cycle also records the "
                "lease (worker, times, attempt), checks its arguments and the lease at completion, and counts "
                "the jobs per queue",
        runs=max(args.runs, args.sql_runs)))
    for count in (1, 2):
        for tuning in ("default", "tuned"):
            pg_args = () if tuning == "default" else args.pgrelay_tuned
            entries = [Entry("pgrelay", f"jobs-worker {worker_bench.describe(pg_args)}, N = {n:,}",
                             lambda i, c=count, a=pg_args: pgrelay.drain(n, c, a))]
            for system, jobs in (("pgqueuer", n), ("procrastinate", n_proc)):
                config = peers.WORKER_CONFIGS[system][tuning]
                entries.append(Entry(system, f"{peers.describe_config(system, config)}, N = {jobs:,}",
                                     lambda i, s=system, c=count, cfg=config, j=jobs:
                                     peers.drain(s, dsns[s], j, c, cfg, wd(s))))
            figures.append(Figure(
                f"drain_{count}_{tuning}", f"(4) drain no-op jobs, {count} worker process(es), {tuning} settings",
                "jobs/s", entries))
    idle_gap = worker_bench.IDLE_PROBE_GAP
    figures.append(Figure(
        "latency_idle", "(5) pickup latency, idle queue, enqueue → handler start, 1 worker (defaults)", "ms", [
            Entry("pgrelay", "jobs-worker defaults", lambda i: pgrelay.latency_idle(), key="p50_ms"),
            Entry("pgqueuer", "batch_size 10", lambda i: peers.pickup_latency(
                "pgqueuer", dsns["pgqueuer"], wd("pgqueuer"), gap=idle_gap), key="p50_ms"),
            Entry("procrastinate", "concurrency 1", lambda i: peers.pickup_latency(
                "procrastinate", dsns["procrastinate"], wd("procrastinate"), gap=idle_gap), key="p50_ms"),
        ], higher_is_better=False,
        note=f"probes {idle_gap * 1000:.0f} ms apart for every system (under load {worker_bench.PROBE_GAP * 1000:.0f} "
             "ms): after a job a pgrelay worker keeps polling every 2 ms for about 50 ms before it goes idle "
             "(pgrelay.idle(), then it waits for a NOTIFY), so probes 20 ms apart would never find it idle"))

    def backlog(system: str, tuning: str) -> int:
        """(5) under load: enough no-op jobs to outlast the probes (+2 s), at this run's drain rate."""
        drain = next((e for f in figures if f.id == f"drain_1_{tuning}" for e in f.entries
                      if e.system == system and e.runs), None)
        rate = drain.summary()["median"] if drain else FALLBACK_DRAIN_RATES[system]
        seconds_needed = worker_bench.PROBES * worker_bench.PROBE_GAP + 2
        return min(500_000, max(1000, math.ceil(rate * seconds_needed / 1000) * 1000))

    for tuning in ("default", "tuned") if args.full else ("default",):
        pg_args = () if tuning == "default" else args.pgrelay_tuned
        entries = [Entry("pgrelay", f"jobs-worker {worker_bench.describe(pg_args)}, probes at priority 10",
                         lambda i, a=pg_args, t=tuning: pgrelay.latency_loaded(backlog("pgrelay", t), a),
                         key="p50_ms")]
        for system in ("pgqueuer", "procrastinate"):
            config = peers.WORKER_CONFIGS[system][tuning]
            entries.append(Entry(
                system, f"{peers.describe_config(system, config)}, probes at priority {peers.PROBE_PRIORITY}",
                lambda i, s=system, t=tuning: peers.pickup_latency(s, dsns[s], wd(s), backlog=backlog(s, t),
                                                                   tuning=t),
                key="p50_ms"))
        figures.append(Figure(
            "latency_loaded" + ("" if tuning == "default" else "_tuned"),
            f"(5) pickup latency under load, 1 worker ({tuning} settings) draining a backlog, "
            "enqueue → handler start",
            "ms", entries, higher_is_better=False,
            note="the backlog is sized by the system's own 1-worker drain rate in (4) (this run's, else a fixed "
                 "guess) to outlast the probes by about 2 s; probes go in at a higher priority than the backlog "
                 "(pgrelay, PgQueuer and Procrastinate all claim higher priority first; at equal priority they "
                 "would wait behind the whole backlog, FIFO) and stop when no backlog job is waiting, so a run "
                 "counts the probes sent until then"))

    def steady_latency_rate() -> int:
        """(5) under a steady load: STEADY_LATENCY_SHARE of pgrelay's 1-worker tuned drain rate (this run's)."""
        drain = next((e for f in figures if f.id == "drain_1_tuned" for e in f.entries
                      if e.system == "pgrelay" and e.runs), None)
        return round(STEADY_LATENCY_SHARE * (drain.summary()["median"] if drain else FALLBACK_TUNED_DRAIN_RATE))

    share = f"{STEADY_LATENCY_SHARE:.0%}"
    figures.append(Figure(
        "latency_steady_tuned",
        f"(5) pickup latency under a steady load of {share} of the tuned drain rate, 1 worker, tuned settings", "ms",
        [Entry("pgrelay", f"jobs-worker {worker_bench.describe(args.pgrelay_tuned)}; producer: pgrelay.enqueue_bulk "
                          f"of bench.probe jobs every 5 ms for {args.latency_steady_seconds:,} s",
               lambda i: pgrelay.latency_steady(steady_latency_rate(), args.pgrelay_tuned,
                                                args.latency_steady_seconds), key="p50_ms")],
        higher_is_better=False,
        note=f"the rate is {share} of pgrelay's 1-worker tuned drain rate in (4) (this run's median, else "
             f"{FALLBACK_TUNED_DRAIN_RATE:,} jobs/s); latency = handler start - created_at of every job, those "
             f"created in the first {worker_bench.STEADY_LATENCY_WARMUP:g} s left out (warm-up); \"drained\" = "
             "jobs succeeded within the window / window; pgrelay only: the peers are not run here (the issue "
             "makes them optional)"))

    for p in args.debris_sizes:
        figures.append(Figure(
            f"debris_{size_label(p)}",
            f"(7) claim 100 + complete them, 1 client, with the debris of {p:,} jobs pushed through while a "
            "snapshot was held", "jobs/s",
            [Entry(system, debris_bench.HOW[system],
                   lambda i, s=system, p=p: debris_bench.run(s, dsns[s], p, wd(s)), key="debris_rate")
             for system in debris_bench.SYSTEMS],
            runs=args.debris_runs,
            note=f"the rate with the debris (and the push-through's) next to the clean rate of the same run: "
                 f"{debris_bench.MEASURE_TX * 100:,} jobs claimed and completed of "
                 f"{debris_bench.MEASURE_FILL:,} waiting; the table in section (7) has every figure"))

    for tuning in ("default", "tuned"):
        pg_args = () if tuning == "default" else args.pgrelay_tuned
        w = args.steady_workers
        figures.append(Figure(
            f"steady_{tuning}",
            f"(6) steady load, {args.steady_rate:,} jobs/s for {args.steady_seconds:,} s, {w} worker(s), "
            f"{tuning} settings",
            "jobs/s", [Entry("pgrelay", f"jobs-worker {worker_bench.describe(pg_args)} × {w}; "
                                        f"producer: pgrelay.enqueue_bulk of {max(1, args.steady_rate // 10):,} "
                                        "every 0.1 s",
                             lambda i, a=pg_args, c=w: pgrelay.steady(c, a, args.steady_seconds, args.steady_rate,
                                                                       args.steady_sample_seconds))],
            runs=args.steady_runs,
            note="jobs/s drained during the window (jobs succeeded / window); pgrelay only: the peers are not run "
                 "here (the issue makes them optional)"))
    hold = args.snapshot_hold_seconds
    before, after = round(hold / 3), round(2 * hold / 3)
    figures.append(Figure(
        "steady_snapshot",
        f"(8) steady load, {args.steady_rate:,} jobs/s, {args.steady_workers} worker(s), default settings, a snapshot "
        f"held for {hold:,} s ({before:,} s into the window, then {after:,} s after)", "jobs/s",
        [Entry("pgrelay", f"jobs-worker {worker_bench.describe(worker_bench.DEFAULT_ARGS)} × {args.steady_workers}; "
                          f"producer: pgrelay.enqueue_bulk of {max(1, args.steady_rate // 10):,} bench.probe jobs "
                          "every 0.1 s; another session idle in a REPEATABLE READ transaction during the hold",
               lambda i: pgrelay.steady_snapshot(args.steady_workers, args.steady_rate, before, hold, after))],
        runs=args.steady_runs,
        note="jobs/s drained during the whole window; per phase, see section (8); pgrelay only, no target: "
             "the figures are reported"))

    if args.figures:
        figures = [f for f in figures if f.id.startswith(tuple(args.figures))]
    if args.only:
        for f in figures:
            f.entries = [e for e in f.entries if e.system in args.only or e.system in REFERENCES]
        figures = [f for f in figures if any(e.system not in REFERENCES for e in f.entries)]
    return figures


def size_label(n: int) -> str:
    """(7)'s figure ids: 50000 -> 50k, 1000000 -> 1m."""
    if n % 1_000_000 == 0:
        return f"{n // 1_000_000}m"
    return f"{n // 1000}k" if n % 1000 == 0 else str(n)


async def measure(figures: list[Figure], runs: int) -> None:
    for figure in figures:
        for i in range(figure.runs or runs):
            order = figure.entries if i % 2 == 0 else list(reversed(figure.entries))
            for entry in order:
                started = time.monotonic()
                try:
                    result = await entry.run(i)
                except Exception as exc:      # noqa: BLE001 - a failed run is reported, the others go on
                    entry.errors.append(f"run {i + 1}: {type(exc).__name__}: {exc}")
                    print(f"  {figure.title} | {NAMES[entry.system]}: {entry.how} | run {i + 1}: FAILED: {exc}",
                          flush=True)
                    continue
                result["run"] = i + 1
                entry.runs.append(result)
                if figure.unit == "ms":
                    shown = (f"p50 {result['p50_ms']:.1f} ms, p95 {result['p95_ms']:.1f} ms, "
                             f"p99 {result['p99_ms']:.1f} ms")
                    if result.get("backlog"):
                        shown += f" ({result['probes']} probes, backlog {result['backlog']:,})"
                    if "target_rate" in result:
                        shown += (f", max {result['max_ms']:.1f} ms ({result['counted']:,} jobs after the warm-up; "
                                  f"target {result['target_rate']:,} jobs/s, enqueued {result['enqueue_rate']:,.0f}, "
                                  f"drained {result['drain_rate']:,.0f})")
                else:
                    shown = f"{result[entry.key]:,.0f} {figure.unit}"
                    if "drained_in_window" in result:
                        shown += f" (drained {result['drained_in_window']:,} during the run)"
                    if "backlog_end" in result:
                        shown += (f" (enqueued {result['enqueue_rate']:,.0f} jobs/s; backlog at the end "
                                  f"{result['backlog_end']:,})")
                    if "clean_rate" in result:
                        shown += (f" with debris, clean {result['clean_rate']:,.0f} ({result['debris_ratio']:.2f}×); "
                                  f"push-through {result['push_rate']:,.0f} jobs/s ({result['push_ratio']:.2f}×); "
                                  f"{result['hot_table']} {size(result['debris_table']['total_bytes'])}, "
                                  f"n_dead_tup {result['debris_table']['dead_tuples']:,}")
                    for ph in result.get("phases", ()):
                        shown += (f"; {ph['phase']}: {ph['jobs_per_s']:,.0f} jobs/s, p50 {ph['p50_ms']:,.1f} ms, "
                                  f"p99 {ph['p99_ms']:,.1f} ms, pgrelay._jobs {size(ph['jobs_bytes_end'])}")
                print(f"  {figure.title} | {NAMES[entry.system]}: {entry.how} | run {i + 1}: {shown} "
                      f"[{time.monotonic() - started:.1f}s]", flush=True)


# -- report ------------------------------------------------------------------------------------------------

def machine() -> dict[str, Any]:
    info: dict[str, Any] = {"cpus": os.cpu_count(), "platform": platform.platform(),
                            "python": platform.python_version()}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                info["memory_gb"] = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return info


def ratio(a: dict | None, b: dict | None, higher_is_better: bool) -> str:
    if not a or not b or not b["median"] or not a["median"]:
        return ""
    r = a["median"] / b["median"] if higher_is_better else b["median"] / a["median"]
    return f"{r:.2f}×"


def pgrelay_like_for_like(figure: Figure, entry: Entry) -> Entry | None:
    """The pgrelay entry to compare ``entry`` with: the SQL one for pgmq, the Python one for the others."""
    pg = [e for e in figure.entries if e.system == "pgrelay"]
    if not pg:
        return None
    if len(pg) == 1:
        return pg[0]
    sql = [e for e in pg if e.how.startswith(("SQL", "pgbench"))]
    py = [e for e in pg if e.how.startswith("Python")]
    if entry.system == "pgmq":
        return sql[0] if sql else pg[0]
    return py[0] if py else pg[0]


def targets(figures: list[Figure]) -> list[dict[str, Any]]:
    """Issue 4's targets, from this run's figures (each side: its best median among the given entries;
    the SQL target once per number of clients), then issue 24's goals (goals_24)."""
    def best(prefix: str, systems: tuple[str, ...], python_only: bool = False) -> tuple[float, str] | None:
        found = [(e.summary()["median"], f"{NAMES[e.system]}, {f.title}: {e.how}")
                 for f in figures if f.id.startswith(prefix) for e in f.entries
                 if e.system in systems and e.runs and not (python_only and e.how.startswith("SQL"))]
        return max(found) if found else None

    # (the SQL target is like for like, once per number of clients: the same pgbench run shape)
    sql = [(f"SQL only, claim 100 + complete, {f.id.rsplit('_', 1)[1]} client(s): pgrelay ≥ pgmq read + archive",
            f.id, ("pgmq",), False, 1) for f in figures if f.id.startswith("consume_100_")]
    out = []
    for target, prefix, peer_systems, python_only, factor in (
            ("drain: pgrelay ≥ 2× the best job-queue peer", "drain_", ("pgqueuer", "procrastinate"), False, 2),
            ("bulk enqueue, Python APIs: pgrelay ≥ 2× the best job-queue peer", "enqueue_bulk_",
             ("pgqueuer", "procrastinate"), True, 2),
            *sql):
        pg, peer = best(prefix, ("pgrelay",), python_only), best(prefix, peer_systems)
        if pg and peer:
            out.append({"issue": 4, "target": target, "pgrelay": pg, "peer": peer, "ratio": pg[0] / peer[0],
                        "met": pg[0] >= factor * peer[0]})
    lat = next((f for f in figures if f.id == "latency_idle"), None)
    e = next((e for e in lat.entries if e.system == "pgrelay" and e.runs), None) if lat else None
    if e:
        p50 = e.summary("p50_ms")["median"]
        out.append({"issue": 4, "target": "pickup latency p50 on an idle queue < 10 ms", "pgrelay": (p50, e.how),
                    "shown": f"{p50:,.1f} ms", "peer": None, "ratio": None, "met": p50 < 10})
    return out + goals_24(figures)


def goals_24(figures: list[Figure]) -> list[dict[str, Any]]:
    """Issue 24's goals, from this run's figures. Item 1: pgrelay's SQL enqueue against pgmq.send, the
    ratio of their medians in the same figure of the same run, 1 and 8 producers, without and with a
    consumer draining the queue; the idle pickup latency (p50 and p99). Item 2: the pickup latency under
    a steady load, and the tuned drain rate, to compare by hand with the figure before the change. Item 3:
    (7)'s rates with the debris of a held snapshot and during the push-through, each at least DEBRIS_GOAL
    of the clean rate of the same run (medians of the per-run ratios), at every size. The SQL cycle at
    least REFERENCE_GOAL of its physical reference (cycle_reference, the ratio of the medians)."""
    by_id = {f.id: f for f in figures}
    out: list[dict[str, Any]] = []
    for clients in (1, 8):
        for suffix, label in (("", ""), ("_draining", ", consumer draining the queue")):
            f = by_id.get(f"enqueue_one_{clients}{suffix}")
            peer = next((e for e in f.entries if e.system == "pgmq" and e.runs), None) if f else None
            pg = pgrelay_like_for_like(f, peer) if peer else None
            if pg is None or not pg.runs:
                continue
            a, b = pg.summary()["median"], peer.summary()["median"]
            out.append({"issue": 24, "target": f"item 1: SQL enqueue, 1 job per transaction, {clients} producer(s)"
                                               f"{label}: pgrelay.enqueue ≥ 1.0× pgmq.send (same-run ratio)",
                        "pgrelay": (a, f"{f.title}: {pg.how}"), "peer": (b, peer.how),
                        "ratio": a / b, "met": a >= b})

    def latency(fid: str) -> tuple[Entry, float, float] | None:
        f = by_id.get(fid)
        e = next((e for e in f.entries if e.system == "pgrelay" and e.runs), None) if f else None
        return (e, e.summary("p50_ms")["median"], e.summary("p99_ms")["median"]) if e else None

    idle = latency("latency_idle")
    if idle:
        e, p50, p99 = idle
        out.append({"issue": 24, "target": "pickup latency on an idle queue (probes "
                                           f"{worker_bench.IDLE_PROBE_GAP * 1000:.0f} ms apart): p50 < 5 ms and "
                                           "p99 < 25 ms",
                    "pgrelay": (p50, e.how), "shown": f"p50 {p50:,.1f} ms, p99 {p99:,.1f} ms", "peer": None,
                    "ratio": None, "met": p50 < 5 and p99 < 25})
    steady = latency("latency_steady_tuned")
    if steady:
        e, p50, p99 = steady
        rate = statistics.median(r["target_rate"] for r in e.runs)
        out.append({"issue": 24, "target": f"item 2: pickup latency under a steady load of {STEADY_LATENCY_SHARE:.0%} "
                                           "of the tuned drain rate, 1 worker, tuned settings: p50 ≤ 10 ms and "
                                           "p99 ≤ 50 ms",
                    "pgrelay": (p50, e.how), "shown": f"p50 {p50:,.1f} ms, p99 {p99:,.1f} ms at {rate:,.0f} jobs/s",
                    "peer": None, "ratio": None, "met": p50 <= 10 and p99 <= 50})
    f = by_id.get("drain_1_tuned")
    e = next((e for e in f.entries if e.system == "pgrelay" and e.runs), None) if f else None
    if e:
        rate = e.summary()["median"]
        out.append({"issue": 24, "target": "item 2: tuned drain rate, 1 worker (drain_1_tuned), jobs/s: no more than "
                                           "5% below the figure before the change (compared by hand)",
                    "pgrelay": (rate, e.how), "shown": f"{rate:,.0f} jobs/s", "peer": None, "ratio": None,
                    "met": None})

    def debris(e: Entry) -> str:
        return (f"{e.summary('debris_ratio')['median']:.2f}× with debris ({e.summary()['median']:,.0f} of "
                f"{e.summary('clean_rate')['median']:,.0f} jobs/s), push-through "
                f"{e.summary('push_ratio')['median']:.2f}× ({e.summary('push_rate')['median']:,.0f} jobs/s)")

    for f in (f for f in figures if f.id.startswith("debris_")):
        pg = next((e for e in f.entries if e.system == "pgrelay" and e.runs), None)
        if pg is None:
            continue
        peer = next((e for e in f.entries if e.system == "pgmq" and e.runs), None)
        ratios = (pg.summary("debris_ratio")["median"], pg.summary("push_ratio")["median"])
        out.append({"issue": 24, "target": f"item 3: {pg.runs[0]['size']:,} jobs pushed through while a snapshot is "
                                           "held, claim 100 + complete (SQL, 1 client): with the debris and during "
                                           f"the push-through ≥ {DEBRIS_GOAL}× the clean rate (same run)",
                    "pgrelay": (pg.summary()["median"], pg.how), "shown": debris(pg),
                    "peer": (peer.summary()["median"], peer.how) if peer else None,
                    "peer_shown": f"pgmq: {debris(peer)}" if peer else None,
                    "ratio": None, "met": min(ratios) >= DEBRIS_GOAL})
    f = by_id.get("cycle_reference")
    pg = next((e for e in f.entries if e.system == "pgrelay" and e.runs), None) if f else None
    ref = next((e for e in f.entries if e.system == "plain" and e.runs), None) if f else None
    if pg and ref:
        a, b = pg.summary()["median"], ref.summary()["median"]
        out.append({"issue": 24, "target": "SQL claim 100 + complete (2 transactions), 1 client: pgrelay.consume + "
                                           f"ack_many ≥ {REFERENCE_GOAL}× the physical reference (plain FOR UPDATE "
                                           "SKIP LOCKED claim + move to an archive table; same-run ratio)",
                    "pgrelay": (a, pg.how), "peer": (b, NAMES["plain"]), "ratio": a / b,
                    "met": a >= REFERENCE_GOAL * b})
    return out


def paired(figure: Figure) -> str | None:
    """pgrelay's SQL against pgmq (or the plain reference) run by run, for a figure whose runs alternate
    one for one (the SQL figures, and (1)'s pgbench entries, which are next to each other): how many of
    the pairs pgrelay won and the geometric mean of the pair ratios. A run of each, taken back to back,
    shares the machine's speed at that moment, which the medians of noisy runs do not."""
    peer = next((e for e in figure.entries if e.system in ("pgmq", "plain") and e.runs), None)
    pg = pgrelay_like_for_like(figure, peer) if peer else None
    if pg is None or peer is None or len(pg.values) != len(peer.values):
        return None
    ratios = [a / b for a, b in zip(pg.values, peer.values, strict=True) if a > 0 and b > 0]
    if not ratios:
        return None
    won = sum(r > 1 for r in ratios)
    return (f"{figure.title}: pgrelay faster in {won} of {len(ratios)} pairs (pgrelay's run i against "
            f"{NAMES[peer.system]}'s run i); geometric mean of the pair ratios "
            f"{statistics.geometric_mean(ratios):.2f}×")


def render(meta: dict[str, Any], figures: list[Figure], goals: list[dict[str, Any]]) -> str:
    lines = [f"# pgrelay against its peers — {meta['date']} ({meta['mode']})", ""]
    lines += [f"Command: `{meta['command']}`", ""]
    lines += ["## Machine and settings", ""]
    m = meta["machine"]
    lines.append(f"- machine: {m.get('cpus')} CPUs ({m.get('cpu_model', '?')}), {m.get('memory_gb', '?')} GB RAM, "
                 f"{m['platform']}, Python {m['python']}; load average {meta['load_start']:.2f} at the start, "
                 f"{meta['load_end']:.2f} at the end (another busy process on the machine skews every figure)")
    lines.append(f"- server: PostgreSQL {meta['server_version']}, one throwaway cluster for all systems, started with "
                 f"`{meta['server_options']}`; a database per system")
    lines.append("- settings: " + ", ".join(f"{k}={v}" for k, v in meta["settings"].items()))
    lines.append("- changed from the defaults (pg_settings): " + ", ".join(
        f"{r['name']}={r['setting']}{r['unit'] or ''} ({r['source']})" for r in meta["non_default_settings"]))
    lines.append("- versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()))
    lines.append("- installed with: " + "; ".join(f"{k}: {v}" for k, v in meta["installed_with"].items()))
    p = meta["parameters"]
    lines.append(f"- parameters: {p['runs']} runs per figure, alternating across systems; enqueue windows "
                 f"{p['seconds']} s; SQL consume -t {p['transactions']} per client, "
                 f"{p.get('sql_runs', p['runs'])} runs; drains N = {p['jobs']:,} "
                 f"(Procrastinate N = {p['procrastinate_jobs']:,}: at a few hundred jobs/s a larger N only "
                 f"costs time); latency {p['probes']} probes, {p['idle_probe_gap_ms']:.0f} ms apart on an idle "
                 f"queue, {p['probe_gap_ms']:.0f} ms apart under load; steady-load latency "
                 f"{p['latency_steady_seconds']:,} s per run (the first {p['latency_steady_warmup_s']:g} s not "
                 f"counted); steady load "
                 f"{p['steady_rate']:,} jobs/s for {p['steady_seconds']:,} s, {p['steady_workers']} worker(s), "
                 f"{p['steady_runs']} run(s), sampled every {p['steady_sample_seconds']:g} s; debris (7): "
                 + ", ".join(f"{n:,}" for n in p["debris_sizes"]) + f" jobs pushed through, {p['debris_runs']} "
                 f"run(s), rates on {debris_bench.MEASURE_FILL:,} waiting jobs, -t {debris_bench.MEASURE_TX}; "
                 f"snapshot held {p['snapshot_hold_seconds']:,} s in (8), sampled every "
                 f"{SNAPSHOT_SAMPLE_SECONDS:g} s")
    lines.append(f"- pgrelay tuned: jobs-worker {' '.join(p['pgrelay_tuned'])}; PgQueuer tuned: batch_size 100 "
                 "(default 10); Procrastinate tuned: concurrency 10 with a pool of 12 (default concurrency 1)")
    lines.append("")
    for issue, heading, peer_column in ((4, "Issue 4's targets", "best peer"),
                                        (24, "Issue 24's goals", "pgmq or the plain reference, same figure and run")):
        rows = [g for g in goals if g["issue"] == issue]
        if not rows:
            continue
        lines += [f"## {heading}", "", f"| target | pgrelay | {peer_column} | ratio | met |", "|---|---:|---:|---:|---|"]
        for g in rows:
            pg = g.get("shown") or f"{g['pgrelay'][0]:,.0f}"
            peer = g.get("peer_shown") or (f"{g['peer'][0]:,.0f} ({g['peer'][1]})" if g["peer"] else "—")
            r = f"{g['ratio']:.2f}×" if g["ratio"] is not None else "—"
            met = "compare by hand" if g["met"] is None else "yes" if g["met"] else "**no**"
            lines.append(f"| {g['target']} | {pg} | {peer} | {r} | {met} |")
        lines.append("")
    lines += ["## All figures", "",
              f"Median of {p['runs']} runs (SQL consume: {p.get('sql_runs', p['runs'])}) (min–max). "
              "pgrelay ÷ this: pgrelay's like-for-like entry in the same "
              "group (its SQL under pgbench for pgmq, its Python client for the Python APIs, its worker for "
              "drains and latency) over this one; for latency, this one's p50 over pgrelay's (> 1: pgrelay is "
              "better).", "",
              "| workload | system | how | result | pgrelay ÷ this |", "|---|---|---|---:|---:|"]
    for f in figures:
        for e in f.entries:
            if f.unit == "ms":
                result = " / ".join(cell(e.summary(k), ".1f") if e.runs else "failed"
                                    for k in ("p50_ms", "p95_ms", "p99_ms")) + " ms (p50 / p95 / p99)"
                if e.runs and e.runs[0].get("backlog"):
                    result += f"; {span(e, 'probes')} probes, backlog {span(e, 'backlog')}"
                if e.runs and "target_rate" in e.runs[0]:
                    result += (f"; max {cell(e.summary('max_ms'), '.1f')} ms; target {span(e, 'target_rate')} "
                               f"jobs/s, enqueued {cell(e.summary('enqueue_rate'))} jobs/s, drained "
                               f"{cell(e.summary('drain_rate'))} jobs/s; {span(e, 'counted')} jobs counted")
            else:
                result = cell(e.summary()) + f" {f.unit}"
                if e.runs and "drained_in_window" in e.runs[0]:
                    result += f"; drained during the run {span(e, 'drained_in_window')}"
                if e.runs and "backlog_end" in e.runs[0]:
                    result += f"; backlog at the end {span(e, 'backlog_end')}"
                if e.runs and "clean_rate" in e.runs[0]:
                    result += (f" with debris; clean {cell(e.summary('clean_rate'))} jobs/s "
                               f"({cell(e.summary('debris_ratio'), '.2f')}×); push-through "
                               f"{cell(e.summary('push_rate'))} jobs/s ({cell(e.summary('push_ratio'), '.2f')}×)")
            base = pgrelay_like_for_like(f, e)
            r = "" if e.system == "pgrelay" or base is None else ratio(base.summary(), e.summary(), f.higher_is_better)
            lines.append(f"| {f.title} | {NAMES[e.system]} | {e.how} | {result} | {r} |")
    lines.append("")
    pairs = [line for line in (paired(f) for f in figures
                               if f.id.startswith(("enqueue_one_", "consume_100_", "cycle_reference"))) if line]
    if pairs:
        lines += ["Pairs (SQL figures, alternating runs):", ""] + [f"- {line}" for line in pairs] + [""]
    notes = [f for f in figures if f.note]
    if notes:
        lines += ["Notes:", ""] + [f"- {f.title}: {f.note}" for f in notes] + [""]
    lines += steady_report(figures) + debris_report(figures) + snapshot_report(figures)
    errors = [(f, e, err) for f in figures for e in f.entries for err in e.errors]
    if errors:
        lines += ["## Failed runs", ""] + [f"- {f.title} / {NAMES[e.system]} ({e.how}): {err.splitlines()[0]}"
                                           for f, e, err in errors] + [""]
    lines += ["## How each figure is measured", "",
              "- (1)/(2) pgbench rows: bench/sql_bench.py's scripts for pgrelay (bench/pgbench/*.sql), the same shape "
              "for pgmq (bench/peers.py writes them); -T windows, --protocol=simple, jobs/s = tps × jobs per call; "
              "every run is checked by counting the rows in the table afterwards.",
              ("- (1) while draining: the same pgbench runs; before pgbench starts, pgrelay: one jobs-worker "
               "process with default settings (bench/noop_app.py) is started and listening "
               "(Pgrelay.enqueue_draining); pgmq: one bench/peer_apps/pgmq_drainer.py process, connected, "
               "reads 100 + archives them in a loop (peers.pgmq_pgbench(draining=True)). Both drain for the "
               "whole run; the pgmq consumer is then stopped (SIGTERM, exit 0), the pgrelay worker drains "
               "what is left. Checked: pgrelay._jobs + pgrelay._finished (one snapshot) hold every job "
               "enqueued, all succeeded at their first attempt once drained; pgmq.q_bench + pgmq.a_bench "
               "hold exactly the messages sent, each once."),
              "- (1)/(2) Python rows: bench/peers.py's producer harness: min(clients, 2) processes, one connection "
              "per producer, each call its own transaction (autocommit), all producers released together; "
              "jobs/s = jobs enqueued in the window / window; checked by counting rows.",
              "- (3) bench/trigger_bench.py: bench/pgbench/orders_insert_one.sql (1 order per transaction) and "
              "orders_insert_1000.sql (1,000 per INSERT ... SELECT generate_series) under pgbench -T, into "
              "bench_orders (bench/pgbench/orders_schema.sql) in each system's database, which has that system's "
              "AFTER INSERT FOR EACH ROW trigger (none in bench_baseline); orders/s = tps × orders per "
              "transaction. Every run starts from emptied, vacuumed tables and is checked: as many orders as "
              "pgbench reports, as many jobs, each naming a distinct existing order (pgrelay: the public view "
              "pgrelay.jobs; the peers: their job tables).",
              "- (SQL) pgbench -t from a pre-filled queue (10% more than read, + 1,000); checked: every job read was "
              "acked (pgrelay) or archived (pgmq).",
              ("- (SQL) against the physical reference (cycle_reference): pgrelay's run is the consume_100 one; the "
               "reference is bench/pgbench/baseline_claim_archive_100.sql on plain_jobs in pgrelay's database "
               "(bench/pgbench/baseline_schema.sql, pre-filled with as many jobs by one INSERT ... SELECT, "
               "vacuumed, checkpointed): one transaction claims 100 due rows in claim order (FOR UPDATE SKIP "
               "LOCKED, through a partial index like pgrelay's) and sets them taken, a second moves them to "
               "plain_jobs_archive; the same -t, 1 client, alternating with pgrelay's runs; checked: the archive "
               "holds every job claimed, none is left taken."),
              "- (4) pgrelay: bench/worker_bench.py's drain (queue paused while N jobs are enqueued and workers "
              "connect; clock from pgrelay.resume() to the last finished_at). Peers: N jobs enqueued with their bulk "
              "API into an emptied, vacuumed, checkpointed table; worker processes (bench/peer_apps/) started, "
              "connected and released together; clock from the first handler start (time.time() in the handler) "
              "to the last completion in the peer's own table (pgqueuer_log 'successful' rows; "
              "procrastinate_events 'succeeded'). Every job is checked to have succeeded exactly once.",
              "- (5) 1 idle worker, probes enqueued one at a time (each its own transaction) "
              f"{p['idle_probe_gap_ms']:.0f} ms apart (a pgrelay worker polls for about 50 ms after a job "
              "before it goes idle and waits for a NOTIFY); latency = "
              "handler start (time.time()) - the enqueueing transaction's now() as the system recorded it "
              "(pgrelay created_at; pgqueuer_log 'queued' row; procrastinate_events 'deferred' row).",
              "- (5) under load: pgrelay: bench/worker_bench.py's latency_loaded (queue paused while the backlog "
              "is enqueued and the worker connects, then resumed); peers: bench/peers.py's pickup_latency with a "
              "backlog (enqueued with their bulk API, worker released after). 0.5 s after the drain starts, "
              "probes at a higher priority every 20 ms until no backlog job is waiting; every backlog job and "
              "probe is checked to have succeeded once.",
              ("- (5) under a steady load: bench/worker_bench.py's latency_steady: emptied, vacuumed tables; 1 "
               "jobs-worker with the tuned settings started and listening; one producer connection calls "
               "pgrelay.enqueue_bulk with a batch of bench.probe jobs (round(rate × 5 ms)) every 5 ms on a fixed "
               "schedule (catching up when late) for the window, then waits until all are done; latency = "
               "handler start (result ->> 't') - created_at of every job created after the warm-up; drained = "
               "jobs succeeded within the window / window; every job is checked to have succeeded at its "
               "first attempt."),
              "- (6) bench/worker_bench.py's steady_load: emptied, vacuumed tables, their statistics counters "
              "reset (pg_stat_reset_single_table_counters); the workers started and listening; one producer "
              "connection calls pgrelay.enqueue_bulk on a fixed schedule (a tenth of a second's jobs per call; "
              "it catches up when late, the worst lateness is in the JSON) for the window; jobs/s = jobs "
              "succeeded in the window (pgrelay.queue_stats) / window; backlog = pending + leased at the end. "
              "Checked after the workers stop: pgrelay.queue_stats accounts for every job enqueued, none "
              "dead-lettered. The JSON has every sample.",
              ("- (7) bench/debris_bench.py, each system in its own database, pgbench -c 1 throughout: the tables "
               f"emptied, {debris_bench.MEASURE_FILL:,} jobs enqueued (10,000 per call), VACUUM ANALYZE, CHECKPOINT, "
               f"-t {debris_bench.MEASURE_TX} of the claim-and-complete script (clean rate = tps × 100); the tables "
               "emptied again; another connection runs BEGIN ISOLATION LEVEL REPEATABLE READ and reads a small table "
               "(pgrelay._queues, pgmq.meta), then stays idle in transaction; P jobs enqueued (timed: the enqueue "
               "part) and claimed and completed by -t P/100 of the script (push-through rate = tps × 100 = P / its "
               f"time); {debris_bench.MEASURE_FILL:,} jobs enqueued, VACUUM ANALYZE, CHECKPOINT (as for the clean "
               f"rate; the VACUUM can remove none of the debris), -t {debris_bench.MEASURE_TX} (debris rate); the hot "
               "table's pg_total_relation_size and n_dead_tup (set by that VACUUM, plus what the last pgbench "
               "counted) read; then ROLLBACK. Checked after every pgbench: every job enqueued is completed exactly "
               "once (pgrelay._finished, succeeded at attempt 1; pgmq's archive, read_ct 1) or waiting untouched, "
               "nothing else; at the end, that the held transaction was the same one throughout (its now() "
               "unchanged). The sizes and n_dead_tup \"clean\" are those after the clean rate's run."),
              ("- (8) bench/worker_bench.py's steady_snapshot: (6)'s steady_load (emptied, vacuumed tables, the "
               "workers started and listening, one producer on a fixed schedule), with bench.probe jobs; at a third "
               "of the hold into the window another connection begins a REPEATABLE READ transaction, reads "
               "pgrelay._queues and stays idle in transaction for the hold, then rolls back; samples every "
               f"{SNAPSHOT_SAMPLE_SECONDS:g} s and as the snapshot is taken and let go (pgrelay.queue_stats, "
               "pg_total_relation_size, pg_stat_user_tables). After the window the workers finish every job before "
               "they stop. Per phase: drained jobs/s = succeeded between the samples that bound the phase / its "
               "length; latency = handler start (result ->> 't') - created_at of the jobs created in the phase; "
               "pgrelay._jobs's size and n_dead_tup at the phase's end (workers report their tuple counts a second "
               "or more late). Checked: every job succeeded at its first attempt, pgrelay.queue_stats accounts for "
               "all."),
              ""]
    return "\n".join(lines)


def span(entry: Entry, key: str) -> str:
    """A per-run count of ``entry`` (probes, backlog): one value, or min–max over the runs."""
    values = [r[key] for r in entry.runs]
    low, high = min(values), max(values)
    return f"{low:,}" if low == high else f"{low:,}–{high:,}"


def size(n: int) -> str:
    return f"{n / 1024:,.0f} kB" if n < 10 * 1024 * 1024 else f"{n / 1024 / 1024:,.1f} MB"


STEADY_ROWS = (("heap (pg_relation_size)", "heap_bytes", size), ("indexes (pg_indexes_size)", "index_bytes", size),
               ("total (pg_total_relation_size)", "total_bytes", size),
               ("live tuples (n_live_tup)", "live_tuples", "{:,}".format),
               ("dead tuples (n_dead_tup)", "dead_tuples", "{:,}".format),
               ("autovacuums (autovacuum_count)", "autovacuums", "{:,}".format),
               ("autoanalyzes (autoanalyze_count; each resets n_live_tup to its estimate)", "autoanalyzes",
                "{:,}".format))


def steady_report(figures: list[Figure]) -> list[str]:
    """(6): per steady run, the tables' sizes and tuples at the start and the end, and what was achieved."""
    lines: list[str] = []
    for f in figures:
        if not f.id.startswith("steady_") or f.id == "steady_snapshot":
            continue
        for e in f.entries:
            for r in e.runs:
                if not lines:
                    lines += ["## (6) Steady load: the hot table and the history, start and end", ""]
                tables = list(worker_bench.STEADY_TABLES)
                lines += [f"{f.title}, run {r['run']} ({r['settings']}, {r['workers']} worker(s)):", "",
                          "| | " + " | ".join(f"{t} start | {t} end" for t in tables) + " |",
                          "|---|" + "---:|---:|" * len(tables)]
                for label, key, fmt in STEADY_ROWS:
                    lines.append(f"| {label} | " + " | ".join(f"{fmt(r['start'][t][key])} | {fmt(r['end'][t][key])}"
                                                            for t in tables) + " |")
                lines += ["", f"Window {r['seconds']:,.1f} s: enqueued {r['enqueued']:,} jobs "
                              f"({r['enqueue_rate']:,.0f} jobs/s, target {r['target_rate']:,}); "
                              f"drained {r['drained']:,} "
                              f"({r['jobs_per_s']:,.0f} jobs/s); backlog at the end {r['backlog_end']:,} "
                              f"({r['pending_end']:,} pending, {r['leased_end']:,} leased); "
                              f"{len(r['samples'])} samples in the JSON. \"end\": read once the workers had stopped "
                              "after the window (their backends flush their statistics as they exit; while busy they "
                              "report them a second or more late).", ""]
    return lines


def debris_report(figures: list[Figure]) -> list[str]:
    """(7): every run of every size, both systems: the rates, their ratios, the hot table."""
    runs = [(e, r) for f in figures if f.id.startswith("debris_") for e in f.entries for r in e.runs]
    if not runs:
        return []
    lines = ["## (7) Debris a held snapshot leaves in the hot table", "",
             ("Claim 100 + complete them, SQL under pgbench, 1 client. Clean: on "
              f"{debris_bench.MEASURE_FILL:,} waiting jobs in empty tables. With debris: the same, after P jobs "
              "were enqueued and pushed through while another session held a snapshot, still held. Ratios: "
              f"to the clean rate of the same run (issue 24's goal for pgrelay: both ≥ {DEBRIS_GOAL}×). Hot table: "
              "pg_total_relation_size and n_dead_tup after the clean run → after the run with the debris, before "
              "the snapshot was let go."), "",
             ("| P | system | run | clean jobs/s | with debris jobs/s | ÷ clean | push-through jobs/s | ÷ clean | "
              "enqueue P (s) | push-through (s) | hot table | size | n_dead_tup |"),
             "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|"]
    for e, r in runs:
        c, d = r["clean_table"], r["debris_table"]
        lines.append(f"| {r['size']:,} | {NAMES[e.system]} | {r['run']} | {r['clean_rate']:,.0f} | "
                     f"{r['debris_rate']:,.0f} | {r['debris_ratio']:.2f}× | {r['push_rate']:,.0f} | "
                     f"{r['push_ratio']:.2f}× | {r['enqueue_s']:,.1f} | {r['push_s']:,.1f} | {r['hot_table']} | "
                     f"{size(c['total_bytes'])} → {size(d['total_bytes'])} | "
                     f"{c['dead_tuples']:,} → {d['dead_tuples']:,} |")
    return [*lines, ""]


def snapshot_report(figures: list[Figure]) -> list[str]:
    """(8): per run, the phases before, during and after the held snapshot, then every sample."""
    lines: list[str] = []
    for f in figures:
        if f.id != "steady_snapshot":
            continue
        for e in f.entries:
            for r in e.runs:
                if not lines:
                    lines += ["## (8) Steady load while a snapshot is held", ""]
                lines += [(f"{f.title}, run {r['run']} ({r['settings']}, {r['workers']} worker(s); enqueued "
                           f"{r['enqueue_rate']:,.0f} jobs/s, target {r['target_rate']:,}; window "
                           f"{r['seconds']:,.1f} s):"), "",
                          ("| phase | seconds into the window | enqueued jobs/s | drained jobs/s | pickup latency "
                           "p50 / p95 / p99 / max (ms) | jobs created | backlog at its end | pgrelay._jobs at its "
                           "end | n_dead_tup at its end |"),
                          "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
                for ph in r["phases"]:
                    lines.append(f"| {ph['phase']} | {ph['from_s']:,.1f}–{ph['to_s']:,.1f} | "
                                 f"{ph['enqueue_rate']:,.0f} | {ph['jobs_per_s']:,.0f} | {ph['p50_ms']:,.1f} / "
                                 f"{ph['p95_ms']:,.1f} / {ph['p99_ms']:,.1f} / {ph['max_ms']:,.1f} | "
                                 f"{ph['jobs_created']:,} | {ph['backlog_end']:,} | {size(ph['jobs_bytes_end'])} | "
                                 f"{ph['jobs_dead_end']:,} |")
                heading = f"Samples (every {SNAPSHOT_SAMPLE_SECONDS:g} s, and as the snapshot was taken and let go):"
                lines += ["", heading, "",
                          "| s | phase | jobs/s drained since the last sample | backlog | pgrelay._jobs | n_dead_tup |",
                          "|---:|---|---:|---:|---:|---:|"]
                marks = {"hold_begin": " (snapshot taken)", "hold_end": " (about to be let go)"}
                for smp in r["timeline"]:
                    rate = "—" if smp["jobs_per_s"] is None else f"{smp['jobs_per_s']:,.0f}"
                    lines.append(f"| {smp['t']:,.1f} | {smp['phase']}{marks.get(smp['mark'], '')} | {rate} | "
                                 f"{smp['backlog']:,} | {size(smp['jobs_bytes'])} | {smp['jobs_dead']:,} |")
                lines.append("")
    return lines


COLORS = {"pgrelay": "C0", "pgqueuer": "C1", "procrastinate": "C2", "pgmq": "C3", "baseline": "C7"}


def plot(path: Path, figures: list[Figure]) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(2, 2, figsize=(14, 10))
    (ax_drain, ax_lat), (ax_trig, ax_steady) = axes

    def bars(ax, groups: list[Figure], label, title: str, ylabel: str, log: bool = False) -> None:
        labels, medians, lows, highs, colors = [], [], [], [], []
        for f in groups:
            for e in f.entries:
                s = e.summary()
                if s:
                    labels.append(label(f, e))
                    medians.append(s["median"])
                    lows.append(s["median"] - s["min"])
                    highs.append(s["max"] - s["median"])
                    colors.append(COLORS[e.system])
        if not labels:
            ax.set_axis_off()
            return
        ax.bar(range(len(labels)), medians, yerr=[lows, highs], capsize=3, color=colors)
        ax.set_xticks(range(len(labels)), labels, rotation=60, fontsize=7)
        if log:
            ax.set_yscale("log")
        ax.set_ylabel(ylabel)
        ax.set_title(title)

    bars(ax_drain, [f for f in figures if f.id.startswith("drain_")],
         lambda f, e: f"{NAMES[e.system]}\n{f.id.split('_', 1)[1].replace('_', ' w, ')}",
         "drain throughput, no-op jobs", "jobs/s (median, min–max)")
    bars(ax_trig, [f for f in figures if f.id.startswith("trigger_")],
         lambda f, e: f"{NAMES[e.system].replace(' (baseline)', '')}\n{f.id.removeprefix('trigger_')}",
         "enqueue from a trigger (one_<clients>: 1 order per transaction)",
         "orders/s = jobs/s (median, min–max, log scale)", log=True)

    lat = [f for f in figures if f.id.startswith("latency_")]
    names, p50, p95, p99 = [], [], [], []
    for f in lat:
        for e in f.entries:
            if e.runs:
                names.append(f"{NAMES[e.system]}\n{f.id.removeprefix('latency_').replace('_', ' ')}")
                p50.append(e.summary("p50_ms")["median"])
                p95.append(e.summary("p95_ms")["median"])
                p99.append(e.summary("p99_ms")["median"])
    if names:
        x = range(len(names))
        ax_lat.bar([i - 0.25 for i in x], p50, 0.25, label="p50")
        ax_lat.bar(list(x), p95, 0.25, label="p95")
        ax_lat.bar([i + 0.25 for i in x], p99, 0.25, label="p99")
        ax_lat.set_xticks(list(x), names, fontsize=7)
        ax_lat.set_yscale("log")
        ax_lat.set_ylabel("ms (median of runs, log scale)")
        ax_lat.set_title("pickup latency: idle queue; under load (probes at a higher priority); steady load")
        ax_lat.legend()
    else:
        ax_lat.set_axis_off()

    steady = [(f, r) for f in figures if f.id.startswith("steady_") for e in f.entries for r in e.runs[:1]]
    if steady:
        backlog_ax = ax_steady.twinx()
        most = max(smp["pending"] + smp["leased"] for _, r in steady for smp in r["samples"])
        backlog_ax.set_ylim(0, max(10, most) * 1.1)
        for n, (f, r) in enumerate(steady):
            t = [smp["t"] for smp in r["samples"]]
            tag = f.id.removeprefix("steady_")
            ax_steady.plot(t, [smp["tables"]["pgrelay._jobs"]["total_bytes"] / 2**20 for smp in r["samples"]],
                           color=f"C{n}", label=f"{tag}: pgrelay._jobs total size")
            backlog_ax.plot(t, [smp["pending"] + smp["leased"] for smp in r["samples"]], color=f"C{n}",
                            linestyle="--", label=f"{tag}: backlog (pending + leased)")
        ax_steady.set_xlabel("s into the window")
        ax_steady.set_ylabel("MB (pg_total_relation_size)")
        backlog_ax.set_ylabel("jobs waiting or running")
        ax_steady.set_title("steady load: pgrelay._jobs size and backlog (first run)")
        handles = ax_steady.get_legend_handles_labels()
        more = backlog_ax.get_legend_handles_labels()
        ax_steady.legend(handles[0] + more[0], handles[1] + more[1], fontsize=7, loc="upper left")
    else:
        ax_steady.set_axis_off()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def as_json(meta: dict[str, Any], figures: list[Figure], goals: list[dict[str, Any]]) -> dict[str, Any]:
    out = {"meta": meta, "targets": goals, "figures": []}
    for f in figures:
        fj = {"id": f.id, "title": f.title, "unit": f.unit, "higher_is_better": f.higher_is_better, "note": f.note,
              "entries": []}
        for e in f.entries:
            ej = {"system": e.system, "how": e.how, "key": e.key, "summary": e.summary(), "runs": e.runs,
                  "errors": e.errors}
            if f.unit == "ms":
                ej["summary"] = {k: e.summary(k) for k in ("p50_ms", "p95_ms", "p99_ms")} if e.runs else None
            fj["entries"].append(ej)
        out["figures"].append(fj)
    return out


# -- main --------------------------------------------------------------------------------------------------

async def run(args: argparse.Namespace) -> int:
    if not Path(worker_bench.WORKER).exists():
        raise CompareError(f"{worker_bench.WORKER} not found; run `make bench-quick`, which installs into .venv first")
    started = time.monotonic()
    load_start = os.getloadavg()[0]
    settings = SERVER_SETTINGS + (f" {args.postgres_options}" if args.postgres_options else "")
    mode = "full" if args.full else "quick"
    print(f"pgrelay against its peers ({mode}); results go to {args.out}\n", flush=True)
    with throwaway_cluster(settings) as cluster, tempfile.TemporaryDirectory(prefix="pgrelay-compare-") as tmp:
        workdir = Path(tmp)
        conn = await asyncpg.connect(cluster.dsn())
        try:
            for db in DATABASES.values():
                await conn.execute(f"CREATE DATABASE {db}")
            version = await conn.fetchval("SHOW server_version")
            shown = {name: await conn.fetchval(f"SHOW {name}") for name in SHOWN_SETTINGS}
            non_default = [dict(r) for r in await conn.fetch(
                "SELECT name, setting, unit, source FROM pg_settings"
                " WHERE source NOT IN ('default', 'override', 'client', 'session') ORDER BY name")]
        finally:
            await conn.close()
        dsns = {s: cluster.dsn(db) for s, db in DATABASES.items()}
        conn = await asyncpg.connect(dsns["pgrelay"])
        try:
            schema = (await migrate(conn)).describe()
            await conn.execute((sql_bench.SCRIPTS / "baseline_schema.sql").read_text())  # sql_bench.reset empties it
        finally:
            await conn.close()
        installed = {"pgrelay": f"pgrelay.schema.migrate ({schema})"}
        for system in peers.PEERS:
            installed[system] = (await peers.install(system, dsns[system]))["installed_with"]
        for system in trigger_bench.SYSTEMS:            # (3): bench_orders and the system's trigger
            await trigger_bench.install(system, dsns[system])
        pgbench_version = subprocess.run([str(Path(pg_bindir()) / "pgbench"), "--version"],
                                                   capture_output=True, text=True).stdout.strip()
        meta: dict[str, Any] = {
            "date": dt.datetime.now().isoformat(timespec="seconds"), "mode": mode,
            "command": args.command, "machine": machine(), "server_version": version,
            "server_options": settings, "settings": shown, "non_default_settings": non_default,
            "versions": {"pgrelay": metadata.version("pgrelay"), **peers.versions(), "pgbench": pgbench_version,
                         "asyncpg": metadata.version("asyncpg"), "psycopg": metadata.version("psycopg")},
            "installed_with": installed, "load_start": load_start,
            "parameters": {"runs": args.runs, "sql_runs": max(args.runs, args.sql_runs), "seconds": args.seconds,
                           "transactions": args.transactions,
                           "jobs": args.jobs, "procrastinate_jobs": args.procrastinate_jobs,
                           "probes": worker_bench.PROBES, "probe_gap_ms": worker_bench.PROBE_GAP * 1000,
                           "idle_probe_gap_ms": worker_bench.IDLE_PROBE_GAP * 1000,
                           "latency_steady_seconds": args.latency_steady_seconds,
                           "latency_steady_warmup_s": worker_bench.STEADY_LATENCY_WARMUP,
                           "pgrelay_tuned": list(args.pgrelay_tuned), "worker_configs": peers.WORKER_CONFIGS,
                           "consume_clients": list(args.consume_clients), "figures": args.figures,
                           "only": args.only, "steady_seconds": args.steady_seconds,
                           "steady_rate": args.steady_rate, "steady_workers": args.steady_workers,
                           "steady_runs": args.steady_runs, "steady_sample_seconds": args.steady_sample_seconds,
                           "debris_sizes": list(args.debris_sizes), "debris_runs": args.debris_runs,
                           "debris_measure_fill": debris_bench.MEASURE_FILL,
                           "debris_measure_transactions": debris_bench.MEASURE_TX,
                           "snapshot_hold_seconds": args.snapshot_hold_seconds,
                           "snapshot_sample_seconds": SNAPSHOT_SAMPLE_SECONDS},
            "trigger_sql": {k: " ".join(v.split()) for k, v in trigger_bench.TRIGGERS.items()},
        }
        print(f"server:   PostgreSQL {version}, started with: {settings}")
        print("settings: " + ", ".join(f"{k}={v}" for k, v in shown.items()))
        if shown["fsync"] != "on" or shown["synchronous_commit"] != "on":
            print("WARNING:  fsync or synchronous_commit is off: commits are not durable, figures are optimistic")
        print("versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()))
        print(f"machine:  {meta['machine']}, load average {load_start:.2f}\n", flush=True)

        pgrelay = Pgrelay(dsns["pgrelay"], workdir / "pgrelay-workers")
        (workdir / "pgrelay-workers").mkdir()
        figures = plan(args, dsns, pgrelay, workdir)
        if not figures:
            raise CompareError(f"no figure left to run (--figures {args.figures}, --only {args.only})")
        await measure(figures, args.runs)

    meta["load_end"] = os.getloadavg()[0]
    meta["total_seconds"] = round(time.monotonic() - started)
    goals = targets(figures)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = dt.date.today().isoformat() + ("" if args.full else "-quick")
    md = render(meta, figures, goals) + f"\nTotal time {meta['total_seconds']} s.\n"
    (args.out / f"{stem}.md").write_text(md)
    (args.out / f"{stem}.json").write_text(json.dumps(as_json(meta, figures, goals), indent=1, default=str) + "\n")
    plotted = plot(args.out / f"{stem}.png", figures)
    print("\n" + md)
    print(f"wrote {args.out / (stem + '.md')}, {stem}.json" + (f", {stem}.png" if plotted else
                                                                 " (no plot: matplotlib is not installed)"))
    failed = sum(len(e.errors) for f in figures for e in f.entries)
    return 1 if failed else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="about 27 minutes (the default)")
    mode.add_argument("--full", action="store_true",
                      help="N = 100,000 per drain, longer windows, 10-minute steady-load runs")
    parser.add_argument("--runs", type=int, default=3, help="runs per figure (default 3)")
    parser.add_argument("--jobs", type=int, default=None, help="N per drain (quick 20,000; full 100,000)")
    parser.add_argument("--procrastinate-jobs", type=int, default=None,
                        help="N per Procrastinate drain (quick 2,000; full 10,000)")
    parser.add_argument("--seconds", type=int, default=None, help="enqueue windows (quick 3 s; full 10 s)")
    parser.add_argument("--transactions", type=int, default=None,
                        help="SQL consume: pgbench -t per client (quick 500; full 2000)")
    parser.add_argument("--sql-runs", type=int, default=7,
                        help="SQL consume: runs of each figure, at least --runs (default 7: a run lasts seconds, "
                             "and on a shared VM single runs move by 20%%)")
    parser.add_argument("--pgrelay-tuned", default=shlex.join(PGRELAY_TUNED),
                        help=f"jobs-worker options for the tuned drains (default {shlex.join(PGRELAY_TUNED)!r})")
    parser.add_argument("--only", nargs="+", choices=["pgrelay", *peers.PEERS], default=None,
                        help="measure only these systems ((3)'s no-trigger baseline runs with any of them)")
    parser.add_argument("--figures", nargs="+", default=None, metavar="PREFIX",
                        help="run only the figures whose id starts with one of these, e.g. trigger_ "
                             "latency_loaded steady_ (ids: enqueue_one_1, enqueue_one_1_draining, enqueue_bulk_1000, "
                             "trigger_one_1, trigger_bulk_1000, consume_100_1, cycle_reference, drain_1_default, "
                             "latency_idle, latency_loaded, latency_steady_tuned, debris_50k, steady_default, "
                             "steady_snapshot, ...)")
    parser.add_argument("--latency-steady-seconds", type=int, default=None,
                        help="(5) latency under a steady load: window per run (quick 15 s; full 60 s; the "
                             f"first {worker_bench.STEADY_LATENCY_WARMUP:g} s are not counted)")
    parser.add_argument("--steady-seconds", type=int, default=None,
                        help="(6) steady-load window per run (quick 60 s; full 600 s)")
    parser.add_argument("--steady-rate", type=int, default=1000, help="(6) jobs/s the producer enqueues (1000)")
    parser.add_argument("--steady-workers", type=int, choices=(1, 2), default=2,
                        help="(6) jobs-worker processes draining (2)")
    parser.add_argument("--steady-runs", type=int, default=1,
                        help="(6) runs of each steady-load figure (1: they are long; --runs does not apply)")
    parser.add_argument("--steady-sample-seconds", type=float, default=10.0,
                        help="(6) seconds between samples of the tables' statistics (10)")
    parser.add_argument("--debris-sizes", type=int, nargs="+", default=None, metavar="P",
                        help="(7) jobs pushed through while a snapshot is held, a figure each, multiples of 100 "
                             "(quick 50000 200000; full 50000 200000 1000000)")
    parser.add_argument("--debris-runs", type=int, default=1,
                        help="(7) runs of each debris figure (1: the large ones take minutes; --runs does not apply)")
    parser.add_argument("--snapshot-hold-seconds", type=int, default=None,
                        help="(8) seconds the snapshot is held (quick 60, full 180); the window adds a third of "
                             "that before and two thirds after")
    parser.add_argument("--postgres-options", default="",
                        help="extra server options appended to the defaults, e.g. '-c synchronous_commit=off'")
    parser.add_argument("--out", type=Path, default=BENCH / "results", help="where the report goes")
    args = parser.parse_args()
    if args.runs < 1 or args.sql_runs < 1:
        parser.error("--runs and --sql-runs must be at least 1")
    if args.steady_runs < 1 or args.steady_rate < 1 or (args.steady_seconds is not None and args.steady_seconds < 1):
        parser.error("--steady-runs, --steady-rate and --steady-seconds must be at least 1")
    if args.steady_sample_seconds <= 0:
        parser.error("--steady-sample-seconds must be positive")
    if args.debris_sizes and any(n < 100 or n % 100 for n in args.debris_sizes):
        parser.error("--debris-sizes must be multiples of 100")
    if args.debris_runs < 1:
        parser.error("--debris-runs must be at least 1")
    if args.snapshot_hold_seconds is not None and args.snapshot_hold_seconds < 3:
        parser.error("--snapshot-hold-seconds must be at least 3")
    if args.latency_steady_seconds is not None and args.latency_steady_seconds <= worker_bench.STEADY_LATENCY_WARMUP:
        parser.error(f"--latency-steady-seconds must be more than the {worker_bench.STEADY_LATENCY_WARMUP:g} s "
                     "warm-up")
    args.latency_steady_seconds = args.latency_steady_seconds or (60 if args.full else 15)
    args.steady_seconds = args.steady_seconds or (600 if args.full else 60)
    args.debris_sizes = args.debris_sizes or ([50_000, 200_000, 1_000_000] if args.full else [50_000, 200_000])
    args.snapshot_hold_seconds = args.snapshot_hold_seconds or (180 if args.full else 60)
    args.pgrelay_tuned = tuple(shlex.split(args.pgrelay_tuned))
    args.jobs = args.jobs or (100_000 if args.full else 20_000)
    args.procrastinate_jobs = args.procrastinate_jobs or (10_000 if args.full else 2_000)
    args.seconds = args.seconds or (10 if args.full else 3)
    args.transactions = args.transactions or (2000 if args.full else 500)
    args.consume_clients = (1, 2) if args.full else (1,)
    target = "make bench" if args.full else "make bench-quick"
    extra = [a for a in sys.argv[1:] if a not in ("--full", "--quick")]
    args.command = target + (f" BENCH_ARGS={shlex.quote(shlex.join(extra))}" if extra else "") + \
        f"   (runs: .venv/bin/python bench/compare.py {shlex.join(sys.argv[1:])})"
    try:
        return asyncio.run(run(args))
    except (CompareError, peers.PeerError, sql_bench.BenchError, worker_bench.BenchError,
            trigger_bench.TriggerBenchError, debris_bench.DebrisBenchError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
