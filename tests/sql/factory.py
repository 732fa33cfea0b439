"""A job factory for the worker/operator SQL tests: puts a job in any state.

Every state is reached through the public API (enqueue -> consume -> ack / nack, recover). Where a
state needs time to pass (a lease that has run out, a retry whose backoff is over) the factory
backdates a private column of ``pgrelay._jobs`` instead of sleeping; those two helpers
(``expire`` and ``make_due``) are the only white-box steps.

Each job gets its own task name by default (``factory.t<n>``: letters, digits and dots, so it is also
an exact LIKE pattern), which lets ``lease`` claim exactly that job with ``consume(tasks => ...)``.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

_task_numbers = itertools.count(1)

WORKER = "worker-a"


@dataclass(frozen=True)
class Job:
    """What a test needs to act on a job: its id, where it lives, and the attempt (fencing token)."""

    id: int
    queue: str
    task: str
    attempt: int = 0
    worker: str | None = None


def unique_task(prefix: str = "factory") -> str:
    return f"{prefix}.t{next(_task_numbers)}"


# ---------------------------------------------------------------------------------------------
# Calling SQL
# ---------------------------------------------------------------------------------------------


def _adapt(value: Any) -> Any:
    if isinstance(value, dict):
        return Jsonb(value)
    if isinstance(value, list) and any(isinstance(v, dict) for v in value):
        return [Jsonb(v) if v is not None else None for v in value]
    return value


def _call_sql(function: str, args: dict[str, Any], select: str) -> tuple[str, dict[str, Any]]:
    named = ", ".join(f"{name} => %({name})s" for name in args)
    return f"SELECT {select} pgrelay.{function}({named})", {k: _adapt(v) for k, v in args.items()}


def call(conn: psycopg.Connection, function: str, /, **args: Any) -> Any:
    """``SELECT pgrelay.<function>(name => value, ...)``: the single value it returns."""
    sql, params = _call_sql(function, args, "")
    return conn.execute(sql, params).fetchone()[0]


def call_rows(conn: psycopg.Connection, function: str, /, **args: Any) -> list[dict[str, Any]]:
    """``SELECT * FROM pgrelay.<function>(...)``: the rows of a set-returning function, as dicts."""
    sql, params = _call_sql(function, args, "* FROM")
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(sql, params).fetchall()


def scalar(conn: psycopg.Connection, sql: str, params: Any = None) -> Any:
    return conn.execute(sql, params).fetchone()[0]


def dicts(conn: psycopg.Connection, sql: str, params: Any = None) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(sql, params).fetchall()


def consume(conn: psycopg.Connection, worker: str = WORKER, **args: Any) -> list[dict[str, Any]]:
    return call_rows(conn, "consume", worker=worker, **args)


def get_job(conn: psycopg.Connection, job: Job | int) -> dict[str, Any] | None:
    return call(conn, "get_job", id=job.id if isinstance(job, Job) else job)


def attempts(conn: psycopg.Connection, job: Job | int) -> list[dict[str, Any]]:
    return call_rows(conn, "get_attempts", id=job.id if isinstance(job, Job) else job)


def status(conn: psycopg.Connection, job: Job | int) -> str | None:
    found = get_job(conn, job)
    return None if found is None else found["status"]


@contextlib.contextmanager
def raises_sqlstate(code: str) -> Iterator[pytest.ExceptionInfo[psycopg.Error]]:
    """Expect a database error with this SQLSTATE (never matched by message text)."""
    with pytest.raises(psycopg.Error) as info:
        yield info
    assert info.value.sqlstate == code, f"expected SQLSTATE {code}, got {info.value.sqlstate}: {info.value}"


def connect_in_transaction(connect: Callable[..., psycopg.Connection]) -> psycopg.Connection:
    """Another connection to the test database whose statements stay in one open transaction until
    commit() or rollback(): to hold row locks while other connections act."""
    conn = connect()
    conn.autocommit = False
    return conn


def in_thread(fn: Callable[[], Any], timeout: float = 10.0) -> Any:
    """Run fn in a thread and return its result; fail (not hang) if it does not finish in time."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = fn()
        except BaseException as exc:  # re-raised in the test's thread
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"did not finish within {timeout} s (blocked on a lock?)"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


# ---------------------------------------------------------------------------------------------
# Putting jobs in states
# ---------------------------------------------------------------------------------------------


def enqueue(
    conn: psycopg.Connection,
    *,
    task: str | None = None,
    queue: str = "default",
    payload: dict[str, Any] | None = None,
    run_in: float | None = None,
    **args: Any,
) -> Job:
    """Enqueue one job. run_in: seconds from now for run_at (negative: already due that long ago)."""
    task = task or unique_task()
    params = {"task": task, "queue": queue, "payload": Jsonb(payload if payload is not None else {}), **args}
    named = [f"{name} => %({name})s" for name in params]
    if run_in is not None:
        named.append("run_at => now() + make_interval(secs => %(run_in)s)")
        params["run_in"] = run_in
    job_id = scalar(conn, f"SELECT pgrelay.enqueue({', '.join(named)})", {k: _adapt(v) for k, v in params.items()})
    return Job(job_id, queue, task)


