"""What every command shares: the ``pgrelay`` click group, the DSN and JSON options, parsing option
values, and running an action on a connection, where an expected failure (bad DSN, unreachable
server, missing privileges, an error raised by a pgrelay function) becomes one line,
``<command>: error: <what to fix>``, and exit code 1.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, TypeVar

import asyncpg
import click

from .._version import __version__
from ..errors import PgRelayError
from .output import _one_line, _short

T = TypeVar("T")

CONNECT_TIMEOUT_SECONDS = 10.0

dsn_argument = click.argument("dsn", required=False, envvar="PGRELAY_DSN")


MIGRATE_PRIVILEGES = "connect as the database owner, or a role allowed to create schemas and functions"
OPERATOR_PRIVILEGES = "connect as a role granted pgrelay_admin, or pgrelay_reader to look only"


class _Refused(PgRelayError):
    """A command could not do what was asked; its message is the one line the user sees."""


def _postgres_message(exc: asyncpg.PostgresError) -> str:
    """A PostgreSQL error as one sentence: its message, then its detail and hint in parentheses."""
    message = getattr(exc, "message", None) or (exc.args[0] if exc.args else type(exc).__name__)
    extra = "; ".join(f"{label}: {value}" for label, value in (("detail", getattr(exc, "detail", None)),
                                                               ("hint", getattr(exc, "hint", None))) if value)
    return f"{message} ({extra})" if extra else message


def _explain(exc: BaseException, privileges: str = MIGRATE_PRIVILEGES) -> str:
    """One line saying what went wrong and what to do about it."""
    if isinstance(exc, PgRelayError):
        return str(exc)  # the SQL function's message, and its hint when it has one
    if isinstance(exc, asyncpg.InsufficientPrivilegeError):
        return f"{_postgres_message(exc)} ({privileges})"
    if isinstance(exc, (asyncpg.UndefinedFunctionError, asyncpg.UndefinedTableError, asyncpg.UndefinedColumnError,
                        asyncpg.InvalidSchemaNameError)):
        return f"{_postgres_message(exc)} (is pgrelay installed and up to date in this database? pgrelay migrate installs it)"
    if isinstance(exc, asyncpg.PostgresError):
        return _postgres_message(exc)
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the database host: {exc.strerror}"
    if isinstance(exc, TimeoutError):
        return f"timed out after {CONNECT_TIMEOUT_SECONDS:.0f}s connecting to the database"
    if isinstance(exc, OSError):
        return f"cannot connect to the database: {exc.strerror or exc}"
    return str(exc)


_EXPECTED = (PgRelayError, asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError, ValueError)


def _run(program: str, dsn: str | None, action: Callable[[asyncpg.Connection], Awaitable[T]],
         privileges: str = MIGRATE_PRIVILEGES) -> T:
    async def go() -> T:
        # no statement cache: a command runs a few statements, and asyncpg's named prepared statements
        # fail through PgBouncer in transaction mode (a second command there found the first one's
        # "__asyncpg_stmt_1__" still prepared on the shared server connection: "already exists")
        try:
            conn = await asyncpg.connect(dsn, timeout=CONNECT_TIMEOUT_SECONDS, statement_cache_size=0)
        except (asyncpg.ClientConfigurationError, ValueError) as exc:
            raise _Refused(f"invalid DSN: {exc} (expected postgresql://user:password@host:port/database)") from None
        try:
            return await action(conn)
        finally:
            await conn.close()

    try:
        return asyncio.run(go())
    except _EXPECTED as exc:
        click.echo(f"{program}: error: {_one_line(_explain(exc, privileges))}", err=True)
        raise SystemExit(1) from None


@click.group(name="pgrelay")
@click.version_option(__version__, prog_name="pgrelay")
def main() -> None:
    """Operate pgrelay: install, inspect and steer queues.

    Every command but migrate and worker takes --dsn (default: $PGRELAY_DSN, else the libpq
    variables PGHOST, PGPORT, PGUSER, PGDATABASE, PGPASSWORD).

    \b
    Example:
      export PGRELAY_DSN=postgresql://app@db.internal/app
      pgrelay stats
    """


dsn_option = click.option(
    "--dsn", "-d", envvar="PGRELAY_DSN", metavar="DSN",
    help="database to connect to  [default: $PGRELAY_DSN, else the libpq variables PGHOST, PGDATABASE, ...]",
)
json_option = click.option("--json", "as_json", is_flag=True, help="print JSON (for scripts) instead of a table")


def _operate(dsn: str | None, action: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
    """Run ``action`` on a connection; an expected failure becomes one line and exit code 1."""
    return _run(click.get_current_context().command_path, dsn, action, OPERATOR_PRIVILEGES)


def _parse_json(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    if value is None:
        return None
    try:
        return json.loads(value, parse_constant=_refuse_constant)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not valid JSON ({exc.msg} at character {exc.pos}): {_one_line(_short(value))}"
                                 ) from None
    except (ValueError, RecursionError) as exc:  # NaN, an integer over 4,300 digits, nesting too deep
        raise click.BadParameter(f"not JSON this command can send ({type(exc).__name__}: {_one_line(str(exc))})"
                                 ) from None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON (JSON has no NaN or Infinity)")


def _parse_time(ctx: click.Context, param: click.Parameter, value: str | None) -> datetime | None:
    """ISO 8601; without an offset, the local time zone."""
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
        return parsed if parsed.tzinfo is not None else parsed.astimezone()
    except (ValueError, OverflowError):  # OverflowError: a local time in year 1 moved across the date line
        raise click.BadParameter(f"not an ISO 8601 time in range: {_one_line(_short(value))}"
                                 " (e.g. 2030-01-31T09:00:00+00:00)") from None
