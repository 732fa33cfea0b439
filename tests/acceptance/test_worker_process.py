"""jobs-worker as a real process against the test database: run once, SIGKILL, SIGTERM, a restarted
PostgreSQL, a lost lease, and transactional completion."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from tests.harness.cluster import PG_CTL

BIN = Path(sys.executable).parent
HERE = Path(__file__).parent


def wait_for(condition: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.fixture
def app_db(db):
    db.execute("CREATE TABLE executions (job_id bigint, attempt int, pid int, note text, at timestamptz DEFAULT clock_timestamp())")
    db.execute("CREATE TABLE effects (job_id bigint, attempt int)")
    return db


@pytest.fixture
def start_worker(dsn, tmp_path) -> Iterator[Callable[..., subprocess.Popen]]:
    started: list[subprocess.Popen] = []

    def start(*args: str) -> subprocess.Popen:
        env = {**os.environ, "PYTHONPATH": str(HERE.parents[1])}
        # the log goes to a file, not a pipe: a pipe nobody reads until stop() fills at 64 KiB (300 DEBUG
        # lines), and a worker blocked writing its log holds its leases until they expire
        log_path = tmp_path / f"worker-{len(started)}.log"
        with log_path.open("w") as log:
            proc = subprocess.Popen(
                [str(BIN / "jobs-worker"), dsn, "--app", "tests.acceptance.worker_app:router", "--poll-interval",
                 "0.2", "--log-format", "json", *args],
                env=env, stdout=log, stderr=subprocess.STDOUT, text=True,
            )
        proc.log_path = log_path  # type: ignore[attr-defined]
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


def scalar(db: psycopg.Connection, sql: str, *params) -> object:
    return db.execute(sql, params).fetchone()[0]


def enqueue(db: psycopg.Connection, task: str, **payload) -> int:
    return scalar(db, "SELECT pgrelay.enqueue(%s, %s::jsonb)", task, psycopg.types.json.Jsonb(payload))


def status(db: psycopg.Connection, job_id: int) -> str:
    return scalar(db, "SELECT status FROM pgrelay.jobs WHERE id = %s", job_id)


def stop(proc: subprocess.Popen, timeout: float = 20) -> str:
    """SIGTERM, wait for the exit; the worker's log."""
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=timeout)
    return proc.log_path.read_text()  # type: ignore[attr-defined]


def test_two_workers_run_every_job_exactly_once(app_db, start_worker):
    # successes are logged at DEBUG (routine); the JSON line must still carry its fields and no payload
    workers = [start_worker("--concurrency", "8", "--log-level", "debug"),
               start_worker("--concurrency", "8", "--log-level", "debug")]
    wait_for(lambda: scalar(app_db, "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                                      " AND (query LIKE 'LISTEN%%' OR query = 'SELECT 1')") == 2,
             what="both workers to listen")
    app_db.execute("SELECT pgrelay.enqueue_bulk(jsonb_agg(jsonb_build_object('task', 'record'))) FROM generate_series(1, 300)")
    # about 2 s; it once took over 30 s under load, when the workers' DEBUG lines filled an unread pipe
    wait_for(lambda: scalar(app_db, "SELECT count(*) FROM pgrelay.jobs WHERE status = 'succeeded'") == 300,
             what="300 jobs to succeed")
    for proc in workers:
        output = stop(proc)
        assert proc.returncode == 0, output
        assert '"outcome": "succeeded"' in output and '"payload"' not in output
    assert scalar(app_db, "SELECT count(*) FROM executions") == 300
    assert scalar(app_db, "SELECT count(DISTINCT job_id) FROM executions") == 300
    assert scalar(app_db, "SELECT count(DISTINCT pid) FROM executions") == 2


def test_a_worker_killed_mid_job_loses_nothing(app_db, start_worker):
    job = enqueue(app_db, "sleepy", seconds=1)
    victim = start_worker("--lease-seconds", "2")
    wait_for(lambda: scalar(app_db, "SELECT count(*) FROM executions WHERE note = 'started'") == 1, what="the job to start")
    victim.kill()
    victim.wait(timeout=10)
    rescuer = start_worker("--lease-seconds", "2")
    wait_for(lambda: status(app_db, job) == "succeeded", what="another worker to finish the job")
    stop(rescuer)
    outcomes = [r[0] for r in app_db.execute("SELECT outcome FROM pgrelay.get_attempts(%s)", [job])]
    assert outcomes == ["lease_expired", "succeeded"]
    assert scalar(app_db, "SELECT count(*) FROM executions WHERE note = 'finished'") == 1


def test_sigterm_lets_running_jobs_finish(app_db, start_worker):
    job = enqueue(app_db, "sleepy", seconds=1)
    proc = start_worker("--shutdown-grace", "10")
    wait_for(lambda: scalar(app_db, "SELECT count(*) FROM executions") == 1, what="the job to start")
    output = stop(proc)
    assert proc.returncode == 0, output
    assert status(app_db, job) == "succeeded"


def test_sigterm_after_the_grace_period_hands_jobs_back(app_db, start_worker):
    job = enqueue(app_db, "sleepy", seconds=60)
    proc = start_worker("--shutdown-grace", "0.5")
    wait_for(lambda: scalar(app_db, "SELECT count(*) FROM executions") == 1, what="the job to start")
    started = time.monotonic()
    output = stop(proc)
    assert proc.returncode == 0, output
    assert time.monotonic() - started < 10
    assert status(app_db, job) == "pending"
    assert [r[0] for r in app_db.execute("SELECT outcome FROM pgrelay.get_attempts(%s)", [job])] == ["cancelled"]
    assert scalar(app_db, "SELECT run_at <= now() FROM pgrelay.jobs WHERE id = %s", job)  # another worker may start it now


def test_a_second_signal_exits_at_once(app_db, start_worker):
    enqueue(app_db, "sleepy", seconds=60)
    proc = start_worker("--shutdown-grace", "60")
    wait_for(lambda: scalar(app_db, "SELECT count(*) FROM executions") == 1, what="the job to start")
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=15)
    assert proc.returncode == 0


