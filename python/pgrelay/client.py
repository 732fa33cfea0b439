"""Async wrappers over the SQL API, one per public function and view; no queue logic lives here.

Each takes ``db``: an asyncpg ``Connection`` (so the call joins the caller's transaction) or a
``Pool``. Every call is one constant statement with named arguments; an argument left as None
gets the SQL function's default. JSON travels as text (``$n::text::jsonb`` and ``::text``
results), so a caller's own jsonb codecs never change what is stored. Errors raised by pgrelay
functions come out as the exceptions of ``pgrelay.errors``, chosen by SQLSTATE.

At the end, a few reads of the system catalogs (server version, roles, indexes, table options) for
``pgrelay doctor``; they look at how pgrelay is installed, never at its rows.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple, TypeAlias

import asyncpg
import asyncpg.pool

from .errors import InvalidArgument, from_sqlstate
from .models import (
    Attempt,
    ClaimedJob,
    ExpiredLease,
    Job,
    Maintenance,
    QueueSettings,
    QueueStats,
    RecentFailure,
    Schedule,
    WorkerInfo,
    _json,
)

# The NOTIFY channel of pgrelay._channel() (a test keeps the two equal).
CHANNEL = "pgrelay_jobs"

__all__ = [
    "CHANNEL",
    "Db",
    "Idle",
    "IndexInfo",
    "ack",
    "ack_each",
    "ack_many",
    "autovacuum_settings",
    "awake",
    "cancel",
    "check_task_names",
    "configure_queue",
    "consume",
    "database_name",
    "declare_schedule",
    "declared_roles",
    "enqueue",
    "enqueue_bulk",
    "enqueue_http",
    "enqueue_many",
    "existing_roles",
    "expired_leases",
    "get_attempts",
    "get_job",
    "heartbeat",
    "idle",
    "idle_check",
    "indexes",
    "job_statuses",
    "list_jobs",
    "maintain",
    "maintenance_scheduled",
    "nack",
    "pause",
    "pause_schedule",
    "purge",
    "queue_stats",
    "recent_failures",
    "recover",
    "recover_if_free",
    "release",
    "replay",
    "replay_dead_letters",
    "resume",
    "resume_schedule",
    "run_schedule_now",
    "schedule",
    "schedules",
    "server_version",
    "tick",
    "unschedule",
    "version",
    "workers",
]

Db: TypeAlias = "asyncpg.Connection | asyncpg.Pool | asyncpg.pool.PoolConnectionProxy"

# One constant statement per SQL function (a test checks each names a function that exists).
SQL = {
    "version": "SELECT pgrelay.version()",
    "job_statuses": "SELECT pgrelay.job_statuses()",
    "check_task_names": "SELECT pgrelay.check_task_names($1::text[])",
    # delay_seconds ($11) counts from the database's clock, never the caller's
    "enqueue": """
        SELECT pgrelay.enqueue(task => $1, payload => $2::text::jsonb, queue => $3,
                               run_at => coalesce($4, now() + make_interval(secs => $11)),
                               priority => $5, max_attempts => $6, timeout_seconds => $7,
                               idempotency_key => $8, dedupe_key => $9, trace_id => $10)""",
    "enqueue_http": """
        SELECT pgrelay.enqueue_http(url => $1, body => $2::text::jsonb, method => $3, headers => $4::text::jsonb,
                                    task => $5, queue => $6, run_at => $7, priority => $8, max_attempts => $9,
                                    timeout_seconds => $10, idempotency_key => $11, dedupe_key => $12,
                                    trace_id => $13)""",
    "enqueue_many": """SELECT coalesce(array_agg(e.id ORDER BY e.n), '{}')
                       FROM pgrelay.enqueue_many(task => $1, payloads => $2::text[]::jsonb[], queue => $3, run_at => $4,
                                                 priority => $5, max_attempts => $6, timeout_seconds => $7,
                                                 trace_id => $8) WITH ORDINALITY AS e(id, n)""",
    # one array value instead of a row per job: decoding 1,000 rows cost more than building the call
    "enqueue_bulk": """SELECT coalesce(array_agg(e.id ORDER BY e.n), '{}')
                       FROM pgrelay.enqueue_bulk(jobs => $1::text::jsonb) WITH ORDINALITY AS e(id, n)""",
    "consume": """
        SELECT id, queue, task, kind, payload::text AS payload, attempt, max_attempts, lease_expires_at,
               timeout_seconds, trace_id, priority, run_at, created_at, idempotency_key, delivery_id
        FROM pgrelay.consume(worker => $1, queues => $2, batch => $3, lease_seconds => $4, tasks => $5,
                             handlers => $6, kinds => $7)""",
    "ack": "SELECT pgrelay.ack(id => $1, attempt => $2, result => $3::text::jsonb)",
    "ack_many": "SELECT pgrelay.ack_many(ids => $1, attempts => $2, results => $3::text[]::jsonb[])",
    "ack_each": "SELECT id FROM pgrelay.ack_each(ids => $1, attempts => $2, results => $3::text[]::jsonb[]) AS id",
    "release": "SELECT pgrelay.release(id => $1, attempt => $2, reason => $3)",
    "nack": """
        SELECT pgrelay.nack(id => $1, attempt => $2, error => $3, retry_after_seconds => $4,
                            permanent => $5, outcome => $6, details => $7::text::jsonb)""",
    "heartbeat": """
        SELECT pgrelay.heartbeat(worker => $1, ids => $2, lease_seconds => $3, host => $4, pid => $5,
                                 queues => $6)""",
    "idle": "SELECT running, next_due FROM pgrelay.idle(worker => $1, queues => $2, seconds => $3)",
    "idle_check": "SELECT running, next_due FROM pgrelay.idle_check(transactions => $1, queues => $2)",
    "awake": "SELECT pgrelay.awake(worker => $1)",
    "recover": "SELECT pgrelay.recover(max_jobs => $1)",
    # one worker at a time is enough: the others skip while one holds the (transaction) lock
    "recover_if_free": "SELECT CASE WHEN pg_try_advisory_xact_lock($1) THEN pgrelay.recover(max_jobs => $2) ELSE 0 END",
    # payload and result apart, as text: Python's json may not read them (models.UnreadableJson)
    "get_job": """SELECT (j - 'payload' - 'result')::text, (j -> 'payload')::text, (j -> 'result')::text
                  FROM pgrelay.get_job(id => $1) j""",
    "get_attempts": """
        SELECT job_id, attempt, worker, started_at, finished_at, outcome, error, details::text AS details
        FROM pgrelay.get_attempts(id => $1)""",
    "configure_queue": """
        SELECT * FROM pgrelay.configure_queue(queue => $1, concurrency => $2, max_attempts => $3,
                                              lease_seconds => $4, backoff_base_seconds => $5,
                                              backoff_max_seconds => $6, reset => $7,
                                              retention_succeeded_days => $8, retention_dead_letter_days => $9)""",
    "pause": "SELECT pgrelay.pause(queue => $1)",
    "resume": "SELECT pgrelay.resume(queue => $1)",
    "replay": "SELECT pgrelay.replay(id => $1, force => $2)",
    "replay_dead_letters": """SELECT pgrelay.replay_dead_letters(queue => $1, task => $2, since => $3,
                                                                max_jobs => $4)""",
    "cancel": "SELECT pgrelay.cancel(id => $1)",
    "purge": "SELECT pgrelay.purge(older_than_days => $1, max_jobs => $2)",
    "maintain": "SELECT * FROM pgrelay.maintain(max_jobs => $1)",
    "maintenance_scheduled": "SELECT pgrelay.maintenance_scheduled()",
    "schedule": """
        SELECT pgrelay.schedule(name => $1, cron => $2, task => $3, payload => $4::text::jsonb, queue => $5,
                                timezone => $6, catch_up => $7, priority => $8, max_attempts => $9,
                                timeout_seconds => $10)""",
    "declare_schedule": """
        SELECT pgrelay.declare_schedule(name => $1, cron => $2, task => $3, payload => $4::text::jsonb, queue => $5,
                                        timezone => $6, catch_up => $7, priority => $8, max_attempts => $9,
                                        timeout_seconds => $10)""",
    "unschedule": "SELECT pgrelay.unschedule(name => $1)",
    "pause_schedule": "SELECT pgrelay.pause_schedule(name => $1)",
    "resume_schedule": "SELECT pgrelay.resume_schedule(name => $1)",
    "run_schedule_now": "SELECT pgrelay.run_schedule_now(name => $1)",
    "tick": "SELECT pgrelay.tick(now => $1)",
    # views
    "queue_stats": "SELECT * FROM pgrelay.queue_stats ORDER BY queue",
    # newest first; a NULL filter matches every job (one plan for every combination of filters)
    "list_jobs": """
        SELECT id, queue, task, kind, status, priority, run_at, attempt, max_attempts, timeout_seconds,
               payload::text AS payload, idempotency_key, dedupe_key, trace_id, replayed_from, last_error,
               result::text AS result, leased_by, lease_expires_at, created_at, finished_at
        FROM pgrelay.jobs
        WHERE ($1::text IS NULL OR queue = $1) AND ($2::text IS NULL OR status = $2)
          AND ($3::text IS NULL OR task LIKE $3)
        ORDER BY id DESC
        LIMIT $4""",
    "workers": "SELECT * FROM pgrelay.workers ORDER BY worker",
    "expired_leases": """SELECT * FROM pgrelay.expired_leases WHERE expired_for >= make_interval(secs => $1)
                         ORDER BY lease_expires_at""",
    "recent_failures": "SELECT * FROM pgrelay.recent_failures ORDER BY last_failed_at DESC NULLS LAST, queue, task",
    "schedules": """
        SELECT name, cron, timezone, task, queue, catch_up, paused, last_tick, next_run, last_job_id, last_job_status,
               payload::text AS payload, priority, max_attempts, timeout_seconds, declared_by, created_at, updated_at
        FROM pgrelay.schedules
        ORDER BY name""",
}

# Catalog reads for `pgrelay doctor`: how pgrelay is installed, not the queue.
CATALOG = {
    "server_version": "SELECT current_setting('server_version_num')::integer, current_setting('server_version')",
    "database_name": "SELECT current_database()::text",
    "declared_roles": """SELECT coalesce(array_agg(DISTINCT m.role::text ORDER BY m.role::text), '{}')
                         FROM pgrelay._privileges() m""",
    "existing_roles": """SELECT coalesce(array_agg(r.rolname::text ORDER BY r.rolname), '{}')
                         FROM pg_catalog.pg_roles r WHERE r.rolname = ANY ($1::text[])""",
    "autovacuum_settings": """SELECT current_setting('autovacuum')::boolean AS server,
                                     coalesce(c.reloptions, '{}')::text[] AS reloptions
                              FROM pg_catalog.pg_class c WHERE c.oid = to_regclass($1)""",
    "indexes": """SELECT t.relname::text AS "table", c.relname::text AS index, i.indisvalid AS valid
                  FROM pg_catalog.pg_index i
                  JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid
                  JOIN pg_catalog.pg_class t ON t.oid = i.indrelid
                  WHERE t.relnamespace = to_regnamespace($1)::oid
                  ORDER BY 1, 2""",
}


def _list(values: Sequence[str] | None) -> list[str] | None:
    return None if values is None else list(values)


def _bulk_job(job: Mapping[str, Any]) -> Mapping[str, Any]:
    """One element of enqueue_bulk's array: a datetime run_at as ISO 8601, the rest as given."""
    run_at = job.get("run_at")
    if isinstance(run_at, datetime):
        return {**job, "run_at": run_at.isoformat()}
    return job if isinstance(job, dict) else dict(job)


