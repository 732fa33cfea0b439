"""pgrelay in two minutes: `make demo`.

Starts a throwaway PostgreSQL, installs pgrelay with `jobs-migrate` (what you would run), enqueues
jobs (from a trigger and with pgrelay.enqueue), then runs the real `jobs-worker` with the handlers
of examples/demo_app.py: one job type succeeds, one fails twice and is retried, one fails
permanently. Then it stops the worker with SIGTERM and shows what the database recorded.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import asyncpg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.harness.cluster import throwaway_cluster  # noqa: E402

WAIT_SECONDS = 30      # for the worker to finish every job
APP = "examples.demo_app:router"


def step(text: str) -> None:
    print(f"\n== {text}")


def show_sql(sql: str, outcome: str = "") -> None:
    lines = textwrap.dedent(sql).strip().splitlines()
    for i, line in enumerate(lines):
        print(f"   sql> {line}{outcome if outcome and i == len(lines) - 1 else ''}")


def table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> None:
    cells = [[("" if v is None else str(v)) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    for row in [list(headers), ["-" * w for w in widths], *cells]:
        print(("   " + "  ".join(v.ljust(w) for v, w in zip(row, widths))).rstrip())


def clip(text: str | None, width: int = 72) -> str | None:
    return text if text is None or len(text) <= width else text[: width - 3] + "..."


def message(error: str | None) -> str | None:
    """An error as the worker records it, without the trailing "(file:line in function; ...)"."""
    return None if error is None else re.sub(r" \([^()]*:\d+ in [^()]*\)$", "", error)


def console_script(name: str) -> str:
    """A console script installed next to this Python (make demo's virtualenv)."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if not found:
        sys.exit(f"demo: {name} not found; run `make demo`, which installs pgrelay into .venv first")
    return found


def show_log(path: Path, limit: int = 20) -> None:
    """The worker's log lines, without the date and the logger name."""
    lines = path.read_text(errors="replace").splitlines()
    for line in lines[:limit]:
        parts = line.split(" ", 4)   # date, time, level, logger:, message
        if len(parts) == 5 and parts[3].startswith("pgrelay"):
            line = f"{parts[1]} {parts[2]:<7} {parts[4]}"
        print(f"   | {clip(line, 130)}")
    if len(lines) > limit:
        print(f"   | ... ({len(lines) - limit} more lines in the worker's log)")


async def wait_for_jobs(conn: asyncpg.Connection, worker: subprocess.Popen[bytes], log: Path) -> float:
    """Wait until no job is pending or leased; fail clearly if the worker dies or takes too long."""
    started = time.monotonic()
    while True:
        left = await conn.fetchval("SELECT count(*) FROM pgrelay.jobs WHERE status IN ('pending', 'leased')")
        if left == 0:
            return time.monotonic() - started
        if worker.poll() is not None:
            print(f"\n   the worker exited early with code {worker.returncode}; its log:")
            show_log(log, limit=60)
            raise SystemExit(f"demo: jobs-worker exited with code {worker.returncode} before finishing the jobs")
        if time.monotonic() - started > WAIT_SECONDS:
            rows = await conn.fetch("SELECT id, task, status, attempt, last_error FROM pgrelay.jobs"
                                    " WHERE status IN ('pending', 'leased') ORDER BY id")
            print(f"\n   after {WAIT_SECONDS} s these jobs are still unfinished:")
            table([(r["id"], r["task"], r["status"], r["attempt"], clip(r["last_error"])) for r in rows],
                  ["id", "task", "status", "attempts", "last_error"])
            print("   the worker's log so far:")
            show_log(log, limit=60)
            raise SystemExit(f"demo: the worker did not finish every job within {WAIT_SECONDS} s (see above)")
        await asyncio.sleep(0.1)


def stop_worker(worker: subprocess.Popen[bytes]) -> int:
    """SIGTERM: the worker stops claiming, lets running jobs finish, and exits 0."""
    if worker.poll() is None:
        worker.send_signal(signal.SIGTERM)
    try:
        return worker.wait(timeout=20)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait()
        raise SystemExit("demo: jobs-worker did not exit within 20 s of SIGTERM; killed it") from None


async def demo(dsn: str, workdir: Path) -> None:
    step("Install pgrelay with the real installer (one transaction, safe to run again)")
    print(f"   $ jobs-migrate {dsn}")
    result = subprocess.run([console_script("jobs-migrate"), dsn], capture_output=True, text=True, timeout=120)
    for line in (result.stdout + result.stderr).strip().splitlines():
        print(f"   {line}")
    if result.returncode != 0:
        raise SystemExit(f"demo: jobs-migrate failed with exit code {result.returncode}")

    conn = await asyncpg.connect(dsn)
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
    try:
        step("An orders table whose trigger enqueues a job for every new order")
        ddl = """
            CREATE TABLE orders (id int PRIMARY KEY, customer text NOT NULL, total numeric(10,2) NOT NULL,
                                 status text NOT NULL DEFAULT 'new');
            CREATE TRIGGER orders_created AFTER INSERT ON orders
                FOR EACH ROW EXECUTE FUNCTION pgrelay.enqueue_trigger('orders.created');
        """
        show_sql(ddl)
        await conn.execute(ddl)
        async with conn.transaction():
            await conn.executemany("INSERT INTO orders (id, customer, total) VALUES ($1, $2, $3)",
                                   [(1, "ada", 99.50), (2, "grace", 12.00), (3, "linus", 7.25)])
        try:
            async with conn.transaction():
                await conn.execute("INSERT INTO orders (id, customer, total) VALUES (4, 'ken', 1.00)")
                raise RuntimeError("rollback")
        except RuntimeError:
            pass
        first = await conn.fetchrow("SELECT id, payload FROM pgrelay.jobs WHERE task = 'orders.created' ORDER BY id LIMIT 1")
        count = await conn.fetchval("SELECT count(*) FROM pgrelay.jobs WHERE task = 'orders.created'")
        print(f"   inserted orders 1, 2, 3 in one transaction -> {count} jobs 'orders.created'")
        print("   inserted order 4, then rolled back -> no order 4 and no job for it (its job id is skipped)")
        print(f"   job {first['id']}'s payload: {json.dumps(first['payload'])}")

        step("Two more jobs, enqueued by the application (each in its caller's transaction)")
        backoff = "SELECT pgrelay.configure_queue('default', backoff_base_seconds => 0.2, backoff_max_seconds => 0.5);"
        await conn.execute(backoff)
        show_sql(backoff)
        print("        (retries wait 0.1-0.5 s instead of 1 s doubling up to an hour, so the demo is quick)")
        flaky_sql = "SELECT pgrelay.enqueue('email.flaky', jsonb_build_object('to', 'ada@example.com'));"
        flaky = await conn.fetchval(flaky_sql)
        show_sql(flaky_sql, f"   -> job {flaky}")
        broken_sql = "SELECT pgrelay.enqueue('report.broken', jsonb_build_object('template', 'q3'));"
        broken = await conn.fetchval(broken_sql)
        show_sql(broken_sql, f"  -> job {broken}")

        step(f"Run the real worker with the handlers of examples/demo_app.py ({APP})")
        print(f"   $ jobs-worker {dsn} --app {APP} --poll-interval 0.2 --log-level debug")
        print("   (each round it runs SELECT * FROM pgrelay.consume(worker, batch => n), calls the handlers,"
              " then pgrelay.ack_each(ids, attempts) or pgrelay.nack(id, attempt, error))")
        log = workdir / "worker.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("PGRELAY_")}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        with open(log, "wb") as out:
            worker = subprocess.Popen(
                [console_script("jobs-worker"), dsn, "--app", APP, "--poll-interval", "0.2", "--log-level", "debug"],
                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            took = await wait_for_jobs(conn, worker, log)
            print(f"   every job finished {took:.1f} s after the worker started; sending SIGTERM ...")
        finally:
            code = stop_worker(worker)
        print(f"   the worker drained and exited with code {code}")
        if code != 0:
            show_log(log, limit=60)
            raise SystemExit(f"demo: jobs-worker exited with code {code} after SIGTERM (expected 0)")

        step("What the worker logged (stderr)")
        show_log(log)

        step("The jobs now (view pgrelay.jobs)")
        rows = await conn.fetch("SELECT id, task, status, attempt, last_error FROM pgrelay.jobs ORDER BY id")
        table([(r["id"], r["task"], r["status"], r["attempt"], clip(message(r["last_error"]))) for r in rows],
              ["id", "task", "status", "attempts", "last_error"])
        print(f"   (job {flaky} succeeded at attempt 3 and keeps the error of attempt 2 as its last_error)")
        print(f"   job {broken}'s full last_error names the handler's innermost frames:")
        print(f"     {await conn.fetchval('SELECT last_error FROM pgrelay.jobs WHERE id = $1', broken)}")

        step(f"Job {flaky}'s attempt history (pgrelay.get_attempts({flaky}))")
        history = await conn.fetch(
            "SELECT attempt, outcome, finished_at - started_at AS took, error FROM pgrelay.get_attempts($1)", flaky)
        table([(r["attempt"], r["outcome"], f"{r['took'].total_seconds() * 1000:.1f} ms", clip(message(r["error"])))
               for r in history], ["attempt", "outcome", "took", "error"])
        gaps = await conn.fetch(
            """SELECT attempt, started_at - lag(finished_at) OVER (ORDER BY attempt) AS waited
               FROM pgrelay.get_attempts($1)""", flaky)
        waits = [f"{g['waited'].total_seconds():.2f} s" for g in gaps if g["waited"] is not None]
        print(f"   backoff before attempts 2 and 3: {', '.join(waits)}")
        print(f"   job {flaky}'s result: {json.dumps(await conn.fetchval('SELECT result FROM pgrelay.jobs WHERE id = $1', flaky))}")

        step("Per-queue counts (view pgrelay.queue_stats)")
        stats = await conn.fetch(
            "SELECT queue, pending, scheduled, leased, succeeded, dead_letter, cancelled FROM pgrelay.queue_stats")
        table([tuple(r) for r in stats],
              ["queue", "pending", "scheduled", "leased", "succeeded", "dead_letter", "cancelled"])

        step("The orders: confirmed by the handler in the same transaction as its job's ack")
        orders = await conn.fetch("SELECT id, customer, total, status FROM orders ORDER BY id")
        table([tuple(r) for r in orders], ["id", "customer", "total", "status"])
    finally:
        await conn.close()


def main() -> int:
    print("pgrelay demo: a job queue whose semantics live in PostgreSQL")
    with throwaway_cluster() as cluster, tempfile.TemporaryDirectory(prefix="pgrelay-demo-") as tmp:
        print(f"\n== Started a throwaway PostgreSQL on {cluster.host}:{cluster.port}")

        async def create_db() -> None:
            conn = await asyncpg.connect(cluster.dsn())
            try:
                await conn.execute("CREATE DATABASE shop")
            finally:
                await conn.close()

        asyncio.run(create_db())
        asyncio.run(demo(cluster.dsn("shop"), Path(tmp)))
        print("\n== Stopping the cluster and deleting its files")
    print("done. Next: README.md for the SQL API, examples/demo_app.py for handlers, "
          "`\\df+ pgrelay.*` in psql for every function's help.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
