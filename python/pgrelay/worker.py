"""The consumer loop: claim up to free capacity, run handlers, heartbeat, ack in batches.

Every transition is a SQL call (``pgrelay.client``); the worker only schedules them, in parts with one
job each:

- ``_claiming`` claims with one ``consume`` call sized to the free slots; it wakes on NOTIFY (a job
  enqueued, or the time a scheduled one becomes due: the LISTEN loop here, ``_wakeups``) and polls every
  ``poll_interval`` as a fallback;
- ``_running`` runs a claimed job: enforces the job's ``timeout_seconds`` (else the handler's
  ``timeout``); an exception a handler raises itself (a ``TimeoutError`` too) is that job's error, not a
  timeout; a plain (non-async) handler runs in a thread of its own: a thread cannot be interrupted, so
  after a timeout, a lost lease or a cancel its slot stays taken until the function returns (never
  over-commits);
- ``_acking`` acks in batches and reports success only after the ack committed; nacks and releases,
  each retried while the database is away;
- ``_leases`` heartbeats the leases of running jobs and cancels a handler whose lease was lost;
- ``_upkeep`` runs ``recover()`` every few seconds, and ``maintain()`` (recover + purge by each queue's
  retention + tick) every ``maintenance_interval`` unless a pg_cron job does it; recover one worker at a
  time (a transaction-level try-lock), purge one at a time (its own);
- ``_ticking`` declares the schedules of the router's handlers at start (``declare_schedule``) and calls
  ``tick()`` every ``tick_interval``, which enqueues the schedules' due ticks: every worker ticks, the
  database makes each tick one job, so there is no leader;
- ``_state`` is what they share: the jobs held, the slots, the stop flags; a job's end is counted and
  logged there.

:class:`Worker` owns the configuration, composes the parts and supervises their loops:

- on ``stop()`` (SIGTERM/SIGINT) stops claiming, lets running jobs finish for ``shutdown_grace``
  seconds, then cancels the rest and hands them back; a second ``stop()`` exits at once;
- survives a restarted database, a dropped connection and any error the database raises (a statement
  or lock timeout, a deadlock, a read-only server after a failover): each loop logs it, waits (backoff
  with jitter, ``_backoff``) and goes on. The loops run in one ``asyncio.TaskGroup``: a loop that fails
  otherwise (a bug) stops the whole worker (``run()`` raises :class:`WorkerFailed`, ``jobs-worker`` exits
  with 1), never leaving it half alive.

Connections: handlers get a pool of their own (``ctx.pool``, ``ctx.transaction()``); the worker's own
calls (claim, ack, nack, recover, tick) another small one, and heartbeats one connection of their own, so no
number of handlers holding connections makes a heartbeat or an ack wait past a lease.

Behind PgBouncer in transaction mode: ``statement_cache_size=0`` (asyncpg's named prepared statements
do not survive the server connection changing; the pool then also skips asyncpg's session reset on
release), and ``listen_dsn`` a direct connection (LISTEN through the pooler receives nothing) or False.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
import uuid
from collections.abc import Sequence
from typing import Any

import asyncpg

from . import client
from ._acking import Acker
from ._backoff import Backoff
from ._claiming import STOP_CLAIM_GRACE, Claimer  # noqa: F401 - STOP_CLAIM_GRACE: tests import it from here
from ._connections import CONNECTION_ERRORS, DATABASE_ERRORS, Connections
from ._leases import Heartbeat
from ._running import Runner
from ._state import DEFAULT_LEASE_SECONDS, State
from ._ticking import Ticker
from ._upkeep import Upkeep
from ._values import (
    describe,
    error_details,
    oneline,
    retry_delay,
    storable_text,
    unstorable,
)
from ._wakeups import Wakeups
from .errors import InvalidArgument, PgRelayError
from .router import Router

__all__ = ["CONNECTION_ERRORS", "Worker", "WorkerFailed"]

log = logging.getLogger("pgrelay.worker")

# the helpers by the names they had here before the worker was split into parts (tests import them)
_describe, _details, _retry_delay, _storable_text, _unstorable = (describe, error_details, retry_delay, storable_text,
                                                                  unstorable)


class WorkerFailed(PgRelayError):
    """A loop of the worker failed with an error it cannot go on from (a bug, not the database's doing);
    the worker stopped. ``__cause__`` is that error."""


class Worker:
    """Runs the jobs of ``router`` (and, with an HTTP executor, HTTP jobs) from the database at ``dsn``."""

    def __init__(
        self,
        dsn: str | None,
        router: Router | None = None,
        *,
        concurrency: int = 10,
        batch_size: int | None = None,
        queues: Sequence[str] | None = None,
        tasks: Sequence[str] | None = None,
        lease_seconds: int | None = None,
        poll_interval: float = 1.0,
        shutdown_grace: float = 30.0,
        listen_dsn: str | None | bool = None,
        recover_interval: float | None = None,
        maintenance_interval: float | None = 300.0,
        tick_interval: float | None = 1.0,
        ack_delay: float = 0.002,
        worker_id: str | None = None,
        http_executor: Any = None,
        statement_cache_size: int = 100,
        metrics: Any = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if lease_seconds is not None and lease_seconds < 1:
            raise ValueError("lease_seconds must be at least 1 (or None for each queue's setting)")
        self.dsn = dsn
        self.router = router or Router()
        self.concurrency = concurrency
        self.batch_size = batch_size or concurrency
        self.queues = list(queues) if queues else None
        self.tasks = list(tasks) if tasks else None
        # None: each queue's lease_seconds (configure_queue), else 30 s; a number overrides them all
        self.lease_seconds = lease_seconds
        lease = lease_seconds or DEFAULT_LEASE_SECONDS
        self.poll_interval = poll_interval
        self.shutdown_grace = shutdown_grace
        self.listen_dsn = dsn if listen_dsn is None else listen_dsn
        self.recover_interval = recover_interval if recover_interval is not None else max(1.0, lease / 3)
        self.maintenance_interval = maintenance_interval or None  # None or 0: never purge from this worker
        self.tick_interval = tick_interval or None  # None or 0: never tick (pg_cron or other workers do)
        self.ack_delay = ack_delay
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.http_executor = http_executor
        self.statement_cache_size = statement_cache_size
        # the longest the worker waits for an answer to one of its own calls (claim, heartbeat, ack,
        # recover, maintain): past it the connection is taken for dead and abandoned (_connections)
        self.call_timeout = max(5.0, float(lease))
        self.metrics = metrics
        self._connections = Connections(dsn, concurrency=concurrency, statement_cache_size=statement_cache_size,
                                        call_timeout=self.call_timeout)
        self._state = State(self.worker_id, metrics, beat_interval=max(0.2, lease / 3))
        self._acker = Acker(self._state, self._connections, batch_size=self.batch_size, ack_delay=ack_delay)
        self._runner = Runner(self._state, self._connections, self._acker, self.router, http_executor,
                              concurrency=concurrency)
        self._wakeups = Wakeups(self._state.wake, self.queues)
        self._claimer = Claimer(self._state, self._connections, self._runner, self.router, self._wakeups,
                                queues=self.queues, tasks=self.tasks, lease_seconds=lease_seconds,
                                concurrency=concurrency, batch_size=self.batch_size, poll_interval=poll_interval)
        self._heartbeat = Heartbeat(self._state, self._connections, queues=self.queues, lease_seconds=lease_seconds)
        self._upkeep = Upkeep(self._state, self._connections, recover_interval=self.recover_interval,
                              maintenance_interval=self.maintenance_interval)
        self._ticker = Ticker(self._state, self._connections, self.router, tick_interval=self.tick_interval)
        self._background: list[asyncio.Task[None]] = []

    # -- public -----------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop claiming and drain gracefully; a second call stops at once."""
        state = self._state
        if state.stopping:
            state.killed = True
            log.warning("second stop: cancelling %d running jobs now", len(state.running))
            for running in state.running.values():
                state.cancel(running, "shutdown")
        state.stopping = True
        state.stop_requested.set()
        state.wake.set()
        state.slot_free.set()

    async def run(self, *, install_signal_handlers: bool = False) -> None:
        """Run until ``stop()`` (or SIGTERM/SIGINT when ``install_signal_handlers``)."""
        loop = asyncio.get_running_loop()
        if install_signal_handlers:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.stop)
        kinds = self._kinds()
        log.info(
            "worker %s starting: tasks %s, concurrency %d, queues %s",
            self.worker_id, ", ".join(self.router.tasks) or "(none)", self.concurrency,
            ", ".join(self.queues) if self.queues else "all",
        )
        if kinds == []:
            log.warning("no handlers registered and no HTTP executor: nothing to run")
        failure: BaseException | None = None
        try:
            if not await self._connect() or not await self._check_tasks() or not await self._ticker.declare():
                return
            self._runner.open()
            if self.listen_dsn is not False and self.listen_dsn == self.dsn and self.statement_cache_size == 0:
                log.warning("listening on the pool's DSN with statement_cache_size 0: behind PgBouncer in "
                            "transaction mode LISTEN receives nothing and jobs are found by polling only; "
                            "give a direct DSN for LISTEN (--listen-dsn), or --no-listen")
            try:
                # every loop runs in the group: one that fails cancels the others and the worker stops
                async with asyncio.TaskGroup() as group:
                    self._background = [
                        group.create_task(self._heartbeat.loop(), name="pgrelay-heartbeat"),
                        group.create_task(self._acker.loop(), name="pgrelay-ack"),
                        group.create_task(self._upkeep.loop(), name="pgrelay-recover"),
                    ]
                    if self.tick_interval:
                        self._background.append(group.create_task(self._ticker.loop(), name="pgrelay-tick"))
                    if self.listen_dsn is not False:  # None: like the pool, from the libpq variables (PGHOST, ...)
                        self._background.append(group.create_task(self._listen_loop(), name="pgrelay-listen"))
                    group.create_task(self._claim_then_drain(kinds), name="pgrelay-claim")
            except Exception as exc:  # an ExceptionGroup: the loops that failed
                failure = exc.exceptions[0] if isinstance(exc, BaseExceptionGroup) else exc
                log.critical("worker %s: a loop failed (%s); stopping the worker", self.worker_id, oneline(failure),
                             exc_info=failure)
                await self._abandon()
        finally:
            self._wakeups.close()
            self._runner.close()
            await self._connections.close()
            if install_signal_handlers:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(sig)
            log.info("worker %s stopped", self.worker_id)
        if failure is not None:
            raise WorkerFailed(f"worker {self.worker_id} stopped: {oneline(failure)}") from failure

    # -- supervision ------------------------------------------------------------------------

    def _kinds(self) -> list[str] | None:
        kinds = []
        if len(self.router):
            kinds.append("handler")
        if self.http_executor is not None:
            kinds.append("http")
        return kinds

    async def _connect(self) -> bool:
        """Open the worker's connections, retrying until the database answers; False when stopped first."""
        backoff = Backoff()
        while not self._state.stopping:
            try:
                await self._connections.open()
                return True
            except CONNECTION_ERRORS as exc:
                delay = backoff.next()
                log.warning("database unavailable (%s); retrying in %.1fs", oneline(exc), delay)
                await self._state.sleep(delay)
        return False

    async def _check_tasks(self) -> bool:
        """Have the database check the handlers' task names (its rule): a name no job can carry raises
        InvalidArgument, which stops the worker before it claims anything; False when stopped first."""
        backoff = Backoff()
        while not self._state.stopping:
            try:
                await self._connections.call(client.check_task_names, self.router.tasks)
                return True
            except InvalidArgument as exc:
                raise InvalidArgument(f"a handler's task name: {exc}") from exc
            except DATABASE_ERRORS as exc:
                delay = backoff.next()
                log.warning("checking the task names failed (%s); retrying in %.1fs", oneline(exc), delay)
                await self._state.sleep(delay)
        return False

    async def _claim_then_drain(self, kinds: list[str] | None) -> None:
        await self._claimer.loop(kinds)
        await self._drain()
        # the other loops run for good: once the jobs are done with, they end here
        for task in self._background:
            task.cancel()

    async def _drain(self) -> None:
        """After stop: let running jobs finish for the grace period, then cancel and hand back the rest."""
        state = self._state
        tasks = [r.task for r in state.running.values() if r.task is not None]
        if tasks and not state.killed:
            log.info("stopping: waiting up to %gs for %d running jobs", self.shutdown_grace, len(tasks))
            await asyncio.wait(tasks, timeout=self.shutdown_grace)
        leftover = [r for r in state.running.values() if r.task is not None and not r.task.done()]
        for running in leftover:
            state.cancel(running, "shutdown")
        if leftover:
            await asyncio.wait([r.task for r in leftover if r.task is not None], timeout=10)
        # successes still waiting for their batched ack are acked before the pool closes (if the
        # database is away for longer, their leases expire and they run again: at least once)
        deadline = time.monotonic() + 10
        while not self._acker.idle and not state.killed and time.monotonic() < deadline:
            await asyncio.sleep(0.005)

    async def _abandon(self) -> None:
        """After a loop failed: cancel the running handlers and hand their jobs back while that works."""
        state = self._state
        state.stopping = state.killed = True
        state.stop_requested.set()
        for running in list(state.running.values()):
            state.cancel(running, "shutdown")
        tasks = [r.task for r in state.running.values() if r.task is not None and not r.task.done()]
        if tasks:
            await asyncio.wait(tasks, timeout=10)

    # -- wakeups ----------------------------------------------------------------------------

    async def _listen_loop(self) -> None:
        """LISTEN on its own connection (never a pooled one); reconnect when it drops or fails.

        No statement cache: its named prepared statements would break, or collide with other clients'
        leftovers, if ``listen_dsn`` goes through a transaction pooler (where LISTEN delivers nothing,
        but the loop must not die of it); it runs one tiny statement every 5 s.
        """
        state = self._state
        backoff = Backoff()
        while not state.stopping:
            lost = asyncio.Event()
            try:
                conn = await asyncpg.connect(self.listen_dsn, timeout=10, statement_cache_size=0)
            except DATABASE_ERRORS as exc:
                delay = backoff.next()
                log.warning("listen connection failed (%s); polling, retrying in %.1fs", oneline(exc), delay)
                await state.sleep(delay)
                continue
            try:
                conn.add_termination_listener(lambda _c, lost=lost: lost.set())
                await conn.add_listener(client.CHANNEL, self._wakeups.on_notify)
                state.listening = True
                state.listens += 1
                backoff.reset()
                state.wake.set()  # jobs enqueued while we were not listening
                while not state.stopping and not lost.is_set():
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(lost.wait(), timeout=5)
                    if not lost.is_set() and not state.stopping:
                        await conn.fetchval("SELECT 1", timeout=5)
            except DATABASE_ERRORS as exc:
                # e.g. LISTEN refused on a standby after a failover: a database error must not end the
                # loop (the worker would poll only, for good), it is retried like a lost connection
                reason = oneline(exc)
                lost.set()
            else:
                reason = "closed"
            finally:
                state.listening = False
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(conn.close(), timeout=2)
            if lost.is_set() and not state.stopping:
                delay = backoff.next()
                log.warning("listen connection lost (%s); polling, listening again in %.1fs", reason, delay)
                await state.sleep(delay)