def _dumps(value: Any) -> str | None:
    # NaN and Infinity are not JSON: refused here (ValueError) rather than by the database's parser
    return None if value is None else json.dumps(value, allow_nan=False)


async def _call(db: Db, method: str, name: str, *args: Any) -> Any:
    try:
        return await getattr(db, method)(SQL[name] if name in SQL else CATALOG[name], *args)
    except asyncpg.PostgresError as exc:
        mapped = from_sqlstate(exc.sqlstate, exc.args[0] if exc.args else str(exc), getattr(exc, "hint", None))
        if mapped is None:
            raise
        raise mapped from exc


async def version(db: Db) -> str:
    """The installed schema version."""
    return await _call(db, "fetchval", "version")


async def job_statuses(db: Db) -> list[str]:
    """The statuses a job shows (``jobs`` view, ``get_job``), in the order of a job's life."""
    return list(await _call(db, "fetchval", "job_statuses"))


async def check_task_names(db: Db, names: Sequence[str]) -> None:
    """Raise :class:`~pgrelay.errors.InvalidArgument` for the first name ``enqueue`` would refuse as a task."""
    await _call(db, "fetchval", "check_task_names", list(names))


async def enqueue(
    db: Db,
    task: str,
    payload: Any = None,
    *,
    queue: str | None = None,
    run_at: datetime | None = None,
    priority: int | None = None,
    max_attempts: int | None = None,
    timeout_seconds: int | None = None,
    idempotency_key: str | None = None,
    dedupe_key: str | None = None,
    trace_id: str | None = None,
    delay_seconds: float | None = None,
) -> int:
    """Enqueue a handler job; on a connection it commits or rolls back with the caller's transaction.

    ``delay_seconds``: run no sooner than that long after the database's now() (instead of ``run_at``).
    """
    if run_at is not None and delay_seconds is not None:
        raise ValueError("give run_at or delay_seconds, not both")
    return await _call(
        db, "fetchval", "enqueue", task, _dumps(payload), queue, run_at, priority, max_attempts,
        timeout_seconds, idempotency_key, dedupe_key, trace_id, delay_seconds,
    )


