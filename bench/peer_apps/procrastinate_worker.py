"""A Procrastinate 3.10 worker process for bench/peers.py, through its public API
(`App(connector=PsycopgConnector(...))`, `@app.task`, `app.run_worker_async(...)`):

    python bench/peer_apps/procrastinate_worker.py DSN --workdir DIR [--concurrency 1] [--pool-size N]

The app and its tasks are in procrastinate_app.py. The worker waits for bench/peers.py's go signal
(see marks.py) before it starts; SIGTERM stops it (Procrastinate's own signal handlers).
"""

from __future__ import annotations

import argparse
import asyncio
import logging

import procrastinate_app
from marks import Marks


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("dsn")
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--concurrency", type=int, default=1, help="Procrastinate's default is 1")
    parser.add_argument("--pool-size", type=int, default=None,
                        help="max_size of the connection pool (default: psycopg_pool's, 4)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    procrastinate_app.MARKS = marks = Marks(args.workdir)
    app = procrastinate_app.make_app(args.dsn, **({"max_size": args.pool_size} if args.pool_size else {}))

    async def run() -> None:
        async with app.open_async():
            await marks.ready_and_wait()
            await app.run_worker_async(concurrency=args.concurrency, queues=["default"])

    asyncio.run(run())


if __name__ == "__main__":
    main()
