"""Command line: ``jobs-migrate``, ``jobs-worker`` and the operators' ``pgrelay`` group.

A DSN comes from the argument, else ``PGRELAY_DSN``, else the libpq variables (PGHOST, PGPORT,
PGUSER, PGDATABASE, PGPASSWORD, ...). Expected failures (bad DSN, unreachable server, missing
privileges, a newer schema) print one line and exit 1; they never print a traceback.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg
import click

from ._version import __version__
from .errors import PgRelayError
from .schema import migrate as migrate_schema

T = TypeVar("T")

CONNECT_TIMEOUT_SECONDS = 10.0

dsn_argument = click.argument("dsn", required=False, envvar="PGRELAY_DSN")


def _explain(exc: BaseException) -> str:
    """One line saying what went wrong and what to do about it."""
    if isinstance(exc, asyncpg.InsufficientPrivilegeError):
        return f"{exc} (connect as the database owner, or a role allowed to create schemas and functions)"
    if isinstance(exc, asyncpg.PostgresError):
        return str(exc)
    if isinstance(exc, (asyncpg.ClientConfigurationError, ValueError)):
        return f"invalid DSN: {exc} (expected postgresql://user:password@host:port/database)"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the database host: {exc.strerror}"
    if isinstance(exc, TimeoutError):
        return f"timed out after {CONNECT_TIMEOUT_SECONDS:.0f}s connecting to the database"
    if isinstance(exc, OSError):
        return f"cannot connect to the database: {exc.strerror or exc}"
    return str(exc)


_EXPECTED = (PgRelayError, asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError, ValueError)


def _run(program: str, dsn: str | None, action: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
    async def go() -> T:
        conn = await asyncpg.connect(dsn, timeout=CONNECT_TIMEOUT_SECONDS)
        try:
            return await action(conn)
        finally:
            await conn.close()

    try:
        return asyncio.run(go())
    except _EXPECTED as exc:
        click.echo(f"{program}: error: {_explain(exc)}", err=True)
        raise SystemExit(1) from None


def _migrate(program: str, dsn: str | None) -> None:
    result = _run(program, dsn, migrate_schema)
    click.echo(f"{program}: {result.describe()}")


@click.command(name="jobs-migrate")
@dsn_argument
@click.version_option(__version__, prog_name="pgrelay")
def migrate_main(dsn: str | None) -> None:
    """Install the pgrelay schema into DSN's database, or upgrade it; safe to run again."""
    _migrate("jobs-migrate", dsn)


@click.command(name="jobs-worker")
@dsn_argument
def worker_main(dsn: str | None) -> None:
    """Run handler and HTTP jobs (arrives with the worker release)."""
    click.echo("jobs-worker: error: the worker is not part of pgrelay " + __version__ + " yet", err=True)
    raise SystemExit(2)


@click.group()
@click.version_option(__version__, prog_name="pgrelay")
def main() -> None:
    """Operate pgrelay: install, inspect and steer queues."""


@main.command(name="migrate")
@dsn_argument
def migrate_command(dsn: str | None) -> None:
    """Install the pgrelay schema into DSN's database, or upgrade it; safe to run again."""
    _migrate("pgrelay migrate", dsn)