async def enqueue_http(
    db: Db,
    url: str,
    body: Any = None,
    *,
    method: str | None = None,
    headers: Mapping[str, Any] | None = None,
    task: str | None = None,
    queue: str | None = None,
    run_at: datetime | None = None,
    priority: int | None = None,
    max_attempts: int | None = None,
    timeout_seconds: int | None = None,
    idempotency_key: str | None = None,
    dedupe_key: str | None = None,
    trace_id: str | None = None,
) -> int:
    """Enqueue an HTTP request for the worker to send."""
    return await _call(
        db, "fetchval", "enqueue_http", url, _dumps(body), method, _dumps(headers), task, queue, run_at,
        priority, max_attempts, timeout_seconds, idempotency_key, dedupe_key, trace_id,
    )


async def enqueue_bulk(db: Db, jobs: Iterable[Mapping[str, Any]]) -> list[int]:
    """Enqueue many jobs (dicts with enqueue's argument names) in one statement; ids in input order."""
    document = json.dumps([_bulk_job(job) for job in jobs], allow_nan=False)
    return list(await _call(db, "fetchval", "enqueue_bulk", document))


async def enqueue_many(
    db: Db,
    task: str,
    payloads: Iterable[Any],
    *,
    queue: str | None = None,
    run_at: datetime | None = None,
    priority: int | None = None,
    max_attempts: int | None = None,
    timeout_seconds: int | None = None,
    trace_id: str | None = None,
) -> list[int]:
    """Enqueue one ``task`` job per payload, sharing the other arguments; ids in input order.

    The fastest bulk path (one statement, arguments checked once); ``enqueue_bulk`` for jobs that differ
    in more than their payload or carry keys.
    """
    return list(await _call(
        db, "fetchval", "enqueue_many", task, [_dumps(p) for p in payloads], queue, run_at, priority, max_attempts,
        timeout_seconds, trace_id,
    ))


