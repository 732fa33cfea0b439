"""Commands about queues: ``queues list|pause|resume|configure``, ``drain``, and the views of them
all, ``stats`` and ``top`` (which adds workers and recent failures)."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import datetime
from typing import Any

import asyncpg
import click
from rich.console import Group
from rich.live import Live
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

from .. import client
from .common import _operate, _Refused, dsn_option, json_option, main
from .output import _add_row, _cell, _console, _echo_json, _short, _table

DRAIN_POLL_SECONDS = 0.2


@main.group(name="queues")
def queues_group() -> None:
    """Look at and steer queues: list, pause, resume, configure.

    \b
    Example:
      pgrelay queues pause mail
    """


@queues_group.command(name="list")
@json_option
@dsn_option
def queues_list_command(as_json: bool, dsn: str | None) -> None:
    """List the queues and their settings.

    Reads the pgrelay.queue_stats view; --json prints every column of it.

    \b
    Example:
      pgrelay queues list --json
    """
    stats = _operate(dsn, client.queue_stats)
    if as_json:
        _echo_json(stats)
        return
    if not stats:
        click.echo("no queues yet (a queue exists once a job or a setting names it)", err=True)
        return
    table = _table("queue", "paused", "concurrency", "max attempts", "lease s", "keep ok d", "keep dead d",
                   "pending", "scheduled", "leased")
    for q in stats:
        _add_row(table, q.queue, _cell(q.paused), "unlimited" if q.concurrency is None else str(q.concurrency),
                        *map(_cell, (q.max_attempts, q.lease_seconds, q.retention_succeeded_days,
                                     q.retention_dead_letter_days, q.pending, q.scheduled, q.leased)))
    _console().print(table)


@queues_group.command(name="pause")
@click.argument("queue")
@dsn_option
def queues_pause_command(queue: str, dsn: str | None) -> None:
    """Stop workers from leasing a queue's jobs.

    Enqueue still works and leased jobs finish (pgrelay.pause).

    \b
    Example:
      pgrelay queues pause mail
    """
    changed = _operate(dsn, lambda conn: client.pause(conn, queue))
    click.echo(f"paused queue {queue}" if changed else f"queue {queue} was already paused")


@queues_group.command(name="resume")
@click.argument("queue")
@dsn_option
def queues_resume_command(queue: str, dsn: str | None) -> None:
    """Let workers lease a paused queue's jobs again.

    Calls pgrelay.resume, which wakes the workers.

    \b
    Example:
      pgrelay queues resume mail
    """
    changed = _operate(dsn, lambda conn: client.resume(conn, queue))
    click.echo(f"resumed queue {queue}" if changed else f"queue {queue} was not paused")


@queues_group.command(name="configure")
@click.argument("queue")
@click.option("--concurrency", type=int, help="most jobs leased at once, across all workers")
@click.option("--max-attempts", type=int, help="for jobs that do not set their own")
@click.option("--lease-seconds", type=int)
@click.option("--backoff-base-seconds", type=float)
@click.option("--backoff-max-seconds", type=float)
@click.option("--retention-succeeded-days", type=int, help="purge succeeded jobs after this many days")
@click.option("--retention-dead-letter-days", type=int, help="purge dead letters (and cancelled jobs) after this many days")
@click.option("--reset", multiple=True, metavar="NAME",
              help="return a setting to its default, e.g. --reset concurrency (repeatable)")
@dsn_option
def queues_configure_command(queue: str, concurrency: int | None, max_attempts: int | None, lease_seconds: int | None,
                             backoff_base_seconds: float | None, backoff_max_seconds: float | None,
                             retention_succeeded_days: int | None, retention_dead_letter_days: int | None,
                             reset: tuple[str, ...], dsn: str | None) -> None:
    """Change a queue's settings; prints the effective ones.

    Settings not named stay as they are (pgrelay.configure_queue).

    \b
    Example:
      pgrelay queues configure mail --concurrency 3 --max-attempts 5 --reset lease_seconds
    """
    settings = _operate(dsn, lambda conn: client.configure_queue(
        conn, queue, concurrency=concurrency, max_attempts=max_attempts, lease_seconds=lease_seconds,
        backoff_base_seconds=backoff_base_seconds, backoff_max_seconds=backoff_max_seconds, reset=reset or None,
        retention_succeeded_days=retention_succeeded_days, retention_dead_letter_days=retention_dead_letter_days))
    for f in dataclasses.fields(settings):
        value = getattr(settings, f.name)
        if f.name == "concurrency" and value is None:
            shown = "unlimited"
        else:
            shown = "none" if value is None else _cell(value)
        click.echo(f"{f.name}: {shown}")


@main.command(name="drain")
@click.argument("queue")
@click.option("--timeout-seconds", type=click.FloatRange(min=0), help="give up (exit code 1) after this long  [default: wait]")
@dsn_option
def drain_command(queue: str, timeout_seconds: float | None, dsn: str | None) -> None:
    """Wait until a queue has no pending or leased job.

    Shows progress on a terminal (from pgrelay.queue_stats, every 0.2 s). Jobs waiting out a retry
    backoff or scheduled for later count as not done. Exit code 0 once drained, 1 on timeout.

    \b
    Example:
      pgrelay drain mail --timeout-seconds 300
    """
    def left(stats: Any) -> int:
        return 0 if stats is None else stats.pending + stats.scheduled + stats.leased

    async def one_queue(conn: asyncpg.Connection) -> Any:
        return next((q for q in await client.queue_stats(conn) if q.queue == queue), None)

    async def action(conn: asyncpg.Connection) -> tuple[int, float]:
        loop = asyncio.get_running_loop()
        started = loop.time()
        stats = await one_queue(conn)
        if stats is None:
            known = ", ".join(q.queue for q in await client.queue_stats(conn)) or "none"
            raise _Refused(f"no queue named {queue!r} (queues: {known})")
        total = left(stats)
        if stats.paused and stats.pending + stats.scheduled:
            raise _Refused(f"queue {queue} is paused with {stats.pending + stats.scheduled} jobs waiting, so it would never "
                           f"drain; pgrelay queues resume {queue} first")
        console = _console(stderr=True)
        with Progress(TextColumn("draining {task.fields[queue]}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=console, transient=True, disable=not console.is_terminal) as bar:
            task = bar.add_task("drain", total=total, queue=queue)
            while (remaining := left(stats)) > 0:
                bar.update(task, completed=max(0, total - remaining))
                waited = loop.time() - started
                if timeout_seconds is not None and waited >= timeout_seconds:
                    raise _Refused(f"timed out after {timeout_seconds:g}s: {remaining} jobs of queue {queue} are still "
                                   f"pending or leased")
                pause = DRAIN_POLL_SECONDS if timeout_seconds is None else min(DRAIN_POLL_SECONDS, timeout_seconds - waited)
                await asyncio.sleep(pause)
                stats = await one_queue(conn)
            bar.update(task, completed=total)
        return total, loop.time() - started

    done, elapsed = _operate(dsn, action)
    click.echo(f"drained queue {queue}: {done} jobs done in {elapsed:.1f}s")


# --- looking at the whole system -----------------------------------------------------------------


def _stats_table(stats: list[Any]) -> Table:
    table = _table("queue", "pending", "scheduled", "leased", "succeeded", "dead", "cancelled", "oldest due",
                   "ok/min", "ok/h", "dead/h", "paused", title="queues")
    for q in stats:
        _add_row(table, q.queue, *map(_cell, (q.pending, q.scheduled, q.leased, q.succeeded, q.dead_letter, q.cancelled,
                                              q.oldest_pending_age, q.succeeded_last_minute, q.succeeded_last_hour,
                                              q.dead_letter_last_hour, q.paused)))
    return table


@main.command(name="stats")
@json_option
@dsn_option
def stats_command(as_json: bool, dsn: str | None) -> None:
    """Jobs per queue and state, and throughput.

    Reads the pgrelay.queue_stats view; --json prints its rows as a JSON array (oldest_pending_age
    in seconds).

    \b
    Example:
      pgrelay stats --json | jq '.[] | select(.dead_letter > 0) | .queue'
    """
    stats = _operate(dsn, client.queue_stats)
    if as_json:
        _echo_json(stats)
    elif not stats:
        click.echo("no queues yet (a queue exists once a job or a setting names it)", err=True)
    else:
        _console().print(_stats_table(stats))


def _workers_table(workers: list[Any]) -> Table:
    table = _table("worker", "status", "host", "pid", "leased", "queues", "last seen", "started", title="workers")
    for w in workers:
        status = w.status or ""
        _add_row(table, w.worker, Text(status, style="red" if status == "stale" else ""),
                        *map(_cell, (w.host, w.pid, w.leased, w.queues or "all", w.last_seen, w.started_at)))
    return table


def _failures_table(failures: list[Any]) -> Table:
    table = _table("queue", "task", "failures", "last failed", "last error", title="recent failures")
    for f in failures:
        _add_row(table, f.queue, f.task, _cell(f.failures), _cell(f.last_failed_at), _short(f.last_error, 80))
    return table


@main.command(name="top")
@click.option("--interval", type=click.FloatRange(min=0.05), default=1.0, show_default=True, help="seconds between refreshes")
@click.option("--iterations", type=click.IntRange(min=1), help="stop after this many refreshes  [default: until Ctrl-C]")
@dsn_option
def top_command(interval: float, iterations: int | None, dsn: str | None) -> None:
    """A live view of queues, workers and failures.

    Refreshes every --interval from pgrelay.queue_stats, pgrelay.workers (alive or stale) and
    pgrelay.recent_failures; Ctrl-C quits. When the output is not a terminal, prints one plain
    frame per refresh.

    \b
    Example:
      pgrelay top --interval 2
    """
    console = _console()

    async def frame(conn: asyncpg.Connection) -> Group:
        stats = await client.queue_stats(conn)
        workers = await client.workers(conn)
        failures = await client.recent_failures(conn)
        parts: list[Any] = [
            Text(f"pgrelay top  {datetime.now().astimezone():%Y-%m-%d %H:%M:%S}  every {interval:g}s  (Ctrl-C quits)"),
            _stats_table(stats) if stats else Text("no queues yet"),
            _workers_table(workers) if workers else Text("no worker has sent a heartbeat"),
        ]
        if failures:
            parts.append(_failures_table(failures))
        return Group(*parts)

    async def action(conn: asyncpg.Connection) -> None:
        count = 0
        if console.is_terminal:
            with Live(console=console, auto_refresh=False, transient=False) as live:
                while True:
                    live.update(await frame(conn), refresh=True)
                    count += 1
                    if iterations is not None and count >= iterations:
                        return
                    await asyncio.sleep(interval)
        while True:
            console.print(await frame(conn))
            count += 1
            if iterations is not None and count >= iterations:
                return
            console.print()
            await asyncio.sleep(interval)

    try:
        _operate(dsn, action)
    except KeyboardInterrupt:
        pass
