"""pgrelay behind a real PgBouncer 1.18 in transaction-pooling mode (issue 7, item 7).

What breaks behind a transaction pooler, each checked here against the real thing:
- asyncpg's statement cache (named prepared statements live on one server connection): the worker
  takes ``statement_cache_size=0``; the operator CLI and the worker's LISTEN connection never cache;
- asyncpg's pool reset on release (``pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL``) runs
  on whichever server connection PgBouncer picks, so it wipes other clients' session state: the
  worker's pool sends none when ``statement_cache_size=0``;
- session state of any kind: pgrelay keeps none (a scan of the SQL and Python, and a session checked
  after every public call);
- LISTEN through the pooler delivers nothing: jobs are then found by polling, and ``listen_dsn``
  (``--listen-dsn``) pointing at the database directly brings wakeups back;
- PostgREST needs ``db-prepared-statements = false``.

Then the lot at once: a few thousand jobs drained through a pool of 4 server connections by in-process
workers and a real ``jobs-worker``, each job succeeding exactly once.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import json
import logging
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import psycopg
import pytest

import pgrelay
from pgrelay import client
from tests.harness.tools import missing
from tests.reliability.conftest import size
from tests.reliability.pgbouncer import PgBouncer, pgbouncer_binary, run_pgbouncer

ROOT = Path(__file__).parents[2]
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module", autouse=True)
def pgbouncer_installed() -> None:
    if pgbouncer_binary() is None:
        missing("PgBouncer is not installed (make test installs Debian's pgbouncer when run as root; "
                "or set PGRELAY_PGBOUNCER)")


# -- fixtures and helpers ---------------------------------------------------------------------


@pytest.fixture
def start_bouncer(db: psycopg.Connection, postgresql_proc: Any, tmp_path: Path) -> Iterator[Callable[..., PgBouncer]]:
    """``start_bouncer(default_pool_size=4, ...)``: a PgBouncer in front of the test's database, stopped
    (before the database is dropped) at the end of the test."""
    with contextlib.ExitStack() as stack:
        counter = iter(range(100))

        def start(**options: Any) -> PgBouncer:
            workdir = tmp_path / f"pgbouncer-{next(counter)}"
            return stack.enter_context(run_pgbouncer(workdir, postgresql_proc.host, postgresql_proc.port, **options))

        yield start


@pytest.fixture
def bouncer(start_bouncer: Callable[..., PgBouncer]) -> PgBouncer:
    return start_bouncer(default_pool_size=4)


@pytest.fixture
def dbname(db: psycopg.Connection) -> str:
    return db.info.dbname


def scalar(conn: psycopg.Connection, sql: str, *params: Any) -> Any:
    return conn.execute(sql, params).fetchone()[0]


async def wait_until(condition: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> None:
    """Await ``condition()`` (a coroutine function or a plain one) until it is true."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        await asyncio.sleep(0.05)


async def db_equals(conn: psycopg.Connection, sql: str, expected: Any, *params: Any) -> bool:
    """Whether ``sql``'s single value is ``expected`` (psycopg in a thread: the event loop runs the workers)."""
    return await asyncio.to_thread(scalar, conn, sql, *params) == expected


def wait_for(condition: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.05)


