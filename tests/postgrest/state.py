"""Jobs in a given state, made with SQL as the superuser (arranging a test, not what it tests)."""

from __future__ import annotations

import itertools
from typing import Any

import psycopg

_numbers = itertools.count(1)


def pending(pg: psycopg.Connection, queue: str, task: str = "pgrst.job") -> int:
    return pg.execute("SELECT pgrelay.enqueue(task => %s, queue => %s)", [task, queue]).fetchone()[0]


def leased(pg: psycopg.Connection, queue: str, worker: str = "setup-worker") -> tuple[int, int]:
    """A job leased to ``worker``: (id, attempt)."""
    task = f"pgrst.leased{next(_numbers)}"
    job_id = pending(pg, queue, task)
    row = pg.execute("SELECT id, attempt FROM pgrelay.consume(%s, queues => ARRAY[%s], tasks => ARRAY[%s])",
                     [worker, queue, task]).fetchone()
    assert row is not None and row[0] == job_id
    return row[0], row[1]


def dead_letter(pg: psycopg.Connection, queue: str) -> int:
    job_id, attempt = leased(pg, queue)
    outcome = pg.execute("SELECT pgrelay.nack(id => %s, attempt => %s, error => 'arranged', permanent => true)",
                         [job_id, attempt]).fetchone()[0]
    assert outcome == "dead_letter"
    return job_id


def job(pg: psycopg.Connection, job_id: int) -> dict[str, Any] | None:
    return pg.execute("SELECT pgrelay.get_job(%s)", [job_id]).fetchone()[0]


def count(pg: psycopg.Connection, queue: str) -> int:
    return pg.execute("SELECT count(*) FROM pgrelay.jobs WHERE queue = %s", [queue]).fetchone()[0]