async def consume(
    db: Db,
    worker: str,
    *,
    queues: Sequence[str] | None = None,
    batch: int | None = None,
    lease_seconds: int | None = None,
    tasks: Sequence[str] | None = None,
    handlers: Sequence[str] | None = None,
    kinds: Sequence[str] | None = None,
) -> list[ClaimedJob]:
    """Lease up to ``batch`` due jobs (``handlers``: the handler tasks you can run; ``kinds``: handler/http)."""
    rows = await _call(
        db, "fetch", "consume", worker, _list(queues), batch, lease_seconds, _list(tasks), _list(handlers), _list(kinds),
    )
    return [ClaimedJob.from_row(row) for row in rows]


async def ack(db: Db, id: int, attempt: int, result: Any = None) -> bool:
    """Mark a leased job succeeded; False when this attempt no longer holds the lease."""
    return await _call(db, "fetchval", "ack", id, attempt, _dumps(result))


async def ack_many(db: Db, ids: Sequence[int], attempts: Sequence[int], results: Sequence[Any] | None = None) -> int:
    """Mark many leased jobs succeeded in one statement; returns how many were still held."""
    encoded = None if results is None else [_dumps(r) for r in results]
    return await _call(db, "fetchval", "ack_many", list(ids), list(attempts), encoded)


async def ack_each(db: Db, ids: Sequence[int], attempts: Sequence[int], results: Sequence[Any] | None = None) -> list[int]:
    """Like ``ack_many``, returning the ids that were acked."""
    encoded = None if results is None else [_dumps(r) for r in results]
    return [row["id"] for row in await _call(db, "fetch", "ack_each", list(ids), list(attempts), encoded)]