class Captured(logging.Handler):
    """The records of one logger, whatever other tests did to propagation."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def messages(self, level: int = logging.DEBUG) -> list[str]:
        return [r.getMessage() for r in self.records if r.levelno >= level]


@contextlib.contextmanager
def captured(logger: str = "pgrelay") -> Iterator[Captured]:
    handler = Captured()
    log = logging.getLogger(logger)
    old_level = log.level
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        log.removeHandler(handler)
        log.setLevel(old_level)


@contextlib.asynccontextmanager
async def running(worker: pgrelay.Worker) -> AsyncIterator[asyncio.Task[None]]:
    """Run ``worker`` for the block; stop it and wait for it after (it must not have died)."""
    task = asyncio.create_task(worker.run())
    try:
        yield task
        assert not task.done(), f"the worker stopped early: {task.exception() if task.done() else ''}"
        # its background loops (heartbeat, ack, recover, listen) are all still alive
        dead = [t.get_name() for t in worker._background if t.done()]
        assert not dead, f"worker loops that died: {dead} ({[t.exception() for t in worker._background if t.done()]})"
    finally:
        worker.stop()
        await asyncio.wait_for(task, timeout=30)


def counting_router(seen: list[int] | None = None) -> pgrelay.Router:
    """Task "record": one row in ``executions`` per run (through the worker's pool), so duplicates show."""
    router = pgrelay.Router()

    @router.task("record")
    async def record(ctx: pgrelay.JobContext) -> None:
        await ctx.pool.execute("INSERT INTO executions (job_id, attempt, pid, note) VALUES ($1, $2, $3, 'in-process')",
                               ctx.job_id, ctx.attempt, os.getpid())
        if seen is not None:
            seen.append(ctx.job_id)

    return router


@pytest.fixture
def executions(db: psycopg.Connection) -> psycopg.Connection:
    db.execute("CREATE TABLE executions (job_id bigint, attempt int, pid int, note text, at timestamptz DEFAULT clock_timestamp())")
    return db


def jobs_worker(dsn: str, *args: str) -> subprocess.Popen[str]:
    """A real ``jobs-worker`` running tests/acceptance/worker_app.py's handlers (task "record" among them)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    # the log goes to a file: a pipe read only at the end would fill and block the worker's logging
    log = tempfile.TemporaryFile("w+")
    proc = subprocess.Popen(
        [str(BIN / "jobs-worker"), dsn, "--app", "tests.acceptance.worker_app:router", "--no-http", *args],
        env=env, stdout=log, stderr=subprocess.STDOUT, text=True,
    )
    proc.log = log  # type: ignore[attr-defined]
    return proc


def stop_process(proc: subprocess.Popen[str], timeout: float = 30) -> str:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)
    log = proc.log  # type: ignore[attr-defined]
    log.seek(0)
    output = log.read()
    log.close()
    return output


def listeners(conn: psycopg.Connection, application_name: str) -> list[int]:
    """Backends of ``application_name`` that have run LISTEN (then only a keepalive SELECT 1)."""
    return [r[0] for r in conn.execute(
        "SELECT pid FROM pg_stat_activity WHERE application_name = %s AND (query LIKE 'LISTEN%%' OR query = 'SELECT 1')"
        " AND state = 'idle'", [application_name])]


def with_app_name(dsn: str, name: str) -> str:
    return f"{dsn}{'&' if '?' in dsn else '?'}application_name={name}"


# -- the known facts, checked against the real PgBouncer ----------------------------------------


async def test_asyncpg_statement_cache_breaks_behind_pgbouncer_and_size_0_works(start_bouncer, dbname, db):
    # asyncpg prepares a named statement on the server connection it happens to get; when the next call
    # gets another one (here: PgBouncer had to open a new one), the statement is not there
    bouncer = start_bouncer(default_pool_size=1)
    cached = await asyncpg.connect(bouncer.dsn(dbname))
    await client.enqueue(cached, "cache.one")
    await asyncio.to_thread(bouncer.drop_server_connections, db, dbname)
    with pytest.raises(asyncpg.PostgresError, match=r"prepared statement .* does not exist"):
        await client.enqueue(cached, "cache.two")
    await cached.close()

    # psycopg 3 prepares a statement once it has run it 5 times (prepare_threshold); the next client
    # on that server connection prepares the same name again (README.md: prepare_threshold=None)
    with psycopg.connect(bouncer.dsn(dbname), autocommit=True) as conn:
        for _ in range(6):
            conn.execute("SELECT pgrelay.enqueue(task => %s)", ["cache.psycopg"])
    with psycopg.connect(bouncer.dsn(dbname), autocommit=True) as conn, \
            pytest.raises(psycopg.errors.DuplicatePreparedStatement):
        for _ in range(6):
            conn.execute("SELECT pgrelay.enqueue(task => %s)", ["cache.psycopg"])

    # statement_cache_size=0: asyncpg uses unnamed statements only, many clients through few server connections
    bouncer = start_bouncer(default_pool_size=4)
    pool = await asyncpg.create_pool(bouncer.dsn(dbname), min_size=1, max_size=20, statement_cache_size=0)
    errors: list[str] = []

    async def producer(n: int) -> None:
        try:
            await client.enqueue(pool, "cache.ok", {"n": n})
            await client.enqueue_many(pool, "cache.ok", [{"n": n, "i": i} for i in range(3)])
            await client.enqueue_bulk(pool, [{"task": "cache.ok", "payload": {"n": n}, "idempotency_key": f"k{n}"}])
            await client.queue_stats(pool)
        except Exception as exc:  # noqa: BLE001 - every failure is counted and shown
            errors.append(f"{type(exc).__name__}: {exc}")

    await asyncio.gather(*(producer(n) for n in range(size(200, 2000))))
    await pool.close()
    assert errors == []


async def test_asyncpg_pool_reset_wipes_other_clients_session_state_but_the_worker_does_not(
        start_bouncer, dbname, executions):
    """asyncpg's release-time reset runs on a server connection PgBouncer shares; the worker sends none."""
    bouncer = start_bouncer(default_pool_size=1)   # every client shares the one server connection
    other = bouncer.connect(dbname)                 # someone else's client, holding session state (unsafe, but theirs)

    def arrange() -> None:
        other.execute("SELECT pg_advisory_lock(4242)")
        other.execute("SET myapp.tenant = 'acme'")

    def state() -> tuple[int, str]:
        locks = scalar(executions, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = 4242 AND granted")
        return locks, scalar(other, "SELECT current_setting('myapp.tenant', true)")

    arrange()
    assert state() == (1, "acme")
    # a plain asyncpg pool through PgBouncer: one call, one release, one reset of the shared connection
    pool = await asyncpg.create_pool(bouncer.dsn(dbname), min_size=1, max_size=1, statement_cache_size=0)
    await pool.fetchval("SELECT 1")
    await pool.close()
    assert state() == (0, ""), "asyncpg's reset on release no longer touches the shared server connection?"

    # what README.md advises for an application's own asyncpg pool: a reset that sends nothing
    arrange()

    async def no_reset(conn: asyncpg.Connection) -> None:
        pass

    pool = await asyncpg.create_pool(bouncer.dsn(dbname), min_size=1, max_size=1, statement_cache_size=0,
                                     reset=no_reset)
    await pool.fetchval("SELECT 1")
    await pool.close()
    assert state() == (1, "acme")

    ids = await asyncio.to_thread(lambda: [r[0] for r in executions.execute(
        "SELECT pgrelay.enqueue('record', jsonb_build_object('n', g)) FROM generate_series(1, 30) g")])
    worker = pgrelay.Worker(bouncer.dsn(dbname), counting_router(), statement_cache_size=0, listen_dsn=False,
                            poll_interval=0.05, concurrency=4)
    async with running(worker):
        await wait_until(lambda: db_equals(executions, "SELECT count(*) FROM pgrelay.jobs WHERE status = 'succeeded'",
                                           len(ids)), what="30 jobs through PgBouncer")
    # the worker acquired and released its pool connections many times: the other client's lock and
    # setting are still there
    assert state() == (1, "acme")
    other.close()


async def test_listen_through_pgbouncer_receives_nothing_but_a_direct_listener_does(bouncer, dbname, dsn, db):
    received: dict[str, list[str]] = {"bouncer": [], "direct": []}
    through = await asyncpg.connect(bouncer.dsn(dbname), statement_cache_size=0)
    direct = await asyncpg.connect(dsn)
    await through.add_listener(client.CHANNEL, lambda *a: received["bouncer"].append(a[-1]))
    await direct.add_listener(client.CHANNEL, lambda *a: received["direct"].append(a[-1]))
    await client.idle(direct, "direct-listener", queues=["wake"])   # producers NOTIFY only a waiting worker
    # NOTIFY sent through PgBouncer, by enqueue (the producer's path), reaches the direct listener
    producer = bouncer.connect(dbname)
    producer.execute("SELECT pgrelay.enqueue('listen.check', queue => 'wake')")
    await wait_until(lambda: received["direct"] == ["wake"], timeout=10, what="the direct listener's notification")
    await asyncio.sleep(1.0)
    await through.fetchval("SELECT 1")  # a round trip: a notification delivered to this client would be read now
    assert received["bouncer"] == []
    producer.close()
    await through.close()
    await direct.close()


# -- pgrelay keeps no session state -----------------------------------------------------------


def _sql_without_comments_and_strings(text: str) -> tuple[list[str], str, list[str]]:
    """(function bodies, the script outside them, string literals) of an SQL script, comments removed."""
    text = re.sub(r"--[^\n]*", "", text)
    dollar = re.compile(r"\$([A-Za-z_]*)\$(.*?)\$\1\$", re.S)
    bodies = [m.group(2) for m in dollar.finditer(text)]
    outside = dollar.sub(" ", text)
    literal = re.compile(r"'(?:[^']|'')*'")
    strings = [s for part in (*bodies, outside) for s in literal.findall(part)]
    return [literal.sub("''", b) for b in bodies], literal.sub("''", outside), strings


# SQL that leaves state in the session (a pooler hands that session to other clients next)
SESSION_SQL = {
    "a session advisory lock": re.compile(r"\bpg_(try_)?advisory_(un)?lock(_shared|_all)?\s*\(", re.I),
    "a temporary table": re.compile(r"\bCREATE\s+((LOCAL|GLOBAL)\s+)?(TEMP|TEMPORARY)\b|\bINTO\s+(TEMP|TEMPORARY)\b", re.I),
    "a prepared statement": re.compile(r"\b(PREPARE|DEALLOCATE)\s+\w", re.I),
    "LISTEN": re.compile(r"\b(UN)?LISTEN\b", re.I),
    "a cursor WITH HOLD": re.compile(r"\bWITH\s+HOLD\b", re.I),
    "set_config(..., false)": re.compile(r"\bset_config\s*\((?:[^()]|\([^()]*\))*,\s*false\s*\)", re.I),
    "SET SESSION": re.compile(r"\bSET\s+SESSION\b", re.I),
    "DISCARD / RESET": re.compile(r"(?:^|;|\bBEGIN|\bTHEN|\bELSE|\bLOOP)\s*(DISCARD|RESET)\b", re.I),
    # a SET statement (not SET LOCAL); a function's own SET clause is restored when it returns
    "SET without LOCAL": re.compile(r"(?:^|;|\bBEGIN|\bTHEN|\bELSE|\bLOOP)\s*SET\s+(?!LOCAL\b)\w+", re.I),
}


def test_the_sql_keeps_no_session_state():
    bodies, outside, strings = _sql_without_comments_and_strings((ROOT / "sql" / "pgrelay.sql").read_text())
    assert len(bodies) > 30, "the scan found too few function bodies to be looking at the right thing"
    found = []
    for name, pattern in SESSION_SQL.items():
        for where, text in [("a function body", b) for b in bodies] + [("the script", outside)]:
            if name == "SET without LOCAL" and where == "the script":
                continue  # outside bodies SET is a CREATE FUNCTION clause; top-level statements are checked below
            found += [f"{name} in {where}: ...{text[max(0, m.start() - 60):m.end() + 20]!r}" for m in pattern.finditer(text)]
    # top-level statements of the install script (an installer's SET would stay in its session)
    for statement in outside.split(";"):
        if re.match(r"\s*(SET\s+(?!LOCAL\b)|RESET\b|DISCARD\b|LISTEN\b)", statement, re.I):
            found.append(f"top-level statement: {statement.strip()[:80]!r}")
    # dynamic SQL: string literals that are such statements
    found += [f"dynamic SQL {s[:60]!r}" for s in strings
              if re.match(r"'\s*(SET\s+(?!LOCAL\b)|LISTEN\b|PREPARE\b|DISCARD\b|CREATE\s+TEMP)", s, re.I)]
    assert found == []


def _python_strings_and_calls(path: Path) -> tuple[list[str], list[tuple[str, int]]]:
    """String constants of a module (docstrings excluded) and the method names it calls, with lines."""
    tree = ast.parse(path.read_text())
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docstrings.add(id(first.value))
    strings = [n.value for n in ast.walk(tree)
               if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docstrings]
    calls = [(n.func.attr, n.lineno) for n in ast.walk(tree)
             if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)]
    return strings, calls


# a Python string that is an SQL statement (the package writes SQL in capitals; log lines and help are not SQL)
SQL_STATEMENT = re.compile(r"\s*(SELECT|WITH|INSERT|UPDATE|DELETE|SET|RESET|DISCARD|LISTEN|UNLISTEN|CREATE|PREPARE|"
                           r"BEGIN|ALTER|DO|CALL|DECLARE|DROP|LOCK)\b")


def test_the_python_package_keeps_no_session_state():
    found = []
    listeners_at = []
    for path in sorted((ROOT / "python" / "pgrelay").glob("*.py")):
        strings, calls = _python_strings_and_calls(path)
        for text in filter(SQL_STATEMENT.match, strings):
            for name, pattern in SESSION_SQL.items():
                if pattern.search(text):
                    found.append(f"{path.name}: {name}: {text[:80]!r}")
        # asyncpg's explicit prepared statements and cursors live in the session
        found += [f"{path.name}:{line}: .{name}()" for name, line in calls if name in ("prepare", "cursor")]
        listeners_at += [f"{path.name}:{line}" for name, line in calls if name == "add_listener"]
    assert found == []
    # LISTEN only on the worker's own listen connection (never a pooled one)
    assert len(listeners_at) == 1 and listeners_at[0].startswith("worker.py:"), listeners_at


async def test_every_public_call_leaves_the_session_as_it_found_it(dsn):
    """On one connection, every client call; then nothing of the session has changed."""
    conn = await asyncpg.connect(dsn, statement_cache_size=0)

    async def session() -> dict[str, Any]:
        return {
            "settings": sorted(tuple(r) for r in await conn.fetch(
                "SELECT name, setting, source FROM pg_settings WHERE source NOT IN ('default', 'override')")),
            "listening": await conn.fetchval("SELECT count(*) FROM pg_listening_channels()"),
            "advisory locks": await conn.fetchval(
                "SELECT count(*) FROM pg_locks WHERE pid = pg_backend_pid() AND locktype = 'advisory'"),
            "prepared": await conn.fetchval("SELECT count(*) FROM pg_prepared_statements"),
            "cursors": await conn.fetchval("SELECT count(*) FROM pg_cursors"),
            "temp relations": await conn.fetchval(
                "SELECT count(*) FROM pg_class WHERE relnamespace = pg_my_temp_schema()"),
        }

    # asyncpg itself, the first time a connection meets a type it must look up (here the arrays pgrelay's
    # calls take and return), turns jit off for that lookup with a session-level set_config and then
    # sets it back, leaving jit "set in the session": look the types up before taking the snapshot
    await conn.fetchval("SELECT ARRAY[$1::text[]::text, $2::bigint[]::text, $3::int[]::text, $4::jsonb[]::text]",
                        ["a"], [1], [1], ["{}"])
    before = await session()
    assert before["prepared"] == 0 and before["listening"] == 0
    await client.version(conn)
    first = await client.enqueue(conn, "s.one", {"a": 1}, idempotency_key="k1", dedupe_key="d1")
    assert await client.enqueue(conn, "s.one", {"a": 1}, idempotency_key="k1") == first
    await client.enqueue(conn, "s.later", delay_seconds=3600)
    await client.enqueue_http(conn, "https://hooks.example.com/x", {"b": 2})
    await client.enqueue_many(conn, "s.many", [{"i": i} for i in range(5)])
    await client.enqueue_bulk(conn, [{"task": "s.bulk", "payload": {"i": i}} for i in range(5)])
    jobs = await client.consume(conn, "w-session", batch=20, lease_seconds=60, kinds=["handler", "http"])
    assert len(jobs) == 12
    await client.heartbeat(conn, "w-session", [j.id for j in jobs], lease_seconds=60, host="h", pid=1)
    await client.ack(conn, jobs[0].id, jobs[0].attempt, {"ok": True})
    await client.ack_many(conn, [jobs[1].id], [jobs[1].attempt])
    await client.ack_each(conn, [jobs[2].id], [jobs[2].attempt], [None])
    await client.nack(conn, jobs[3].id, jobs[3].attempt, "boom")
    await client.nack(conn, jobs[4].id, jobs[4].attempt, "fatal", permanent=True)
    await client.release(conn, jobs[5].id, jobs[5].attempt, "bye")
    await client.recover(conn)
    await client.recover_if_free(conn, 12345)
    await client.get_job(conn, first)
    await client.get_attempts(conn, jobs[3].id)
    await client.replay(conn, jobs[4].id)
    await client.nack(conn, jobs[6].id, jobs[6].attempt, "fatal", permanent=True)
    await client.replay_dead_letters(conn, jobs[6].queue)
    await client.cancel(conn, jobs[7].id)
    await client.configure_queue(conn, "default", concurrency=5, retention_succeeded_days=1)
    await client.pause(conn, "default")
    await client.resume(conn, "default")
    await client.purge(conn, older_than_days=0, max_jobs=10)
    await client.maintain(conn)
    await client.maintenance_scheduled(conn)
    await client.queue_stats(conn)
    await client.list_jobs(conn)
    await client.workers(conn)
    await client.expired_leases(conn)
    await client.recent_failures(conn)
    async with conn.transaction():  # the same calls inside a caller's transaction
        await client.enqueue(conn, "s.tx")
        await client.recover_if_free(conn, 12345)
    after = await session()
    changed = sorted(set(after.pop("settings")) ^ set(before.pop("settings")))
    assert changed == [], "settings changed in the session (before and after): " + repr(changed)
    assert after == before
    await conn.close()


# -- pgrelay through PgBouncer ---------------------------------------------------------------


async def test_enqueue_through_pgbouncer_from_sql_and_from_python(bouncer, dbname, db):
    db.execute("CREATE TABLE orders (id int PRIMARY KEY)")
    # SQL (psycopg, which must not prepare: prepare_threshold=None) in the business transaction
    sql = bouncer.connect(dbname)
    with sql.transaction():
        sql.execute("INSERT INTO orders VALUES (1)")
        committed = scalar(sql, "SELECT pgrelay.enqueue('orders.confirm', jsonb_build_object('id', 1), "
                                "idempotency_key => 'order-1')")
    with contextlib.suppress(ZeroDivisionError), sql.transaction():
        sql.execute("INSERT INTO orders VALUES (2)")
        rolled_back = scalar(sql, "SELECT pgrelay.enqueue('orders.confirm', jsonb_build_object('id', 2))")
        raise ZeroDivisionError
    for _ in range(20):  # more than psycopg's prepare threshold, through shared server connections
        assert scalar(sql, "SELECT pgrelay.enqueue('orders.confirm', jsonb_build_object('id', 1), "
                           "idempotency_key => 'order-1')") == committed
    bulk = scalar(sql, "SELECT array_agg(id) FROM pgrelay.enqueue_bulk(jsonb_build_array("
                       "jsonb_build_object('task', 'a'), jsonb_build_object('task', 'b'))) AS id")

    # the Python client on a connection (in a transaction) and on a pool
    conn = await asyncpg.connect(bouncer.dsn(dbname), statement_cache_size=0)
    async with conn.transaction():
        await conn.execute("INSERT INTO orders VALUES (3)")
        from_python = await client.enqueue(conn, "orders.confirm", {"id": 3}, dedupe_key="o3")
    with contextlib.suppress(ZeroDivisionError):
        async with conn.transaction():
            await conn.execute("INSERT INTO orders VALUES (4)")
            python_rolled_back = await client.enqueue(conn, "orders.confirm", {"id": 4})
            raise ZeroDivisionError
    pool = await asyncpg.create_pool(bouncer.dsn(dbname), min_size=2, max_size=8, statement_cache_size=0)
    many = await asyncio.gather(*(client.enqueue_many(pool, "m", [{"i": i} for i in range(50)]) for _ in range(8)))
    await pool.close()
    await conn.close()

    assert [r[0] for r in db.execute("SELECT id FROM orders ORDER BY id")] == [1, 3]
    active = {r[0]: r[1] for r in db.execute("SELECT id, task FROM pgrelay.jobs")}
    assert committed in active and from_python in active and all(i in active for i in bulk)
    assert rolled_back not in active and python_rolled_back not in active
    assert sorted(i for ids in many for i in ids) == sorted(i for i, task in active.items() if task == "m")
    assert len(active) == 2 + 2 + 8 * 50


def test_the_operator_cli_works_through_pgbouncer(start_bouncer, dbname, db):
    # one server connection, shared by each command in turn: a command that left a named prepared
    # statement there would break the next one ("already exists")
    bouncer = start_bouncer(default_pool_size=1)
    dsn = bouncer.dsn(dbname)
    commands = [
        [str(BIN / "jobs-migrate"), dsn],
        [str(BIN / "pgrelay"), "enqueue", "cli.one", "--payload", '{"n": 1}', "--dsn", dsn],
        [str(BIN / "pgrelay"), "enqueue", "cli.two", "--dsn", dsn],
        [str(BIN / "pgrelay"), "stats", "--json", "--dsn", dsn],
        [str(BIN / "pgrelay"), "jobs", "list", "--dsn", dsn],
        [str(BIN / "pgrelay"), "queues", "pause", "default", "--dsn", dsn],
        [str(BIN / "pgrelay"), "queues", "resume", "default", "--dsn", dsn],
        [str(BIN / "pgrelay"), "doctor", "--dsn", dsn],
    ]
    for command in commands:
        done = subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=ROOT)
        assert "prepared statement" not in done.stderr + done.stdout, (command, done.stderr)
        if command[1] != "doctor":  # doctor may WARN/FAIL about the cluster; it must not crash
            assert done.returncode == 0, (command, done.stdout, done.stderr)
    assert sorted(r[0] for r in db.execute("SELECT task FROM pgrelay.jobs")) == ["cli.one", "cli.two"]


