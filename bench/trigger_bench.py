"""(3) of bench/compare.py: enqueue from a trigger on an application table, every system that can.

Every system's database gets the same application table (bench/pgbench/orders_schema.sql,
``bench_orders``) and an AFTER INSERT ... FOR EACH ROW trigger that enqueues one job per order through
the system's SQL-callable enqueue path:

    pgrelay        pgrelay.enqueue_trigger('orders.created', 'orders'), pgrelay's own trigger function
                   (payload {op, schema, table, old, new}), measured twice: FOR EACH ROW like the peers,
                   and FOR EACH STATEMENT with REFERENCING NEW TABLE AS new_rows (one insert per statement)
    pgmq           a trigger function calling pgmq.send('bench', to_jsonb(NEW))
    procrastinate  a trigger function calling procrastinate_defer_jobs_v1(...), the stored procedure
                   Task.defer runs (procrastinate/sql/queries.sql, "defer_jobs"); args = to_jsonb(NEW)
    pgqueuer       a trigger function doing what PgQueuer's docs give as its SQL enqueue
                   (docs/integrations/postgrest.md, fn_pgqueuer_enqueue): INSERT the job into pgqueuer
                   (status 'queued'), then its 'queued' row into pgqueuer_log; payload to_jsonb(NEW) as bytea
    baseline       no trigger: the same table and the same INSERTs, in a database of its own

The workloads are pgbench scripts (bench/pgbench/orders_insert_one.sql: one order per transaction;
orders_insert_1000.sql: 1,000 orders in one INSERT ... SELECT generate_series). orders/s = tps x orders
per transaction, and as every order is one job, that is also jobs/s. Each run starts from emptied
tables (bench_orders and the system's job tables), vacuumed and checkpointed, and is checked afterwards:
the orders inserted are done x orders per transaction, there are as many jobs, and every job names a
distinct order that exists (so a trigger that silently enqueues nothing, or the wrong thing, fails the
run instead of producing a figure).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import asyncpg

BENCH = Path(__file__).resolve().parent
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

import peers  # noqa: E402
import sql_bench  # noqa: E402

SCHEMA = sql_bench.SCRIPTS / "orders_schema.sql"
SCRIPTS = {"one": ("orders_insert_one.sql", 1), "bulk_1000": ("orders_insert_1000.sql", 1000)}
SYSTEMS = ("pgrelay", "pgmq", "procrastinate", "pgqueuer", "baseline")
TASK = "orders.created"
QUEUE = "orders"

# The trigger each system gets (bench-internal constants; nothing here comes from outside).
TRIGGERS: dict[str, str] = {
    "pgrelay": f"""
        CREATE TRIGGER bench_orders_enqueue AFTER INSERT ON bench_orders
        FOR EACH ROW EXECUTE FUNCTION pgrelay.enqueue_trigger('{TASK}', '{QUEUE}');""",
    "pgrelay-statement": f"""
        CREATE TRIGGER bench_orders_enqueue AFTER INSERT ON bench_orders REFERENCING NEW TABLE AS new_rows
        FOR EACH STATEMENT EXECUTE FUNCTION pgrelay.enqueue_trigger('{TASK}', '{QUEUE}');""",
    "pgmq": f"""
        CREATE FUNCTION bench_orders_to_pgmq() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pgmq.send('{peers.PGMQ_QUEUE}', to_jsonb(NEW));
            RETURN NULL;
        END
        $$;
        CREATE TRIGGER bench_orders_enqueue AFTER INSERT ON bench_orders
        FOR EACH ROW EXECUTE FUNCTION bench_orders_to_pgmq();""",
    "procrastinate": f"""
        CREATE FUNCTION bench_orders_to_procrastinate() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM procrastinate_defer_jobs_v1(ARRAY[
                ROW('{QUEUE}', '{TASK}', 0, NULL, NULL, to_jsonb(NEW), NULL)::procrastinate_job_to_defer_v1]);
            RETURN NULL;
        END
        $$;
        CREATE TRIGGER bench_orders_enqueue AFTER INSERT ON bench_orders
        FOR EACH ROW EXECUTE FUNCTION bench_orders_to_procrastinate();""",
    "pgqueuer": f"""
        CREATE FUNCTION bench_orders_to_pgqueuer() RETURNS trigger LANGUAGE plpgsql AS $$
        DECLARE
            v_id bigint;
        BEGIN
            INSERT INTO pgqueuer (priority, entrypoint, payload, status)
            VALUES (0, '{TASK}', convert_to(to_jsonb(NEW)::text, 'UTF8'), 'queued')
            RETURNING id INTO v_id;
            INSERT INTO pgqueuer_log (job_id, status, entrypoint, priority) VALUES (v_id, 'queued', '{TASK}', 0);
            RETURN NULL;
        END
        $$;
        CREATE TRIGGER bench_orders_enqueue AFTER INSERT ON bench_orders
        FOR EACH ROW EXECUTE FUNCTION bench_orders_to_pgqueuer();""",
    "baseline": "",
}

HOW = {
    "pgrelay": f"pgbench: INSERT into bench_orders, FOR EACH ROW trigger pgrelay.enqueue_trigger('{TASK}', '{QUEUE}')",
    "pgrelay-statement": "pgbench: INSERT into bench_orders, FOR EACH STATEMENT trigger pgrelay.enqueue_trigger(...) "
                         "REFERENCING NEW TABLE AS new_rows",
    "pgmq": "pgbench: INSERT into bench_orders, trigger calling pgmq.send(queue, to_jsonb(NEW))",
    "procrastinate": "pgbench: INSERT into bench_orders, trigger calling procrastinate_defer_jobs_v1(...)",
    "pgqueuer": "pgbench: INSERT into bench_orders, trigger inserting into pgqueuer + pgqueuer_log "
                "(its documented SQL enqueue)",
    "baseline": "pgbench: the same INSERTs into the same table, no trigger",
}

# What each system's trigger enqueued: (jobs, distinct existing orders they name). Constants, no input.
JOBS_SQL = {
    "pgrelay": f"""SELECT count(*) AS jobs, count(DISTINCT o.id) AS matched
                   FROM pgrelay.jobs j LEFT JOIN bench_orders o ON o.id = (j.payload -> 'new' ->> 'id')::bigint
                   WHERE j.queue = '{QUEUE}' AND j.task = '{TASK}' AND j.payload ->> 'op' = 'INSERT'""",
    "pgmq": f"""SELECT count(*) AS jobs, count(DISTINCT o.id) AS matched
                FROM pgmq.q_{peers.PGMQ_QUEUE} q LEFT JOIN bench_orders o ON o.id = (q.message ->> 'id')::bigint""",
    "procrastinate": f"""SELECT count(*) AS jobs, count(DISTINCT o.id) AS matched
                         FROM procrastinate_jobs j LEFT JOIN bench_orders o ON o.id = (j.args ->> 'id')::bigint
                         WHERE j.task_name = '{TASK}' AND j.queue_name = '{QUEUE}' AND j.status = 'todo'""",
    "pgqueuer": f"""SELECT count(*) AS jobs, count(DISTINCT o.id) AS matched
                    FROM pgqueuer j
                    LEFT JOIN bench_orders o ON o.id = (convert_from(j.payload, 'UTF8')::jsonb ->> 'id')::bigint
                    WHERE j.entrypoint = '{TASK}' AND j.status = 'queued'
                      AND EXISTS (SELECT 1 FROM pgqueuer_log l WHERE l.job_id = j.id AND l.status = 'queued')""",
}

JOB_TABLES = {"pgrelay": peers.TABLES["pgrelay-client"], "pgmq": peers.TABLES["pgmq"],
              "procrastinate": peers.TABLES["procrastinate"], "pgqueuer": peers.TABLES["pgqueuer"], "baseline": []}


class TriggerBenchError(RuntimeError):
    pass


async def install(system: str, dsn: str) -> None:
    """The application table and ``system``'s trigger, into a database that already holds the system."""
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            await conn.execute(SCHEMA.read_text())
            if TRIGGERS[system]:
                await conn.execute(TRIGGERS[system])
    finally:
        await conn.close()


