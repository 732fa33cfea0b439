"""What a handler receives: ``ctx`` with the job's fields, a logger, follow-up enqueues, and a
transaction in which the worker completes the job (exactly-once for effects in this database)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
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

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[asyncpg.Connection]:
        """A connection in a transaction that also acks this job: both commit, or neither does.

        If the lease was lost meanwhile, the ack is refused, :class:`LeaseLost` is raised and the
        transaction rolls back.
        """
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

    async def enqueue(self, task: str, payload: Any = None, **options: Any) -> int:
        """Enqueue a follow-up job; inside ``transaction()`` it commits with it."""
        return await client.enqueue(self._conn or self._pool, task, payload, **options)

    async def enqueue_http(self, url: str, body: Any = None, **options: Any) -> int:
        """Enqueue a follow-up HTTP job; inside ``transaction()`` it commits with it."""
        return await client.enqueue_http(self._conn or self._pool, url, body, **options)
