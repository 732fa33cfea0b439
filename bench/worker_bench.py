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
    at a time (each its own autocommit statement, PROBE_GAP apart). Latency = the handler's start
    (wall clock) - the job's created_at (now() of the enqueueing transaction, so the commit, its fsync
    and the NOTIFY are included); p50/p95/p99.
(c) pickup latency under load: the same probes, at priority 10 (consume takes higher priority first;
    at the default priority they would wait behind the whole backlog, FIFO), while 1 worker drains a
    backlog of no-op jobs sized by (a)'s rate to last about 2 s longer than the probes. Probes stop
    when no no-op job is pending any more; only probes enqueued until then count.

Every figure: median of --runs runs (3), with min-max. Each run starts from emptied tables, vacuumed and
checkpointed, with new worker processes, stopped afterwards with SIGTERM (they must exit 0).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
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
from collections.abc import Iterator, Sequence
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
PROBE_GAP = 0.020                # seconds between probes

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
    await conn.execute("TRUNCATE pgrelay._jobs, pgrelay._finished, pgrelay._attempts, pgrelay._idempotency_keys,"
                       " pgrelay._workers")
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


async def wait_drained(conn: asyncpg.Connection, workers: Workers, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while await conn.fetchval("SELECT EXISTS (SELECT 1 FROM pgrelay._jobs WHERE task = 'bench.noop')"):
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


async def probe_latencies(conn: asyncpg.Connection, *, during_backlog: bool) -> list[float]:
    """Enqueue up to PROBES probe jobs PROBE_GAP apart; returns their pickup latencies in ms."""
    sent = 0
    sql = ("SELECT pgrelay.enqueue('bench.probe', priority => 10)" if during_backlog
           else "SELECT pgrelay.enqueue('bench.probe')")
    next_at = time.monotonic()
    while sent < PROBES:
        if during_backlog and not await conn.fetchval(
                "SELECT EXISTS (SELECT 1 FROM pgrelay._jobs WHERE task = 'bench.noop' AND status = 'pending')"):
            break
        await conn.execute(sql)
        sent += 1
        next_at += PROBE_GAP
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))
    deadline = time.monotonic() + 60
    while await conn.fetchval("SELECT count(*) FROM pgrelay._finished WHERE task = 'bench.probe'") < sent:
        if time.monotonic() > deadline:
            raise BenchError("probe jobs not finished within 60 s")
        await asyncio.sleep(0.05)
    rows = await conn.fetch(
        """SELECT ((result ->> 't')::float8 - extract(epoch FROM created_at)::float8) * 1000 AS ms
           FROM pgrelay._finished WHERE task = 'bench.probe' AND status = 'succeeded' AND attempt = 1""")
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
        values = await probe_latencies(conn, during_backlog=False)
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
                  f"{PROBE_GAP * 1000:.0f} ms apart, {args.runs} runs each\n", flush=True)

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
    print("(b) one probe at a time, 20 ms apart, each its own autocommit pgrelay.enqueue; latency = handler start")
    print("    (wall clock, bench/noop_app.py) - created_at (now() of the enqueue: commit, fsync, NOTIFY included).")
    print("(c) the same probes at priority 10 (else FIFO puts them behind the backlog) while 1 worker drains a backlog.")
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
