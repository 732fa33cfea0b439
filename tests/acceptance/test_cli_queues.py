"""`pgrelay queues ...`, `stats`, `drain` and `top`: what an operator sees of the queues and does to them.

In-process through click's CliRunner against the test's database, except where a terminal is needed
(the live views): those run the installed console script on a pseudo-terminal.
"""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg
from click.testing import CliRunner, Result

from pgrelay import cli
from tests.sql.factory import call, consume, enqueue, fail, lease, scalar, succeed

BIN = Path(sys.executable).parent


def pgrelay(dsn: str, *args: str) -> Result:
    result = CliRunner().invoke(cli.main, [*args, "--dsn", dsn])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception  # a traceback is a bug, never an answer
    return result


def one_line_error(result: Result, command: str) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 1 and len(lines) == 1, (result.exit_code, result.stderr)
    assert lines[0].startswith(f"pgrelay {command}: error: "), lines[0]
    return lines[0]


def on_a_terminal(*args: str, timeout: float = 20) -> tuple[int, str]:
    """Run the pgrelay console script with stdin, stdout and stderr on a pseudo-terminal; its exit code
    and everything it wrote (escape sequences included)."""
    master, slave = pty.openpty()
    process = subprocess.Popen([str(BIN / "pgrelay"), *args], stdin=slave, stdout=slave, stderr=slave,
                               env={**os.environ, "TERM": "xterm", "COLUMNS": "160"})
    os.close(slave)
    output = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # the child closed the terminal
                    break
                if not chunk:
                    break
                output += chunk
            elif process.poll() is not None:
                break
        return process.wait(timeout=max(0.1, deadline - time.monotonic())), output.decode("utf-8", "replace")
    finally:
        os.close(master)
        if process.poll() is None:
            process.kill()


def queue_row(db, queue: str) -> dict:
    row = db.execute("SELECT row_to_json(s) FROM pgrelay.queue_stats s WHERE queue = %s", (queue,)).fetchone()
    return row[0]


# --- queues pause / resume / configure / list -----------------------------------------------------


def test_pause_and_resume_say_whether_anything_changed(db, dsn):
    assert pgrelay(dsn, "queues", "pause", "mail").stdout.strip() == "paused queue mail"
    assert queue_row(db, "mail")["paused"] is True
    assert pgrelay(dsn, "queues", "pause", "mail").stdout.strip() == "queue mail was already paused"
    job = enqueue(db, queue="mail")
    assert consume(db, queues=["mail"]) == []
    assert pgrelay(dsn, "queues", "resume", "mail").stdout.strip() == "resumed queue mail"
    assert pgrelay(dsn, "queues", "resume", "mail").stdout.strip() == "queue mail was not paused"
    assert [j["id"] for j in consume(db, queues=["mail"])] == [job.id]


def test_pause_or_resume_a_bad_queue_name_is_one_line(dsn):
    assert "queue" in one_line_error(pgrelay(dsn, "queues", "pause", "no spaces"), "queues pause")
    assert "queue" in one_line_error(pgrelay(dsn, "queues", "resume", ""), "queues resume")


def test_configure_prints_the_effective_settings(db, dsn):
    result = pgrelay(dsn, "queues", "configure", "mail", "--concurrency", "3", "--max-attempts", "5",
                     "--backoff-base-seconds", "0.5", "--retention-succeeded-days", "2")
    assert result.exit_code == 0, result.stderr
    shown = dict(line.split(": ", 1) for line in result.stdout.splitlines())
    assert (shown["queue"], shown["concurrency"], shown["max_attempts"], shown["backoff_base_seconds"],
            shown["retention_succeeded_days"], shown["paused"]) == ("mail", "3", "5", "0.5", "2", "no")
    assert "lease_seconds" in shown and "retention_dead_letter_days" in shown
    # settings not named stay; --reset returns one to its default
    again = pgrelay(dsn, "queues", "configure", "mail", "--lease-seconds", "60", "--reset", "concurrency")
    shown = dict(line.split(": ", 1) for line in again.stdout.splitlines())
    assert (shown["concurrency"], shown["max_attempts"], shown["lease_seconds"]) == ("unlimited", "5", "60")
    stats = queue_row(db, "mail")
    assert (stats["concurrency"], stats["max_attempts"], stats["lease_seconds"], stats["retention_succeeded_days"]) == (
        None, 5, 60, 2)


