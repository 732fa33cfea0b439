"""The worker's connections: who gets which, and what counts as the database failing.

- handlers get a pool of their own (``ctx.pool``, ``ctx.transaction()``), ``min(concurrency, 10) + 4``
  connections; however many handlers wait for one, the worker's own calls never wait with them;
- the worker's own calls (claim, ack, nack, release, recover, maintain) share a small pool;
- heartbeats have one connection nothing else uses, so a lease is never lost in a queue for a connection.

A call that gives no answer within ``call_timeout`` has its connection terminated and every pooled one
replaced (see :meth:`Connections.call`).
"""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg

from .errors import PgRelayError

__all__ = ["CONNECTION_ERRORS", "DATABASE_ERRORS", "TRANSIENT_ERRORS", "Connections"]

# Errors that mean "the database went away": retried with backoff, never fatal.
CONNECTION_ERRORS = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.TooManyConnectionsError,
    # asyncpg 0.32 raises "cannot switch to state 12; another operation (2) is in progress" for a
    # query sent on a pooled connection the server has just terminated (pg_ctl restart -m fast) but
    # that asyncpg has not yet marked closed; the pool drops that connection when it comes back
    # (tests/reliability/test_restarts.py)
    asyncpg.InternalClientError,
)

# Database errors a call may succeed after (the same call, a moment later): a lost connection, a
# cancelled statement (statement_timeout), a lock or deadlock timeout, a serialization failure, a
# read-only server (25006, after a failover), a server out of resources. Completion calls (ack, nack,
# release) are retried on these; any other error of theirs is an answer.
TRANSIENT_ERRORS = (
    *CONNECTION_ERRORS,
    asyncpg.exceptions.OperatorInterventionError,      # 57xxx: query_canceled (statement_timeout), shutdown
    asyncpg.exceptions.TransactionRollbackError,       # 40xxx: deadlock, serialization failure
    asyncpg.exceptions.LockNotAvailableError,          # 55P03: lock_timeout
    asyncpg.exceptions.ReadOnlySQLTransactionError,    # 25006: a standby, or default_transaction_read_only
    asyncpg.exceptions.InsufficientResourcesError,     # 53xxx: disk full, out of memory, too many connections
)
# Any error from the database (or a pgrelay SQLSTATE): a background loop logs it and goes on.
DATABASE_ERRORS = (*CONNECTION_ERRORS, asyncpg.PostgresError, PgRelayError)


class _PooledServerConnection(asyncpg.Connection):
    """A pool connection that sends no session reset when it goes back to the pool.

    asyncpg's pool resets every released connection with ``SELECT pg_advisory_unlock_all(); CLOSE ALL;
    UNLISTEN *; RESET ALL``. Behind a transaction pooler (PgBouncer, ``statement_cache_size=0``) that
    statement is a transaction of its own, run on whichever server connection PgBouncer picks, so it
    releases other clients' session advisory locks and resets their settings, and costs a round trip
    per call. Rolling back an open transaction and dropping listeners still happen (asyncpg does both
    before it asks for this query).
    """

    def get_reset_query(self) -> str:  # asyncpg >= 0.30
        return ""

    _get_reset_query = get_reset_query  # asyncpg 0.29


class Connections:
    """The three pools of one worker; :meth:`call` and :meth:`heartbeat` run the worker's own SQL."""

    def __init__(self, dsn: str | None, *, concurrency: int, statement_cache_size: int, call_timeout: float) -> None:
        self.dsn = dsn
        self.concurrency = concurrency
        self.statement_cache_size = statement_cache_size
        self.call_timeout = call_timeout
        self.handlers: asyncpg.Pool | None = None  # ctx.pool, ctx.transaction()
        self.own: asyncpg.Pool | None = None       # claim, ack, nack, release, recover, maintain
        self.beat: asyncpg.Pool | None = None      # heartbeats: one connection nothing else waits on

    async def open(self) -> None:
        """Open all three, or none (raises the connection error)."""
        try:
            self.own = await self._create_pool(1, 4)
            self.beat = await self._create_pool(1, 1)
            self.handlers = await self._create_pool(1, min(self.concurrency, 10) + 4)
        except BaseException:
            for pool in self._pools():
                pool.terminate()
            self.own = self.beat = self.handlers = None
            raise

    async def close(self) -> None:
        for pool in self._pools():
            try:
                await asyncio.wait_for(pool.close(), timeout=5)
            except Exception:  # noqa: BLE001 - closing what is left; a pool that will not close is dropped
                pool.terminate()

    def _pools(self) -> list[asyncpg.Pool]:
        return [p for p in (self.own, self.beat, self.handlers) if p is not None]

    async def _create_pool(self, min_size: int, max_size: int) -> asyncpg.Pool:
        return await asyncpg.create_pool(
            self.dsn,
            min_size=min_size,
            max_size=max_size,
            statement_cache_size=self.statement_cache_size,
            # no statement cache means a transaction pooler: no session reset either
            connection_class=_PooledServerConnection if self.statement_cache_size == 0 else asyncpg.Connection,
            timeout=10,
        )

    async def call(self, call: Any, *args: Any, **kwargs: Any) -> Any:
        """``call(connection, ...)`` on a connection of the worker's own pool (never the handlers').

        A connection that gives no answer within ``call_timeout`` is terminated and every other pooled
        connection is replaced (all of them likely went the same way: a failover, a dropped NAT entry);
        the TimeoutError is then handled like any lost connection. Without this, a connection that died
        silently (no reset ever arrives) hung the claim, heartbeat and ack loops for good, and asyncpg's
        own query timeout does not help: the pool then waits without limit for the cancellation
        (tests/reliability/test_connection_loss.py::test_silently_dead_connections_are_abandoned).
        """
        assert self.own is not None
        return await self._call_on(self.own, call, *args, **kwargs)

    async def heartbeat(self, call: Any, *args: Any, **kwargs: Any) -> Any:
        """:meth:`call` on the heartbeat's own connection."""
        assert self.beat is not None
        return await self._call_on(self.beat, call, *args, **kwargs)

    async def _call_on(self, pool: asyncpg.Pool, call: Any, *args: Any, **kwargs: Any) -> Any:
        async with pool.acquire(timeout=self.call_timeout) as conn:  # also bounds the reset on release
            try:
                return await asyncio.wait_for(call(conn, *args, **kwargs), timeout=self.call_timeout)
            except asyncio.TimeoutError:
                conn.terminate()
                for other in self._pools():
                    await other.expire_connections()
                raise
            except asyncio.CancelledError:
                # the call may still be waiting for its answer: releasing the connection would wait for
                # that too (for good, on a dead connection), so it is dropped instead
                conn.terminate()
                raise
