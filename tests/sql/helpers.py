"""Small helpers shared by the SQL API tests (producer side: enqueue, enqueue_http, enqueue_bulk, triggers).

    call(conn, "enqueue", task="t", ...)   SELECT pgrelay.<function>(name => value::type, ...), the single value
    bulk(conn, jobs)                       SELECT * FROM pgrelay.enqueue_bulk(jobs), as a list of ids
    job(conn, id)                          pgrelay.get_job(id) as a dict, timestamps parsed (None if unknown)
    job_count(conn)                        rows in the pgrelay.jobs view (active and finished)
    ack_all(conn)                          consume every due job and ack it; returns the ids acked
    raises_sqlstate(code)                  pytest.raises for a database error with this SQLSTATE
    error_of(action)                       run action(); the psycopg.Error it raised, or None (table-driven tests)
    wait_until_blocked(conn, pid)          wait until backend pid waits on a lock (for interleaving tests)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from tests.sql.factory import raises_sqlstate  # noqa: F401  (re-exported: one definition for every SQL test)

# The SQL type of every named argument of the producer functions, so calls resolve exactly.
ARG_TYPES = {
    "task": "text",
    "payload": "jsonb",
    "queue": "text",
    "run_at": "timestamptz",
    "priority": "integer",
    "max_attempts": "integer",
    "timeout_seconds": "integer",
    "idempotency_key": "text",
    "dedupe_key": "text",
    "trace_id": "text",
    "url": "text",
    "body": "jsonb",
    "method": "text",
    "headers": "jsonb",
    "jobs": "jsonb",
}

TIMESTAMP_KEYS = ("run_at", "created_at", "finished_at", "lease_expires_at")


def _param(name: str, value: Any) -> Any:
    """jsonb arguments: a str is JSON text as written (wrap a JSON string in Jsonb), anything else is dumped as JSON."""
    if ARG_TYPES[name] == "jsonb" and value is not None and not isinstance(value, (str, Jsonb)):
        return Jsonb(value)
    return value


def call(conn: psycopg.Connection, function: str, **args: Any) -> Any:
    """Call pgrelay.<function> with named arguments (None passes NULL) and return its single value."""
    named = ", ".join(f"{name} => %({name})s::{ARG_TYPES[name]}" for name in args)
    params = {name: _param(name, value) for name, value in args.items()}
    return conn.execute(f"SELECT pgrelay.{function}({named})", params).fetchone()[0]


def bulk(conn: psycopg.Connection, jobs: Any) -> list[int]:
    """pgrelay.enqueue_bulk(jobs) as a list of ids (jobs: a Python list, JSON text, or None)."""
    rows = conn.execute("SELECT * FROM pgrelay.enqueue_bulk(%s::jsonb)", [_param("jobs", jobs)]).fetchall()
    return [row[0] for row in rows]


def job(conn: psycopg.Connection, job_id: int) -> dict[str, Any] | None:
    found = conn.execute("SELECT pgrelay.get_job(%s)", [job_id]).fetchone()[0]
    if found is not None:
        for key in TIMESTAMP_KEYS:
            if found.get(key) is not None:
                found[key] = datetime.fromisoformat(found[key])
    return found


def job_count(conn: psycopg.Connection) -> int:
    return conn.execute("SELECT count(*) FROM pgrelay.jobs").fetchone()[0]


def ack_all(conn: psycopg.Connection, worker: str = "test-worker") -> list[int]:
    leased = conn.execute("SELECT id, attempt FROM pgrelay.consume(%s, batch => 10000)", [worker]).fetchall()
    for job_id, attempt in leased:
        assert conn.execute("SELECT pgrelay.ack(%s, %s)", [job_id, attempt]).fetchone()[0] is True
    return [job_id for job_id, _ in leased]


def error_of(action: Callable[[], Any]) -> psycopg.Error | None:
    """Run action (on an autocommit connection); return the database error it raised, or None if it succeeded."""
    try:
        action()
    except psycopg.Error as error:
        return error
    return None


def wait_until_blocked(conn: psycopg.Connection, pid: int, timeout: float = 5.0) -> None:
    """Wait until backend `pid` is waiting for a lock (seen through `conn`); fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = conn.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", [pid]).fetchone()
        if row and row[0] == "Lock":
            return
        time.sleep(0.01)
    pytest.fail(f"backend {pid} did not block on a lock within {timeout} s")
