"""The peers' side of bench/compare.py: PgQueuer, Procrastinate and pgmq, measured the way pgrelay is.

Every function takes the DSN of a database in the benchmark's cluster that holds the system (``install``
puts it there), measures ONE run, checks in the system's own tables that the run did what it claims,
and returns a plain dict (JSON-ready: numbers, strings, lists) for bench/compare.py to merge with
pgrelay's figures. Runs are repeated and alternated by the caller, not here.

Systems and the API each one is driven through (all from PyPI, the `bench` extra in pyproject.toml):

    pgqueuer        PgQueuer 1.6: Queries.enqueue (a scalar call per job, lists for a batch); workers are
                    bench/peer_apps/pgqueuer_worker.py (pgqueuer.run(factory, batch_size=...), as `pgq run`)
    procrastinate   Procrastinate 3.10: Task.defer_async / Task.batch_defer_async; workers are
                    bench/peer_apps/procrastinate_worker.py (App.run_worker_async(concurrency=...))
    pgmq            pgmq's install SQL as shipped in the PyPI package `pgmq` (pgmq/sql/pgmq.sql), SQL only
                    (no worker, no handler): pgmq.send, pgmq.send_batch, pgmq.read + pgmq.archive, under pgbench;
                    the consumer that drains the queue while pgmq.send runs is bench/peer_apps/pgmq_drainer.py
                    (pgmq.read of 100 + pgmq.archive in a loop, on one asyncpg connection)
    pgrelay-client  pgrelay through its Python client (pgrelay.client.enqueue / enqueue_bulk) in the same
                    producer harness as the peers, so the enqueue comparison is like for like
    pgrelay-many    the same, batches through pgrelay.client.enqueue_many (one task, a list of payloads:
                    the shape of PgQueuer's Queries.enqueue(lists))

Measurements:

    enqueue(system, dsn, clients, seconds, batch)     producers in min(clients, 2) OS processes (like
        pgbench --jobs), one connection each, each call its own transaction (autocommit); all start
        together and run for ``seconds``; jobs/s = jobs enqueued / elapsed, checked by counting rows.
    drain(system, dsn, n, workers, config, workdir)   n no-op jobs enqueued (the peer's bulk API) into an
        emptied, vacuumed, checkpointed table; ``workers`` worker processes started, connected, then
        released together; jobs/s = n / (last job finished - first job started). First started: the
        earliest handler start in any worker (time.time() in the handler); last finished: from the
        peer's own tables (pgqueuer_log.created of the 'successful' rows; procrastinate_events.at of
        'succeeded'). Every job is checked to have succeeded exactly once.
    pickup_latency(system, dsn, workdir, gap)         1 idle worker with default settings; PROBES probe
        jobs enqueued one at a time, ``gap`` apart (PROBE_GAP unless given; bench/compare.py's idle figure
        gives worker_bench.IDLE_PROBE_GAP, 0.1 s, as pgrelay's uses); latency = handler start - the
        enqueueing transaction's now() as the peer recorded it (pgqueuer_log 'queued' row;
        procrastinate_events 'deferred' row) -- the same definition as bench/worker_bench.py's (created_at).
        With backlog=N: under load, as worker_bench.latency_loaded does it for pgrelay: N no-op jobs
        enqueued first, 1 worker drains them, the probes go in at priority PROBE_PRIORITY (both peers
        claim higher priority first) until no no-op job is waiting; every no-op job is checked too.
    pgmq_pgbench(dsn, workload, clients, ...)         pgmq's SQL under pgbench, as bench/sql_bench.py
        runs pgrelay's: send one per transaction, send_batch of 1,000, read 100 + archive them.
        With draining=True (send_one): bench/peer_apps/pgmq_drainer.py reads and archives the same
        queue during the whole pgbench run (started, connected and released before pgbench starts,
        stopped with SIGTERM after it ends, exit 0); checked: the queue and archive tables together
        hold exactly the messages sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import signal
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Awaitable, Callable, Iterator, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import asyncpg

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
APPS = BENCH / "peer_apps"
for _path in (str(ROOT), str(BENCH), str(APPS)):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from sql_bench import pgbench  # noqa: E402
from worker_bench import PROBE_GAP, PROBES  # noqa: E402

PEERS = ("pgqueuer", "procrastinate", "pgmq")
PRODUCER_SYSTEMS = ("pgqueuer", "procrastinate", "pgrelay-client", "pgrelay-many")
WORKER_SYSTEMS = ("pgqueuer", "procrastinate")
FILL_CHUNK = 10_000
PAYLOAD = {"n": 1}                   # the same payload pgrelay's bench scripts enqueue
PGMQ_QUEUE = "bench"

# Default and tuned worker settings. PgQueuer: batch_size 10 is its default (pgq run --batch-size),
# 100 the tuned value in /work/shared/FACTS.md. Procrastinate: concurrency 1 is its default; tuned is
# concurrency 10 with a connection pool that can hold them (psycopg_pool's default max_size is 4).
WORKER_CONFIGS: dict[str, dict[str, dict[str, int]]] = {
    "pgqueuer": {"default": {"batch_size": 10}, "tuned": {"batch_size": 100}},
    "procrastinate": {"default": {"concurrency": 1}, "tuned": {"concurrency": 10, "pool_size": 12}},
}


class PeerError(RuntimeError):
    pass


# -- versions, install, reset ----------------------------------------------------------------------

def pgmq_sql_path() -> Path:
    """pgmq's install SQL as the PyPI package `pgmq` ships it (pgmq/sql/pgmq.sql)."""
    path = Path(metadata.distribution("pgmq").locate_file("pgmq/sql/pgmq.sql"))
    if not path.exists():
        raise PeerError(f"the pgmq package does not carry its install SQL at {path}")
    return path