async def test_a_worker_listening_through_pgbouncer_finds_jobs_by_polling(bouncer, dbname, db, executions):
    """No --listen-dsn: LISTEN goes through PgBouncer and hears nothing. Nothing breaks: polling finds the jobs,
    and the listen loop lives on when PgBouncer's server connections are replaced under its keepalive
    (a cached statement there used to end the loop with "prepared statement ... does not exist")."""
    seen: list[int] = []
    app = "pgrelay-test-bouncer-listen"
    worker = pgrelay.Worker(with_app_name(bouncer.dsn(dbname), app), counting_router(seen), statement_cache_size=0,
                            poll_interval=0.3, concurrency=4)

    def keepalive_ran() -> bool:  # the listen connection's "SELECT 1", 5 s after LISTEN, on some server connection
        return scalar(db, "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s AND query = 'SELECT 1'",
                      app) > 0

    with captured() as log:
        async with running(worker):
            first = [await asyncio.to_thread(scalar, db, "SELECT pgrelay.enqueue('record')") for _ in range(10)]
            await wait_until(lambda: len(seen) >= 10, timeout=30, what="10 jobs found by polling")
            await wait_until(lambda: asyncio.to_thread(keepalive_ran), timeout=20, what="the listen keepalive")
            # replace every server connection PgBouncer holds (as server_lifetime or a restart would)
            await asyncio.to_thread(bouncer.drop_server_connections, db, dbname)
            second = [await asyncio.to_thread(scalar, db, "SELECT pgrelay.enqueue('record')") for _ in range(10)]
            await wait_until(lambda: len(seen) >= 20, timeout=30, what="10 more jobs after the server connections went")
            await asyncio.sleep(5.5)  # the next keepalive runs on a new server connection
    assert sorted(seen) == sorted(first + second)
    assert any("LISTEN receives nothing" in m for m in log.messages(logging.WARNING)), log.messages()
    assert not [m for m in log.messages() if "prepared statement" in m], log.messages()
    assert scalar(db, "SELECT count(*) FROM pgrelay.jobs WHERE status = 'succeeded'") == 20


