"""Command line: ``jobs-migrate``, ``jobs-worker`` and the operators' ``pgrelay`` group.

A DSN comes from the argument (``--dsn`` for the operator commands), else ``PGRELAY_DSN``, else the
libpq variables (PGHOST, PGPORT, PGUSER, PGDATABASE, PGPASSWORD, ...). Expected failures (bad DSN,
unreachable server, missing privileges, a newer schema, an error raised by a pgrelay function) print
one line, ``<command>: error: <what to fix>``, and exit 1; they never print a traceback. Bad usage
(a malformed option) exits 2, as click does.

The operator commands only call the wrappers of ``pgrelay.client``: what a command does to the queue
is what the SQL function it names does.
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib
import json
import logging
import os
import re
import socket
import sys
import unicodedata
from collections.abc import Awaitable, Callable, Coroutine
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar

import asyncpg
import click
from rich import box
from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from ._version import __version__
from . import client
from .errors import PgRelayError, SchemaError
from .models import UnreadableJson
from .router import Router
from .schema import _version_key, installed_version, schema_version, sql_files, upgrade_path
from .schema import migrate as migrate_schema
from .worker import Worker

T = TypeVar("T")

CONNECT_TIMEOUT_SECONDS = 10.0

dsn_argument = click.argument("dsn", required=False, envvar="PGRELAY_DSN")


def _run_event_loop(main: Coroutine[Any, Any, None]) -> None:
    """Run the worker on uvloop where it is installed (a dependency except on Windows), else on
    asyncio's own loop. Once handlers are cheap, the loop's sockets, timers and task switches are the
    worker's hot path: uvloop took a no-op drain from about 12,000 to 14,000 jobs/s per worker."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
    else:
        uvloop.run(main)


MIGRATE_PRIVILEGES = "connect as the database owner, or a role allowed to create schemas and functions"
OPERATOR_PRIVILEGES = "connect as a role granted pgrelay_admin, or pgrelay_reader to look only"


class _Refused(PgRelayError):
    """A command could not do what was asked; its message is the one line the user sees."""


# Characters that must not reach the terminal as they are: controls (line breaks, escape sequences),
# format characters (bidirectional overrides), lone surrogates, and line and paragraph separators.
_UNPRINTABLE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


def _one_line(text: str) -> str:
    """``text`` with every character a terminal would act on written as an escape (``\\n``, ``\\x1b``,
    ``\\u202e``): an error quoting a hostile value stays one line and shows what the value holds."""
    if text.isprintable() and text.isascii():
        return text
    return "".join(
        char.encode("unicode_escape").decode("ascii") if unicodedata.category(char) in _UNPRINTABLE_CATEGORIES
        else char
        for char in text
    )


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


def _migrate(program: str, dsn: str | None) -> None:
    result = _run(program, dsn, migrate_schema)
    click.echo(f"{program}: {result.describe()}")


@click.command(name="jobs-migrate")
@dsn_argument
@click.version_option(__version__, prog_name="pgrelay")
def migrate_main(dsn: str | None) -> None:
    """Install the pgrelay schema into DSN's database, or upgrade it; safe to run again."""
    _migrate("jobs-migrate", dsn)


def _load_router(app: str) -> Router:
    """Import ``module:attribute`` named by the operator (never by a job row)."""
    module_name, _, attribute = app.partition(":")
    if not module_name or not attribute:
        raise click.BadParameter("use module:attribute, e.g. myapp.jobs:router", param_hint="--app")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise click.BadParameter(f"cannot import {module_name!r}: {exc}", param_hint="--app") from exc
    router = getattr(module, attribute, None)
    if not isinstance(router, Router):
        raise click.BadParameter(f"{app} is not a pgrelay.Router", param_hint="--app")
    return router