def versions() -> dict[str, str]:
    found = {name: metadata.version(name) for name in ("pgqueuer", "procrastinate", "pgmq")}
    sql_version = pgmq_sql_path().with_name("VERSION").read_text().strip()
    found["pgmq"] = f"pgmq SQL {sql_version} (from the PyPI package pgmq {found['pgmq']})"
    return found


def _procrastinate_app(dsn: str, **pool: Any):
    from procrastinate_app import make_app

    return make_app(dsn, **pool)


async def install(system: str, dsn: str) -> dict[str, Any]:
    """Install ``system`` into the (empty) database at ``dsn`` with its own installer."""
    if system == "pgqueuer":
        from pgqueuer.db import AsyncpgDriver
        from pgqueuer.queries import Queries

        conn = await asyncpg.connect(dsn)
        try:
            await Queries(AsyncpgDriver(conn)).install()
        finally:
            await conn.close()
        how = "pgqueuer.queries.Queries.install() (what `pgq install` runs), durability durable"
    elif system == "procrastinate":
        app = _procrastinate_app(dsn)
        async with app.open_async():
            await app.schema_manager.apply_schema_async()
        how = "App.schema_manager.apply_schema_async() (what `procrastinate schema --apply` runs)"
    elif system == "pgmq":
        conn = await asyncpg.connect(dsn)
        try:
            async with conn.transaction():
                await conn.execute(pgmq_sql_path().read_text())
            await conn.execute("SELECT pgmq.create($1)", PGMQ_QUEUE)
        finally:
            await conn.close()
        how = f"pgmq/sql/pgmq.sql from the PyPI package, then pgmq.create('{PGMQ_QUEUE}') (a logged queue)"
    else:
        raise PeerError(f"unknown system {system!r}")
    return {"system": system, "installed_with": how}


TABLES = {
    "pgqueuer": ["pgqueuer", "pgqueuer_log", "pgqueuer_statistics"],
    "procrastinate": ["procrastinate_jobs", "procrastinate_events", "procrastinate_workers",
                      "procrastinate_periodic_defers"],
    "pgmq": [f"pgmq.q_{PGMQ_QUEUE}", f"pgmq.a_{PGMQ_QUEUE}"],
    "pgrelay-client": ["pgrelay._jobs", "pgrelay._finished", "pgrelay._attempts", "pgrelay._idempotency_keys"],
    "pgrelay-many": ["pgrelay._jobs", "pgrelay._finished", "pgrelay._attempts", "pgrelay._idempotency_keys"],
}


async def reset(conn: asyncpg.Connection, system: str) -> None:
    """Empty the system's job tables (so every run starts from the same state)."""
    await conn.execute(f"TRUNCATE {', '.join(TABLES[system])} CASCADE")


async def settle(conn: asyncpg.Connection, system: str) -> None:
    await conn.execute(f"VACUUM ANALYZE {', '.join(TABLES[system])}")
    await conn.execute("CHECKPOINT")


