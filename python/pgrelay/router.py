"""Handlers by name: ``router = Router()``, ``@router.task("orders.recalc", timeout=30)``.

Only registered names run: a job row never names code to import. A handler may carry a schedule
(``@router.task("reports.daily", cron="0 6 * * *")``): a worker declares it at start
(``declare_schedule``); what makes a valid expression is the database's rule, asked then.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias

if TYPE_CHECKING:
    from .context import JobContext

__all__ = ["Handler", "Permanent", "RetryAfter", "Router", "ScheduleDeclaration"]

HandlerFunction: TypeAlias = "Callable[[JobContext], Any] | Callable[[JobContext], Awaitable[Any]]"

class Permanent(Exception):
    """Raise from a handler to dead-letter the job at once, without further attempts.

    ``details`` (JSON) is recorded with the attempt (``get_attempts``), e.g. an HTTP status.
    """

    def __init__(self, *args: Any, details: Any = None) -> None:
        super().__init__(*args)
        self.details = details


class RetryAfter(Exception):
    """Raise from a handler to retry the job after ``seconds`` instead of the backoff."""

    def __init__(self, seconds: float, message: str | None = None, *, details: Any = None) -> None:
        super().__init__(message or f"retry after {seconds} s")
        self.seconds = float(seconds)
        self.details = details


@dataclass(frozen=True)
class Handler:
    task: str
    function: HandlerFunction
    timeout: float | None
    is_async: bool


@dataclass(frozen=True)
class ScheduleDeclaration:
    """A schedule declared next to a handler: the arguments of ``declare_schedule``, which a worker calls
    with them at start. ``name`` is the task's name; None takes the SQL function's default."""

    name: str
    cron: str
    task: str
    payload: Mapping[str, Any] | None = None
    queue: str | None = None
    timezone: str = "UTC"
    catch_up: str = "latest"
    priority: int | None = None
    max_attempts: int | None = None
    timeout_seconds: int | None = None


class Router:
    """A registry of handlers by task name, and of the schedules declared next to them."""

    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}
        self._schedules: dict[str, ScheduleDeclaration] = {}

    def task(
        self,
        name: str,
        *,
        timeout: float | None = None,
        cron: str | None = None,
        timezone: str = "UTC",
        payload: Mapping[str, Any] | None = None,
        queue: str | None = None,
        catch_up: str = "latest",
        priority: int | None = None,
        max_attempts: int | None = None,
        timeout_seconds: int | None = None,
    ) -> Callable[[HandlerFunction], HandlerFunction]:
        """Register the decorated function as the handler of ``name``; it takes one argument, ``ctx``.

        With ``cron`` (five fields or ``@daily``, in ``timezone``), also a schedule of the same name: a
        ``name`` job per tick, with ``payload`` plus ``scheduled_for`` (the tick), on ``queue``; the other
        arguments are those of ``pgrelay.schedule()``. A worker declares it at start; a schedule of that
        name made or changed in SQL is left as it is.
        """

        def register(function: HandlerFunction) -> HandlerFunction:
            self.add(name, function, timeout=timeout, cron=cron, timezone=timezone, payload=payload, queue=queue,
                     catch_up=catch_up, priority=priority, max_attempts=max_attempts, timeout_seconds=timeout_seconds)
            return function

        return register

    def add(
        self,
        name: str,
        function: HandlerFunction,
        *,
        timeout: float | None = None,
        cron: str | None = None,
        timezone: str = "UTC",
        payload: Mapping[str, Any] | None = None,
        queue: str | None = None,
        catch_up: str = "latest",
        priority: int | None = None,
        max_attempts: int | None = None,
        timeout_seconds: int | None = None,
    ) -> None:
        """Register ``function`` as the handler of ``name`` (and, with ``cron``, its schedule): see :meth:`task`."""
        # (what makes a valid task name, expression, time zone or payload is the database's rule: a worker
        # asks it at start, check_task_names and declare_schedule)
        if not isinstance(name, str) or not name:
            raise ValueError(f"a task name must be a non-empty string, not {name!r}")
        if name in self._handlers:
            raise ValueError(f"task {name!r} already has a handler ({self._handlers[name].function!r})")
        if timeout is not None and timeout <= 0:
            raise ValueError(f"timeout must be positive seconds, not {timeout!r}")
        if not callable(function):
            raise TypeError(f"the handler of {name!r} must be callable")
        schedule = None
        if cron is not None:
            # a copy: the caller's dict changing later does not change the declaration (anything else, e.g. a
            # list, is passed on for the database to refuse: a payload must be a JSON object)
            payload = dict(payload) if isinstance(payload, Mapping) else payload
            schedule = ScheduleDeclaration(name, cron, name, payload, queue, timezone, catch_up, priority,
                                           max_attempts, timeout_seconds)
        elif (payload, queue, timezone, catch_up, priority, max_attempts, timeout_seconds) != (
                None, None, "UTC", "latest", None, None, None):
            # e.g. queue="mail" read as "this handler's queue": these only describe a schedule's jobs
            raise ValueError(f"task {name!r}: payload, queue, timezone, catch_up, priority, max_attempts and "
                             "timeout_seconds describe the jobs of a schedule; give cron too")
        self._handlers[name] = Handler(name, function, timeout, inspect.iscoroutinefunction(function))
        if schedule is not None:
            self._schedules[name] = schedule

    def include_router(self, other: Router, *, prefix: str = "") -> None:
        """Add every handler of ``other`` and its schedule, their names prefixed (``prefix="billing."``)."""
        for handler in other._handlers.values():
            declared = other._schedules.get(handler.task)
            schedule = {} if declared is None else {
                "cron": declared.cron, "timezone": declared.timezone, "payload": declared.payload,
                "queue": declared.queue, "catch_up": declared.catch_up, "priority": declared.priority,
                "max_attempts": declared.max_attempts, "timeout_seconds": declared.timeout_seconds,
            }
            self.add(prefix + handler.task, handler.function, timeout=handler.timeout, **schedule)

    def get(self, task: str) -> Handler | None:
        return self._handlers.get(task)

    @property
    def tasks(self) -> list[str]:
        """The registered task names, sorted."""
        return sorted(self._handlers)

    @property
    def schedules(self) -> list[ScheduleDeclaration]:
        """The schedules declared next to the handlers, by name."""
        return [self._schedules[name] for name in sorted(self._schedules)]

    def __contains__(self, task: object) -> bool:
        return task in self._handlers

    def __len__(self) -> int:
        return len(self._handlers)
