"""The consumer loop: claim up to free capacity, run handlers, heartbeat, ack in batches.

Every transition is a SQL call (``pgrelay.client``); this module only schedules them:

- claims with one ``consume`` call sized to the free slots; wakes on NOTIFY (a job enqueued, or the
  time a scheduled one becomes due) and polls every ``poll_interval`` as a fallback;
- heartbeats the leases of running jobs and cancels a handler whose lease was lost;
- enforces the job's ``timeout_seconds`` (else the handler's ``timeout``);
- acks in batches and reports success only after the ack committed;
- runs ``recover()`` every few seconds, and ``maintain()`` (recover + purge by each queue's retention)
  every ``maintenance_interval`` unless a pg_cron job does it; recover one worker at a time (a
  transaction-level try-lock), purge one at a time (its own);
- on ``stop()`` (SIGTERM/SIGINT) stops claiming, lets running jobs finish for ``shutdown_grace``
  seconds, then cancels the rest and hands them back; a second ``stop()`` exits at once;
- survives a restarted database or a dropped connection: logs it and retries with backoff.

Behind PgBouncer in transaction mode: ``statement_cache_size=0`` (asyncpg's named prepared statements
do not survive the server connection changing; the pool then also skips asyncpg's session reset on
release), and ``listen_dsn`` a direct connection (LISTEN through the pooler receives nothing) or False.
"""

from __future__ import annotations

import asyncio
import contextlib
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
from .context import JobContext, LeaseLost
from .errors import PgRelayError
from .models import ClaimedJob, UnreadableJson
from .router import MAX_RETRY_AFTER_SECONDS, Permanent, RetryAfter, Router

__all__ = ["Worker"]

log = logging.getLogger("pgrelay.worker")

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

_RECOVER_LOCK = int.from_bytes(b"pgrcvr", "big")
# after stop(), how long a claim in flight may still answer before it is abandoned
STOP_CLAIM_GRACE = 2.0


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


# How each outcome of a job is logged; anything not listed at INFO.
_LOG_LEVELS = {"succeeded": logging.DEBUG, "error": logging.WARNING, "stale": logging.WARNING,
               "lease_lost": logging.WARNING}


