"""Commands about schedules (periodic jobs): ``schedules list|add|remove|pause|resume|run-now``."""

from __future__ import annotations

from typing import Any

import asyncpg
import click

from .. import client
from .common import _operate, _parse_json, _Refused, dsn_option, json_option, main
from .output import _add_row, _cell, _console, _echo_json, _table


def _unknown(name: str) -> _Refused:
    return _Refused(f"no schedule is named {name!r} (pgrelay schedules list shows them)")


@main.group(name="schedules")
def schedules_group() -> None:
    """Periodic jobs: list, add, remove, pause, resume, run now.

    A schedule enqueues a job of its task at every tick of its cron expression; every worker ticks
    (pgrelay.tick) about once a second, and the database makes each tick exactly one job.

    \b
    Example:
      pgrelay schedules add reports.daily '0 6 * * *' reports.build --timezone Europe/Berlin
    """


@schedules_group.command(name="list")
@json_option
@dsn_option
def schedules_list_command(as_json: bool, dsn: str | None) -> None:
    """List the schedules, by name.

    Reads the pgrelay.schedules view; --json prints every column of it.

    \b
    Example:
      pgrelay schedules list --json
    """
    schedules = _operate(dsn, client.schedules)
    if as_json:
        _echo_json(schedules)
        return
    if not schedules:
        click.echo("no schedules yet (pgrelay schedules add makes one, or a worker declares one)", err=True)
        return
    table = _table("name", "cron", "timezone", "task", "queue", "catch up", "paused", "next run", "last tick",
                   "last job", "last status", "by")
    for s in schedules:
        _add_row(table, *map(_cell, (s.name, s.cron, s.timezone, s.task, s.queue, s.catch_up, s.paused,
                                     "never" if s.next_run is None else s.next_run, s.last_tick,
                                     s.last_job_id, s.last_job_status, s.declared_by)))
    _console().print(table)


@schedules_group.command(name="add")
@click.argument("name")
@click.argument("cron")
@click.argument("task")
@click.option("--payload", metavar="JSON", callback=_parse_json,
              help="a JSON object; each job gets it plus scheduled_for, its tick  [default: {}]")
@click.option("--queue", "-q", help="[default: default]")
@click.option("--timezone", metavar="ZONE",
              help="the ticks are wall-clock times there, e.g. Europe/Berlin  [default: UTC]")
@click.option("--catch-up", metavar="all|latest|none",
              help="after a time with no ticks: every missed tick, the newest, or none  [default: latest]")
@click.option("--priority", type=int, help="of each job; higher runs first  [default: 0]")
@click.option("--max-attempts", type=int, help="of each job  [default: the queue's setting]")
@click.option("--timeout-seconds", type=int, help="of each job's handler")
@dsn_option
def schedules_add_command(name: str, cron: str, task: str, payload: Any, queue: str | None, timezone: str | None,
                          catch_up: str | None, priority: int | None, max_attempts: int | None,
                          timeout_seconds: int | None, dsn: str | None) -> None:
    """Create or replace the schedule NAME: a TASK job at every tick of CRON; prints its next run.

    CRON: five fields (minute hour day-of-month month day-of-week) or @hourly, @daily, @weekly,
    @monthly, @yearly. Calls pgrelay.schedule: a schedule made here is never changed by a worker
    declaring the same name. An option left out takes the SQL function's default.

    \b
    Example:
      pgrelay schedules add reports.daily '0 6 * * *' reports.build --timezone Europe/Berlin --queue reports
    """
    next_run = _operate(dsn, lambda conn: client.schedule(
        conn, name, cron, task, payload, queue=queue, timezone=timezone, catch_up=catch_up, priority=priority,
        max_attempts=max_attempts, timeout_seconds=timeout_seconds))
    click.echo("never (the expression matches no time from now on)" if next_run is None
               else next_run.astimezone().isoformat())


@schedules_group.command(name="remove")
@click.argument("name")
@dsn_option
def schedules_remove_command(name: str, dsn: str | None) -> None:
    """Remove a schedule; the jobs it already enqueued stay.

    Calls pgrelay.unschedule; exit code 1 when there is no such schedule. A schedule declared next to
    a handler comes back when a worker declaring it starts again.

    \b
    Example:
      pgrelay schedules remove reports.daily
    """
    async def action(conn: asyncpg.Connection) -> None:
        if not await client.unschedule(conn, name):
            raise _unknown(name)

    _operate(dsn, action)
    click.echo(f"removed schedule {name}")


@schedules_group.command(name="pause")
@click.argument("name")
@dsn_option
def schedules_pause_command(name: str, dsn: str | None) -> None:
    """Stop enqueuing a schedule's ticks until it is resumed.

    Calls pgrelay.pause_schedule; exit code 1 when there is no such schedule.

    \b
    Example:
      pgrelay schedules pause reports.daily
    """
    async def action(conn: asyncpg.Connection) -> None:
        if not await client.pause_schedule(conn, name):
            raise _unknown(name)

    _operate(dsn, action)
    click.echo(f"paused schedule {name}")


@schedules_group.command(name="resume")
@click.argument("name")
@dsn_option
def schedules_resume_command(name: str, dsn: str | None) -> None:
    """Enqueue a paused schedule's ticks again, from its next tick.

    The ticks of the pause are not made up (pgrelay.resume_schedule); exit code 1 when there is no
    such schedule.

    \b
    Example:
      pgrelay schedules resume reports.daily
    """
    async def action(conn: asyncpg.Connection) -> None:
        if not await client.resume_schedule(conn, name):
            raise _unknown(name)

    _operate(dsn, action)
    click.echo(f"resumed schedule {name}")


@schedules_group.command(name="run-now")
@click.argument("name")
@dsn_option
def schedules_run_now_command(name: str, dsn: str | None) -> None:
    """Enqueue one extra run of a schedule now; prints the job's id.

    The ticks go on as before (pgrelay.run_schedule_now); the job's scheduled_for is now.

    \b
    Example:
      pgrelay schedules run-now reports.daily
    """
    click.echo(_operate(dsn, lambda conn: client.run_schedule_now(conn, name)))