async def _reset(conn: asyncpg.Connection, system: str) -> None:
    tables = ["bench_orders", *JOB_TABLES[system]]
    await conn.execute(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE")
    await conn.execute(f"VACUUM ANALYZE {', '.join(tables)}")
    await conn.execute("CHECKPOINT")


async def verify(conn: asyncpg.Connection, system: str, expected: int) -> dict[str, int]:
    """The run inserted ``expected`` orders and (but for the baseline) enqueued one job naming each."""
    orders = await conn.fetchval("SELECT count(*) FROM bench_orders")
    if orders != expected:
        raise TriggerBenchError(f"{system}: pgbench reports {expected} orders inserted, bench_orders holds {orders}")
    if system == "baseline":
        triggers = await conn.fetchval(
            "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'bench_orders'::regclass AND NOT tgisinternal")
        if triggers:
            raise TriggerBenchError(f"baseline: bench_orders has {triggers} trigger(s); it must have none")
        return {"orders": orders, "jobs": 0}
    row = await conn.fetchrow(JOBS_SQL[system])
    if row["jobs"] != orders or row["matched"] != orders:
        raise TriggerBenchError(f"{system}: {orders} orders inserted, but {row['jobs']} jobs enqueued by the trigger "
                                f"naming {row['matched']} distinct existing orders")
    return {"orders": orders, "jobs": row["jobs"]}


async def run(system: str, dsn: str, workload: str, clients: int, seconds: int,
              trigger: str | None = None) -> dict[str, Any]:
    """One pgbench run of ``workload`` ("one" or "bulk_1000") against ``system``'s database. pgrelay has
    two triggers (``trigger``: "pgrelay", the default, or "pgrelay-statement"), put in place first."""
    script, per_tx = SCRIPTS[workload]
    trigger = trigger or system
    conn = await asyncpg.connect(dsn)
    try:
        if system == "pgrelay":
            async with conn.transaction():
                await conn.execute("DROP TRIGGER IF EXISTS bench_orders_enqueue ON bench_orders")
                await conn.execute(TRIGGERS[trigger])
        await _reset(conn, system)
        tps, done = sql_bench.pgbench(dsn, script, clients, seconds=seconds)
        counts = await verify(conn, system, done * per_tx)
    finally:
        await conn.close()
    return {"system": system, "trigger": trigger, "workload": f"trigger_{workload}", "script": script,
            "clients": clients, "orders_per_tx": per_tx, "transactions": done, "tps": tps,
            "jobs_per_s": tps * per_tx, **counts}