async def test_a_worker_through_pgbouncer_with_a_direct_listen_dsn_is_woken(bouncer, dbname, dsn, db, executions):
    # a minute between polls: a job that runs within seconds was woken by NOTIFY
    app = "pgrelay-test-direct-listen"
    worker = pgrelay.Worker(bouncer.dsn(dbname), counting_router(), statement_cache_size=0,
                            listen_dsn=with_app_name(dsn, app), poll_interval=60)
    async with running(worker):
        await wait_until(lambda: asyncio.to_thread(listeners, db, app), what="the worker to listen")
        await asyncio.sleep(0.5)  # the claim after LISTEN is over; the next one waits for a wakeup
        producer = bouncer.connect(dbname)
        for _ in range(3):
            job = scalar(producer, "SELECT pgrelay.enqueue('record')")
            await wait_until(lambda: db_equals(db, "SELECT status FROM pgrelay.jobs WHERE id = %s", "succeeded", job),
                             timeout=10, what="a woken worker to run the job")
        producer.close()
    latencies = [r[0] for r in db.execute(
        "SELECT extract(epoch FROM finished_at - created_at) FROM pgrelay.jobs WHERE status = 'succeeded'")]
    assert len(latencies) == 3 and max(latencies) < 10, latencies


def test_jobs_worker_through_pgbouncer_with_listen_dsn(bouncer, dbname, dsn, db, executions):
    """The real process: --statement-cache-size 0 --listen-dsn <direct>, woken through a minute-long poll."""
    app = "pgrelay-test-jobs-worker"
    proc = jobs_worker(bouncer.dsn(dbname), "--statement-cache-size", "0", "--listen-dsn", with_app_name(dsn, app),
                       "--poll-interval", "60", "--concurrency", "4")
    try:
        wait_for(lambda: listeners(db, app), what="jobs-worker to listen")
        time.sleep(0.5)
        producer = bouncer.connect(dbname)
        ids = []
        for n in range(5):
            ids.append(scalar(producer, "SELECT pgrelay.enqueue('record', jsonb_build_object('n', %s::int))", n))
            wait_for(lambda: scalar(db, "SELECT status FROM pgrelay.jobs WHERE id = %s", ids[-1]) == "succeeded",
                     timeout=10, what="jobs-worker to be woken for the job")
        producer.close()
    finally:
        output = stop_process(proc)
    assert proc.returncode == 0, output
    assert "Traceback" not in output and "prepared statement" not in output, output
    assert scalar(db, "SELECT count(*) FROM executions") == 5
    assert scalar(db, "SELECT max(extract(epoch FROM finished_at - created_at)) FROM pgrelay.jobs") < 10