async def release(db: Db, id: int, attempt: int, reason: str | None = None) -> bool:
    """Hand a leased job back unfinished (pending again at once); False if the lease was lost."""
    return await _call(db, "fetchval", "release", id, attempt, reason)


async def nack(
    db: Db,
    id: int,
    attempt: int,
    error: str,
    *,
    retry_after_seconds: float | None = None,
    permanent: bool | None = None,
    outcome: str | None = None,
    details: Any = None,
) -> str:
    """Report a failed attempt; returns ``pending``, ``dead_letter`` or ``stale``."""
    return await _call(
        db, "fetchval", "nack", id, attempt, error, retry_after_seconds, permanent, outcome, _dumps(details)
    )


async def heartbeat(
    db: Db,
    worker: str,
    ids: Sequence[int] = (),
    *,
    lease_seconds: int | None = None,
    host: str | None = None,
    pid: int | None = None,
    queues: Sequence[str] | None = None,
) -> list[int]:
    """Extend this worker's leases; returns the ids it no longer holds."""
    lost = await _call(
        db, "fetchval", "heartbeat", worker, list(ids), lease_seconds, host, pid,
        _list(queues),
    )
    return list(lost)


class Idle(NamedTuple):
    """What ``idle``/``idle_check`` answer: the transactions that may have enqueued without a NOTIFY
    (claim again when fewer of them are running), and when the next job not yet due becomes due."""

    running: list[int]
    next_due: datetime | None


async def idle(db: Db, worker: str, *, queues: Sequence[str] | None = None, seconds: int | None = None) -> Idle:
    """Tell producers of ``queues`` (None: all) to NOTIFY: this worker found nothing and waits on its
    LISTEN (call it only while listening); claim once more after it. ``seconds``: when the wait lapses
    unless renewed (None: 300)."""
    row = await _call(db, "fetchrow", "idle", worker, _list(queues), seconds)
    return Idle(list(row["running"]), row["next_due"])


async def idle_check(db: Db, transactions: Sequence[int], *, queues: Sequence[str] | None = None) -> Idle:
    """Which of the transactions ``idle`` returned still run, and the next due time again."""
    row = await _call(db, "fetchrow", "idle_check", list(transactions), _list(queues))
    return Idle(list(row["running"]), row["next_due"])


async def awake(db: Db, worker: str) -> bool:
    """The worker no longer waits (it found work, or it stops); False when it was not waiting."""
    return await _call(db, "fetchval", "awake", worker)


async def recover(db: Db, *, max_jobs: int | None = None) -> int:
    """Return up to ``max_jobs`` (None: the SQL default, 1000) expired leases to pending (or dead-letter
    them); returns how many. Call again while it returns ``max_jobs``."""
    return await _call(db, "fetchval", "recover", max_jobs)


async def recover_if_free(db: Db, lock_key: int, *, batch: int = 1000) -> int:
    """``recover()`` in calls of ``batch`` until none is left, unless another caller holding ``lock_key``
    is recovering right now (then 0). On an autocommit connection each call is its own transaction."""
    total = 0
    while True:
        recovered = await _call(db, "fetchval", "recover_if_free", lock_key, batch)
        total += recovered
        if recovered < batch:
            return total


async def get_job(db: Db, id: int) -> Job | None:
    """The job wherever it is, or None."""
    row = await _call(db, "fetchrow", "get_job", id)
    if row is None or row[0] is None:
        return None
    return Job.from_json({**json.loads(row[0]), "payload": _json(row[1]), "result": _json(row[2])})


async def get_attempts(db: Db, id: int) -> list[Attempt]:
    """The job's attempts, oldest first."""
    return [Attempt.from_row(row) for row in await _call(db, "fetch", "get_attempts", id)]


async def configure_queue(
    db: Db,
    queue: str,
    *,
    concurrency: int | None = None,
    max_attempts: int | None = None,
    lease_seconds: int | None = None,
    backoff_base_seconds: float | None = None,
    backoff_max_seconds: float | None = None,
    reset: Sequence[str] | None = None,
    retention_succeeded_days: int | None = None,
    retention_dead_letter_days: int | None = None,
) -> QueueSettings:
    """Change a queue's settings (None leaves one as it is; ``reset`` names ones to default)."""
    row = await _call(
        db, "fetchrow", "configure_queue", queue, concurrency, max_attempts, lease_seconds,
        backoff_base_seconds, backoff_max_seconds, None if reset is None else list(reset),
        retention_succeeded_days, retention_dead_letter_days,
    )
    return QueueSettings.from_row(row)