async def count_enqueued(conn: asyncpg.Connection, system: str) -> int:
    table = {"pgqueuer": "pgqueuer", "procrastinate": "procrastinate_jobs", "pgmq": f"pgmq.q_{PGMQ_QUEUE}",
             "pgrelay-client": "pgrelay._jobs", "pgrelay-many": "pgrelay._jobs"}[system]
    return await conn.fetchval(f"SELECT count(*) FROM {table}")


# -- producers (enqueue) ---------------------------------------------------------------------------

EnqueueCall = Callable[[], Awaitable[Any]]


@contextlib.asynccontextmanager
async def _enqueuers(system: str, dsn: str, count: int, batch: int):
    """``count`` independent enqueue callables (one connection each), each enqueueing ``batch`` jobs
    in one call and one transaction, through the system's public API."""
    closers: list[Callable[[], Awaitable[Any]]] = []
    calls: list[EnqueueCall] = []
    try:
        if system == "pgqueuer":
            from pgqueuer.db import AsyncpgDriver
            from pgqueuer.queries import Queries

            payload = b'{"n":1}'
            for _ in range(count):
                conn = await asyncpg.connect(dsn)
                closers.append(conn.close)
                q = Queries(AsyncpgDriver(conn))
                if batch == 1:
                    calls.append(lambda q=q: q.enqueue("bench.noop", payload))
                else:
                    calls.append(lambda q=q: q.enqueue(["bench.noop"] * batch, [payload] * batch, [0] * batch))
        elif system == "procrastinate":
            app = _procrastinate_app(dsn, min_size=count, max_size=count)
            await app.open_async()
            closers.append(app.close_async)
            task = app.tasks["bench.noop"]
            for _ in range(count):
                if batch == 1:
                    calls.append(lambda: task.defer_async(**PAYLOAD))
                else:
                    calls.append(lambda: task.batch_defer_async(*([PAYLOAD] * batch)))
        elif system == "pgrelay-client":
            from pgrelay import client

            jobs = [{"task": "bench.noop", "payload": PAYLOAD}] * batch
            for _ in range(count):
                conn = await asyncpg.connect(dsn)
                closers.append(conn.close)
                if batch == 1:
                    calls.append(lambda conn=conn: client.enqueue(conn, "bench.noop", PAYLOAD))
                else:
                    calls.append(lambda conn=conn: client.enqueue_bulk(conn, jobs))
        elif system == "pgrelay-many":
            from pgrelay import client

            payloads = [PAYLOAD] * batch
            for _ in range(count):
                conn = await asyncpg.connect(dsn)
                closers.append(conn.close)
                calls.append(lambda conn=conn: client.enqueue_many(conn, "bench.noop", payloads))
        else:
            raise PeerError(f"{system!r} has no producer")
        yield calls
    finally:
        for close in reversed(closers):
            with contextlib.suppress(Exception):
                await close()


async def _produce(system: str, dsn: str, count: int, batch: int, seconds: float, ready,
                   go) -> tuple[int, int, float]:
    """(jobs enqueued in the timed window, jobs enqueued by the warm-up calls, elapsed seconds)."""
    async with _enqueuers(system, dsn, count, batch) as calls:
        for call in calls:                   # warm up: connections, prepared statements, pools
            await call()
        ready.put(("ready", os.getpid()))
        await asyncio.to_thread(go.wait)
        started = time.monotonic()
        deadline = started + seconds

        async def loop(call: EnqueueCall) -> int:
            done = 0
            while time.monotonic() < deadline:
                await call()
                done += batch
            return done

        counts = await asyncio.gather(*(loop(c) for c in calls))
        return sum(counts), batch * len(calls), time.monotonic() - started


def _producer_process(system: str, dsn: str, count: int, batch: int, seconds: float, ready, go, results) -> None:
    try:
        results.put(("ok", *asyncio.run(_produce(system, dsn, count, batch, seconds, ready, go))))
    except BaseException:
        ready.put(("error", traceback.format_exc()))
        results.put(("error", traceback.format_exc()))


async def _get(queue, procs, timeout: float):
    """The next message on ``queue``; fails early when a producer process died without sending one."""
    import queue as queue_module

    deadline = time.monotonic() + timeout
    while True:
        try:
            return await asyncio.to_thread(queue.get, True, 0.2)
        except queue_module.Empty:
            dead = [p for p in procs if p.exitcode not in (None, 0)]
            if dead:
                raise PeerError(f"a producer process exited with code {dead[0].exitcode}") from None
            if time.monotonic() > deadline:
                raise PeerError(f"no word from the producer processes within {timeout:.0f}s") from None