def test_configure_rejected_by_the_sql_is_one_line_and_changes_nothing(db, dsn):
    pgrelay(dsn, "queues", "configure", "mail", "--concurrency", "3")
    line = one_line_error(pgrelay(dsn, "queues", "configure", "mail", "--concurrency", "0"), "queues configure")
    assert "concurrency must be between" in line and "hint:" in line
    assert "cannot reset" in one_line_error(
        pgrelay(dsn, "queues", "configure", "mail", "--reset", "colour"), "queues configure")
    assert one_line_error(pgrelay(dsn, "queues", "configure", "no spaces"), "queues configure")
    assert pgrelay(dsn, "queues", "configure", "mail", "--concurrency", "many").exit_code == 2
    assert queue_row(db, "mail")["concurrency"] == 3


def test_queues_list_shows_each_queue_and_its_settings(db, dsn):
    call(db, "configure_queue", queue="mail", concurrency=4)
    enqueue(db, queue="orders")
    table = pgrelay(dsn, "queues", "list")
    rows = {line.split()[0]: line.split() for line in table.stdout.splitlines()[2:]}
    assert rows["mail"][:3] == ["mail", "no", "4"] and rows["orders"][:3] == ["orders", "no", "unlimited"]
    listed = json.loads(pgrelay(dsn, "queues", "list", "--json").stdout)
    assert [(q["queue"], q["concurrency"], q["pending"]) for q in listed] == [("mail", 4, 0), ("orders", None, 1)]


# --- stats --------------------------------------------------------------------------------------


def test_stats_json_is_an_array_of_the_views_rows(db, dsn):
    enqueue(db, queue="mail")
    enqueue(db, queue="mail", run_in=3600)
    succeed(db, lease(db, enqueue(db, queue="mail")))
    leased = lease(db, enqueue(db, queue="orders"))
    assert fail(db, leased, "boom", permanent=True) == "dead_letter"
    result = pgrelay(dsn, "stats", "--json")
    assert result.exit_code == 0
    rows = {row["queue"]: row for row in json.loads(result.stdout)}
    assert (rows["mail"]["pending"], rows["mail"]["scheduled"], rows["mail"]["succeeded"]) == (1, 1, 1)
    assert rows["orders"]["dead_letter"] == 1 and rows["orders"]["oldest_pending_age"] is None
    assert isinstance(rows["mail"]["oldest_pending_age"], float)
    columns = [r[0] for r in db.execute(
        "SELECT attname FROM pg_attribute WHERE attrelid = 'pgrelay.queue_stats'::regclass AND attnum > 0 ORDER BY attnum")]
    assert list(rows["mail"]) == columns


def test_stats_table_has_a_row_per_queue(db, dsn):
    enqueue(db, queue="mail")
    enqueue(db, queue="orders")
    lines = pgrelay(dsn, "stats").stdout.splitlines()
    assert lines[0].strip() == "queues" and lines[1].split()[:4] == ["queue", "pending", "scheduled", "leased"]
    assert [line.split()[:2] for line in lines[3:]] == [["mail", "1"], ["orders", "1"]]


def test_stats_without_queues_says_so(dsn):
    result = pgrelay(dsn, "stats")
    assert (result.exit_code, result.stdout) == (0, "") and "no queues yet" in result.stderr
    assert json.loads(pgrelay(dsn, "stats", "--json").stdout) == []


# --- drain --------------------------------------------------------------------------------------


def ack_slowly(dsn: str, queue: str, count: int, pause: float = 0.15, *, after_drain_starts: bool = False) -> threading.Thread:
    """A stand-in worker on its own connection: lease and ack ``count`` jobs of ``queue``, one at a time
    (after_drain_starts: only once a drain is polling queue_stats, so it sees the whole backlog)."""

    def work() -> None:
        with psycopg.connect(dsn, autocommit=True) as conn:
            deadline = time.monotonic() + 30
            while after_drain_starts and time.monotonic() < deadline and not conn.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%%queue_stats%%' AND pid <> pg_backend_pid()"
                    ).fetchone()[0]:
                time.sleep(0.02)
            done = 0
            while done < count:
                time.sleep(pause)
                for job in consume(conn, "drain-test-worker", queues=[queue], batch=1):
                    assert call(conn, "ack", id=job["id"], attempt=job["attempt"])
                    done += 1

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    return thread