async def pause(db: Db, queue: str) -> bool:
    """Stop leasing this queue's jobs; True if it was running."""
    return await _call(db, "fetchval", "pause", queue)


async def resume(db: Db, queue: str) -> bool:
    """Lease this queue's jobs again; True if it was paused."""
    return await _call(db, "fetchval", "resume", queue)


async def replay(db: Db, id: int, *, force: bool | None = None) -> int:
    """Enqueue a finished job again as a new job (its ``replayed_from`` is ``id``); returns the new id.

    Raises JobNotFound for an unknown id and Conflict when the job is not finished, already replayed, or
    succeeded and ``force`` is not set.
    """
    return await _call(db, "fetchval", "replay", id, force)


async def replay_dead_letters(db: Db, queue: str, *, task: str | None = None, since: datetime | None = None,
                              max_jobs: int | None = None) -> int:
    """Replay up to ``max_jobs`` (None: the SQL default, 1000) dead letters of ``queue`` (``task``: a LIKE
    pattern; ``since``: dead-lettered since); returns how many. Call again while it returns ``max_jobs``."""
    return await _call(db, "fetchval", "replay_dead_letters", queue, task, since, max_jobs)


async def cancel(db: Db, id: int) -> bool:
    """Cancel a job: a pending one at once, a leased one when its worker next heartbeats; False when it had
    already finished. JobNotFound for an unknown id."""
    return await _call(db, "fetchval", "cancel", id)


async def purge(db: Db, *, older_than_days: int | None = None, max_jobs: int | None = None) -> int:
    """Delete up to ``max_jobs`` (None: the SQL default) finished jobs past their queue's retention, or
    older than ``older_than_days``; returns how many. Call again while it returns ``max_jobs``."""
    return await _call(db, "fetchval", "purge", older_than_days, max_jobs)


async def maintain(db: Db, *, max_jobs: int | None = None) -> Maintenance:
    """One round of housekeeping: recover expired leases, purge up to ``max_jobs`` by retention, then tick the
    schedules."""
    return Maintenance.from_row(await _call(db, "fetchrow", "maintain", max_jobs))


async def maintenance_scheduled(db: Db) -> bool:
    """Whether ``maintain()`` is scheduled in the database (e.g. by pg_cron)."""
    return await _call(db, "fetchval", "maintenance_scheduled")


async def schedule(
    db: Db,
    name: str,
    cron: str,
    task: str,
    payload: Mapping[str, Any] | None = None,
    *,
    queue: str | None = None,
    timezone: str | None = None,
    catch_up: str | None = None,
    priority: int | None = None,
    max_attempts: int | None = None,
    timeout_seconds: int | None = None,
) -> datetime | None:
    """Create or replace the schedule ``name``: a ``task`` job per tick of ``cron`` (in ``timezone``, default
    UTC); returns its next run (None: the expression runs no more). A schedule made here is the database's:
    workers declaring the same name leave it alone. ``catch_up``: ``all``, ``latest`` (the default) or
    ``none``. InvalidArgument names a bad argument (a bad expression or time zone too)."""
    return await _call(
        db, "fetchval", "schedule", name, cron, task, _dumps(payload), queue, timezone, catch_up, priority,
        max_attempts, timeout_seconds,
    )


async def declare_schedule(
    db: Db,
    name: str,
    cron: str,
    task: str,
    payload: Mapping[str, Any] | None = None,
    *,
    queue: str | None = None,
    timezone: str | None = None,
    catch_up: str | None = None,
    priority: int | None = None,
    max_attempts: int | None = None,
    timeout_seconds: int | None = None,
) -> datetime | None:
    """A worker's ``schedule()``, for a schedule declared next to its handler; returns the next run, or None
    when a schedule of that name was made or changed in SQL (``schedule``), which a worker never changes."""
    return await _call(
        db, "fetchval", "declare_schedule", name, cron, task, _dumps(payload), queue, timezone, catch_up, priority,
        max_attempts, timeout_seconds,
    )


async def unschedule(db: Db, name: str) -> bool:
    """Remove a schedule (the jobs it enqueued stay); False when there is no such schedule."""
    return await _call(db, "fetchval", "unschedule", name)


