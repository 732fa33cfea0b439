"""Machinery of the reliability suite: a throwaway cluster, real ``jobs-worker`` processes, and the
invariants read back from the database at the end.

- ``cluster_fixture(options)`` makes a module-scoped fixture ``cluster``: a throwaway PostgreSQL
  cluster of this module's own (tests here restart, crash and starve the server; the shared
  pytest-postgresql cluster is never touched). ``database`` (function scope) is a fresh database on
  it with pgrelay installed by the real installer (``pgrelay.schema.migrate``), the app's table
  ``reliability_runs``, and the test queue configured.
- ``Workers`` starts N ``jobs-worker`` processes running ``tests.reliability.app:router``, SIGKILLs
  a random one, starts replacements, and stops them all (SIGTERM, then SIGKILL) at the end. A worker
  that exits on its own is a failure (``assert_healthy``), reported with its log.
- ``ChaosProxy`` is a TCP proxy (asyncio, in a thread of its own) between workers and the server
  that resets connections on demand, refuses new ones for a while (a network blackout), or silently
  swallows a connection's traffic (a partition nothing reports).
- ``assert_invariants`` asserts, from the database alone: every enqueued job is in exactly one state
  (``pgrelay.jobs``) and it is ``succeeded``; as many succeeded as were enqueued; each job's attempt
  history (``pgrelay.get_attempts``) is complete (attempts 1..n, the last succeeded); every attempt
  ran at most once (a claim is exclusive) and the one that succeeded did run; and every other
  execution - a duplicate - belongs to an attempt that ended ``lease_expired`` (optionally: in a
  worker the test killed). The duplicates are counted in every assertion message.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import random
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import psycopg
import pytest
from psycopg.types.json import Jsonb

from pgrelay.schema import migrate
from tests.harness.cluster import PG_CTL, TEST_SETTINGS, Cluster, throwaway_cluster

ROOT = Path(__file__).resolve().parents[2]
JOBS_WORKER = Path(sys.executable).parent / "jobs-worker"   # the venv's, as .venv/bin/jobs-worker
APP = "tests.reliability.app:router"
QUEUE = "reliability"
TASK = "reliability.run"

# Crash-safe settings for tests that kill the server (pg_ctl -m immediate): fsync and full_page_writes
# stay on (their defaults), unlike TEST_SETTINGS.
DURABLE_SETTINGS = "-c max_connections=300"

_database_numbers = itertools.count(1)


# -- cluster and database -------------------------------------------------------------------------


def cluster_fixture(postgres_options: str = TEST_SETTINGS) -> Any:
    """A module-scoped fixture ``cluster``: ``cluster = cluster_fixture()`` in a test module."""

    @pytest.fixture(scope="module")
    def cluster() -> Iterator[Cluster]:
        with throwaway_cluster(postgres_options) as started:
            yield started

    return cluster


@dataclass
class Database:
    cluster: Cluster
    name: str

    @property
    def dsn(self) -> str:
        return self.cluster.dsn(self.name)

    def connect(self, **kwargs: Any) -> psycopg.Connection:
        return psycopg.connect(self.dsn, autocommit=True, connect_timeout=10, **kwargs)

    def scalar(self, sql: str, *params: Any) -> Any:
        with self.connect() as conn:
            return conn.execute(sql, params).fetchone()[0]


@contextlib.contextmanager
def new_database(cluster: Cluster) -> Iterator[Database]:
    """A fresh database with pgrelay installed, ``reliability_runs`` and the test queue; dropped after."""
    name = f"reliability_{os.getpid()}_{next(_database_numbers)}"
    with psycopg.connect(cluster.dsn("postgres"), autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    database = Database(cluster, name)

    async def install() -> None:
        conn = await asyncpg.connect(database.dsn, timeout=10)
        try:
            await migrate(conn)
        finally:
            await conn.close()

    asyncio.run(install())
    with database.connect() as conn:
        conn.execute(
            """CREATE TABLE reliability_runs (
                   execution uuid PRIMARY KEY,   -- one per call of the handler (retried records dedupe)
                   job_id    bigint NOT NULL,
                   attempt   integer NOT NULL,
                   pid       integer NOT NULL,   -- the jobs-worker process that ran it
                   at        timestamptz NOT NULL DEFAULT clock_timestamp())"""
        )
        # Retries come back fast (the backoff is not under test), and a job caught by many kills does
        # not run out of attempts: every job of this workload must end succeeded.
        conn.execute(
            "SELECT pgrelay.configure_queue(%s, max_attempts => 100, backoff_base_seconds => 0.05,"
            " backoff_max_seconds => 0.5)",
            [QUEUE],
        )
    try:
        yield database
    finally:
        with contextlib.suppress(Exception), psycopg.connect(cluster.dsn("postgres"), autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def database(cluster: Cluster) -> Iterator[Database]:
    with new_database(cluster) as created:
        yield created


def pg_ctl_restart(cluster: Cluster, mode: str, timeout: float = 120) -> None:
    """``pg_ctl restart -m <mode>`` of a throwaway cluster, as its unprivileged OS user (tests/harness/pg_ctl)."""
    executor = cluster.executor
    subprocess.run(
        [PG_CTL, "restart", "-D", executor.datadir, "-m", mode, "-w", "-t", str(int(timeout)), "-l", executor.logfile],
        check=True, timeout=timeout + 30, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )


# -- jobs -----------------------------------------------------------------------------------------


def enqueue(database: Database, count: int, *, sleep: float | Callable[[random.Random], float] = 0.0,
            seed: int = 0, chunk: int = 1000) -> list[int]:
    """Enqueue ``count`` jobs of the test task (``sleep``: seconds, or drawn per job); their ids."""
    rng = random.Random(seed)
    ids: list[int] = []
    with database.connect() as conn:
        for start in range(0, count, chunk):
            payloads = []
            for _ in range(start, min(start + chunk, count)):
                seconds = sleep(rng) if callable(sleep) else sleep
                payloads.append(Jsonb({"sleep": round(seconds, 4)} if seconds else {}))
            ids.extend(row[0] for row in conn.execute(
                "SELECT pgrelay.enqueue_many(%s, %s::jsonb[], queue => %s)", [TASK, payloads, QUEUE]))
    return ids


@dataclass(frozen=True)
class Progress:
    active: int      # pending (due or not) and leased
    finished: int    # succeeded, dead_letter, cancelled


def progress(database: Database) -> Progress | None:
    """How far the queue is, from the hot table and the counters; None while the database is away."""
    try:
        with database.connect() as conn:
            row = conn.execute(
                "SELECT pending + scheduled + leased, succeeded + dead_letter + cancelled"
                " FROM pgrelay.queue_stats WHERE queue = %s", [QUEUE]).fetchone()
    except psycopg.OperationalError:
        return None
    return Progress(*row) if row else Progress(0, 0)


def wait_until_drained(database: Database, expected: int, workers: Workers, *, timeout: float,
                       during: Callable[[Progress], None] | None = None, interval: float = 0.2) -> Progress:
    """Poll until ``expected`` jobs finished and none is active; ``during`` runs at each poll (chaos).

    Fails early, with the workers' logs, when a worker exits on its own.
    """
    deadline = time.monotonic() + timeout
    last: Progress | None = None
    while True:
        workers.assert_healthy()
        current = progress(database)
        if current is not None:
            last = current
            if current.active == 0 and current.finished >= expected:
                return current
        assert time.monotonic() < deadline, (
            f"the jobs were not done after {timeout:.0f}s: {last}; expected {expected} finished\n"
            + workers.logs_tail())
        if during is not None and current is not None:
            during(current)
        time.sleep(interval)


# -- worker processes -----------------------------------------------------------------------------


@dataclass
class WorkerProcess:
    proc: subprocess.Popen[bytes]
    log: Path
    started: float = field(default_factory=time.monotonic)
    killed: bool = False       # SIGKILLed by the test
    stopping: bool = False     # SIGTERMed by the test

    @property
    def pid(self) -> int:
        return self.proc.pid

    def tail(self, lines: int = 25) -> str:
        try:
            text = self.log.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return "(no log)"
        return "\n".join(text)


class Workers:
    """``jobs-worker`` processes for one test; use as a context manager (stops them all on exit)."""

    def __init__(self, dsn: str, record_dsn: str, log_dir: Path, *, concurrency: int = 10,
                 lease_seconds: int = 2, poll_interval: float = 0.5, shutdown_grace: float = 10.0,
                 extra_args: Sequence[str] = ()) -> None:
        self.dsn = dsn
        self.record_dsn = record_dsn
        self.log_dir = log_dir
        self.args = [
            "--app", APP, "--queue", QUEUE, "--no-http",
            "--concurrency", str(concurrency), "--lease-seconds", str(lease_seconds),
            "--poll-interval", str(poll_interval), "--shutdown-grace", str(shutdown_grace),
            *extra_args,
        ]
        self.processes: list[WorkerProcess] = []
        self._numbers = itertools.count(1)

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *_: Any) -> None:
        self.stop()

    def start(self, count: int = 1) -> list[WorkerProcess]:
        started = []
        path = os.pathsep.join(p for p in (os.environ.get("PYTHONPATH"), str(ROOT)) if p)
        env = {**os.environ, "PYTHONPATH": path, "PGRELAY_RELIABILITY_DSN": self.record_dsn}
        for _ in range(count):
            log = self.log_dir / f"worker-{next(self._numbers)}.log"
            with log.open("wb") as out:
                proc = subprocess.Popen([str(JOBS_WORKER), self.dsn, *self.args], cwd=ROOT, env=env,
                                        stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
            started.append(WorkerProcess(proc, log))
        self.processes.extend(started)
        return started

    def busy(self, database: Database) -> set[int]:
        """The live workers that have run a job (the others are still starting up)."""
        pids = [w.pid for w in self.alive()]
        with database.connect() as conn:
            return {row[0] for row in conn.execute(
                "SELECT DISTINCT pid FROM reliability_runs WHERE pid = ANY (%s)", [pids])}

    def alive(self) -> list[WorkerProcess]:
        return [w for w in self.processes if w.proc.poll() is None and not w.killed and not w.stopping]

    @property
    def killed_pids(self) -> set[int]:
        return {w.pid for w in self.processes if w.killed}

    def kill_random(self, rng: random.Random, *, among: Iterable[int] | None = None) -> WorkerProcess | None:
        """SIGKILL a random live worker (whose pid is in ``among``, if given); None if there is none."""
        eligible = None if among is None else set(among)
        candidates = [w for w in self.alive() if eligible is None or w.pid in eligible]
        if not candidates:
            return None
        victim = rng.choice(candidates)
        victim.killed = True
        victim.proc.send_signal(signal.SIGKILL)
        victim.proc.wait(timeout=30)
        return victim

    def assert_healthy(self) -> None:
        """No worker exited unless the test killed or stopped it."""
        died = [w for w in self.processes if w.proc.poll() is not None and not w.killed and not w.stopping]
        assert not died, "a worker exited on its own:\n" + "\n".join(
            f"--- pid {w.pid}, exit code {w.proc.returncode}:\n{w.tail(60)}" for w in died)

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM every live worker; SIGKILL those still running after ``timeout``."""
        running = [w for w in self.processes if w.proc.poll() is None]
        for w in running:
            if not w.killed:
                w.stopping = True
            with contextlib.suppress(ProcessLookupError):
                w.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for w in running:
            try:
                w.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                w.proc.kill()
                w.proc.wait(timeout=30)

    def assert_stopped_cleanly(self) -> None:
        """Every worker the test stopped with SIGTERM exited 0."""
        bad = [w for w in self.processes if w.stopping and w.proc.returncode != 0]
        assert not bad, "a worker did not stop cleanly on SIGTERM:\n" + "\n".join(
            f"--- pid {w.pid}, exit code {w.proc.returncode}:\n{w.tail(60)}" for w in bad)

    def logs_tail(self, lines: int = 15) -> str:
        return "\n".join(f"--- worker pid {w.pid}{' (killed)' if w.killed else ''}:\n{w.tail(lines)}"
                         for w in self.processes[-6:])


