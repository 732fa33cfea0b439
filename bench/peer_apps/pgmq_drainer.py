"""A pgmq consumer process for bench/peers.py: drains the queue that pgmq.send fills under pgbench in
bench/compare.py's enqueue_one_<N>_draining figures (pgmq has no worker of its own; this is the loop a
pgmq consumer runs):

    python bench/peer_apps/pgmq_drainer.py DSN --workdir DIR [--queue bench]

One asyncpg connection, each statement its own transaction: SELECT msg_id FROM pgmq.read(queue, 30, 100)
(visibility timeout 30 s, up to 100 messages), then SELECT pgmq.archive(queue, ids) when it got some, or
a 10 ms sleep when it got none. It signals ready and waits for bench/peers.py's go (see marks.py).
SIGTERM stops it once the read and archive in flight are done; it then exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

import asyncpg
from marks import Marks

VISIBILITY_TIMEOUT = 30          # seconds, pgmq.read's vt
READ_BATCH = 100                 # messages per pgmq.read
EMPTY_SLEEP = 0.010              # seconds between reads that found nothing


async def drain(dsn: str, queue: str, marks: Marks) -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    conn = await asyncpg.connect(dsn)
    archived = reads = 0
    try:
        await marks.ready_and_wait()
        while not stop.is_set():
            rows = await conn.fetch("SELECT msg_id FROM pgmq.read($1, $2, $3)", queue, VISIBILITY_TIMEOUT,
                                    READ_BATCH)
            reads += 1
            if rows:
                ids = [r["msg_id"] for r in rows]
                done = await conn.fetchval("SELECT count(*) FROM pgmq.archive($1, $2::bigint[])", queue, ids)
                if done != len(ids):
                    raise RuntimeError(f"pgmq.archive archived {done} of the {len(ids)} messages just read")
                archived += done
            else:
                await asyncio.sleep(EMPTY_SLEEP)
    finally:
        await conn.close()
    print(f"pgmq_drainer: archived {archived:,} messages in {reads:,} reads", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("dsn")
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--queue", default="bench")
    args = parser.parse_args()
    asyncio.run(drain(args.dsn, args.queue, Marks(args.workdir)))


if __name__ == "__main__":
    main()