def _setup_logging(log_format: str, level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        from pythonjsonlogger.json import JsonFormatter

        handler.setFormatter(JsonFormatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("pgrelay")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False


def worker_options(function: Callable[..., None]) -> Callable[..., None]:
    options = [
        click.option("--app", envvar="PGRELAY_APP", help="module:router holding the handlers; without it only HTTP jobs run"),
        click.option("--queue", "queues", multiple=True, envvar="PGRELAY_QUEUE", help="queue to run (repeatable; default all)"),
        click.option("--task", "tasks", multiple=True, envvar="PGRELAY_TASK", help="LIKE pattern of tasks to run (repeatable)"),
        click.option("--concurrency", type=click.IntRange(1, 10000), default=10, show_default=True, envvar="PGRELAY_CONCURRENCY"),
        click.option("--batch-size", type=click.IntRange(1, 10000), default=None, envvar="PGRELAY_BATCH_SIZE",
                     help="most jobs claimed per consume call  [default: concurrency]"),
        click.option("--lease-seconds", type=click.IntRange(1, 86400), default=30, show_default=True, envvar="PGRELAY_LEASE_SECONDS"),
        click.option("--poll-interval", type=click.FloatRange(0.01, 3600), default=1.0, show_default=True, envvar="PGRELAY_POLL_INTERVAL"),
        click.option("--maintenance-interval", type=click.FloatRange(0, 86400), default=300.0, show_default=True,
                     envvar="PGRELAY_MAINTENANCE_INTERVAL",
                     help="seconds between maintain() runs (purge by retention) unless pg_cron runs it; 0: never"),
        click.option("--shutdown-grace", type=click.FloatRange(0, 86400), default=30.0, show_default=True, envvar="PGRELAY_SHUTDOWN_GRACE"),
        click.option("--listen-dsn", envvar="PGRELAY_LISTEN_DSN", help="DSN for LISTEN (a direct connection when DSN goes through PgBouncer)"),
        click.option("--no-listen", is_flag=True, envvar="PGRELAY_NO_LISTEN", help="poll only"),
        click.option("--statement-cache-size", type=click.IntRange(0), default=100, show_default=True,
                     envvar="PGRELAY_STATEMENT_CACHE_SIZE",
                     help="0 behind PgBouncer in transaction mode (then pool connections are also returned without "
                          "asyncpg's session reset, which would run on other clients' server connections)"),
        click.option("--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True, envvar="PGRELAY_LOG_FORMAT"),
        click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="info", show_default=True,
                     envvar="PGRELAY_LOG_LEVEL"),
        click.option("--metrics-port", type=click.IntRange(1, 65535), default=None, envvar="PGRELAY_METRICS_PORT",
                     help="serve Prometheus metrics on this port (needs pgrelay[metrics])"),
        click.option("--worker-id", envvar="PGRELAY_WORKER_ID", help="id shown in the workers view  [default: host:pid:random]"),
        click.option("--no-http", is_flag=True, envvar="PGRELAY_NO_HTTP",
                     help="do not run HTTP jobs (enqueue_http); they are configured by PGRELAY_HTTP_* variables"),
    ]
    for option in reversed(options):
        function = option(function)
    return dsn_argument(function)


def _worker(dsn: str | None, app: str | None, queues: tuple[str, ...], tasks: tuple[str, ...], concurrency: int,
            batch_size: int | None, lease_seconds: int, poll_interval: float, shutdown_grace: float,
            listen_dsn: str | None, no_listen: bool, statement_cache_size: int, log_format: str, log_level: str,
            metrics_port: int | None, worker_id: str | None, no_http: bool = False,
            maintenance_interval: float = 300.0) -> None:
    _setup_logging(log_format, log_level)
    router = _load_router(app) if app else Router()
    http_executor = None
    if not no_http:
        from .http import HttpExecutor

        try:
            http_executor = HttpExecutor.from_env()
        except ValueError as exc:
            click.echo(f"jobs-worker: error: {exc}", err=True)
            raise SystemExit(1) from None
        logging.getLogger("pgrelay.http").info("HTTP jobs: %s", http_executor.describe())
    metrics = None
    if metrics_port is not None:
        from .metrics import PrometheusMetrics

        metrics = PrometheusMetrics()
        metrics.serve(metrics_port)
    worker = Worker(
        dsn, router, concurrency=concurrency, batch_size=batch_size, queues=queues or None, tasks=tasks or None,
        lease_seconds=lease_seconds, poll_interval=poll_interval, maintenance_interval=maintenance_interval,
        shutdown_grace=shutdown_grace,
        listen_dsn=False if no_listen else listen_dsn, statement_cache_size=statement_cache_size,
        worker_id=worker_id, metrics=metrics, http_executor=http_executor,
    )

    async def run() -> None:
        try:
            await worker.run(install_signal_handlers=True)
        finally:
            if http_executor is not None:
                await http_executor.close()

    try:
        _run_event_loop(run())
    except _EXPECTED as exc:
        click.echo(f"jobs-worker: error: {_explain(exc)}", err=True)
        raise SystemExit(1) from None


@click.command(name="jobs-worker")
@worker_options
def worker_main(**options: Any) -> None:
    """Run handler jobs (and HTTP jobs) from DSN's database until SIGTERM/SIGINT."""
    _worker(**options)


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


@main.command(name="worker")
@worker_options
def worker_command(**options: Any) -> None:
    """Run handler jobs (and HTTP jobs) from DSN's database until SIGTERM/SIGINT.

    \b
    Example:
      pgrelay worker postgresql://app@db/app --app myapp.jobs:router --queue mail
    """
    _worker(**options)


@main.command(name="migrate")
@dsn_argument
def migrate_command(dsn: str | None) -> None:
    """Install the pgrelay schema into DSN's database, or upgrade it; safe to run again.

    \b
    Example:
      pgrelay migrate postgresql://owner@db/app
    """
    _migrate("pgrelay migrate", dsn)


# ---------------------------------------------------------------------------------------------
# Operator commands: each calls pgrelay.client wrappers and prints what they return
# ---------------------------------------------------------------------------------------------

# The states a job shows in the jobs view (declared with the job tables in sql/pgrelay.sql).
JOB_STATUSES = ("pending", "leased", "succeeded", "dead_letter", "cancelled")
# The group roles the installer creates (sql/pgrelay.sql, section "Privileges").
ROLES = ("pgrelay_admin", "pgrelay_producer", "pgrelay_reader", "pgrelay_worker")
DRAIN_POLL_SECONDS = 0.2
STUCK_LEASE_SECONDS = 300

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


def _jsonable(value: Any, raw: list[str]) -> Any:
    """Models and rows as JSON values: times in ISO 8601, intervals in seconds. A stored value Python
    cannot read (UnreadableJson) becomes a placeholder holding its index in ``raw``, where its text goes."""
    if isinstance(value, UnreadableJson):
        raw.append(value.text)
        return f"\x00{len(raw) - 1}\x00"  # no stored string holds NUL: jsonb and text refuse it
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name), raw) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): _jsonable(v, raw) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, raw) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, Decimal):
        return float(value)
    return value