# -- a TCP proxy that breaks connections ----------------------------------------------------------


class _Link:
    """One proxied connection: the client's socket and ours to the server."""

    def __init__(self, client: asyncio.StreamWriter, server: asyncio.StreamWriter) -> None:
        self.client = client
        self.server = server
        self.stalled = False   # bytes are swallowed both ways, nothing is closed: a silent partition


class ChaosProxy:
    """Forwards 127.0.0.1:``port`` to the server; ``cut`` resets live connections, ``blackout`` also
    refuses new ones for a while, ``stall`` silently swallows a connection's traffic from then on.
    Runs its own event loop in a thread; use as a context manager.

    A cut closes both sockets with SO_LINGER 0, so both ends get a TCP reset at once: the worker sees
    its connection die mid-query (or idle in its pool), the server's backend sees its client gone
    (and rolls back whatever it had not committed). A stalled connection is what a dropped NAT entry
    or a vanished host looks like: the client's writes succeed, no answer ever comes, and nothing
    tells it so; it ends only when the client closes it.
    """

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self.accepted = 0
        self.refused = 0
        self.cuts = 0
        self.stalls = 0
        self._links: set[_Link] = set()
        self._refusing_until = 0.0
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.AbstractServer | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, name="chaos-proxy", daemon=True)

    def __enter__(self) -> ChaosProxy:
        self._thread.start()
        self._call(self._start())
        return self

    def __exit__(self, *_: Any) -> None:
        with contextlib.suppress(Exception):
            self._call(self._stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        if not self._thread.is_alive():
            self._loop.close()

    def dsn(self, database: Database) -> str:
        return f"postgresql://{database.cluster.user}@127.0.0.1:{self.port}/{database.name}"

    @property
    def connections(self) -> int:
        return len(self._links)

    def cut(self, rng: random.Random, count: int = 1) -> int:
        """Reset ``count`` random live connections; returns how many were cut."""
        return self._call(self._cut(rng, count))

    def blackout(self, seconds: float) -> int:
        """Reset every connection and refuse new ones for ``seconds``; returns how many were cut."""
        return self._call(self._blackout(seconds))

    def stall(self, rng: random.Random, count: int = 1) -> int:
        """Silently swallow the traffic of ``count`` random live connections from now on."""
        return self._call(self._stall(rng, count))

    def stall_all(self) -> int:
        """Silently swallow the traffic of every live connection from now on (new ones still work)."""
        return self._call(self._stall(None, None))

    # the proxy's own loop

    def _call(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=30)

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for link in list(self._links):
            self._reset(link)
        others = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)

    def _pick(self, rng: random.Random | None, count: int | None, *, live_only: bool = False) -> list[_Link]:
        links = sorted((link for link in self._links if not (live_only and link.stalled)), key=id)
        if rng is None or count is None:
            return links
        return rng.sample(links, min(count, len(links)))

    async def _cut(self, rng: random.Random, count: int) -> int:
        victims = self._pick(rng, count)
        for link in victims:
            self._reset(link)
        return len(victims)

    async def _blackout(self, seconds: float) -> int:
        self._refusing_until = time.monotonic() + seconds
        victims = self._pick(None, None)
        for link in victims:
            self._reset(link)
        return len(victims)

    async def _stall(self, rng: random.Random | None, count: int | None) -> int:
        victims = self._pick(rng, count, live_only=True)
        for link in victims:
            link.stalled = True
        self.stalls += len(victims)
        return len(victims)

    def _reset(self, link: _Link) -> None:
        if link not in self._links:
            return
        self._links.discard(link)
        self.cuts += 1
        _abort_with_reset(link.client)
        _abort_with_reset(link.server)

    async def _handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        if time.monotonic() < self._refusing_until:
            self.refused += 1
            _abort_with_reset(client_writer)
            return
        try:
            server_reader, server_writer = await asyncio.open_connection(*self.target)
        except OSError:
            _abort_with_reset(client_writer)
            return
        self.accepted += 1
        link = _Link(client_writer, server_writer)
        self._links.add(link)
        try:
            await asyncio.gather(_pipe(link, client_reader, server_writer), _pipe(link, server_reader, client_writer))
        finally:
            if link in self._links:   # one side closed on its own: close the other, gently
                self._links.discard(link)
                link.client.close()
                link.server.close()


