"""Upkeep of the whole queue, not just this worker's jobs: ``recover()`` every ``recover_interval`` (one
worker at a time, a transaction-level try-lock) and ``maintain()`` (recover + purge by each queue's
retention + tick the schedules) every ``maintenance_interval``, unless a pg_cron job does it."""

from __future__ import annotations

import asyncio
import logging
import time

import asyncpg

from . import client
from ._backoff import Backoff
from ._connections import DATABASE_ERRORS, Connections
from ._state import State
from ._values import oneline
from .errors import PgRelayError

__all__ = ["Upkeep"]

log = logging.getLogger("pgrelay.worker")  # the worker's one logger, whichever part logs

_RECOVER_LOCK = int.from_bytes(b"pgrcvr", "big")


class Upkeep:
    """:meth:`loop` runs for good; any database error is logged and it goes on."""

    def __init__(self, state: State, connections: Connections, *, recover_interval: float,
                 maintenance_interval: float | None) -> None:
        self._state = state
        self._connections = connections
        self._recover_interval = recover_interval
        self._maintenance_interval = maintenance_interval

    async def loop(self) -> None:
        last_maintenance = time.monotonic()
        backoff = Backoff(1.0, 10.0)
        delay = self._recover_interval
        while True:
            await asyncio.sleep(delay)
            try:
                recovered = await self._connections.call(client.recover_if_free, _RECOVER_LOCK)
                if self._maintenance_interval and time.monotonic() - last_maintenance >= self._maintenance_interval:
                    last_maintenance = time.monotonic()
                    recovered += await self._maintain()
                if recovered:
                    log.info("recovered %d jobs whose lease had expired", recovered)
                    self._state.wake.set()
            except DATABASE_ERRORS as exc:
                delay = max(self._recover_interval, backoff.next())
                log.warning("recover failed (%s); trying again in %.1fs", oneline(exc), delay)
            else:
                backoff.reset()
                delay = self._recover_interval

    async def _maintain(self) -> int:
        """maintain() unless pg_cron runs it; returns the jobs it recovered."""
        try:
            if await self._connections.call(client.maintenance_scheduled):
                log.debug("pg_cron runs pgrelay's maintenance; this worker does not purge")
                return 0
            done = await self._connections.call(client.maintain)  # purge() itself runs one at a time
        except (asyncpg.PostgresError, PgRelayError) as exc:  # e.g. a role without EXECUTE on maintain(): keep working
            log.warning("maintenance failed (%s)", oneline(exc))
            return 0
        if done.purged:
            log.info("purged %d finished jobs past their queue's retention", done.purged)
        if done.ticked:
            log.debug("maintain() enqueued %d scheduled jobs", done.ticked)
            self._state.wake.set()
        return done.recovered
