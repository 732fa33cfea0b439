"""Commands about jobs: ``enqueue``, ``jobs list|show|attempts``, ``replay``, ``replay-dead``
and ``cancel``."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg
import click

from .. import client
from .common import (
    _operate,
    _parse_json,
    _parse_time,
    _Refused,
    dsn_option,
    json_option,
    main,
)
from .output import (
    _add_row,
    _cell,
    _console,
    _echo_fields,
    _echo_json,
    _json_text,
    _short,
    _table,
)

REPLAY_BATCH = 1000  # dead letters replayed per call of replay_dead_letters (one transaction each)

# --- enqueue ----------------------------------------------------------------------------------


@main.command(name="enqueue")
@click.argument("task")
@click.option("--payload", metavar="JSON", callback=_parse_json, help="the job's payload  [default: {}]")
@click.option("--queue", "-q", help="[default: default]")
@click.option("--priority", type=int, help="higher runs first  [default: 0]")
@click.option("--run-at", metavar="ISO", callback=_parse_time,
              help="not before this time (ISO 8601; without an offset, local time)")
@click.option("--delay-seconds", type=click.FloatRange(min=0), help="not before this long from now (the database's clock)")
@click.option("--max-attempts", type=int, help="[default: the queue's setting]")
@click.option("--idempotency-key", help="an existing key returns the job it created")
@click.option("--dedupe-key", help="an active job of the queue with this key is returned instead")
@dsn_option
def enqueue_command(task: str, payload: Any, queue: str | None, priority: int | None, run_at: datetime | None,
                    delay_seconds: float | None, max_attempts: int | None, idempotency_key: str | None,
                    dedupe_key: str | None, dsn: str | None) -> None:
    """Enqueue a job for the handler TASK; prints its id.

    Calls pgrelay.enqueue; an option left out takes the SQL function's default.

    \b
    Example:
      pgrelay enqueue orders.created --payload '{"id": 42}' --queue orders --delay-seconds 60
    """
    if run_at is not None and delay_seconds is not None:
        raise click.UsageError("give --run-at or --delay-seconds, not both")
    job_id = _operate(dsn, lambda conn: client.enqueue(
        conn, task, payload, queue=queue, run_at=run_at, priority=priority, max_attempts=max_attempts,
        idempotency_key=idempotency_key, dedupe_key=dedupe_key, delay_seconds=delay_seconds))
    click.echo(job_id)


# --- jobs -------------------------------------------------------------------------------------


@main.group(name="jobs")
def jobs_group() -> None:
    """Look at jobs: list them, show one, its attempts.

    \b
    Example:
      pgrelay jobs list --status dead_letter --queue mail
    """


@jobs_group.command(name="list")
@click.option("--queue", "-q", help="only this queue")
@click.option("--status", "-s", metavar="STATUS",
              help="only jobs in this state (one of those pgrelay.job_statuses() names)")
@click.option("--task", "-t", metavar="PATTERN", help="only tasks matching this LIKE pattern, e.g. 'orders.%'")
@click.option("--limit", "-n", type=click.IntRange(1, 100000), default=50, show_default=True, help="most jobs shown")
@json_option
@dsn_option
def jobs_list_command(queue: str | None, status: str | None, task: str | None, limit: int, as_json: bool,
                      dsn: str | None) -> None:
    """List jobs, newest first.

    Reads the pgrelay.jobs view; --json prints every column of it.

    \b
    Example:
      pgrelay jobs list --queue mail --status dead_letter --task 'mail.%' --limit 20
    """
    jobs = _operate(dsn, lambda conn: client.list_jobs(conn, queue=queue, status=status, task=task, limit=limit))
    if as_json:
        _echo_json(jobs)
        return
    if not jobs:
        click.echo("no jobs match", err=True)
        return
    table = _table("id", "queue", "task", "status", "attempt", "priority", "run at", "created", "finished", "last error")
    for job in jobs:
        _add_row(table, *map(_cell, (job.id, job.queue, job.task, job.status, job.attempt, job.priority, job.run_at,
                                     job.created_at, job.finished_at)), _short(job.last_error))
    _console().print(table)
    if len(jobs) == limit:
        click.echo(f"(the newest {limit}; --limit shows more)", err=True)


@jobs_group.command(name="show")
@click.argument("job_id", metavar="ID", type=int)
@json_option
@dsn_option
def jobs_show_command(job_id: int, as_json: bool, dsn: str | None) -> None:
    """Show a job, active or finished.

    Calls pgrelay.get_job(ID).

    \b
    Example:
      pgrelay jobs show 42 --json
    """
    async def action(conn: asyncpg.Connection) -> Any:
        job = await client.get_job(conn, job_id)
        if job is None:
            raise _Refused(f"no job has id {job_id} (it never existed, or it was purged)")
        return job

    job = _operate(dsn, action)
    if as_json:
        _echo_json(job)
    else:
        _echo_fields(job)


@jobs_group.command(name="attempts")
@click.argument("job_id", metavar="ID", type=int)
@json_option
@dsn_option
def jobs_attempts_command(job_id: int, as_json: bool, dsn: str | None) -> None:
    """Show the attempts of a job, oldest first.

    Who ran it, when, and how each attempt ended (pgrelay.get_attempts).

    \b
    Example:
      pgrelay jobs attempts 42
    """
    async def action(conn: asyncpg.Connection) -> Any:
        attempts = await client.get_attempts(conn, job_id)
        if not attempts and await client.get_job(conn, job_id) is None:
            raise _Refused(f"no job has id {job_id} (it never existed, or it was purged)")
        return attempts

    attempts = _operate(dsn, action)
    if as_json:
        _echo_json(attempts)
        return
    if not attempts:
        click.echo(f"job {job_id} has not been attempted yet", err=True)
        return
    table = _table("attempt", "outcome", "worker", "started", "finished", "error", "details")
    for a in attempts:
        _add_row(table, *map(_cell, (a.attempt, a.outcome, a.worker, a.started_at, a.finished_at)), _short(a.error),
                        "" if a.details is None else _json_text(a.details))
    _console().print(table)


# --- acting on jobs ---------------------------------------------------------------------------


@main.command(name="replay")
@click.argument("job_id", metavar="ID", type=int)
@click.option("--force", is_flag=True, help="replay a job that succeeded, too")
@dsn_option
def replay_command(job_id: int, force: bool, dsn: str | None) -> None:
    """Run a finished job again as a new job; prints the new id.

    A dead-lettered or cancelled job is replayed once; a succeeded one only with --force
    (pgrelay.replay).

    \b
    Example:
      pgrelay replay 42
    """
    click.echo(_operate(dsn, lambda conn: client.replay(conn, job_id, force=force or None)))


@main.command(name="replay-dead")
@click.argument("queue")
@click.option("--task", "-t", metavar="PATTERN", help="only tasks matching this LIKE pattern")
@click.option("--since", metavar="ISO", callback=_parse_time, help="only jobs dead-lettered since this time")
@dsn_option
def replay_dead_command(queue: str, task: str | None, since: datetime | None, dsn: str | None) -> None:
    """Replay a queue's dead letters; prints how many.

    Each becomes a new pending job (pgrelay.replay_dead_letters), 1,000 per call (per transaction)
    until none is left.

    \b
    Example:
      pgrelay replay-dead mail --task 'mail.%' --since 2030-01-31T09:00:00Z
    """
    async def action(conn: asyncpg.Connection) -> int:
        total = 0
        while True:
            replayed = await client.replay_dead_letters(conn, queue, task=task, since=since, max_jobs=REPLAY_BATCH)
            total += replayed
            if replayed < REPLAY_BATCH:
                return total

    click.echo(_operate(dsn, action))


@main.command(name="cancel")
@click.argument("job_id", metavar="ID", type=int)
@dsn_option
def cancel_command(job_id: int, dsn: str | None) -> None:
    """Cancel a job.

    A pending job is cancelled at once; a running one when its worker next heartbeats (the worker
    then stops its handler). Calls pgrelay.cancel; exit code 1 if the job had already finished.

    \b
    Example:
      pgrelay cancel 42
    """
    async def action(conn: asyncpg.Connection) -> str:
        cancelled = await client.cancel(conn, job_id)
        job = await client.get_job(conn, job_id)  # to say what happened; None if purged since
        status = job.status if job is not None else "purged"
        if cancelled:
            if status == "leased":
                return f"cancelling job {job_id}: it is running; its worker stops it at its next heartbeat"
            return f"cancelled job {job_id}"
        if status == "cancelled":
            return f"job {job_id} was already cancelled"
        raise _Refused(f"job {job_id} was not cancelled: it had already finished ({status})")

    click.echo(_operate(dsn, action))
