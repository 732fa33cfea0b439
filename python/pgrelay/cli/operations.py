"""Operator actions on the whole database rather than one job or one queue: ``purge``."""

from __future__ import annotations

import asyncpg
import click

from .. import client
from .common import _operate, dsn_option, main


@main.command(name="purge")
@click.option("--older-than-days", type=int, help="delete finished jobs older than this  [default: each queue's retention]")
@click.option("--max-jobs", type=click.IntRange(min=1), help="jobs deleted per call (per transaction)")
@dsn_option
def purge_command(older_than_days: int | None, max_jobs: int | None, dsn: str | None) -> None:
    """Delete finished jobs past their retention.

    Calls pgrelay.purge in batches of --max-jobs until none is left; prints how many.

    \b
    Example:
      pgrelay purge --older-than-days 30 --max-jobs 5000
    """
    async def action(conn: asyncpg.Connection) -> int:
        total = 0
        while True:  # one transaction per batch, so locks stay short
            purged = await client.purge(conn, older_than_days=older_than_days, max_jobs=max_jobs)
            total += purged
            if purged == 0 or (max_jobs is not None and purged < max_jobs):
                return total

    click.echo(_operate(dsn, action))