_RAW_PLACEHOLDER = re.compile(r'"\\u0000(\d+)\\u0000"')


def _json_text(value: Any, indent: int | None = None) -> str:
    """``value`` as JSON text; a stored value Python cannot read is written as the database's text of it."""
    raw: list[str] = []
    text = json.dumps(_jsonable(value, raw), indent=indent)
    return _RAW_PLACEHOLDER.sub(lambda m: raw[int(m.group(1))], text) if raw else text


def _echo_json(value: Any) -> None:
    click.echo(_json_text(value, indent=2))


def _console(stderr: bool = False) -> Console:
    """A console on click's stream: live views, colour and box drawing only on a terminal; elsewhere
    plain text wide enough that rows are not folded (scripts and grep read it)."""
    stream = sys.stderr if stderr else sys.stdout
    terminal = stream.isatty()
    width = None if terminal or os.environ.get("COLUMNS") else 200
    return Console(file=stream, force_terminal=terminal, width=width, highlight=False, soft_wrap=False)


def _table(*columns: str, title: str | None = None) -> Table:
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, title=title, title_justify="left", pad_edge=False)
    for column in columns:
        table.add_column(column, justify="right" if column in _NUMERIC else "left", overflow="fold")
    return table


def _add_row(table: Table, *cells: str | Text) -> None:
    """Cells as plain text: an error message like "[error] ..." is never read as rich markup."""
    table.add_row(*(cell if isinstance(cell, Text) else Text(cell) for cell in cells))


_NUMERIC = {"id", "pending", "scheduled", "leased", "succeeded", "dead", "cancelled", "ok/min", "ok/h", "dead/h",
            "attempt", "priority", "pid", "failures", "concurrency", "max attempts", "lease s", "keep ok d",
            "keep dead d", "oldest due"}


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, datetime):
        return value.astimezone().strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, timedelta):
        return _duration(value)
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


def _duration(value: timedelta) -> str:
    seconds = max(0, int(value.total_seconds()))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"


def _short(text: str | None, limit: int = 60) -> str:
    if text is None:
        return ""
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _echo_fields(value: Any) -> None:
    """A model as ``name: value`` lines (JSON values compact)."""
    for f in dataclasses.fields(value):
        item = getattr(value, f.name)
        is_json = f.name in ("payload", "result", "details") and item is not None
        shown = _json_text(item) if is_json else _cell(item)
        click.echo(f"{f.name}: {shown}".rstrip())


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
@click.option("--status", "-s", type=click.Choice(JOB_STATUSES), help="only jobs in this state")
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


