"""The benchmark's Procrastinate 3.10 app (its own module, as Procrastinate's docs want: an App built in
``__main__`` gets task paths that other processes cannot import).

Tasks, both in the queue "default": ``bench.noop`` (does nothing but note the time the first one
started) and ``bench.probe`` (notes the time it started, for pickup latency). The marks go to
``MARKS`` when a worker sets it (bench/peer_apps/procrastinate_worker.py); producers in bench/peers.py
only defer through the app and leave it None.
"""

from __future__ import annotations

from typing import Any

import procrastinate

from marks import Marks

MARKS: Marks | None = None


def make_app(dsn: str, **pool: Any) -> procrastinate.App:
    """``pool``: psycopg_pool.AsyncConnectionPool arguments (min_size, max_size, ...)."""
    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=dsn, **pool))

    @app.task(name="bench.noop", queue="default")
    async def noop(**kwargs: Any) -> None:
        if MARKS is not None:
            MARKS.started()

    @app.task(name="bench.probe", queue="default", pass_context=True)
    async def probe(context: procrastinate.JobContext, **kwargs: Any) -> None:
        if MARKS is not None:
            MARKS.probe(context.job.id)

    return app