def lease(conn: psycopg.Connection, job: Job, *, worker: str = WORKER, lease_seconds: int | None = None) -> Job:
    """Lease exactly this job (its task must be unique to it) with consume; returns it with its attempt."""
    rows = consume(conn, worker, queues=[job.queue], tasks=[job.task], lease_seconds=lease_seconds)
    assert [r["id"] for r in rows] == [job.id], f"factory could not lease job {job.id}; consume returned {rows}"
    return replace(job, attempt=rows[0]["attempt"], worker=worker)


def expire(conn: psycopg.Connection, *jobs: Job, ago_seconds: float = 1.0) -> None:
    """White box: make the current leases of these jobs run out (ago_seconds ago)."""
    ids = [j.id for j in jobs]
    cur = conn.execute(
        """UPDATE pgrelay._jobs SET lease_expires_at = now() - make_interval(secs => %s)
           WHERE id = ANY (%s) AND leased_by IS NOT NULL""",
        (ago_seconds, ids),
    )
    assert cur.rowcount == len(ids), f"not all of {ids} are leased"


def make_due(conn: psycopg.Connection, *jobs: Job) -> None:
    """White box: end the wait (backoff or schedule) of these pending jobs."""
    ids = [j.id for j in jobs]
    cur = conn.execute(
        "UPDATE pgrelay._jobs SET run_at = now() - interval '1 second' WHERE id = ANY (%s) AND leased_by IS NULL",
        (ids,),
    )
    assert cur.rowcount == len(ids), f"not all of {ids} are pending"


def fail(conn: psycopg.Connection, job: Job, error: str = "boom", **args: Any) -> str:
    """nack the job's current attempt; returns nack's answer."""
    return call(conn, "nack", id=job.id, attempt=job.attempt, error=error, **args)


def succeed(conn: psycopg.Connection, job: Job, result: dict[str, Any] | None = None) -> bool:
    return call(conn, "ack", id=job.id, attempt=job.attempt, result=result)


STATES = ("pending", "scheduled", "leased", "expired", "succeeded", "retrying", "recovered", "dead_letter", "cancelled")


def age_finished(conn: psycopg.Connection, *jobs: Job | int, days: float) -> None:
    """White box: make these finished jobs (and their attempts) look `days` old: finished then, and
    created no later (a job is created before it finishes; purge() relies on it)."""
    ids = [j.id if isinstance(j, Job) else j for j in jobs]
    cur = conn.execute(
        "UPDATE pgrelay._finished SET (finished_at, created_at) = (SELECT t.at, least(created_at, t.at)"
        " FROM (SELECT now() - make_interval(days => %s::int, secs => %s) AS at) t) WHERE id = ANY (%s)",
        (int(days), (days - int(days)) * 86400, ids),
    )
    assert cur.rowcount == len(ids), f"not all of {ids} are finished"
    conn.execute(
        "UPDATE pgrelay._attempts SET finished_at = now() - make_interval(days => %s::int) WHERE job_id = ANY (%s)",
        (int(days), ids),
    )


def make_job(
    conn: psycopg.Connection,
    state: str,
    *,
    failures: int = 0,
    worker: str = WORKER,
    **enqueue_args: Any,
) -> Job:
    """A job in this state, after `failures` failed attempts (each retried at once).

    pending      due, waiting to be consumed
    scheduled    run_at an hour from now (failures must be 0)
    leased       held by `worker`
    expired      held by `worker`, but the lease ran out and recover() has not run
    succeeded    acked by `worker`
    retrying     nacked with the default backoff: pending with run_at in the future
    recovered    the lease ran out and recover() put it back to pending (recover() sees every expired job)
    dead_letter  nacked permanently
    cancelled    cancelled by an operator while pending
    """
    assert state in STATES, f"unknown state {state!r}; use one of {STATES}"
    if state == "scheduled":
        assert failures == 0, "a scheduled job cannot have failed attempts"
        return enqueue(conn, run_in=3600, **enqueue_args)
    job = enqueue(conn, **enqueue_args)
    for _ in range(failures):
        job = lease(conn, job, worker=worker)
        assert fail(conn, job, error=f"failure {job.attempt}", retry_after_seconds=0) == "pending"
    if state == "pending":
        return job
    if state == "cancelled":
        assert call(conn, "cancel", id=job.id) is True
        return job
    job = lease(conn, job, worker=worker)
    if state == "leased":
        return job
    if state in ("expired", "recovered"):
        expire(conn, job)
        if state == "recovered":
            assert call(conn, "recover") >= 1
            assert status(conn, job) == "pending", "the job ran out of attempts; use fewer failures"
        return job
    if state == "succeeded":
        assert succeed(conn, job, {"factory": True}) is True
    elif state == "retrying":
        assert fail(conn, job, error="retry me") == "pending"
    elif state == "dead_letter":
        assert fail(conn, job, error="give up", permanent=True) == "dead_letter"
    return job