async def enqueue(system: str, dsn: str, clients: int, seconds: float, batch: int = 1) -> dict[str, Any]:
    """One run: ``clients`` producers enqueue ``batch`` jobs per call (one transaction) for ``seconds``."""
    if system not in PRODUCER_SYSTEMS:
        raise PeerError(f"{system!r} has no producer (pgmq is measured with pgmq_pgbench)")
    conn = await asyncpg.connect(dsn)
    try:
        await reset(conn, system)
        await settle(conn, system)
        ctx = multiprocessing.get_context("spawn")
        ready, results, go = ctx.Queue(), ctx.Queue(), ctx.Event()
        nproc = min(clients, 2)
        shares = [clients // nproc + (1 if i < clients % nproc else 0) for i in range(nproc)]
        procs = [ctx.Process(target=_producer_process, args=(system, dsn, share, batch, seconds, ready, go, results),
                             daemon=True) for share in shares]
        for p in procs:
            p.start()
        try:
            for _ in procs:
                msg = await _get(ready, procs, 120)
                if msg[0] != "ready":
                    raise PeerError(f"{system} producer failed to start:\n{msg[1]}")
            go.set()
            outcomes = [await _get(results, procs, seconds + 120) for _ in procs]
        finally:
            for p in procs:
                p.join(timeout=30)
                if p.is_alive():
                    p.kill()
        errors = [o[1] for o in outcomes if o[0] != "ok"]
        if errors:
            raise PeerError(f"{system} producer failed:\n{errors[0]}")
        jobs = sum(o[1] for o in outcomes)
        warmup = sum(o[2] for o in outcomes)
        elapsed = max(o[3] for o in outcomes)
        found = await count_enqueued(conn, system)
        if found != jobs + warmup:
            raise PeerError(f"{system}: producers report {jobs} jobs enqueued (+ {warmup} warming up), "
                            f"the table holds {found}")
    finally:
        await conn.close()
    api = {
        "pgqueuer": "Queries.enqueue(entrypoint, payload)" if batch == 1 else
                    f"Queries.enqueue([entrypoint]*{batch}, [payload]*{batch}, [0]*{batch})",
        "procrastinate": "Task.defer_async(n=1)" if batch == 1 else f"Task.batch_defer_async(*{batch} kwargs)",
        "pgrelay-client": "pgrelay.client.enqueue(conn, task, payload)" if batch == 1 else
                          f"pgrelay.client.enqueue_bulk(conn, {batch} jobs)",
        "pgrelay-many": f"pgrelay.client.enqueue_many(conn, task, {batch} payloads)",
    }[system]
    return {"system": system, "workload": "enqueue_one" if batch == 1 else f"enqueue_batch_{batch}",
            "clients": clients, "processes": nproc, "batch": batch, "seconds": round(elapsed, 3), "jobs": jobs,
            "jobs_per_s": jobs / elapsed, "api": api}


# -- workers ----------------------------------------------------------------------------------------

def worker_command(system: str, dsn: str, workdir: Path, config: dict[str, int]) -> list[str]:
    if system == "pgmq":                 # no worker: the consumer loop pgmq_pgbench(draining=True) runs
        return [sys.executable, str(APPS / "pgmq_drainer.py"), dsn, "--workdir", str(workdir), "--queue", PGMQ_QUEUE]
    if system == "pgqueuer":
        return [sys.executable, str(APPS / "pgqueuer_worker.py"), dsn, "--workdir", str(workdir),
                "--batch-size", str(config["batch_size"])]
    if system == "procrastinate":
        cmd = [sys.executable, str(APPS / "procrastinate_worker.py"), dsn, "--workdir", str(workdir),
               "--concurrency", str(config["concurrency"])]
        if config.get("pool_size"):
            cmd += ["--pool-size", str(config["pool_size"])]
        return cmd
    raise PeerError(f"{system!r} has no worker")


def describe_config(system: str, config: dict[str, int]) -> str:
    if system == "pgqueuer":
        return f"batch_size {config['batch_size']}"
    text = f"concurrency {config['concurrency']}"
    return text + (f", pool max_size {config['pool_size']}" if config.get("pool_size") else "")


class PeerWorkers:
    """Worker processes of one peer for one run (pgmq's: its consumer loop, pgmq_drainer.py); they write
    their marks into ``workdir``."""

    def __init__(self, system: str, dsn: str, workdir: Path) -> None:
        self.system, self.dsn, self.workdir = system, dsn, workdir
        self.procs: list[tuple[subprocess.Popen[bytes], Path]] = []
        workdir.mkdir(parents=True, exist_ok=True)

    def start(self, count: int, config: dict[str, int]) -> None:
        for i in range(count):
            log = self.workdir / f"worker-{i + 1}.log"
            with open(log, "wb") as out:
                proc = subprocess.Popen(worker_command(self.system, self.dsn, self.workdir, config), cwd=APPS,
                                        stdout=out, stderr=subprocess.STDOUT)
            self.procs.append((proc, log))

    def check_alive(self) -> None:
        for proc, log in self.procs:
            if proc.poll() is not None:
                raise PeerError(f"a {self.system} worker exited early with code {proc.returncode}:\n{_tail(log)}")

    async def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while len(list(self.workdir.glob("ready-*"))) < len(self.procs):
            self.check_alive()
            if time.monotonic() > deadline:
                raise PeerError(f"{self.system} workers not ready after {timeout:.0f}s:\n{_tail(self.procs[-1][1])}")
            await asyncio.sleep(0.02)

    def go(self) -> None:
        (self.workdir / "go").write_text("")

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
                failures.append(f"{self.system} worker exited with {code} after SIGTERM:\n{_tail(log)}")
        self.procs = []
        if failures:
            raise PeerError("\n".join(failures))

    @contextlib.contextmanager
    def running(self, count: int, config: dict[str, int]) -> Iterator[None]:
        self.start(count, config)
        try:
            yield
        except BaseException:
            with contextlib.suppress(PeerError):
                self.stop()
            raise
        self.stop()

    def first_started(self) -> float:
        marks = [float(p.read_text()) for p in self.workdir.glob("first-*")]
        if not marks:
            raise PeerError(f"no {self.system} handler recorded a start")
        return min(marks)

    def probe_starts(self) -> dict[int, float]:
        starts: dict[int, float] = {}
        for path in self.workdir.glob("probe-*"):
            for line in path.read_text().splitlines():
                job_id, t = line.split()
                if int(job_id) in starts:
                    raise PeerError(f"{self.system}: probe job {job_id} started twice")
                starts[int(job_id)] = float(t)
        return starts


def _tail(log: Path, lines: int = 20) -> str:
    text = log.read_text(errors="replace").splitlines() if log.exists() else []
    return "\n".join(text[-lines:])


async def fill(system: str, dsn: str, n: int) -> None:
    """Enqueue ``n`` no-op jobs with the peer's own bulk API, FILL_CHUNK per call."""
    left = n
    if system == "pgqueuer":
        from pgqueuer.db import AsyncpgDriver
        from pgqueuer.queries import Queries

        conn = await asyncpg.connect(dsn)
        try:
            q = Queries(AsyncpgDriver(conn))
            while left > 0:
                k = min(left, FILL_CHUNK)
                await q.enqueue(["bench.noop"] * k, [b'{"n":1}'] * k, [0] * k)
                left -= k
        finally:
            await conn.close()
    elif system == "procrastinate":
        app = _procrastinate_app(dsn, min_size=1, max_size=1)
        async with app.open_async():
            while left > 0:
                k = min(left, FILL_CHUNK)
                await app.tasks["bench.noop"].batch_defer_async(*([PAYLOAD] * k))
                left -= k
    else:
        raise PeerError(f"{system!r} has no worker")


async def _unfinished(conn: asyncpg.Connection, system: str) -> bool:
    if system == "pgqueuer":        # a job leaves the queue table in the statement that logs its outcome
        return await conn.fetchval("SELECT EXISTS (SELECT 1 FROM pgqueuer)")
    return await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM procrastinate_jobs WHERE status IN ('todo', 'doing'))")


