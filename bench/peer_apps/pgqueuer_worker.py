"""A PgQueuer 1.6 worker process for bench/peers.py, run the documented way (`pgqueuer.run(factory)`,
what `pgq run module:factory` does):

    python bench/peer_apps/pgqueuer_worker.py DSN --workdir DIR [--batch-size 10]

The factory is an async context manager yielding a PgQueuer over one asyncpg connection, with two
entrypoints: ``bench.noop`` (does nothing but note the time the first one started) and
``bench.probe`` (notes the time it started, for pickup latency). Before yielding, it waits for
bench/peers.py's go signal (see marks.py). SIGTERM stops it (PgQueuer's own signal handling).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import asyncpg
import pgqueuer
from pgqueuer import PgQueuer
from pgqueuer.models import Job

from marks import Marks


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("dsn")
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--batch-size", type=int, default=10, help="PgQueuer's default is 10")
    args = parser.parse_args()
    marks = Marks(args.workdir)
    logging.getLogger("pgqueuer").setLevel(logging.WARNING)

    @contextlib.asynccontextmanager
    async def factory() -> AsyncIterator[PgQueuer]:
        conn = await asyncpg.connect(args.dsn)
        try:
            pgq = PgQueuer.from_asyncpg_connection(conn)

            @pgq.entrypoint("bench.noop")
            async def noop(job: Job) -> None:
                marks.started()

            @pgq.entrypoint("bench.probe")
            async def probe(job: Job) -> None:
                marks.probe(job.id)

            await marks.ready_and_wait()
            yield pgq
        finally:
            await conn.close()

    asyncio.run(pgqueuer.run(factory, batch_size=args.batch_size))


if __name__ == "__main__":
    main()
