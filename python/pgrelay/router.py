"""Handlers by name: ``router = Router()``, ``@router.task("orders.recalc", timeout=30)``.

Only registered names run: a job row never names code to import.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias

if TYPE_CHECKING:
    from .context import JobContext

__all__ = ["Handler", "Permanent", "RetryAfter", "Router"]

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


class Router:
    """A registry of handlers by task name."""

    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}

    def task(self, name: str, *, timeout: float | None = None) -> Callable[[HandlerFunction], HandlerFunction]:
        """Register the decorated function as the handler of ``name``; it takes one argument, ``ctx``."""

        def register(function: HandlerFunction) -> HandlerFunction:
            self.add(name, function, timeout=timeout)
            return function

        return register

    def add(self, name: str, function: HandlerFunction, *, timeout: float | None = None) -> None:
        # (what makes a valid task name is the database's rule: a worker asks it at start, check_task_names)
        if not isinstance(name, str) or not name:
            raise ValueError(f"a task name must be a non-empty string, not {name!r}")
        if name in self._handlers:
            raise ValueError(f"task {name!r} already has a handler ({self._handlers[name].function!r})")
        if timeout is not None and timeout <= 0:
            raise ValueError(f"timeout must be positive seconds, not {timeout!r}")
        if not callable(function):
            raise TypeError(f"the handler of {name!r} must be callable")
        self._handlers[name] = Handler(name, function, timeout, inspect.iscoroutinefunction(function))

    def include_router(self, other: Router, *, prefix: str = "") -> None:
        """Add every handler of ``other``, its task names prefixed (``prefix="billing."``)."""
        for handler in other._handlers.values():
            self.add(prefix + handler.task, handler.function, timeout=handler.timeout)

    def get(self, task: str) -> Handler | None:
        return self._handlers.get(task)

    @property
    def tasks(self) -> list[str]:
        """The registered task names, sorted."""
        return sorted(self._handlers)

    def __contains__(self, task: object) -> bool:
        return task in self._handlers

    def __len__(self) -> int:
        return len(self._handlers)