async def test_drain_through_a_pool_of_four_runs_each_job_exactly_once(bouncer, dbname, dsn, db, executions):
    """In-process workers (listening directly, listening through PgBouncer, not listening) and a jobs-worker
    process drain a few thousand jobs through default_pool_size=4; every job succeeds once, at attempt 1."""
    n = size(2000, 30000)
    through = bouncer.dsn(dbname)
    worker_apps = {"direct": "pgrelay-drain-direct", "process": "pgrelay-drain-process"}
    workers = [
        pgrelay.Worker(through, counting_router(), statement_cache_size=0, worker_id="inproc-direct",
                       listen_dsn=with_app_name(dsn, worker_apps["direct"]), poll_interval=0.2, concurrency=10),
        pgrelay.Worker(through, counting_router(), statement_cache_size=0, worker_id="inproc-nolisten",
                       listen_dsn=False, poll_interval=0.2, concurrency=10),
        pgrelay.Worker(through, counting_router(), statement_cache_size=0, worker_id="inproc-bouncer-listen",
                       poll_interval=0.2, concurrency=10, batch_size=5),
    ]
    proc = jobs_worker(through, "--statement-cache-size", "0", "--listen-dsn", with_app_name(dsn, worker_apps["process"]),
                       "--poll-interval", "0.2", "--concurrency", "10", "--worker-id", "process")
    samples: list[tuple[int, int]] = []  # (server connections, clients) seen by PgBouncer's admin console
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.is_set():
            samples.append(bouncer.pool_counts(dbname))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    output = ""
    try:
        with captured() as log:
            async with contextlib.AsyncExitStack() as stack:
                for worker in workers:
                    await stack.enter_async_context(running(worker))
                await wait_until(lambda: asyncio.to_thread(lambda: all(listeners(db, a) for a in worker_apps.values())),
                                 what="the listening workers to listen")
                producer = await asyncpg.connect(through, statement_cache_size=0)
                for start in range(0, n, 500):  # while the workers drain
                    await client.enqueue_many(producer, "record", [{"n": i} for i in range(start, min(n, start + 500))])
                await producer.close()
                await wait_until(lambda: db_equals(db, "SELECT count(*) FROM pgrelay.jobs WHERE status = 'succeeded'", n),
                                 timeout=300, what=f"{n} jobs to succeed")
    finally:
        sampling.set()
        sampler.join(timeout=10)
        output = stop_process(proc)
    assert proc.returncode == 0, output
    assert "Traceback" not in output and "prepared statement" not in output, output[-3000:]

    # every job: succeeded, at its first attempt, no other attempt recorded, its handler run once
    assert db.execute("SELECT count(*), count(*) FILTER (WHERE status = 'succeeded'), max(attempt), min(attempt) "
                      "FROM pgrelay.jobs").fetchone() == (n, n, 1, 1)
    assert scalar(db, "SELECT count(*) FROM pgrelay._attempts") == 0
    assert scalar(db, "SELECT count(*) FROM pgrelay.get_attempts(%s) WHERE outcome = 'succeeded'",
                  scalar(db, "SELECT min(id) FROM pgrelay.jobs")) == 1
    assert db.execute("SELECT count(*), count(DISTINCT job_id) FROM executions").fetchone() == (n, n)
    assert scalar(db, "SELECT count(*) FROM executions e LEFT JOIN pgrelay.jobs j ON j.id = e.job_id "
                      "WHERE j.id IS NULL OR e.attempt <> j.attempt") == 0
    by_worker = dict(db.execute("SELECT leased_by, count(*) FROM pgrelay._finished GROUP BY 1").fetchall())
    assert set(by_worker) <= {"inproc-direct", "inproc-nolisten", "inproc-bouncer-listen", "process"}, by_worker
    assert "process" in by_worker and len(by_worker) >= 2, by_worker
    assert scalar(db, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'") == 0

    # PgBouncer multiplexed many clients onto at most four server connections
    assert samples, "no sample of PgBouncer's pools"
    assert max(s for s, _ in samples) <= 4, max(samples)
    assert max(c for _, c in samples) > 4, max(samples, key=lambda s: s[1])
    assert not [m for m in log.messages() if "prepared statement" in m or "internal error" in m], log.messages()


# -- PostgREST through PgBouncer ----------------------------------------------------------------


def test_postgrest_through_pgbouncer(start_bouncer, dbname, db, tmp_path):
    """The real PostgREST 12.0.2 with docs/postgrest.md's roles and config, db-uri through PgBouncer and
    db-prepared-statements = false: producers enqueue concurrently, a worker consumes and acks, all 200."""
    from tests.postgrest import docs, server
    from tests.postgrest.api import Api, http_transport

    binary = server.postgrest_or_missing()
    doc = docs.doc_text()
    db.execute(docs.marked_block(doc, "postgrest-roles").text)  # cluster-wide and idempotent
    config = docs.parse_config(docs.marked_block(doc, "postgrest-conf").text)
    password = "change-me"
    assert f"pgrelay_authenticator:{password}@" in str(config["db-uri"])
    bouncer = start_bouncer(default_pool_size=4, users={"pgrelay_authenticator": password})
    settings = dict(config)
    settings.update({
        "db-uri": bouncer.dsn(dbname, "pgrelay_authenticator", password),
        "db-pool": 10,
        "jwt-secret": "pgbouncer-test-secret-of-at-least-32-characters",
    })

    def produce_concurrently(api: Api, threads: int, per_thread: int, queue: str) -> list[str]:
        """Enqueue from ``threads`` threads at once; each answer as "<status> <code>" (or the exception)."""
        answers: list[str] = []

        def produce(t: int) -> None:
            for i in range(per_thread):
                try:
                    response = api.send("POST", "/rpc/enqueue", {"Authorization": f"Bearer {api.token('producer')}",
                                                                 "Content-Type": "application/json"},
                                        json.dumps({"task": "rest.job", "queue": queue, "payload": {"t": t, "i": i}}).encode())
                    answers.append(f"{response.status} {response.code or ''}".strip())
                except OSError as exc:
                    answers.append(f"{type(exc).__name__}")

        pool = [threading.Thread(target=produce, args=(t,)) for t in range(threads)]
        for thread in pool:
            thread.start()
        for thread in pool:
            thread.join(timeout=120)
        return answers

    # PostgREST's default, prepared statements: they collide on PgBouncer's shared server connections
    # (42P05 "prepared statement "0" already exists") - the reason for db-prepared-statements = false
    (tmp_path / "postgrest-prepared").mkdir()
    with server.run_postgrest(binary, {**settings, "server-port": server.free_port()},
                              tmp_path / "postgrest-prepared") as prepared:
        api = Api("postgrest", http_transport(prepared.base_url), str(settings["jwt-secret"]), prepared.base_url)
        answers = produce_concurrently(api, 8, 10, "rest-prepared")
    assert any(a != "200" for a in answers), "PostgREST's prepared statements now work through PgBouncer?"

    settings.update({"db-prepared-statements": False, "server-port": server.free_port()})
    workdir = tmp_path / "postgrest"
    workdir.mkdir()
    with server.run_postgrest(binary, settings, workdir) as running_server:
        api = Api("postgrest", http_transport(running_server.base_url), str(settings["jwt-secret"]), running_server.base_url)
        per_thread, threads = size(25, 250), 8
        answers = produce_concurrently(api, threads, per_thread, "rest")
        assert answers == ["200"] * (per_thread * threads), sorted(set(answers))
        bulk = api.rpc("producer", "enqueue_bulk", jobs=[{"task": "rest.job", "queue": "rest"} for _ in range(20)])
        assert len(bulk) == 20
        total = per_thread * threads + 20

        acked = 0
        while True:
            jobs = api.rpc("worker", "consume", worker="rest-worker", queues=["rest"], batch=50)
            if not jobs:
                break
            done = api.rpc("worker", "ack_each", ids=[j["id"] for j in jobs], attempts=[j["attempt"] for j in jobs])
            assert sorted(done) == sorted(j["id"] for j in jobs)
            acked += len(jobs)
        assert acked == total
        stats = api.rows("reader", "queue_stats", queue="rest")
        assert stats and stats[0]["succeeded"] == total, stats
        assert api.rpc("reader", "get_job", id=bulk[0])["status"] == "succeeded"
        log = running_server.log()
    assert "prepared statement" not in log, log[-2000:]
    assert db.execute("SELECT count(*), count(*) FILTER (WHERE status = 'succeeded' AND attempt = 1) "
                      "FROM pgrelay.jobs WHERE queue = 'rest'").fetchone() == (total, total)