def test_a_lost_lease_cancels_the_handler(app_db, start_worker):
    job = enqueue(app_db, "sleepy", seconds=60)
    proc = start_worker("--lease-seconds", "3", "--shutdown-grace", "1")
    wait_for(lambda: scalar(app_db, "SELECT count(*) FROM executions") == 1, what="the job to start")
    # the lease runs out behind the worker's back and another recover() takes the job away
    app_db.execute("UPDATE pgrelay._jobs SET lease_expires_at = now() - interval '1 s' WHERE id = %s", [job])
    assert scalar(app_db, "SELECT pgrelay.recover()") == 1
    wait_for(lambda: scalar(app_db, "SELECT count(*) FROM executions WHERE note = 'cancelled' AND attempt = 1") == 1,
             what="the handler to be cancelled")
    output = stop(proc, timeout=30)
    assert '"outcome": "lease_expired"' in output  # the SQL's name for the attempt's outcome


def test_the_queues_lease_seconds_applies_unless_the_worker_sets_one(app_db, start_worker):
    # configure_queue(lease_seconds) decides the lease under a jobs-worker without --lease-seconds,
    # and the worker heartbeats often enough for that lease: the job outlives it and runs once
    app_db.execute("SELECT pgrelay.configure_queue('default', lease_seconds => 2)")
    job = enqueue(app_db, "sleepy", seconds=5)
    proc = start_worker()
    wait_for(lambda: scalar(app_db, "SELECT count(*) FROM executions") == 1, what="the job to start")
    left = scalar(app_db, "SELECT extract(epoch FROM lease_expires_at - now()) FROM pgrelay.jobs WHERE id = %s", job)
    assert left is not None and left <= 2, f"a {left} s lease: the queue's 2 s were not used"
    wait_for(lambda: status(app_db, job) == "succeeded", what="the job to succeed")
    output = stop(proc)
    assert proc.returncode == 0, output
    assert [r[0] for r in app_db.execute("SELECT outcome FROM pgrelay.get_attempts(%s)", [job])] == ["succeeded"]
    # --lease-seconds still overrides every queue's setting
    job = enqueue(app_db, "sleepy", seconds=2)
    proc = start_worker("--lease-seconds", "20")
    wait_for(lambda: scalar(app_db, "SELECT count(*) FROM executions WHERE job_id = %s", job) == 1, what="the job to start")
    assert scalar(app_db, "SELECT extract(epoch FROM lease_expires_at - now()) FROM pgrelay.jobs WHERE id = %s", job) > 2
    stop(proc)


def test_transactional_completion_never_splits_effect_and_ack(app_db, start_worker):
    lost = enqueue(app_db, "tx", seconds=2)
    proc = start_worker("--lease-seconds", "5")
    wait_for(lambda: scalar(app_db, "SELECT count(*) FROM executions WHERE job_id = %s", lost) == 1, what="the handler")
    app_db.execute("UPDATE pgrelay._jobs SET lease_expires_at = now() - interval '1 s', run_at = now() WHERE id = %s", [lost])
    assert scalar(app_db, "SELECT pgrelay.recover()") == 1
    app_db.execute("UPDATE pgrelay._jobs SET run_at = now() WHERE id = %s", [lost])
    wait_for(lambda: status(app_db, lost) == "succeeded", what="the job to succeed on its next attempt")
    ok = enqueue(app_db, "tx")
    wait_for(lambda: status(app_db, ok) == "succeeded", what="a plain transactional job")
    stop(proc, timeout=30)
    effects = app_db.execute("SELECT job_id, attempt FROM effects ORDER BY job_id").fetchall()
    final = dict(app_db.execute("SELECT id, attempt FROM pgrelay.jobs WHERE id IN (%s, %s)", [lost, ok]).fetchall())
    assert effects == [(lost, final[lost]), (ok, final[ok])]  # one effect each, from the attempt that was acked
    assert final[lost] >= 2


def test_the_worker_survives_a_database_restart(app_db, start_worker, postgresql_proc):
    first = enqueue(app_db, "record")
    # a long poll interval: a job enqueued after the restart is found quickly only if the worker
    # noticed the restart and listens again
    proc = start_worker("--concurrency", "2", "--poll-interval", "60")
    wait_for(lambda: status(app_db, first) == "succeeded", what="the first job")
    # the server's output goes to its log file: pg_ctl must not hand it our pipes
    subprocess.run([PG_CTL, "restart", "-D", postgresql_proc.datadir, "-m", "fast", "-w", "-l", postgresql_proc.logfile],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
    with psycopg.connect(app_db.info.dsn, autocommit=True) as fresh:
        second = enqueue(fresh, "record")
        wait_for(lambda: status(fresh, second) == "succeeded", timeout=30, what="a job after the restart")
    output = stop(proc)
    assert proc.returncode == 0, output
    assert "listen connection lost" in output, output