def test_drain_returns_once_a_worker_has_finished_the_backlog(db, dsn):
    for _ in range(4):
        enqueue(db, queue="mail")
    enqueue(db, queue="other")
    worker = ack_slowly(dsn, "mail", 4)
    result = pgrelay(dsn, "drain", "mail", "--timeout-seconds", "20")
    # checked before joining the worker: drain came back only when it had acked everything
    assert scalar(db, "SELECT count(*) FROM pgrelay.jobs WHERE queue = 'mail' AND status IN ('pending', 'leased')") == 0
    worker.join(5)
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith("drained queue mail: 4 jobs done in ")
    assert queue_row(db, "other")["pending"] == 1


def test_drain_times_out_with_one_line_and_exit_1(db, dsn):
    enqueue(db, queue="mail")
    enqueue(db, queue="mail", run_in=3600)  # a scheduled job is not done either
    started = time.monotonic()
    line = one_line_error(pgrelay(dsn, "drain", "mail", "--timeout-seconds", "0.5"), "drain")
    assert 0.5 <= time.monotonic() - started < 5
    assert "timed out after 0.5s: 2 jobs of queue mail are still pending or leased" in line


def test_drain_of_a_queue_without_active_jobs_returns_at_once(db, dsn):
    succeed(db, lease(db, enqueue(db, queue="mail")))
    result = pgrelay(dsn, "drain", "mail", "--timeout-seconds", "0")
    assert (result.exit_code, result.stdout.split(" in ")[0]) == (0, "drained queue mail: 0 jobs done")


def test_drain_refuses_an_unknown_or_paused_queue(db, dsn):
    enqueue(db, queue="mail")
    assert "no queue named 'mial' (queues: mail)" in one_line_error(pgrelay(dsn, "drain", "mial"), "drain")
    call(db, "pause", queue="mail")
    assert "pgrelay queues resume mail" in one_line_error(pgrelay(dsn, "drain", "mail"), "drain")
    assert pgrelay(dsn, "drain", "mail", "--timeout-seconds", "soon").exit_code == 2


def test_drain_shows_a_progress_bar_on_a_terminal(db, dsn):
    for _ in range(3):
        enqueue(db, queue="mail")
    worker = ack_slowly(dsn, "mail", 3, pause=0.3, after_drain_starts=True)
    code, output = on_a_terminal("drain", "mail", "--timeout-seconds", "20", "--dsn", dsn)
    worker.join(5)
    assert code == 0, output
    assert "draining mail" in output and "/3" in output and "drained queue mail: 3 jobs done" in output


# --- top ----------------------------------------------------------------------------------------


def test_top_prints_plain_frames_of_queues_workers_and_failures(db, dsn):
    enqueue(db, queue="mail")
    call(db, "heartbeat", worker="worker-alive", host="web-1", pid=4242)
    call(db, "heartbeat", worker="worker-gone", host="web-2", pid=1)
    db.execute("UPDATE pgrelay._workers SET last_seen = now() - interval '1 hour' WHERE worker = 'worker-gone'")  # white box
    failed = lease(db, enqueue(db, queue="orders", task="orders.sync"))
    fail(db, failed, "upstream said 503", retry_after_seconds=60)
    started = time.monotonic()
    result = pgrelay(dsn, "top", "--iterations", "2", "--interval", "0.1")
    assert result.exit_code == 0, result.stderr
    assert time.monotonic() - started < 5
    frames = result.stdout.split("pgrelay top ")[1:]
    assert len(frames) == 2
    for frame in frames:
        lines = frame.splitlines()
        assert any(line.split()[:2] == ["mail", "1"] for line in lines)
        assert any(line.split()[:4] == ["worker-alive", "alive", "web-1", "4242"] for line in lines)
        assert any(line.split()[:2] == ["worker-gone", "stale"] for line in lines)
        assert any("orders.sync" in line and "upstream said 503" in line for line in lines)
    assert "\x1b[" not in result.stdout


def test_top_with_nothing_to_show(dsn):
    result = pgrelay(dsn, "top", "--iterations", "1")
    assert result.exit_code == 0
    assert "no queues yet" in result.stdout and "no worker has sent a heartbeat" in result.stdout


def test_top_on_a_terminal_is_a_live_view(db, dsn):
    enqueue(db, queue="mail")
    call(db, "heartbeat", worker="worker-live", host="web-1", pid=7)
    code, output = on_a_terminal("top", "--iterations", "2", "--interval", "0.1", "--dsn", dsn)
    assert code == 0, output
    assert "mail" in output and "worker-live" in output and "alive" in output
    assert "\x1b[" in output  # drawn for a terminal


def test_top_bad_usage(dsn):
    assert pgrelay(dsn, "top", "--iterations", "0").exit_code == 2
    assert pgrelay(dsn, "top", "--interval", "fast").exit_code == 2