async def _pipe(link: _Link, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            if link.stalled:
                continue
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (OSError, RuntimeError):
        pass


def _abort_with_reset(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


# -- invariants -----------------------------------------------------------------------------------


@dataclass
class Summary:
    """What happened, for the assertion messages and for tests that check the chaos bit."""

    jobs: int
    executions: int
    duplicates: int               # executions beyond one per job
    duplicated_jobs: int
    attempts: Counter[str]        # attempt outcomes
    violations: list[str]

    def describe(self) -> str:
        outcomes = ", ".join(f"{n} {o}" for o, n in sorted(self.attempts.items()))
        return (f"{self.jobs} jobs, {self.executions} executions, {self.duplicates} duplicate executions"
                f" in {self.duplicated_jobs} jobs; attempts: {outcomes}")


def check_invariants(database: Database, ids: Iterable[int], *,
                     duplicate_outcomes: frozenset[str] = frozenset({"lease_expired"}),
                     killed_pids: set[int] | None = None) -> Summary:
    """Read the end state and list every broken invariant (see the module docstring)."""
    ids = list(ids)
    enqueued = set(ids)
    violations: list[str] = []
    with database.connect() as conn:
        states = conn.execute("SELECT id, status, attempt FROM pgrelay.jobs WHERE queue = %s OR id = ANY (%s)",
                              [QUEUE, ids]).fetchall()
        attempt_rows = conn.execute(
            "SELECT a.job_id, a.attempt, a.outcome, a.worker"
            " FROM unnest(%s::bigint[]) i, LATERAL pgrelay.get_attempts(i) a", [ids]).fetchall()
        runs = conn.execute("SELECT job_id, attempt, pid FROM reliability_runs").fetchall()

    # 1. every job in exactly one state, that state succeeded; as many succeeded as enqueued
    seen = Counter(row[0] for row in states)
    final: dict[int, int] = {}
    for job_id, status, attempt in states:
        if job_id not in enqueued:
            violations.append(f"job {job_id} ({status}) was never enqueued by this test")
        elif status != "succeeded":
            violations.append(f"job {job_id} is {status} (attempt {attempt}), not succeeded")
        final[job_id] = attempt
    violations += [f"job {j} is in {n} states at once" for j, n in seen.items() if n > 1]
    violations += [f"job {j} was lost: it is in no state" for j in sorted(enqueued - set(seen))]
    succeeded = sum(1 for row in states if row[1] == "succeeded" and row[0] in enqueued)
    if succeeded != len(enqueued):
        violations.append(f"{succeeded} jobs succeeded, {len(enqueued)} were enqueued")

    # 2. each job's attempt history is complete: 1..n, the last succeeded, the others as expected
    history: dict[int, dict[int, tuple[str, str]]] = defaultdict(dict)
    outcomes: Counter[str] = Counter()
    for job_id, attempt, outcome, worker in attempt_rows:
        if attempt in history[job_id]:
            violations.append(f"job {job_id} has two attempt rows numbered {attempt}")
        history[job_id][attempt] = (outcome, worker)
        outcomes[outcome] += 1
    for job_id in ids:
        last = final.get(job_id)
        if last is None:
            continue
        numbers = sorted(history[job_id])
        if numbers != list(range(1, last + 1)):
            violations.append(f"job {job_id} ended at attempt {last} but its attempts are {numbers}")
        for number, (outcome, _worker) in history[job_id].items():
            expected = {"succeeded"} if number == last else duplicate_outcomes
            if outcome not in expected:
                violations.append(f"job {job_id} attempt {number} ended {outcome}, expected one of {sorted(expected)}")

    # 3. executions: each attempt at most once; the succeeded one did run; every other one (a
    #    duplicate) belongs to an attempt that ended lease_expired, in a worker the test killed
    executions: dict[int, Counter[int]] = defaultdict(Counter)
    pids: dict[tuple[int, int], set[int]] = defaultdict(set)
    for job_id, attempt, pid in runs:
        executions[job_id][attempt] += 1
        pids[job_id, attempt].add(pid)
    for job_id, by_attempt in executions.items():
        if job_id not in enqueued:
            violations.append(f"an execution of job {job_id}, which this test never enqueued")
            continue
        last = final.get(job_id)
        for attempt, count in by_attempt.items():
            if count > 1:
                violations.append(f"job {job_id} attempt {attempt} ran {count} times (pids {sorted(pids[job_id, attempt])}):"
                                  " two workers held the same lease")
            if last is None or attempt == last:
                continue
            outcome = history[job_id].get(attempt, ("no attempt row", ""))[0]
            if attempt > last or outcome not in duplicate_outcomes:
                violations.append(f"job {job_id} ran again: attempt {attempt} executed and ended {outcome!r},"
                                  f" which does not explain a duplicate (final attempt {last})")
            elif killed_pids is not None and not pids[job_id, attempt] <= killed_pids:
                violations.append(f"job {job_id} attempt {attempt} ended {outcome} in worker pid"
                                  f" {sorted(pids[job_id, attempt])}, which the test did not kill")
    for job_id in ids:
        last = final.get(job_id)
        if last is not None and executions[job_id][last] == 0:
            violations.append(f"job {job_id} succeeded at attempt {last}, which never executed")

    total = sum(sum(c.values()) for c in executions.values())
    duplicated = [j for j, c in executions.items() if sum(c.values()) > 1]
    return Summary(
        jobs=len(enqueued), executions=total,
        duplicates=sum(sum(executions[j].values()) - 1 for j in duplicated),
        duplicated_jobs=len(duplicated), attempts=outcomes, violations=violations,
    )


def assert_invariants(database: Database, ids: Iterable[int], **options: Any) -> Summary:
    """``check_invariants``, asserted: the message names the first violations and counts the duplicates."""
    summary = check_invariants(database, ids, **options)
    shown = "\n".join(summary.violations[:25])
    more = f"\n... and {len(summary.violations) - 25} more" if len(summary.violations) > 25 else ""
    assert not summary.violations, f"{len(summary.violations)} invariant violations ({summary.describe()}):\n{shown}{more}"
    return summary