@dataclass
class _Running:
    job: ClaimedJob
    task: asyncio.Task[None] | None = None
    started: float = field(default_factory=time.monotonic)
    acking: bool = False               # the handler succeeded; the ack loop owns the job from here
    result: Any = None
    slot_released: bool = False
    cancel_reason: str | None = None


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
        lease_seconds: int = 30,
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
        if lease_seconds < 1:
            raise ValueError("lease_seconds must be at least 1")
        self.dsn = dsn
        self.router = router or Router()
        self.concurrency = concurrency
        self.batch_size = batch_size or concurrency
        self.queues = list(queues) if queues else None
        self.tasks = list(tasks) if tasks else None
        self.lease_seconds = lease_seconds
        self.poll_interval = poll_interval
        self.shutdown_grace = shutdown_grace
        self.listen_dsn = dsn if listen_dsn is None else listen_dsn
        self.recover_interval = recover_interval if recover_interval is not None else max(1.0, lease_seconds / 3)
        self.maintenance_interval = maintenance_interval or None  # None or 0: never purge from this worker
        self.ack_delay = ack_delay
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.http_executor = http_executor
        self.statement_cache_size = statement_cache_size
        # the longest the worker waits for an answer to one of its own calls (claim, heartbeat, ack,
        # recover, maintain): past it the connection is taken for dead and abandoned (_db)
        self.call_timeout = max(5.0, float(lease_seconds))
        self.metrics = metrics
        self._pool: asyncpg.Pool | None = None
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
        self._timers: list[asyncio.TimerHandle] = []
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
        try:
            await self._open_pool()
            if self._pool is None:
                return
            self._background = [
                asyncio.create_task(self._heartbeat_loop(), name="pgrelay-heartbeat"),
                asyncio.create_task(self._ack_loop(), name="pgrelay-ack"),
                asyncio.create_task(self._recover_loop(), name="pgrelay-recover"),
            ]
            if self.listen_dsn is not False:  # None: like the pool, from the libpq variables (PGHOST, ...)
                if self.listen_dsn == self.dsn and self.statement_cache_size == 0:
                    log.warning("listening on the pool's DSN with statement_cache_size 0: behind PgBouncer in "
                                "transaction mode LISTEN receives nothing and jobs are found by polling only; "
                                "give a direct DSN for LISTEN (--listen-dsn), or --no-listen")
                self._background.append(asyncio.create_task(self._listen_loop(), name="pgrelay-listen"))
            await self._claim_loop(kinds)
            await self._drain()
        finally:
            for task in self._background:
                task.cancel()
            if self._background:
                # bounded: a loop cancelled in the middle of a call on a dead connection must not hold
                # the exit (its connection is terminated, see _db)
                await asyncio.wait(self._background, timeout=5)
            for timer in self._timers:
                timer.cancel()
            if self._pool is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._pool.close(), timeout=5)
            if install_signal_handlers:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(sig)
            log.info("worker %s stopped", self.worker_id)

    # -- connections ------------------------------------------------------------------------

    async def _open_pool(self) -> None:
        delay = 0.5
        while not self._stopping:
            try:
                self._pool = await asyncpg.create_pool(
                    self.dsn,
                    min_size=1,
                    max_size=min(self.concurrency, 10) + 4,
                    statement_cache_size=self.statement_cache_size,
                    # no statement cache means a transaction pooler: no session reset either
                    connection_class=_PooledServerConnection if self.statement_cache_size == 0 else asyncpg.Connection,
                    timeout=10,
                )
                return
            except CONNECTION_ERRORS as exc:
                log.warning("database unavailable (%s); retrying in %.1fs", _oneline(exc), delay)
                await self._sleep(delay)
                delay = min(delay * 2, 10.0)

    async def _db(self, call: Any, *args: Any, **kwargs: Any) -> Any:
        """``call(connection, ...)`` on a pooled connection, for the worker's own SQL.

        A connection that gives no answer within ``call_timeout`` is terminated and every other pooled
        connection is replaced (all of them likely went the same way: a failover, a dropped NAT entry);
        the TimeoutError is then handled like any lost connection. Without this, a connection that died
        silently (no reset ever arrives) hung the claim, heartbeat and ack loops for good, and asyncpg's
        own query timeout does not help: the pool then waits without limit for the cancellation
        (tests/reliability/test_connection_loss.py::test_silently_dead_connections_are_abandoned).
        """
        assert self._pool is not None
        async with self._pool.acquire(timeout=self.call_timeout) as conn:  # also bounds the reset on release
            try:
                return await asyncio.wait_for(call(conn, *args, **kwargs), timeout=self.call_timeout)
            except asyncio.TimeoutError:
                conn.terminate()
                await self._pool.expire_connections()
                raise
            except asyncio.CancelledError:
                # the call may still be waiting for its answer: releasing the connection would wait for
                # that too (for good, on a dead connection), so it is dropped instead
                conn.terminate()
                raise

    async def _sleep(self, seconds: float) -> None:
        """Sleep, but wake early when stopping."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._stopped_event(), timeout=seconds)

    async def _stopped_event(self) -> None:
        while not self._stopping:
            self._wake.clear()
            await self._wake.wait()

    # -- claiming ---------------------------------------------------------------------------

    def _kinds(self) -> list[str] | None:
        kinds = []
        if len(self.router):
            kinds.append("handler")
        if self.http_executor is not None:
            kinds.append("http")
        return kinds

    async def _claim_loop(self, kinds: list[str] | None) -> None:
        assert self._pool is not None
        delay = 0.5
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
            try:
                jobs = await self._claim_unless_stopped(self._db(
                    client.consume, self.worker_id, queues=self.queues, batch=asked,
                    lease_seconds=self.lease_seconds, tasks=self.tasks, handlers=handlers, kinds=kinds,
                ))
                delay = 0.5
            except CONNECTION_ERRORS as exc:
                log.warning("claim failed, database unavailable (%s); retrying in %.1fs", _oneline(exc), delay)
                await self._sleep(delay)
                delay = min(delay * 2, 10.0)
                continue
            if self.metrics is not None:
                self.metrics.claimed(time.monotonic() - started)
            for job in jobs:
                older = self._running.get(job.id)
                if older is not None:  # we hold a newer attempt: the older one's lease is gone
                    self._cancel(older, "lease_lost")
                running = _Running(job)
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

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        """Payload: "<queue>" for a job due now, "<queue> <epoch seconds>" for one due later."""
        queue, _, due = payload.partition(" ")
        if self.queues is not None and queue not in self.queues:
            return
        if not due:
            self._wake.set()
            return
        loop = asyncio.get_running_loop()
        delay = float(due) - time.time()
        if delay <= 0:
            self._wake.set()
        else:
            self._timers = [t for t in self._timers if not t.cancelled() and t.when() > loop.time()]
            self._timers.append(loop.call_later(delay + 0.001, self._wake.set))

    async def _listen_loop(self) -> None:
        """LISTEN on its own connection (never a pooled one); reconnect when it drops or fails.

        No statement cache: its named prepared statements would break, or collide with other clients'
        leftovers, if ``listen_dsn`` goes through a transaction pooler (where LISTEN delivers nothing,
        but the loop must not die of it); it runs one tiny statement every 5 s.
        """
        delay = 0.5
        while not self._stopping:
            lost = asyncio.Event()
            try:
                conn = await asyncpg.connect(self.listen_dsn, timeout=10, statement_cache_size=0)
            except (*CONNECTION_ERRORS, asyncpg.PostgresError) as exc:
                log.warning("listen connection failed (%s); polling, retrying in %.1fs", _oneline(exc), delay)
                await self._sleep(delay)
                delay = min(delay * 2, 10.0)
                continue
            try:
                conn.add_termination_listener(lambda _c: lost.set())
                await conn.add_listener(client.CHANNEL, self._on_notify)
                delay = 0.5
                self._wake.set()  # jobs enqueued while we were not listening
                while not self._stopping and not lost.is_set():
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(lost.wait(), timeout=5)
                    if not lost.is_set() and not self._stopping:
                        await conn.fetchval("SELECT 1", timeout=5)
            except (*CONNECTION_ERRORS, asyncpg.PostgresError) as exc:
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
                log.warning("listen connection lost (%s); polling, listening again in %.1fs", reason, delay)
                await self._sleep(delay)
                delay = min(delay * 2, 10.0)

    # -- running a job ----------------------------------------------------------------------

    async def _execute(self, running: _Running) -> None:
        job = running.job
        assert self._pool is not None
        ctx = JobContext(job, self._pool, log)
        outcome, error = "succeeded", None
        if self.metrics is not None:
            self.metrics.started(job)
        try:
            try:
                result = await self._call_handler(job, ctx)
                refusal = _unstorable(result)
                if refusal is not None:
                    raise Permanent(f"the handler's result is not JSON the database stores: {refusal}")
            except asyncio.CancelledError:
                reason = running.cancel_reason or "shutdown"
                if reason == "lease_lost":
                    outcome, error = "lease_lost", "the lease was lost; the handler was cancelled"
                else:
                    outcome, error = "released", "worker shutting down"
                    await self._report(client.release, job.id, job.attempt, error)
                return
            except TimeoutError:
                timeout = job.timeout_seconds or self._handler_timeout(job)
                outcome, error = "timeout", f"timed out after {timeout:g} s"
                outcome = await self._nack(job, error, outcome="timeout") or outcome
                return
            except LeaseLost as exc:
                outcome, error = "lease_lost", str(exc)
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
        if not running.slot_released:
            running.slot_released = True
            self._busy -= 1
            self._slot_free.set()

    def _handler_timeout(self, job: ClaimedJob) -> float | None:
        handler = self.router.get(job.task) if job.kind == "handler" else None
        return handler.timeout if handler else None

    async def _call_handler(self, job: ClaimedJob, ctx: JobContext) -> Any:
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
            call = handler.function(ctx) if handler.is_async else asyncio.to_thread(handler.function, ctx)
        if timeout is None:
            return await call
        return await asyncio.wait_for(call, timeout=timeout)

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
        assert self._pool is not None
        delay = 0.2
        tries = 1
        while True:
            try:
                return await self._db(call, *args, **kwargs), tries
            except CONNECTION_ERRORS as exc:
                if self._killed:
                    return None, tries
                log.warning("could not report job %s (%s); retrying in %.1fs", args[0], _oneline(exc), delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
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

    async def _heartbeat_loop(self) -> None:
        interval = max(0.2, self.lease_seconds / 3)
        host, pid = socket.gethostname(), os.getpid()
        while True:
            await asyncio.sleep(interval)
            ids = list(self._running)
            try:
                assert self._pool is not None
                lost = await self._db(
                    client.heartbeat, self.worker_id, ids, lease_seconds=self.lease_seconds, host=host, pid=pid,
                    queues=self.queues,
                )
            except CONNECTION_ERRORS as exc:
                log.warning("heartbeat failed (%s)", _oneline(exc))
                continue
            for job_id in lost:
                running = self._running.get(job_id)
                if running is not None and not running.acking:
                    log.warning("job %s is no longer held (its lease was lost, or an operator cancelled it); "
                                "cancelling its handler", job_id)
                    self._cancel(running, "lease_lost")

    async def _recover_loop(self) -> None:
        last_maintenance = time.monotonic()
        while True:
            await asyncio.sleep(self.recover_interval)
            try:
                assert self._pool is not None
                recovered = await self._db(client.recover_if_free, _RECOVER_LOCK)
                if self.maintenance_interval and time.monotonic() - last_maintenance >= self.maintenance_interval:
                    last_maintenance = time.monotonic()
                    recovered += await self._maintain()
                if recovered:
                    log.info("recovered %d jobs whose lease had expired", recovered)
                    self._wake.set()
            except CONNECTION_ERRORS as exc:
                log.warning("recover failed (%s)", _oneline(exc))

    async def _maintain(self) -> int:
        """maintain() unless pg_cron runs it; returns the jobs it recovered."""
        assert self._pool is not None
        try:
            if await self._db(client.maintenance_scheduled):
                log.debug("pg_cron runs pgrelay's maintenance; this worker does not purge")
                return 0
            done = await self._db(client.maintain)  # purge() itself runs one at a time
        except asyncpg.PostgresError as exc:  # e.g. a role without EXECUTE on maintain(): keep working
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