async def _finished(conn: asyncpg.Connection, system: str, task: str) -> tuple[int, int, float | None]:
    """(jobs succeeded, jobs in any other final state, epoch of the last success) from the peer's tables."""
    if system == "pgqueuer":
        row = await conn.fetchrow(
            """SELECT count(*) FILTER (WHERE status = 'successful') AS ok,
                      count(*) FILTER (WHERE status NOT IN ('successful', 'queued', 'picked'))
                      + abs(count(*) FILTER (WHERE status = 'picked') - count(*) FILTER (WHERE status = 'successful'))
                      AS bad,   -- failed, or picked more than once
                      extract(epoch FROM max(created) FILTER (WHERE status = 'successful'))::float8 AS last
               FROM pgqueuer_log WHERE entrypoint = $1""", task)
    else:
        row = await conn.fetchrow(
            """SELECT count(*) FILTER (WHERE j.status = 'succeeded') AS ok,
                      count(*) FILTER (WHERE j.status NOT IN ('succeeded', 'todo', 'doing')
                                       OR (j.status = 'succeeded' AND j.attempts <> 1)) AS bad,
                      (SELECT extract(epoch FROM max(e.at))::float8 FROM procrastinate_events e
                       JOIN procrastinate_jobs j2 ON j2.id = e.job_id
                       WHERE e.type = 'succeeded' AND j2.task_name = $1) AS last
               FROM procrastinate_jobs j WHERE j.task_name = $1""", task)
    return row["ok"], row["bad"], row["last"]


