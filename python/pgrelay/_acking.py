"""Reports what became of each job: successes acked in batches (one by one when the database refuses a
batch), failures nacked, jobs handed back released; each call retried while the database is away."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import asyncpg

from . import client
from ._backoff import Backoff
from ._connections import TRANSIENT_ERRORS, Connections
from ._state import Running, State
from ._values import describe, oneline, storable_text
from .errors import PgRelayError
from .models import ClaimedJob

__all__ = ["Acker"]

log = logging.getLogger("pgrelay.worker")  # the worker's one logger, whichever part logs


class Acker:
    """:meth:`add` a success for the ack loop (:meth:`loop`); :meth:`nack` and :meth:`report` the rest."""

    def __init__(self, state: State, connections: Connections, *, batch_size: int, ack_delay: float) -> None:
        self._state = state
        self._connections = connections
        self._batch_size = batch_size
        self._ack_delay = ack_delay
        self._acks: list[Running] = []   # succeeded, waiting for the next batched ack
        self._ack_ready = asyncio.Event()
        self._in_flight = 0

    def add(self, running: Running) -> None:
        """A success (its ``result`` set): acked with others, then :meth:`State.finished`."""
        self._acks.append(running)
        self._ack_ready.set()

    @property
    def idle(self) -> bool:
        """No success waits for its ack, none is being acked."""
        return not self._acks and not self._in_flight

    async def loop(self) -> None:
        state = self._state
        while True:
            await self._ack_ready.wait()
            # wait a moment for more successes only while handlers still run that could join the
            # batch; with none running (or a full batch), waiting would only delay the next claim
            if self._ack_delay and state.busy > 0 and len(self._acks) < self._batch_size:
                await asyncio.sleep(self._ack_delay)
            batch, self._acks = self._acks[:1000], self._acks[1000:]
            if not self._acks:
                self._ack_ready.clear()
            self._in_flight = len(batch)
            try:
                acked, tries = await self._report_tries(
                    client.ack_each, [r.job.id for r in batch], [r.job.attempt for r in batch],
                    [r.result for r in batch],
                )
            except (asyncpg.PostgresError, PgRelayError, ValueError) as exc:
                # the database refused the batch (a result it cannot store that unstorable() missed):
                # ack one by one so that one job's result costs only that job
                log.warning("batched ack refused (%s); acking these %d jobs one by one", oneline(exc), len(batch))
                try:
                    await self._ack_singly(batch)
                finally:
                    self._in_flight = 0
                continue
            except Exception as exc:  # pragma: no cover - a bug; the leases expire and the jobs run again
                log.exception("ack failed")
                for running in batch:
                    state.finished(running, "error", describe(exc))
                self._in_flight = 0
                continue
            self._in_flight = 0
            held = set(acked or ())
            for running in batch:
                self._acked(running, running.job.id in held, retried=tries > 1)

    def _acked(self, running: Running, held: bool, *, retried: bool = False) -> None:
        if held:
            self._state.finished(running, "succeeded", None)
        elif retried:
            # the first try may have committed and only its answer was lost: then this attempt succeeded
            self._state.finished(running, "unconfirmed", "the ack was retried after a lost connection and the "
                                 "retry found the job no longer leased: the first try committed, or the lease "
                                 "was lost")
        else:
            self._state.finished(running, "stale", "the lease was lost before the ack; another attempt owns the job")

    async def _ack_singly(self, batch: list[Running]) -> None:
        for running in batch:
            job = running.job
            try:
                held = await self.report(client.ack, job.id, job.attempt, running.result)
            except (asyncpg.PostgresError, PgRelayError, ValueError) as exc:
                error = f"the database refused the handler's result: {storable_text(oneline(exc))}"
                try:
                    outcome = await self.nack(job, error, permanent=True) or "dead_letter"
                except Exception:  # pragma: no cover - a bug; the lease expires and the job runs again
                    log.exception("job %s: nack after a refused ack failed", job.id)
                    outcome = "error"
                self._state.finished(running, outcome, error)
            else:
                self._acked(running, bool(held))

    async def nack(self, job: ClaimedJob, error: str, **options: Any) -> str | None:
        """nack() the job; what became of it, as the worker logs it (None: no answer)."""
        status = await self.report(client.nack, job.id, job.attempt, error, **options)
        return {"pending": "failed", "dead_letter": "dead_letter", "stale": "stale",
                "cancelled": "cancelled"}.get(status or "", None)

    async def report(self, call: Any, *args: Any, **kwargs: Any) -> Any:
        """Run a completion call, retrying while the database is away (the lease decides if it still counts)."""
        return (await self._report_tries(call, *args, **kwargs))[0]

    async def _report_tries(self, call: Any, *args: Any, **kwargs: Any) -> tuple[Any, int]:
        """:meth:`report`, also returning how many tries it took: after a lost connection, an earlier try
        may have committed without its answer arriving."""
        backoff = Backoff(0.2, 5.0)
        tries = 1
        while True:
            try:
                return await self._connections.call(call, *args, **kwargs), tries
            except TRANSIENT_ERRORS as exc:
                if self._state.killed:
                    return None, tries
                delay = backoff.next()
                log.warning("could not report job %s (%s); retrying in %.1fs", args[0], oneline(exc), delay)
                await asyncio.sleep(delay)
                tries += 1