async def pause_schedule(db: Db, name: str) -> bool:
    """Stop enqueuing a schedule's ticks until ``resume_schedule``; False when there is no such schedule."""
    return await _call(db, "fetchval", "pause_schedule", name)


async def resume_schedule(db: Db, name: str) -> bool:
    """Enqueue a paused schedule's ticks again, from its first tick after now (the ticks of the pause are not
    made up); False when there is no such schedule."""
    return await _call(db, "fetchval", "resume_schedule", name)


async def run_schedule_now(db: Db, name: str) -> int:
    """Enqueue one extra run of a schedule now, outside its ticks; returns the job's id. JobNotFound (PT404)
    when there is no such schedule."""
    return await _call(db, "fetchval", "run_schedule_now", name)


async def tick(db: Db, now: datetime | None = None) -> int:
    """Enqueue every due tick of every active schedule (exactly one job per schedule and tick, however many
    callers tick at once); returns how many jobs it made. ``now``: the time to tick at (tests); None: the
    database's current time."""
    return await _call(db, "fetchval", "tick", now)


async def queue_stats(db: Db) -> list[QueueStats]:
    """The ``queue_stats`` view, one row per queue."""
    return [QueueStats.from_row(row) for row in await _call(db, "fetch", "queue_stats")]


async def list_jobs(
    db: Db,
    *,
    queue: str | None = None,
    status: str | None = None,
    task: str | None = None,
    limit: int | None = 50,
) -> list[Job]:
    """Jobs from the ``jobs`` view, newest first (``task``: a LIKE pattern; ``limit`` None: all).

    Unlike ``get_job``, ``max_attempts`` is None when the job takes its queue's setting. A ``status``
    that is none of :func:`job_statuses` raises :class:`~pgrelay.errors.InvalidArgument`.
    """
    if status is not None and status not in (statuses := await job_statuses(db)):
        raise InvalidArgument(f"status must be one of {', '.join(statuses)}, not {status!r}")
    return [Job.from_row(row) for row in await _call(db, "fetch", "list_jobs", queue, status, task, limit)]


async def workers(db: Db) -> list[WorkerInfo]:
    """The ``workers`` view, by worker id."""
    return [WorkerInfo.from_row(row) for row in await _call(db, "fetch", "workers")]


async def expired_leases(db: Db, *, older_than_seconds: float = 0) -> list[ExpiredLease]:
    """The ``expired_leases`` view: leases that ran out at least ``older_than_seconds`` ago, oldest first."""
    return [ExpiredLease.from_row(row) for row in await _call(db, "fetch", "expired_leases", older_than_seconds)]


async def recent_failures(db: Db) -> list[RecentFailure]:
    """The ``recent_failures`` view, most recent failure first."""
    return [RecentFailure.from_row(row) for row in await _call(db, "fetch", "recent_failures")]


async def schedules(db: Db) -> list[Schedule]:
    """The ``schedules`` view, by name."""
    return [Schedule.from_row(row) for row in await _call(db, "fetch", "schedules")]


# ---------------------------------------------------------------------------------------------
# Catalog reads for `pgrelay doctor`
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IndexInfo:
    table: str
    index: str
    valid: bool


async def server_version(db: Db) -> tuple[int, str]:
    """The server's version as a number (150004) and as it reports it ("15.4")."""
    row = await _call(db, "fetchrow", "server_version")
    return row[0], row[1]


async def database_name(db: Db) -> str:
    """The name of the connected database."""
    return await _call(db, "fetchval", "database_name")


async def declared_roles(db: Db) -> list[str]:
    """The group roles the schema grants to (``pgrelay._privileges()``, its one matrix)."""
    return list(await _call(db, "fetchval", "declared_roles"))


async def existing_roles(db: Db, names: Sequence[str]) -> list[str]:
    """Those of ``names`` that are roles of the cluster."""
    return list(await _call(db, "fetchval", "existing_roles", list(names)))


async def autovacuum_settings(db: Db, table: str) -> tuple[bool, list[str]] | None:
    """Whether autovacuum runs on the server, and the table's storage options (``reloptions``);
    None when there is no such table."""
    row = await _call(db, "fetchrow", "autovacuum_settings", table)
    return None if row is None else (row["server"], list(row["reloptions"]))


async def indexes(db: Db, schema: str = "pgrelay") -> list[IndexInfo]:
    """Every index on the tables of ``schema`` and whether it is valid (usable)."""
    return [IndexInfo(*row) for row in await _call(db, "fetch", "indexes", schema)]