async def drain(system: str, dsn: str, n: int, workers: int, config: dict[str, int], workdir: Path) -> dict[str, Any]:
    """One drain of ``n`` no-op jobs by ``workers`` worker processes with ``config``."""
    conn = await asyncpg.connect(dsn)
    try:
        await reset(conn, system)
        await fill(system, dsn, n)
        await settle(conn, system)
        pw = PeerWorkers(system, dsn, workdir)
        launched = time.time()
        timeout = max(120.0, n / 50)
        with pw.running(workers, config):
            await pw.wait_ready()
            pw.go()
            deadline = time.monotonic() + timeout
            while await _unfinished(conn, system):
                pw.check_alive()
                if time.monotonic() > deadline:
                    raise PeerError(f"{system}: jobs still unfinished after {timeout:.0f}s")
                await asyncio.sleep(0.05)
        ok, bad, last = await _finished(conn, system, "bench.noop")
        if ok != n or bad:
            raise PeerError(f"{system}: expected {n} no-op jobs succeeded; {ok} succeeded, {bad} otherwise")
        first = pw.first_started()
    finally:
        await conn.close()
    return {"system": system, "workload": "drain", "jobs": n, "workers": workers,
            "settings": describe_config(system, config), "config": dict(config),
            "seconds": last - first, "jobs_per_s": n / (last - first),
            "jobs_per_s_incl_startup": n / (last - launched)}


# -- pickup latency ---------------------------------------------------------------------------------

def percentiles(values: Sequence[float]) -> tuple[float, float, float]:
    if len(values) < 2:
        raise PeerError(f"too few probes ({len(values)}) to compute percentiles")
    q = statistics.quantiles(values, n=100, method="inclusive")
    return statistics.median(values), q[94], q[98]


PROBE_PRIORITY = 10                  # probes under load go ahead of the backlog (both peers claim priority DESC)


async def _pending_noop(conn: asyncpg.Connection, system: str) -> bool:
    """Whether no-op jobs of the backlog are still waiting to be picked up."""
    if system == "pgqueuer":
        return await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM pgqueuer WHERE entrypoint = 'bench.noop' AND status = 'queued')")
    return await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM procrastinate_jobs WHERE task_name = 'bench.noop' AND status = 'todo')")


