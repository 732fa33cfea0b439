"""What a handler receives: ``ctx`` with the job's fields, a logger, follow-up enqueues, and a
transaction in which the worker completes the job (exactly-once for effects in this database)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Coroutine
from typing import TYPE_CHECKING, Any

import asyncpg

from . import client
from .errors import PgRelayError

if TYPE_CHECKING:
    from .models import ClaimedJob

__all__ = ["JobContext", "LeaseLost"]


class LeaseLost(PgRelayError):
    """The job's lease was lost (expired and recovered, or cancelled); its work must not commit."""


class JobContext:
    """The running job: ``job_id``, ``task``, ``payload``, ``attempt``, ``max_attempts``, ``queue``,
    ``trace_id``, ``logger``; ``transaction()`` and ``enqueue()`` for work in the database."""

    def __init__(self, job: ClaimedJob, pool: asyncpg.Pool, logger: logging.Logger) -> None:
        self.job = job
        self.job_id = job.id
        self.task = job.task
        self.payload = job.payload
        self.attempt = job.attempt
        self.max_attempts = job.max_attempts
        self.queue = job.queue
        self.trace_id = job.trace_id
        self.logger = logging.LoggerAdapter(logger, {"job_id": job.id, "task": job.task, "attempt": job.attempt})
        self.completed = False
        self._pool = pool
        self._conn: asyncpg.Connection | None = None

    @property
    def pool(self) -> asyncpg.Pool:
        """The worker's connection pool, for work that need not commit with the job."""
        return self._pool

    def transaction(self) -> contextlib.AbstractAsyncContextManager[asyncpg.Connection]:
        """A connection in a transaction that also acks this job: both commit, or neither does.

        ``async with ctx.transaction() as conn:``, in an ``async def`` handler only. If the lease was lost
        meanwhile, the ack is refused, :class:`LeaseLost` is raised and the transaction rolls back.
        """
        _require_async_handler("transaction")
        return self._transaction()

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[asyncpg.Connection]:
        if self.completed:
            raise RuntimeError("this job was already completed in a transaction")
        async with self._pool.acquire() as conn, conn.transaction():
            self._conn = conn
            try:
                yield conn
                if not await client.ack(conn, self.job_id, self.attempt):
                    raise LeaseLost(f"job {self.job_id} attempt {self.attempt} no longer holds its lease")
            finally:
                self._conn = None
        self.completed = True

    def enqueue(self, task: str, payload: Any = None, **options: Any) -> Coroutine[Any, Any, int]:
        """``await ctx.enqueue(...)``: a follow-up job; inside ``transaction()`` it commits with it.
        In an ``async def`` handler only."""
        _require_async_handler("enqueue")
        return client.enqueue(self._conn or self._pool, task, payload, **options)

    def enqueue_http(self, url: str, body: Any = None, **options: Any) -> Coroutine[Any, Any, int]:
        """``await ctx.enqueue_http(...)``: a follow-up HTTP job; inside ``transaction()`` it commits with
        it. In an ``async def`` handler only."""
        _require_async_handler("enqueue_http")
        return client.enqueue_http(self._conn or self._pool, url, body, **options)


def _require_async_handler(method: str) -> None:
    """A plain handler runs in a thread with no event loop: there ``ctx.enqueue(...)`` would only make a
    coroutine nobody awaits (the follow-up silently never enqueued), so it is refused, loudly."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        raise RuntimeError(
            f"ctx.{method}() works in async handlers only: a plain function runs in a thread without the "
            f"worker's event loop; make the handler 'async def' (and run blocking work with asyncio.to_thread)"
        ) from None