# --- queues -----------------------------------------------------------------------------------


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

    Each becomes a new pending job (pgrelay.replay_dead_letters).

    \b
    Example:
      pgrelay replay-dead mail --task 'mail.%' --since 2030-01-31T09:00:00Z
    """
    click.echo(_operate(dsn, lambda conn: client.replay_dead_letters(conn, queue, task=task, since=since)))


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


# --- doctor -----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Check:
    status: str  # PASS, WARN or FAIL
    name: str
    detail: str
    fix: str | None = None

    def line(self) -> str:
        fix = f"; fix: {self.fix}" if self.fix and self.status != "PASS" else ""
        return f"{self.status}  {self.name}: {self.detail}{fix}"


_CREATE_INDEX = re.compile(
    r"^[ \t]*CREATE\s+(?:UNIQUE\s+)?INDEX\s+(?:CONCURRENTLY\s+)?(?:IF\s+NOT\s+EXISTS\s+)?(\w+)\s+"
    r"ON\s+(?:ONLY\s+)?pgrelay\.(\w+)[^;]*;",
    re.IGNORECASE | re.MULTILINE,
)


def expected_indexes() -> list[tuple[str, str, str]]:
    """(table, index, statement) for every CREATE INDEX in this package's sql/pgrelay.sql."""
    text = (sql_files() / "pgrelay.sql").read_text(encoding="utf-8")
    return [(m.group(2), m.group(1), " ".join(m.group(0).split())) for m in _CREATE_INDEX.finditer(text)]


def _disabled(reloptions: list[str], name: str) -> bool:
    for option in reloptions:
        key, _, value = option.partition("=")
        if key == name and value.strip().lower() in ("false", "off", "no", "0", "f", "n"):
            return True
    return False


async def _check_server(conn: asyncpg.Connection) -> _Check:
    number, shown = await client.server_version(conn)
    if number >= 130000:
        return _Check("PASS", "server", f"PostgreSQL {shown}")
    return _Check("FAIL", "server", f"PostgreSQL {shown} is older than 13, which pgrelay needs",
                  "upgrade the server to PostgreSQL 13 or newer")


async def _check_upgrade(installed: str) -> _Check:
    package = schema_version()
    if installed == package:
        return _Check("PASS", "upgrade", f"none pending (the schema and this package are both {package})")
    if _version_key(installed) > _version_key(package):  # the installer's own comparison
        return _Check("FAIL", "upgrade", f"the schema ({installed}) is newer than this package ({package})",
                      "upgrade the pgrelay package")
    try:
        scripts = upgrade_path(installed, package)
    except SchemaError:
        return _Check("FAIL", "upgrade", f"this package ({package}) has no upgrade path from the schema's {installed}",
                      "install the pgrelay release that matches the schema")
    return _Check("WARN", "upgrade", f"the schema is {installed}, this package installs {package} "
                  f"({', '.join(scripts)})", "run pgrelay migrate")


async def _check_roles(conn: asyncpg.Connection) -> _Check:
    missing = sorted(set(ROLES) - set(await client.existing_roles(conn, ROLES)))
    if not missing:
        return _Check("PASS", "roles", ", ".join(ROLES) + " exist")
    return _Check("WARN", "roles", f"missing: {', '.join(missing)} (the installer lacked CREATEROLE)",
                  "as a superuser, CREATE ROLE <name> NOLOGIN for each and grant it as sql/pgrelay.sql's "
                  "Privileges section does")


async def _check_autovacuum(conn: asyncpg.Connection) -> _Check:
    found = await client.autovacuum_settings(conn, "pgrelay._jobs")
    if found is None:
        return _Check("FAIL", "autovacuum", "table pgrelay._jobs is missing", "run pgrelay migrate")
    server, reloptions = found
    if not server:
        return _Check("WARN", "autovacuum", "autovacuum is off on the server; the hot table pgrelay._jobs bloats",
                      "set autovacuum = on in postgresql.conf and reload")
    if _disabled(reloptions, "autovacuum_enabled"):
        return _Check("WARN", "autovacuum", f"disabled on the hot table pgrelay._jobs ({', '.join(reloptions)})",
                      "ALTER TABLE pgrelay._jobs RESET (autovacuum_enabled)")
    own = [o for o in reloptions if o.startswith("autovacuum_")]
    return _Check("PASS", "autovacuum", "enabled on pgrelay._jobs" + (f" ({', '.join(own)})" if own else ""))