async def pickup_latency(system: str, dsn: str, workdir: Path, probes: int = PROBES,
                         gap: float = PROBE_GAP, *, backlog: int = 0, tuning: str = "default") -> dict[str, Any]:
    """One run: 1 worker with ``tuning``'s settings; up to ``probes`` jobs enqueued one at a time, ``gap`` apart.

    backlog 0: the worker is idle. backlog > 0: that many no-op jobs are enqueued first (the peer's bulk
    API), the worker drains them, and the probes go in at priority PROBE_PRIORITY while it does; probes
    stop when no no-op job is waiting any more, and only those sent until then count (as in
    bench/worker_bench.py's latency_loaded). Every no-op job must have succeeded once afterwards.
    """
    config = WORKER_CONFIGS[system][tuning]
    loaded = backlog > 0
    conn = await asyncpg.connect(dsn)
    try:
        await reset(conn, system)
        if loaded:
            await fill(system, dsn, backlog)
        await settle(conn, system)
        pw = PeerWorkers(system, dsn, workdir)
        with pw.running(1, config):
            await pw.wait_ready()
            pw.go()
            # idle: the worker has started and waits; loaded: let the drain reach its pace
            await asyncio.sleep(0.5 if loaded else 1.0)
            priority = PROBE_PRIORITY if loaded else 0
            if system == "pgqueuer":
                from pgqueuer.db import AsyncpgDriver
                from pgqueuer.queries import Queries

                q = Queries(AsyncpgDriver(conn))
                send: EnqueueCall = lambda: q.enqueue("bench.probe", None, priority)  # noqa: E731
                app = None
            else:
                app = _procrastinate_app(dsn, min_size=1, max_size=1)
                await app.open_async()
                send = app.tasks["bench.probe"].configure(priority=priority).defer_async
            sent = 0
            try:
                next_at = time.monotonic()
                while sent < probes:
                    if loaded and not await _pending_noop(conn, system):
                        break
                    await send()
                    sent += 1
                    next_at += gap
                    await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            finally:
                if app is not None:
                    await app.close_async()
            deadline = time.monotonic() + 60
            while len(pw.probe_starts()) < sent:
                pw.check_alive()
                if time.monotonic() > deadline:
                    raise PeerError(f"{system}: probe jobs not started within 60 s")
                await asyncio.sleep(0.05)
            deadline = time.monotonic() + max(60.0, backlog / 50)
            while await _unfinished(conn, system):
                pw.check_alive()
                if time.monotonic() > deadline:
                    raise PeerError(f"{system}: jobs not finished within {max(60.0, backlog / 50):.0f} s")
                await asyncio.sleep(0.05)
        starts = pw.probe_starts()
        if system == "pgqueuer":
            rows = await conn.fetch(
                """SELECT job_id AS id, extract(epoch FROM created)::float8 AS t FROM pgqueuer_log
                   WHERE status = 'queued' AND entrypoint = 'bench.probe'""")
        else:
            rows = await conn.fetch(
                """SELECT e.job_id AS id, extract(epoch FROM e.at)::float8 AS t FROM procrastinate_events e
                   JOIN procrastinate_jobs j ON j.id = e.job_id
                   WHERE e.type = 'deferred' AND j.task_name = 'bench.probe'""")
        enqueued = {r["id"]: r["t"] for r in rows}
        if set(enqueued) != set(starts) or len(starts) != sent:
            raise PeerError(f"{system}: {sent} probes sent, {len(enqueued)} recorded as enqueued, "
                            f"{len(starts)} started")
        ok, bad, _ = await _finished(conn, system, "bench.probe")
        if ok != sent or bad:
            raise PeerError(f"{system}: {sent} probes, {ok} succeeded, {bad} otherwise")
        if loaded:
            ok, bad, _ = await _finished(conn, system, "bench.noop")
            if ok != backlog or bad:
                raise PeerError(f"{system}: a backlog of {backlog} no-op jobs, {ok} succeeded, {bad} otherwise")
    finally:
        await conn.close()
    values = [(starts[i] - enqueued[i]) * 1000 for i in starts]
    p50, p95, p99 = percentiles(values)
    return {"system": system, "workload": "pickup_latency_loaded" if loaded else "pickup_latency_idle",
            "probes": sent, "gap_ms": gap * 1000, "backlog": backlog,
            "probe_priority": priority, "settings": describe_config(system, config),
            "p50_ms": p50, "p95_ms": p95, "p99_ms": p99, "max_ms": max(values)}


# -- pgmq under pgbench -----------------------------------------------------------------------------

def pgmq_scripts(workdir: Path) -> dict[str, Path]:
    """pgbench scripts for pgmq, shaped like bench/pgbench/*.sql for pgrelay (the batch sent as a literal),
    written into ``workdir`` (bench/debris_bench.py runs read_archive_100 too)."""
    workdir.mkdir(parents=True, exist_ok=True)
    element = '"{\\"n\\":1}"'
    batch = "'{" + ",".join([element] * 1000) + "}'::jsonb[]"
    scripts = {
        "send_one": "-- pgmq: one message per transaction.\n"
                    f"SELECT pgmq.send('{PGMQ_QUEUE}', '{{\"n\":1}}');\n",
        "send_batch_1000": "-- pgmq: 1000 messages in one call, sent as an array literal.\n"
                           f"SELECT count(*) FROM pgmq.send_batch('{PGMQ_QUEUE}', {batch});\n",
        "read_archive_100": "-- pgmq: read 100 (visibility timeout 30 s) in one transaction, archive them in a second.\n"
                            "SELECT array_to_string(array_agg(msg_id), ',') AS ids\n"
                            f"FROM pgmq.read('{PGMQ_QUEUE}', 30, 100) \\gset\n"
                            f"SELECT count(*) FROM pgmq.archive('{PGMQ_QUEUE}', string_to_array(':ids', ',')::bigint[]);\n",
    }
    paths = {}
    for name, text in scripts.items():
        path = workdir / f"pgmq_{name}.sql"
        path.write_text(text)
        paths[name] = path
    return paths


