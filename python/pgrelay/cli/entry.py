"""Installing the schema and running a worker: the ``jobs-migrate`` and ``jobs-worker`` console
scripts and the same two as ``pgrelay migrate`` and ``pgrelay worker`` (worker options, logging,
loading the operator's router, the uvloop runner).
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import sys
from collections.abc import Callable, Coroutine
from typing import Any

import click

from .._version import __version__
from ..router import Router
from ..schema import migrate as migrate_schema
from ..worker import Worker
from .common import _EXPECTED, _explain, _run, dsn_argument, main


def _run_event_loop(main: Coroutine[Any, Any, None]) -> None:
    """Run the worker on uvloop where it is installed (a dependency except on Windows), else on
    asyncio's own loop. Once handlers are cheap, the loop's sockets, timers and task switches are the
    worker's hot path, and uvloop's are faster."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
    else:
        uvloop.run(main)


def _migrate(program: str, dsn: str | None, target: str | None) -> None:
    result = _run(program, dsn, lambda conn: migrate_schema(conn, target=target))
    click.echo(f"{program}: {result.describe()}")


to_option = click.option(
    "--to", "target", metavar="VERSION",
    help="install or upgrade only as far as this release of the chain (e.g. 0.2.0)  [default: this package's version]",
)


@click.command(name="jobs-migrate")
@dsn_argument
@to_option
@click.version_option(__version__, prog_name="pgrelay")
def migrate_main(dsn: str | None, target: str | None) -> None:
    """Install the pgrelay schema into DSN's database, or upgrade it release by release; safe to run again."""
    _migrate("jobs-migrate", dsn, target)


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
        click.option("--lease-seconds", type=click.IntRange(1, 86400), default=None, envvar="PGRELAY_LEASE_SECONDS",
                     help="lease length for every job this worker claims  [default: each queue's lease_seconds "
                          "(configure_queue), else 30]"),
        click.option("--poll-interval", type=click.FloatRange(0.01, 3600), default=1.0, show_default=True, envvar="PGRELAY_POLL_INTERVAL"),
        click.option("--maintenance-interval", type=click.FloatRange(0, 86400), default=300.0, show_default=True,
                     envvar="PGRELAY_MAINTENANCE_INTERVAL",
                     help="seconds between maintain() runs (purge by retention) unless pg_cron runs it; 0: never"),
        click.option("--tick-interval", type=click.FloatRange(0, 3600), default=1.0, show_default=True,
                     envvar="PGRELAY_TICK_INTERVAL",
                     help="seconds between tick() calls, which enqueue the schedules' due jobs; 0: never (pg_cron "
                          "or other workers tick)"),
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
            batch_size: int | None, lease_seconds: int | None, poll_interval: float, shutdown_grace: float,
            listen_dsn: str | None, no_listen: bool, statement_cache_size: int, log_format: str, log_level: str,
            metrics_port: int | None, worker_id: str | None, no_http: bool = False,
            maintenance_interval: float = 300.0, tick_interval: float = 1.0) -> None:
    _setup_logging(log_format, log_level)
    router = _load_router(app) if app else Router()
    http_executor = None
    if not no_http:
        from ..http import HttpExecutor

        try:
            http_executor = HttpExecutor.from_env()
        except ValueError as exc:
            click.echo(f"jobs-worker: error: {exc}", err=True)
            raise SystemExit(1) from None
        logging.getLogger("pgrelay.http").info("HTTP jobs: %s", http_executor.describe())
    metrics = None
    if metrics_port is not None:
        from ..metrics import PrometheusMetrics

        metrics = PrometheusMetrics()
        metrics.serve(metrics_port)
    worker = Worker(
        dsn, router, concurrency=concurrency, batch_size=batch_size, queues=queues or None, tasks=tasks or None,
        lease_seconds=lease_seconds, poll_interval=poll_interval, maintenance_interval=maintenance_interval,
        tick_interval=tick_interval or None, shutdown_grace=shutdown_grace,
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
@to_option
def migrate_command(dsn: str | None, target: str | None) -> None:
    """Install the pgrelay schema into DSN's database, or upgrade it; safe to run again.

    \b
    Example:
      pgrelay migrate postgresql://owner@db/app
    """
    _migrate("pgrelay migrate", dsn, target)
