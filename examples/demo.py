"""pgrelay in two minutes: `make demo`.

Starts a throwaway PostgreSQL, installs pgrelay with `jobs-migrate` (what you would run), enqueues
jobs the ways an application does (a trigger, enqueue, a scheduled job, an idempotency key, a
webhook), then plays the worker in plain SQL: consume a batch, ack most, nack one, and watch it be
retried. Everything the demo does to jobs is a call to a pgrelay SQL function.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import textwrap
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import asyncpg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.harness.cluster import throwaway_cluster  # noqa: E402

WORKER = "demo-worker"


def step(text: str) -> None:
    print(f"\n== {text}")


def show_sql(sql: str) -> None:
    for line in textwrap.dedent(sql).strip().splitlines():
        print(f"   sql> {line}")


def table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> None:
    cells = [[("" if v is None else str(v)) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    for row in [list(headers), ["-" * w for w in widths], *cells]:
        print(("   " + "  ".join(v.ljust(w) for v, w in zip(row, widths))).rstrip())


def jobs_migrate() -> str:
    """The jobs-migrate console script installed next to this Python (make demo's virtualenv)."""
    beside = Path(sys.executable).parent / "jobs-migrate"
    found = str(beside) if beside.exists() else shutil.which("jobs-migrate")
    if not found:
        sys.exit("demo: jobs-migrate not found; run `make demo`, which installs pgrelay into .venv first")
    return found


async def show_jobs(conn: asyncpg.Connection, ids: Iterable[int]) -> None:
    rows = await conn.fetch(
        """SELECT id, task, kind, status, attempt,
                  CASE WHEN status = 'pending' THEN extract(epoch FROM run_at - now()) END AS due_in,
                  last_error
           FROM pgrelay.jobs WHERE id = ANY($1::bigint[]) ORDER BY id""",
        list(ids),
    )
    table([(r["id"], r["task"], r["kind"], r["status"], r["attempt"], _due(r["due_in"]), r["last_error"])
           for r in rows],
          ["id", "task", "kind", "status", "attempt", "runs", "last_error"])


def _due(seconds: Any) -> str | None:
    if seconds is None:
        return None
    seconds = float(seconds)
    if seconds <= 0:
        return "now"
    if seconds < 60:
        return f"in {seconds:.1f}s"
    hours, minutes = divmod(round(seconds / 60), 60)
    return f"in {hours}h{minutes:02d}m" if hours else f"in {minutes}m"


async def demo(dsn: str) -> None:
    step("Install pgrelay with the real installer (one transaction, safe to run again)")
    command = [jobs_migrate(), dsn]
    print(f"   $ jobs-migrate {dsn}")
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    for line in (result.stdout + result.stderr).strip().splitlines():
        print(f"   {line}")
    if result.returncode != 0:
        raise SystemExit(f"demo: jobs-migrate failed with exit code {result.returncode}")

    conn = await asyncpg.connect(dsn)
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
    try:
        step("An orders table whose trigger enqueues a job for every new order")
        ddl = """
            CREATE TABLE orders (id int PRIMARY KEY, customer text NOT NULL, total numeric(10,2) NOT NULL);
            CREATE TRIGGER orders_created AFTER INSERT ON orders
                FOR EACH ROW EXECUTE FUNCTION pgrelay.enqueue_trigger('orders.created');
        """
        show_sql(ddl)
        await conn.execute(ddl)
        async with conn.transaction():
            await conn.executemany("INSERT INTO orders VALUES ($1, $2, $3)",
                                   [(1, "ada", 99.50), (2, "grace", 12.00), (3, "linus", 7.25)])
        print("   inserted orders 1, 2, 3 in one transaction")
        try:
            async with conn.transaction():
                await conn.execute("INSERT INTO orders VALUES (4, 'ken', 1.00)")
                raise RuntimeError("rollback")
        except RuntimeError:
            pass
        print("   inserted order 4, then rolled back: its job vanished with it (its id is skipped)")
        trigger_jobs = [r["id"] for r in await conn.fetch(
            "SELECT id FROM pgrelay.jobs WHERE task = 'orders.created' ORDER BY id")]
        payload = await conn.fetchval("SELECT payload FROM pgrelay.jobs WHERE id = $1", trigger_jobs[0])
        print(f"   {len(trigger_jobs)} jobs 'orders.created'; job {trigger_jobs[0]}'s payload: {json.dumps(payload)}")

        step("Jobs enqueued by the application, each in its caller's transaction")
        welcome = await conn.fetchval("SELECT pgrelay.enqueue('email.welcome', jsonb_build_object('customer', 'ada'))")
        report = await conn.fetchval("SELECT pgrelay.enqueue('report.daily', run_at => now() + interval '1 hour')")
        invoice_sql = ("SELECT pgrelay.enqueue('invoice.send', jsonb_build_object('order', 1), "
                       "idempotency_key => 'invoice-order-1')")
        invoice = await conn.fetchval(invoice_sql)
        again = await conn.fetchval(invoice_sql)
        hook = await conn.fetchval(
            "SELECT pgrelay.enqueue_http('https://hooks.example.com/orders', jsonb_build_object('order', 1))")
        calls = [
            ("enqueue('email.welcome', '{\"customer\": \"ada\"}')", f"job {welcome}"),
            ("enqueue('report.daily', run_at => now() + interval '1 hour')", f"job {report} (scheduled)"),
            ("enqueue('invoice.send', ..., idempotency_key => 'invoice-order-1')", f"job {invoice}"),
            ("the same call again", f"job {again} (the same job, not a new one)"),
            ("enqueue_http('https://hooks.example.com/orders', '{\"order\": 1}')",
             f"job {hook} (a webhook, sent by jobs-worker)"),
        ]
        width = max(len(call) for call, _ in calls)
        for call, outcome in calls:
            print(f"   {call.ljust(width)}  -> {outcome}")
        all_ids = [*trigger_jobs, welcome, report, invoice, hook]

        step(f"Play the worker '{WORKER}' in plain SQL: lease a batch")
        show_sql(f"SELECT id, task, attempt FROM pgrelay.consume('{WORKER}', batch => 10);")
        batch = await conn.fetch(f"SELECT id, task, attempt FROM pgrelay.consume('{WORKER}', batch => 10)")
        print(f"   leased {len(batch)} jobs: {', '.join(str(r['id']) for r in batch)}"
              f" (job {report} is not due for an hour, so it stays)")
        print("   (a real worker runs each handler or sends each HTTP request here)")
        failed = next(r for r in batch if r["id"] == welcome)
        done = [r for r in batch if r["id"] != welcome]
        acked = await conn.fetchval("SELECT pgrelay.ack_many($1::bigint[], $2::int[])",
                                    [r["id"] for r in done], [r["attempt"] for r in done])
        show_sql("SELECT pgrelay.ack_many(ids, attempts);   -- the ids and attempts consume returned")
        print(f"   -> {acked} jobs succeeded")
        show_sql(f"SELECT pgrelay.nack({welcome}, attempt => 1, error => 'SMTP 451: mailbox busy, try later');")
        status = await conn.fetchval("SELECT pgrelay.nack($1, attempt => $2, error => 'SMTP 451: mailbox busy, try later')",
                                     failed["id"], failed["attempt"])
        print(f"   -> '{status}': job {welcome} will be retried after a backoff")

        step("The jobs now (view pgrelay.jobs)")
        await show_jobs(conn, all_ids)

        step(f"Wait for job {welcome}'s backoff, lease it again, and this time it succeeds")
        wait = await conn.fetchval("SELECT greatest(0, extract(epoch FROM run_at - now())) FROM pgrelay.jobs WHERE id = $1",
                                   welcome)
        await asyncio.sleep(float(wait) + 0.1)
        retry: list[asyncpg.Record] = []
        for _ in range(50):
            retry = await conn.fetch(f"SELECT id, attempt FROM pgrelay.consume('{WORKER}', batch => 10)")
            if retry:
                break
            await asyncio.sleep(0.1)
        if not retry:
            raise SystemExit(f"demo: job {welcome} was not due again after its backoff")
        for r in retry:
            await conn.fetchval("SELECT pgrelay.ack($1, $2)", r["id"], r["attempt"])
        leased = ", ".join(f"job {r['id']} (attempt {r['attempt']})" for r in retry)
        print(f"   leased {leased} and acked it")
        print(f"   its attempt history (pgrelay.get_attempts({welcome})):")
        history = await conn.fetch(
            "SELECT attempt, worker, outcome, error FROM pgrelay.get_attempts($1)", welcome)
        table([tuple(r) for r in history], ["attempt", "worker", "outcome", "error"])

        step("Per-queue counts (view pgrelay.queue_stats)")
        stats = await conn.fetch(
            "SELECT queue, pending, scheduled, leased, succeeded, dead_letter, cancelled FROM pgrelay.queue_stats")
        table([tuple(r) for r in stats],
              ["queue", "pending", "scheduled", "leased", "succeeded", "dead_letter", "cancelled"])
    finally:
        await conn.close()


def main() -> int:
    print("pgrelay demo: a job queue whose semantics live in PostgreSQL")
    with throwaway_cluster() as cluster:
        print(f"\n== Started a throwaway PostgreSQL on {cluster.host}:{cluster.port}")

        async def create_db() -> None:
            conn = await asyncpg.connect(cluster.dsn())
            try:
                await conn.execute("CREATE DATABASE shop")
            finally:
                await conn.close()

        asyncio.run(create_db())
        asyncio.run(demo(cluster.dsn("shop")))
        print("\n== Stopping the cluster and deleting its files")
    print("done. Next: README.md for the SQL API, `\\df+ pgrelay.*` in psql for every function's help.")
    return 0


if __name__ == "__main__":
    os.environ.pop("PGRELAY_DSN", None)
    sys.exit(main())