PGMQ_WORKLOADS = {"send_one": 1, "send_batch_1000": 1000, "read_archive_100": 100}


async def pgmq_pgbench(dsn: str, workload: str, clients: int, workdir: Path, *, seconds: int | None = None,
                       transactions: int | None = None, draining: bool = False) -> dict[str, Any]:
    """One pgbench run of pgmq's SQL. send_*: -T seconds; read_archive_100: -t transactions per client
    from a pre-filled queue (10% more than it reads, + 1000). draining (send_* only): a consumer
    process (bench/peer_apps/pgmq_drainer.py) reads and archives the queue during the whole run."""
    per_tx = PGMQ_WORKLOADS[workload]
    script = pgmq_scripts(workdir)[workload]
    consumes = workload == "read_archive_100"
    if draining and consumes:
        raise PeerError("pgmq read_archive_100 consumes already; draining applies to the send workloads")
    conn = await asyncpg.connect(dsn)
    try:
        await reset(conn, "pgmq")
        fill_n = int(clients * (transactions or 0) * per_tx * 1.1) + 1000 if consumes else 0
        left = fill_n
        while left > 0:
            k = min(left, FILL_CHUNK)
            await conn.execute(
                "SELECT count(*) FROM pgmq.send_batch($1, (SELECT array_agg('{\"n\":1}'::jsonb) FROM generate_series(1, $2::int)))",
                PGMQ_QUEUE, k)
            left -= k
        await settle(conn, "pgmq")
        if consumes:
            tps, done = pgbench(dsn, str(script), clients, transactions=transactions)
        elif draining:
            drainer = PeerWorkers("pgmq", dsn, workdir)
            with drainer.running(1, {}):
                await drainer.wait_ready()
                drainer.go()
                tps, done = pgbench(dsn, str(script), clients, seconds=seconds)
                drained = await conn.fetchval(f"SELECT count(*) FROM pgmq.a_{PGMQ_QUEUE}")
        else:
            tps, done = pgbench(dsn, str(script), clients, seconds=seconds)
        if consumes:
            archived = await conn.fetchval(f"SELECT count(*) FROM pgmq.a_{PGMQ_QUEUE}")
            left_q = await conn.fetchval(f"SELECT count(*) FROM pgmq.q_{PGMQ_QUEUE}")
            if archived != done * per_tx or archived + left_q != fill_n:
                raise PeerError(f"pgmq {workload}: {done} transactions should archive {done * per_tx}; "
                                f"archived {archived}, {left_q} left of {fill_n}")
        elif draining:
            # one snapshot for both tables; a message is in one of them, never both, never neither
            row = await conn.fetchrow(
                f"""SELECT count(*) AS messages, count(DISTINCT msg_id) AS distinct_ids
                    FROM (SELECT msg_id FROM pgmq.q_{PGMQ_QUEUE} UNION ALL SELECT msg_id FROM pgmq.a_{PGMQ_QUEUE}) m""")
            if row["messages"] != done * per_tx or row["distinct_ids"] != row["messages"]:
                raise PeerError(f"pgmq {workload} while draining: {done} transactions should send {done * per_tx}; "
                                f"queue + archive hold {row['messages']} ({row['distinct_ids']} distinct ids)")
        else:
            sent = await conn.fetchval(f"SELECT count(*) FROM pgmq.q_{PGMQ_QUEUE}")
            if sent != done * per_tx:
                raise PeerError(f"pgmq {workload}: {done} transactions should send {done * per_tx}; found {sent}")
    finally:
        await conn.close()
    result = {"system": "pgmq", "workload": f"pgmq_{workload}", "clients": clients, "jobs_per_tx": per_tx,
              "transactions": done, "tps": tps, "jobs_per_s": tps * per_tx, "script": script.read_text()
              if workload != "send_batch_1000" else "SELECT count(*) FROM pgmq.send_batch('bench', '{...1000 x {\"n\":1}...}'::jsonb[])"}
    if draining:      # drained_in_window: the messages the consumer had archived when pgbench ended
        result.update(workload=f"pgmq_{workload}_draining", drained_in_window=drained)
    return result