async def _check_indexes(conn: asyncpg.Connection) -> _Check:
    expected = expected_indexes()
    present = {(i.table, i.index): i.valid for i in await client.indexes(conn)}
    missing = [(t, i, stmt) for t, i, stmt in expected if (t, i) not in present]
    invalid = [(t, i) for t, i, _ in expected if present.get((t, i)) is False]
    if not missing and not invalid:
        tables = sorted({t for t, _, _ in expected})
        return _Check("PASS", "indexes", f"all {len(expected)} indexes of {', '.join(tables)} are present")
    problems = [f"{i} on {t} is missing" for t, i, _ in missing] + [f"{i} on {t} is invalid" for t, i in invalid]
    fixes = [stmt for _, _, stmt in missing] + [f"REINDEX INDEX pgrelay.{i};" for _, i in invalid]
    return _Check("FAIL", "indexes", "; ".join(problems), " ".join(fixes))


async def _check_leases(conn: asyncpg.Connection) -> _Check:
    stuck = await client.expired_leases(conn, older_than_seconds=STUCK_LEASE_SECONDS)
    minutes = STUCK_LEASE_SECONDS // 60
    if not stuck:
        return _Check("PASS", "leases", f"no lease expired more than {minutes} minutes ago")
    oldest = stuck[0]
    return _Check("WARN", "leases", f"{len(stuck)} leases expired more than {minutes} minutes ago (oldest: job "
                  f"{oldest.id} of queue {oldest.queue}, {_duration(oldest.expired_for)} ago)",
                  "run SELECT pgrelay.recover() / start a worker")


async def _check_workers(conn: asyncpg.Connection) -> _Check:
    workers = await client.workers(conn)
    stale = [w.worker for w in workers if w.status == "stale"]
    if stale:
        return _Check("WARN", "workers", f"{len(stale)} of {len(workers)} not seen for longer than their lease: "
                      f"{', '.join(stale)}", "check that these worker processes are running; their expired leases "
                      "go back to pending by recover()")
    if not workers:
        return _Check("PASS", "workers", "no worker has sent a heartbeat yet")
    return _Check("PASS", "workers", f"{len(workers)} alive")


async def _doctor(conn: asyncpg.Connection) -> list[_Check]:
    async def guarded(name: str, check: Awaitable[_Check]) -> _Check:
        try:
            return await check
        except (PgRelayError, asyncpg.PostgresError) as exc:
            return _Check("FAIL", name, f"could not check: {_explain(exc, OPERATOR_PRIVILEGES)}")

    checks = [await guarded("server", _check_server(conn))]
    try:
        installed = await installed_version(conn)
    except (PgRelayError, asyncpg.PostgresError) as exc:
        installed = None
        checks.append(_Check("FAIL", "schema", f"could not read pgrelay.version(): {_explain(exc, OPERATOR_PRIVILEGES)}"))
    else:
        if installed is None:
            database = await client.database_name(conn)
            checks.append(_Check("FAIL", "schema", f"pgrelay is not installed in this database ({database})",
                                 "run pgrelay migrate"))
        else:
            checks.append(_Check("PASS", "schema", f"pgrelay {installed} is installed"))
    if installed is not None:
        checks.append(await _check_upgrade(installed))
    checks.append(await guarded("roles", _check_roles(conn)))
    if installed is not None:
        for name, check in (("autovacuum", _check_autovacuum), ("indexes", _check_indexes),
                            ("leases", _check_leases), ("workers", _check_workers)):
            checks.append(await guarded(name, check(conn)))
    return checks


@main.command(name="doctor")
@dsn_option
def doctor_command(dsn: str | None) -> None:
    """Check that pgrelay is healthy in a database.

    Checks the server version, the schema and pending upgrades, the roles, autovacuum on the hot
    table, missing indexes, stuck leases and stale workers. One line per check, PASS, WARN or FAIL,
    with the fix; exit code 1 if any check fails.

    \b
    Example:
      pgrelay doctor --dsn postgresql://admin@db/app
    """
    checks = _operate(dsn, _doctor)
    for check in checks:
        click.echo(check.line())
    if any(check.status == "FAIL" for check in checks):
        raise SystemExit(1)
