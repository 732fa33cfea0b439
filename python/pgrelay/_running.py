"""Runs one claimed job: calls its handler (or the HTTP executor) under the job's timeout, hands the
outcome to the acking part, and frees the job's slot when the handler is done with it."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import logging
from typing import Any

from . import client
from ._acking import Acker
from ._connections import Connections
from ._state import Running, State
from ._values import describe, error_details, retry_delay, unstorable
from .context import JobContext, LeaseLost
from .models import ClaimedJob, UnreadableJson
from .router import Permanent, RetryAfter, Router

__all__ = ["Runner"]

log = logging.getLogger("pgrelay.worker")  # the worker's one logger, whichever part logs


class _TimedOut(Exception):
    """The worker's timeout for the job ran out (never a TimeoutError the handler raised itself)."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"timed out after {seconds:g} s")
        self.seconds = seconds


class Runner:
    """:meth:`execute` runs a job to its outcome; plain handlers run in threads, one a slot."""

    def __init__(self, state: State, connections: Connections, acker: Acker, router: Router, http_executor: Any,
                 *, concurrency: int) -> None:
        self._state = state
        self._connections = connections
        self._acker = acker
        self._router = router
        self._http_executor = http_executor
        self._concurrency = concurrency
        self._threads: concurrent.futures.ThreadPoolExecutor | None = None

    def open(self) -> None:
        self._threads = concurrent.futures.ThreadPoolExecutor(self._concurrency, thread_name_prefix="pgrelay-handler")

    def close(self) -> None:
        if self._threads is not None:
            # a thread still running a plain handler cannot be stopped; the process exits when it returns
            self._threads.shutdown(wait=False, cancel_futures=True)

    async def execute(self, running: Running) -> None:
        state = self._state
        job = running.job
        assert self._connections.handlers is not None
        ctx = JobContext(job, self._connections.handlers, log)
        outcome, error = "succeeded", None
        if state.metrics is not None:
            state.metrics.started(job)
        try:
            try:
                result = await self._call_handler(running, ctx)
                refusal = unstorable(result)
                if refusal is not None:
                    raise Permanent(f"the handler's result is not JSON the database stores: {refusal}")
            except asyncio.CancelledError:
                reason = running.cancel_reason or "shutdown"
                if reason == "lease_expired":
                    outcome, error = "lease_expired", "the lease was lost; the handler was cancelled"
                else:
                    outcome, error = "released", "worker shutting down"
                    await self._acker.report(client.release, job.id, job.attempt, error)
                return
            except _TimedOut as exc:
                outcome, error = "timeout", str(exc)
                outcome = await self._acker.nack(job, error, outcome="timeout") or outcome
                return
            except LeaseLost as exc:
                outcome, error = "lease_expired", str(exc)
                return
            except Permanent as exc:
                error = describe(exc)
                outcome = await self._acker.nack(job, error, permanent=True,
                                                 details=error_details(exc)) or "dead_letter"
                return
            except RetryAfter as exc:
                error = describe(exc)
                outcome = await self._acker.nack(job, error, retry_after_seconds=retry_delay(exc.seconds),
                                                 details=error_details(exc)) or "failed"
                return
            except Exception as exc:  # noqa: BLE001 - whatever a handler raises is its job's error
                error = describe(exc)
                outcome = await self._acker.nack(job, error, details=error_details(exc)) or "failed"
                return

            if ctx.completed:
                return
            # the slot frees now; the ack loop acks it with others and then calls State.finished
            running.acking = True
            running.result = result
            self._acker.add(running)
        except Exception as exc:  # a bug here must not kill the worker
            outcome, error = "error", describe(exc)
            log.exception("job %s: internal error", job.id)
        finally:
            self._release_slot(running)
            if not running.acking:
                state.finished(running, outcome, error)

    def _release_slot(self, running: Running) -> None:
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
            self._state.busy -= 1
            self._state.slot_free.set()

    def _handler_timeout(self, job: ClaimedJob) -> float | None:
        handler = self._router.get(job.task) if job.kind == "handler" else None
        return handler.timeout if handler else None

    async def _call_handler(self, running: Running, ctx: JobContext) -> Any:
        job = running.job
        if isinstance(job.payload, UnreadableJson):
            raise Permanent(f"the payload cannot be read by Python's json module ({job.payload.reason})")
        timeout = job.timeout_seconds or self._handler_timeout(job)
        if job.kind == "http":
            if self._http_executor is None:
                raise Permanent("this worker runs no HTTP jobs")
            call = self._http_executor.execute(job)
        else:
            handler = self._router.get(job.task)
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
