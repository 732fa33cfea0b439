"""The consumer loop: claim up to free capacity, run handlers, heartbeat, ack in batches.

Every transition is a SQL call (``pgrelay.client``); this module only schedules them:

- claims with one ``consume`` call sized to the free slots; wakes on NOTIFY (a job enqueued, or the
  time a scheduled one becomes due) and polls every ``poll_interval`` as a fallback;
- heartbeats the leases of running jobs and cancels a handler whose lease was lost;
- enforces the job's ``timeout_seconds`` (else the handler's ``timeout``); an exception a handler raises
  itself (a ``TimeoutError`` too) is that job's error, not a timeout;
- runs a plain (non-async) handler in a thread of its own: a thread cannot be interrupted, so after a
  timeout, a lost lease or a cancel its slot stays taken until the function returns (never over-commits);
- acks in batches and reports success only after the ack committed;
- runs ``recover()`` every few seconds, and ``maintain()`` (recover + purge by each queue's retention)
  every ``maintenance_interval`` unless a pg_cron job does it; recover one worker at a time (a
  transaction-level try-lock), purge one at a time (its own);
- on ``stop()`` (SIGTERM/SIGINT) stops claiming, lets running jobs finish for ``shutdown_grace``
  seconds, then cancels the rest and hands them back; a second ``stop()`` exits at once;
- survives a restarted database, a dropped connection and any error the database raises (a statement
  or lock timeout, a deadlock, a read-only server after a failover): each loop logs it, waits (backoff
  with jitter, ``_backoff``) and goes on. The loops run in one ``asyncio.TaskGroup``: a loop that fails
  otherwise (a bug) stops the whole worker (``run()`` raises :class:`WorkerFailed`, ``jobs-worker`` exits
  with 1), never leaving it half alive.

Connections: handlers get a pool of their own (``ctx.pool``, ``ctx.transaction()``); the worker's own
calls (claim, ack, nack, recover) another small one, and heartbeats one connection of their own, so no
number of handlers holding connections makes a heartbeat or an ack wait past a lease.

Behind PgBouncer in transaction mode: ``statement_cache_size=0`` (asyncpg's named prepared statements
do not survive the server connection changing; the pool then also skips asyncpg's session reset on
release), and ``listen_dsn`` a direct connection (LISTEN through the pooler receives nothing) or False.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import json
import logging
import math
import os
import re
import signal
import socket
import time
import traceback
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from . import client
from ._backoff import Backoff
from ._connections import CONNECTION_ERRORS, DATABASE_ERRORS, TRANSIENT_ERRORS, Connections
from ._wakeups import Wakeups
from .context import JobContext, LeaseLost
from .errors import PgRelayError
from .models import ClaimedJob, UnreadableJson
from .router import MAX_RETRY_AFTER_SECONDS, Permanent, RetryAfter, Router

__all__ = ["CONNECTION_ERRORS", "Worker", "WorkerFailed"]

log = logging.getLogger("pgrelay.worker")

# the lease the SQL gives when neither the worker nor the queue sets one (pgrelay._default_lease_seconds)
DEFAULT_LEASE_SECONDS = 30

_RECOVER_LOCK = int.from_bytes(b"pgrcvr", "big")
# after stop(), how long a claim in flight may still answer before it is abandoned
STOP_CLAIM_GRACE = 2.0


# How each outcome of a job is logged; anything not listed at INFO.
_LOG_LEVELS = {"succeeded": logging.DEBUG, "error": logging.WARNING, "stale": logging.WARNING,
               "lease_expired": logging.WARNING}


class WorkerFailed(PgRelayError):
    """A loop of the worker failed with an error it cannot go on from (a bug, not the database's doing);
    the worker stopped. ``__cause__`` is that error."""


class _TimedOut(Exception):
    """The worker's timeout for the job ran out (never a TimeoutError the handler raised itself)."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"timed out after {seconds:g} s")
        self.seconds = seconds


@dataclass
class _Running:
    job: ClaimedJob
    task: asyncio.Task[None] | None = None
    started: float = field(default_factory=time.monotonic)
    acking: bool = False               # the handler succeeded; the ack loop owns the job from here
    result: Any = None
    slot_released: bool = False
    cancel_reason: str | None = None
    lease: float = DEFAULT_LEASE_SECONDS  # the lease's length in seconds (heartbeats come 3 times in it)
    thread: concurrent.futures.Future[Any] | None = None  # a plain handler's call, in its thread


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
        self.ack_delay = ack_delay
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.http_executor = http_executor
        self.statement_cache_size = statement_cache_size
        # the longest the worker waits for an answer to one of its own calls (claim, heartbeat, ack,
        # recover, maintain): past it the connection is taken for dead and abandoned (_db)
        self.call_timeout = max(5.0, float(lease))
        self.metrics = metrics
        self._connections = Connections(dsn, concurrency=concurrency, statement_cache_size=statement_cache_size,
                                        call_timeout=self.call_timeout)
        self._threads: concurrent.futures.ThreadPoolExecutor | None = None  # plain handlers, one thread a slot
        self._running: dict[int, _Running] = {}
        self._busy = 0  # handlers running now; jobs waiting only for their ack do not hold a slot
        self._wake = asyncio.Event()
        self._slot_free = asyncio.Event()
        self._stopping = False
        self._stop_requested = asyncio.Event()  # set by stop(): what a call in flight races against
        self._killed = False
        self._acks: list[_Running] = []          # succeeded, waiting for the next batched ack
        self._ack_ready = asyncio.Event()
        self._acks_in_flight = 0
        self._wakeups = Wakeups(self._wake, self.queues)
        self._beat_soon = asyncio.Event()        # a job with a shorter lease than the heartbeat planned for
        self._beat_interval = max(0.2, lease / 3)
        self._background: list[asyncio.Task[None]] = []

    # -- public -----------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop claiming and drain gracefully; a second call stops at once."""
        if self._stopping:
            self._killed = True
            log.warning("second stop: cancelling %d running jobs now", len(self._running))
            for running in self._running.values():
                self._cancel(running, "shutdown")
        self._stopping = True
        self._stop_requested.set()
        self._wake.set()
        self._slot_free.set()

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
            if not await self._connect():
                return
            self._threads = concurrent.futures.ThreadPoolExecutor(self.concurrency, thread_name_prefix="pgrelay-handler")
            if self.listen_dsn is not False and self.listen_dsn == self.dsn and self.statement_cache_size == 0:
                log.warning("listening on the pool's DSN with statement_cache_size 0: behind PgBouncer in "
                            "transaction mode LISTEN receives nothing and jobs are found by polling only; "
                            "give a direct DSN for LISTEN (--listen-dsn), or --no-listen")
            try:
                # every loop runs in the group: one that fails cancels the others and the worker stops
                async with asyncio.TaskGroup() as group:
                    self._background = [
                        group.create_task(self._heartbeat_loop(), name="pgrelay-heartbeat"),
                        group.create_task(self._ack_loop(), name="pgrelay-ack"),
                        group.create_task(self._recover_loop(), name="pgrelay-recover"),
                    ]
                    if self.listen_dsn is not False:  # None: like the pool, from the libpq variables (PGHOST, ...)
                        self._background.append(group.create_task(self._listen_loop(), name="pgrelay-listen"))
                    group.create_task(self._claim_then_drain(kinds), name="pgrelay-claim")
            except Exception as exc:  # an ExceptionGroup: the loops that failed
                failure = exc.exceptions[0] if isinstance(exc, BaseExceptionGroup) else exc
                log.critical("worker %s: a loop failed (%s); stopping the worker", self.worker_id, _oneline(failure),
                             exc_info=failure)
                await self._abandon()
        finally:
            self._wakeups.close()
            if self._threads is not None:
                # a thread still running a plain handler cannot be stopped; the process exits when it returns
                self._threads.shutdown(wait=False, cancel_futures=True)
            await self._connections.close()
            if install_signal_handlers:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(sig)
            log.info("worker %s stopped", self.worker_id)
        if failure is not None:
            raise WorkerFailed(f"worker {self.worker_id} stopped: {_oneline(failure)}") from failure

    async def _claim_then_drain(self, kinds: list[str] | None) -> None:
        await self._claim_loop(kinds)
        await self._drain()
        # the other loops run for good: once the jobs are done with, they end here
        for task in self._background:
            task.cancel()

    async def _abandon(self) -> None:
        """After a loop failed: cancel the running handlers and hand their jobs back while that works."""
        self._stopping = self._killed = True
        self._stop_requested.set()
        for running in list(self._running.values()):
            self._cancel(running, "shutdown")
        tasks = [r.task for r in self._running.values() if r.task is not None and not r.task.done()]
        if tasks:
            await asyncio.wait(tasks, timeout=10)

    # -- connections ------------------------------------------------------------------------

    async def _connect(self) -> bool:
        """Open the worker's connections, retrying until the database answers; False when stopped first."""
        backoff = Backoff()
        while not self._stopping:
            try:
                await self._connections.open()
                return True
            except CONNECTION_ERRORS as exc:
                delay = backoff.next()
                log.warning("database unavailable (%s); retrying in %.1fs", _oneline(exc), delay)
                await self._sleep(delay)
        return False

    async def _db(self, call: Any, *args: Any, **kwargs: Any) -> Any:
        """The worker's own SQL (claim, ack, ...): never on a handler's connection (_connections)."""
        return await self._connections.call(call, *args, **kwargs)

    async def _sleep(self, seconds: float) -> None:
        """Sleep, but wake early when stopping."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._stop_requested.wait(), timeout=seconds)

    # -- claiming ---------------------------------------------------------------------------

    def _kinds(self) -> list[str] | None:
        kinds = []
        if len(self.router):
            kinds.append("handler")
        if self.http_executor is not None:
            kinds.append("http")
        return kinds

    async def _claim_loop(self, kinds: list[str] | None) -> None:
        backoff = Backoff()
        handlers = self.router.tasks
        topped_up = False
        while not self._stopping:
            # a slot frees when its handler returns; jobs awaiting their ack (still heartbeated) are
            # bounded separately so a stalled ack path cannot make the worker claim without end
            free = min(self.concurrency - self._busy, 2 * self.concurrency - len(self._running))
            if free <= 0 or not kinds:
                self._slot_free.clear()
                if free <= 0:
                    await self._slot_free.wait()
                else:
                    await self._sleep(self.poll_interval)
                continue
            if free < self.batch_size // 4 and self._busy > 0 and not topped_up:
                # only a few slots are free while many handlers run: give them a moment to finish so
                # the next claim is one batch, not many claims of one job each
                topped_up = True
                await asyncio.sleep(0.002)
                continue
            topped_up = False
            asked = min(free, self.batch_size)
            self._wake.clear()
            started = time.monotonic()
            asked_at = time.time()
            try:
                jobs = await self._claim_unless_stopped(self._db(
                    client.consume, self.worker_id, queues=self.queues, batch=asked,
                    lease_seconds=self.lease_seconds, tasks=self.tasks, handlers=handlers, kinds=kinds,
                ))
                backoff.reset()
            except DATABASE_ERRORS as exc:
                delay = backoff.next()
                log.warning("claim failed (%s); retrying in %.1fs", _oneline(exc), delay)
                await self._sleep(delay)
                continue
            if self.metrics is not None:
                self.metrics.claimed(time.monotonic() - started)
            for job in jobs:
                older = self._running.get(job.id)
                if older is not None:  # we hold a newer attempt: the older one's lease is gone
                    self._cancel(older, "lease_expired")
                running = _Running(job)
                if self.lease_seconds is None:
                    # the queue's lease: as the database's clock gave it, less the time this claim was
                    # on its way (its now() came after asked_at)
                    running.lease = job.lease_expires_at.timestamp() - asked_at
                    if running.lease < 3 * self._beat_interval:
                        self._beat_soon.set()
                self._running[job.id] = running
                self._busy += 1
                running.task = asyncio.create_task(self._execute(running), name=f"pgrelay-job-{job.id}")
            if len(jobs) < asked:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=self.poll_interval)

    async def _claim_unless_stopped(self, claim: Any) -> list[ClaimedJob]:
        """The claimed jobs; none when stop() comes first and the claim gives no answer within
        STOP_CLAIM_GRACE seconds (a stalled connection: without this, stopping waited call_timeout for
        it; jobs it may have leased are recovered when their leases expire)."""
        task = asyncio.ensure_future(claim)
        stopped = asyncio.ensure_future(self._stop_requested.wait())
        try:
            await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if not task.done():
                await asyncio.wait({task}, timeout=STOP_CLAIM_GRACE)
            if task.done():
                return task.result()
            task.cancel()
            await asyncio.wait({task}, timeout=5)
            return []
        finally:
            stopped.cancel()

    async def _listen_loop(self) -> None:
        """LISTEN on its own connection (never a pooled one); reconnect when it drops or fails.

        No statement cache: its named prepared statements would break, or collide with other clients'
        leftovers, if ``listen_dsn`` goes through a transaction pooler (where LISTEN delivers nothing,
        but the loop must not die of it); it runs one tiny statement every 5 s.
        """
        backoff = Backoff()
        while not self._stopping:
            lost = asyncio.Event()
            try:
                conn = await asyncpg.connect(self.listen_dsn, timeout=10, statement_cache_size=0)
            except DATABASE_ERRORS as exc:
                delay = backoff.next()
                log.warning("listen connection failed (%s); polling, retrying in %.1fs", _oneline(exc), delay)
                await self._sleep(delay)
                continue
            try:
                conn.add_termination_listener(lambda _c: lost.set())
                await conn.add_listener(client.CHANNEL, self._wakeups.on_notify)
                backoff.reset()
                self._wake.set()  # jobs enqueued while we were not listening
                while not self._stopping and not lost.is_set():
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(lost.wait(), timeout=5)
                    if not lost.is_set() and not self._stopping:
                        await conn.fetchval("SELECT 1", timeout=5)
            except DATABASE_ERRORS as exc:
                # e.g. LISTEN refused on a standby after a failover: a database error must not end the
                # loop (the worker would poll only, for good), it is retried like a lost connection
                reason = _oneline(exc)
                lost.set()
            else:
                reason = "closed"
            finally:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(conn.close(), timeout=2)
            if lost.is_set() and not self._stopping:
                delay = backoff.next()
                log.warning("listen connection lost (%s); polling, listening again in %.1fs", reason, delay)
                await self._sleep(delay)

    # -- running a job ----------------------------------------------------------------------

    async def _execute(self, running: _Running) -> None:
        job = running.job
        assert self._connections.handlers is not None
        ctx = JobContext(job, self._connections.handlers, log)
        outcome, error = "succeeded", None
        if self.metrics is not None:
            self.metrics.started(job)
        try:
            try:
                result = await self._call_handler(running, ctx)
                refusal = _unstorable(result)
                if refusal is not None:
                    raise Permanent(f"the handler's result is not JSON the database stores: {refusal}")
            except asyncio.CancelledError:
                reason = running.cancel_reason or "shutdown"
                if reason == "lease_expired":
                    outcome, error = "lease_expired", "the lease was lost; the handler was cancelled"
                else:
                    outcome, error = "released", "worker shutting down"
                    await self._report(client.release, job.id, job.attempt, error)
                return
            except _TimedOut as exc:
                outcome, error = "timeout", str(exc)
                outcome = await self._nack(job, error, outcome="timeout") or outcome
                return
            except LeaseLost as exc:
                outcome, error = "lease_expired", str(exc)
                return
            except Permanent as exc:
                error = _describe(exc)
                outcome = await self._nack(job, error, permanent=True, details=_details(exc)) or "dead_letter"
                return
            except RetryAfter as exc:
                error = _describe(exc)
                outcome = await self._nack(job, error, retry_after_seconds=_retry_delay(exc.seconds),
                                           details=_details(exc)) or "failed"
                return
            except Exception as exc:
                error = _describe(exc)
                outcome = await self._nack(job, error, details=_details(exc)) or "failed"
                return

            if ctx.completed:
                return
            # the slot frees now; the ack loop acks it with others and then calls _finished
            running.acking = True
            running.result = result
            self._acks.append(running)
            self._ack_ready.set()
        except Exception as exc:  # a bug here must not kill the worker
            outcome, error = "error", _describe(exc)
            log.exception("job %s: internal error", job.id)
        finally:
            self._release_slot(running)
            if not running.acking:
                self._finished(running, outcome, error)

    def _finished(self, running: _Running, outcome: str, error: str | None) -> None:
        """The job is done with here: forget it, count it and log it."""
        job = running.job
        if self._running.get(job.id) is running:
            del self._running[job.id]
        self._slot_free.set()
        duration = time.monotonic() - running.started
        if self.metrics is not None:
            self.metrics.finished(job, outcome, duration)
        # a success is routine (DEBUG: logging each one would cost more than running it); any
        # other outcome is worth an operator's attention
        level = _LOG_LEVELS.get(outcome, logging.INFO)
        if log.isEnabledFor(level):
            log.log(
                level,
                "job %s %s (task %s, queue %s, attempt %s, %.1f ms)%s", job.id, outcome, job.task, job.queue,
                job.attempt, duration * 1000, f": {error}" if error else "",
                extra={"job_id": job.id, "task": job.task, "queue": job.queue, "attempt": job.attempt,
                       "outcome": outcome, "duration_ms": round(duration * 1000, 3), "error": error,
                       "trace_id": job.trace_id, "worker": self.worker_id},
            )

    def _release_slot(self, running: _Running) -> None:
        thread = running.thread
        if thread is not None and not thread.done():
            # a plain handler's thread runs on after a timeout, a lost lease or a cancel (nothing can stop
            # it): its slot frees only when the function returns, so the worker never runs more at once
            # than its concurrency
            loop = asyncio.get_running_loop()

            def returned(_future: Any) -> None:
                with contextlib.suppress(RuntimeError):  # the worker's loop has closed meanwhile
                    loop.call_soon_threadsafe(self._release_slot, running)

            thread.add_done_callback(returned)
            return
        if not running.slot_released:
            running.slot_released = True
            self._busy -= 1
            self._slot_free.set()

    def _handler_timeout(self, job: ClaimedJob) -> float | None:
        handler = self.router.get(job.task) if job.kind == "handler" else None
        return handler.timeout if handler else None

    async def _call_handler(self, running: _Running, ctx: JobContext) -> Any:
        job = running.job
        if isinstance(job.payload, UnreadableJson):
            raise Permanent(f"the payload cannot be read by Python's json module ({job.payload.reason})")
        timeout = job.timeout_seconds or self._handler_timeout(job)
        if job.kind == "http":
            if self.http_executor is None:
                raise Permanent("this worker runs no HTTP jobs")
            call = self.http_executor.execute(job)
        else:
            handler = self.router.get(job.task)
            if handler is None:
                raise Permanent(f"no handler for task {job.task!r} in this worker")
            if handler.is_async:
                call = handler.function(ctx)
            else:
                assert self._threads is not None
                running.thread = self._threads.submit(contextvars.copy_context().run, handler.function, ctx)
                call = asyncio.wrap_future(running.thread)
        if timeout is None:
            return await call
        deadline = asyncio.timeout(timeout)
        try:
            async with deadline:
                return await call
        except TimeoutError:
            if deadline.expired():  # ours; a TimeoutError the handler raised is its own error
                raise _TimedOut(timeout) from None
            raise

    async def _nack(self, job: ClaimedJob, error: str, **options: Any) -> str | None:
        status = await self._report(client.nack, job.id, job.attempt, error, **options)
        return {"pending": "failed", "dead_letter": "dead_letter", "stale": "stale",
                "cancelled": "cancelled"}.get(status or "", None)

    async def _report(self, call: Any, *args: Any, **kwargs: Any) -> Any:
        """Run a completion call, retrying while the database is away (the lease decides if it still counts)."""
        return (await self._report_tries(call, *args, **kwargs))[0]

    async def _report_tries(self, call: Any, *args: Any, **kwargs: Any) -> tuple[Any, int]:
        """``_report``, also returning how many tries it took: after a lost connection, an earlier try
        may have committed without its answer arriving."""
        backoff = Backoff(0.2, 5.0)
        tries = 1
        while True:
            try:
                return await self._db(call, *args, **kwargs), tries
            except TRANSIENT_ERRORS as exc:
                if self._killed:
                    return None, tries
                delay = backoff.next()
                log.warning("could not report job %s (%s); retrying in %.1fs", args[0], _oneline(exc), delay)
                await asyncio.sleep(delay)
                tries += 1

    def _cancel(self, running: _Running, reason: str) -> None:
        if running.task is not None and not running.acking and not running.task.done():
            running.cancel_reason = reason
            running.task.cancel()

    # -- background loops -------------------------------------------------------------------

    async def _ack_loop(self) -> None:
        while True:
            await self._ack_ready.wait()
            # wait a moment for more successes only while handlers still run that could join the
            # batch; with none running (or a full batch), waiting would only delay the next claim
            if self.ack_delay and self._busy > 0 and len(self._acks) < self.batch_size:
                await asyncio.sleep(self.ack_delay)
            batch, self._acks = self._acks[:1000], self._acks[1000:]
            if not self._acks:
                self._ack_ready.clear()
            self._acks_in_flight = len(batch)
            try:
                acked, tries = await self._report_tries(
                    client.ack_each, [r.job.id for r in batch], [r.job.attempt for r in batch],
                    [r.result for r in batch],
                )
            except (asyncpg.PostgresError, PgRelayError, ValueError) as exc:
                # the database refused the batch (a result it cannot store that _unstorable missed):
                # ack one by one so that one job's result costs only that job
                log.warning("batched ack refused (%s); acking these %d jobs one by one", _oneline(exc), len(batch))
                try:
                    await self._ack_singly(batch)
                finally:
                    self._acks_in_flight = 0
                continue
            except Exception as exc:  # pragma: no cover - a bug; the leases expire and the jobs run again
                log.exception("ack failed")
                for running in batch:
                    self._finished(running, "error", _describe(exc))
                self._acks_in_flight = 0
                continue
            self._acks_in_flight = 0
            held = set(acked or ())
            for running in batch:
                self._acked(running, running.job.id in held, retried=tries > 1)

    def _acked(self, running: _Running, held: bool, *, retried: bool = False) -> None:
        if held:
            self._finished(running, "succeeded", None)
        elif retried:
            # the first try may have committed and only its answer was lost: then this attempt succeeded
            self._finished(running, "unconfirmed", "the ack was retried after a lost connection and the retry "
                           "found the job no longer leased: the first try committed, or the lease was lost")
        else:
            self._finished(running, "stale", "the lease was lost before the ack; another attempt owns the job")

    async def _ack_singly(self, batch: list[_Running]) -> None:
        for running in batch:
            job = running.job
            try:
                held = await self._report(client.ack, job.id, job.attempt, running.result)
            except (asyncpg.PostgresError, PgRelayError, ValueError) as exc:
                error = f"the database refused the handler's result: {_storable_text(_oneline(exc))}"
                try:
                    outcome = await self._nack(job, error, permanent=True) or "dead_letter"
                except Exception:  # pragma: no cover - a bug; the lease expires and the job runs again
                    log.exception("job %s: nack after a refused ack failed", job.id)
                    outcome = "error"
                self._finished(running, outcome, error)
            else:
                self._acked(running, bool(held))

    def _heartbeat_interval(self) -> float:
        """A third of the shortest lease held (the worker's --lease-seconds, else each job's queue's)."""
        if self.lease_seconds is not None:
            return max(0.2, self.lease_seconds / 3)
        shortest = min((r.lease for r in self._running.values()), default=DEFAULT_LEASE_SECONDS)
        return max(0.2, min(shortest, DEFAULT_LEASE_SECONDS) / 3)

    async def _heartbeat_loop(self) -> None:
        """Extend the leases of the running jobs (on a connection of its own) and cancel the handlers of
        jobs no longer held. Any database error is logged and the heartbeat tried again soon."""
        host, pid = socket.gethostname(), os.getpid()
        backoff = Backoff(0.2, 5.0)
        due = time.monotonic() + self._heartbeat_interval()
        while True:
            self._beat_soon.clear()
            self._beat_interval = interval = self._heartbeat_interval()
            due = min(due, time.monotonic() + interval)
            if due > time.monotonic():
                # woken early when a job with a shorter lease arrives
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._beat_soon.wait(), timeout=due - time.monotonic())
                continue
            ids = list(self._running)
            try:
                lost = await self._connections.heartbeat(
                    client.heartbeat, self.worker_id, ids, lease_seconds=self.lease_seconds,
                    host=host, pid=pid, queues=self.queues,
                )
            except DATABASE_ERRORS as exc:
                # never longer than the interval: the leases still run out at their usual pace
                delay = min(backoff.next(), interval)
                log.warning("heartbeat failed (%s); trying again in %.1fs", _oneline(exc), delay)
                due = time.monotonic() + delay
                continue
            backoff.reset()
            due = time.monotonic() + interval
            for job_id in lost:
                running = self._running.get(job_id)
                if running is not None and not running.acking:
                    log.warning("job %s is no longer held (its lease was lost, or an operator cancelled it); "
                                "cancelling its handler", job_id)
                    self._cancel(running, "lease_expired")

    async def _recover_loop(self) -> None:
        """recover() now and then, maintain() less often; any database error is logged and they go on."""
        last_maintenance = time.monotonic()
        backoff = Backoff(1.0, 10.0)
        delay = self.recover_interval
        while True:
            await asyncio.sleep(delay)
            try:
                recovered = await self._db(client.recover_if_free, _RECOVER_LOCK)
                if self.maintenance_interval and time.monotonic() - last_maintenance >= self.maintenance_interval:
                    last_maintenance = time.monotonic()
                    recovered += await self._maintain()
                if recovered:
                    log.info("recovered %d jobs whose lease had expired", recovered)
                    self._wake.set()
            except DATABASE_ERRORS as exc:
                delay = max(self.recover_interval, backoff.next())
                log.warning("recover failed (%s); trying again in %.1fs", _oneline(exc), delay)
            else:
                backoff.reset()
                delay = self.recover_interval

    async def _maintain(self) -> int:
        """maintain() unless pg_cron runs it; returns the jobs it recovered."""
        try:
            if await self._db(client.maintenance_scheduled):
                log.debug("pg_cron runs pgrelay's maintenance; this worker does not purge")
                return 0
            done = await self._db(client.maintain)  # purge() itself runs one at a time
        except (asyncpg.PostgresError, PgRelayError) as exc:  # e.g. a role without EXECUTE on maintain(): keep working
            log.warning("maintenance failed (%s)", _oneline(exc))
            return 0
        if done.purged:
            log.info("purged %d finished jobs past their queue's retention", done.purged)
        return done.recovered

    async def _drain(self) -> None:
        """After stop: let running jobs finish for the grace period, then cancel and hand back the rest."""
        tasks = [r.task for r in self._running.values() if r.task is not None]
        if tasks and not self._killed:
            log.info("stopping: waiting up to %gs for %d running jobs", self.shutdown_grace, len(tasks))
            await asyncio.wait(tasks, timeout=self.shutdown_grace)
        leftover = [r for r in self._running.values() if r.task is not None and not r.task.done()]
        for running in leftover:
            self._cancel(running, "shutdown")
        if leftover:
            await asyncio.wait([r.task for r in leftover if r.task is not None], timeout=10)
        # successes still waiting for their batched ack are acked before the pool closes (if the
        # database is away for longer, their leases expire and they run again: at least once)
        deadline = time.monotonic() + 10
        while (self._acks or self._acks_in_flight) and not self._killed and time.monotonic() < deadline:
            await asyncio.sleep(0.005)


def _oneline(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


# a NUL in JSON text: \u0000 after an even number of backslashes (an odd number escapes the backslash)
_JSON_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


def _unstorable(value: Any) -> str | None:
    """Why the database would refuse ``value`` as jsonb (None when it stores it): not JSON, NaN or
    Infinity, a NUL character or a lone surrogate. Checked before a batched ack, which one refused
    value would fail for every job in it."""
    if value is None:
        return None
    try:
        text = json.dumps(value, allow_nan=False, ensure_ascii=False)
        text.encode("utf-8")
    except (TypeError, ValueError, RecursionError) as exc:  # UnicodeEncodeError is a ValueError
        return f"{type(exc).__name__}: {_storable_text(str(exc))}"
    if _JSON_NUL.search(text):
        return "a string holds a NUL character (\\u0000), which PostgreSQL's jsonb refuses"
    return None


def _storable_text(text: str) -> str:
    """``text`` as PostgreSQL's text stores it: NUL and lone surrogates written as escapes."""
    if "\x00" in text:
        text = text.replace("\x00", "\\x00")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def _retry_delay(seconds: float) -> float | None:
    """A handler's RetryAfter seconds within nack's range: NaN means the queue's backoff."""
    if math.isnan(seconds):
        return None
    return min(max(0.0, seconds), MAX_RETRY_AFTER_SECONDS)


def _details(exc: BaseException) -> Any:
    """An exception's ``details`` attribute (Permanent, RetryAfter, the HTTP executor's errors), if the
    database can store it as jsonb."""
    details = getattr(exc, "details", None)
    return None if _unstorable(details) is not None else details


def _describe(exc: BaseException) -> str:
    """The error recorded for operators: the exception and the innermost frames of its traceback."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if "/asyncio/" not in f.filename and "/concurrent/" not in f.filename][-3:]
    where = "; ".join(f"{f.filename.rsplit('/', 1)[-1]}:{f.lineno} in {f.name}" for f in frames)
    message = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return _storable_text(f"{message} ({where})" if where else message)
