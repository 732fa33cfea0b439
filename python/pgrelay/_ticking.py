"""Schedules: at start, ``declare_schedule`` for each schedule the router declares next to a handler; then
``tick()`` about every ``tick_interval`` seconds, which enqueues the due ticks of every schedule.

Every worker ticks, with no leader: the database makes each (schedule, tick) exactly one job however many
sessions tick at once, so a tick here is one index probe when nothing is due.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging

from . import client
from ._backoff import Backoff
from ._connections import DATABASE_ERRORS, Connections
from ._state import State
from ._values import oneline
from .errors import InvalidArgument
from .router import Router

__all__ = ["Ticker"]

log = logging.getLogger("pgrelay.worker")  # the worker's one logger, whichever part logs


class Ticker:
    """:meth:`declare` once at start; :meth:`loop` runs for good, and any database error is logged and it
    goes on."""

    def __init__(self, state: State, connections: Connections, router: Router, *,
                 tick_interval: float | None) -> None:
        self._state = state
        self._connections = connections
        self._router = router
        self._tick_interval = tick_interval

    async def declare(self) -> bool:
        """Declare the router's schedules. A declaration the database refuses (a bad expression, time zone
        or payload: InvalidArgument) stops the worker before it claims anything; any other error is retried.
        False when stopped first."""
        backoff = Backoff()
        for declaration in self._router.schedules:
            while True:
                if self._state.stopping:
                    return False
                try:
                    next_run = await self._connections.call(client.declare_schedule,
                                                               **dataclasses.asdict(declaration))
                    break
                except InvalidArgument as exc:
                    raise InvalidArgument(f"the schedule of task {declaration.task!r}: {exc}") from exc
                except DATABASE_ERRORS as exc:
                    delay = backoff.next()
                    log.warning("declaring schedule %s failed (%s); retrying in %.1fs", declaration.name,
                                oneline(exc), delay)
                    await self._state.sleep(delay)
            backoff.reset()
            if next_run is None:
                log.warning("schedule %s was made or changed in SQL (pgrelay.schedule): this worker leaves it "
                            "as it is and does not declare cron %r for it (pgrelay.unschedule hands it back to "
                            "the workers)", declaration.name, declaration.cron)
            else:
                log.info("schedule %s declared (cron %r, %s): next run %s", declaration.name, declaration.cron,
                         declaration.timezone, next_run.isoformat())
        return True

    async def loop(self) -> None:
        assert self._tick_interval
        backoff = Backoff(1.0, 10.0)
        while True:
            try:
                made = await self._connections.call(client.tick)
            except DATABASE_ERRORS as exc:
                delay = max(self._tick_interval, backoff.next())
                log.warning("tick failed (%s); trying again in %.1fs", oneline(exc), delay)
            else:
                backoff.reset()
                delay = self._tick_interval
                if made:
                    log.debug("tick enqueued %d scheduled jobs", made)
                    self._state.wake.set()  # (their NOTIFY wakes the claim too; not when pgrelay.notify is off)
            await asyncio.sleep(delay)

