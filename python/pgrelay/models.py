"""Typed results of the SQL API: small frozen dataclasses built from the rows pgrelay returns."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

__all__ = [
    "Attempt",
    "ClaimedJob",
    "ExpiredLease",
    "Job",
    "Maintenance",
    "QueueSettings",
    "QueueStats",
    "RecentFailure",
    "Schedule",
    "UnreadableJson",
    "WorkerInfo",
]

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class UnreadableJson:
    """A stored JSON value Python's json module cannot read: PostgreSQL keeps integers of any length and
    nesting of any depth, Python refuses integers over 4,300 digits and nesting near its recursion limit.
    ``text`` is the value as the database returned it (valid JSON); the worker dead-letters a job whose
    payload is one of these, naming ``reason``."""

    text: str
    reason: str

    def __repr__(self) -> str:
        return f"UnreadableJson({len(self.text)} characters: {self.reason})"


def _json(value: Any) -> Any:
    """jsonb arrives as text (the client casts it, so a caller's own codecs never interfere)."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except (ValueError, RecursionError) as exc:
        return UnreadableJson(value, f"{type(exc).__name__}: {exc}")


def _by_name(cls: type[_T], row: Any, **converted: Any) -> _T:
    """Build ``cls`` from a row's columns by name. A column the class does not know is ignored (views and
    types only grow at the end, so a newer schema never breaks this package); a field with a default may be
    missing from the row. Tests pin each class's fields to the SQL object's columns."""
    values = {**dict(row), **converted}
    return cls(**{name: values[name] for name in cls.__dataclass_fields__ if name in values})  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class ClaimedJob:
    """A job leased by ``consume``: ack or nack it with ``id`` and ``attempt``."""

    id: int
    queue: str
    task: str
    kind: str
    payload: Any
    attempt: int
    max_attempts: int
    lease_expires_at: datetime
    timeout_seconds: int | None
    trace_id: str | None
    priority: int
    run_at: datetime
    created_at: datetime
    idempotency_key: str | None
    # a replay's: the id its deliveries carry, that of the first job of its replay chain (its idempotency
    # key, else its id); None when the job is not a replay
    delivery_id: str | None = None

    @classmethod
    def from_row(cls, row: Any) -> ClaimedJob:
        # by position: pgrelay.claimed_job's columns are this class's fields in order (a test pins it);
        # the worker builds one of these per job, so it stays cheap
        return cls(*row[:4], _json(row[4]), *row[5:])


@dataclass(frozen=True, slots=True)
class Job:
    """A job wherever it is, as ``get_job`` returns it."""

    id: int
    queue: str
    task: str
    kind: str
    status: str
    priority: int
    run_at: datetime
    attempt: int
    max_attempts: int
    timeout_seconds: int | None
    payload: Any
    idempotency_key: str | None
    dedupe_key: str | None
    trace_id: str | None
    replayed_from: int | None
    last_error: str | None
    result: Any
    leased_by: str | None
    lease_expires_at: datetime | None
    created_at: datetime
    finished_at: datetime | None
    enqueued_by: str | None = None  # the role that enqueued it (None before pgrelay 0.3.0)

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> Job:
        values = {name: document.get(name) for name in cls.__dataclass_fields__}
        for name in ("run_at", "lease_expires_at", "created_at", "finished_at"):
            if values[name] is not None:
                values[name] = datetime.fromisoformat(values[name])
        return cls(**values)

    @classmethod
    def from_row(cls, row: Any) -> Job:
        """A row of the ``jobs`` view (payload and result as text); max_attempts None: the queue's setting."""
        return _by_name(cls, row, payload=_json(row["payload"]), result=_json(row["result"]))


@dataclass(frozen=True, slots=True)
class Attempt:
    """One attempt of a job; ``outcome`` is ``running`` for the current lease."""

    job_id: int
    attempt: int
    worker: str | None
    started_at: datetime | None
    finished_at: datetime | None
    outcome: str
    error: str | None
    details: Any

    @classmethod
    def from_row(cls, row: Any) -> Attempt:
        values = dict(row)
        values["details"] = _json(values["details"])
        return cls(**values)


@dataclass(frozen=True, slots=True)
class QueueSettings:
    """A queue's effective settings; ``concurrency`` None means unlimited."""

    queue: str
    paused: bool
    concurrency: int | None
    max_attempts: int
    lease_seconds: int
    backoff_base_seconds: float
    backoff_max_seconds: float
    retention_succeeded_days: int | None = None
    retention_dead_letter_days: int | None = None

    @classmethod
    def from_row(cls, row: Any) -> QueueSettings:
        return _by_name(cls, row)


@dataclass(frozen=True, slots=True)
class QueueStats:
    """A row of the ``queue_stats`` view."""

    queue: str
    pending: int
    scheduled: int
    leased: int
    succeeded: int
    dead_letter: int
    cancelled: int
    oldest_pending_age: timedelta | None
    paused: bool
    concurrency: int | None
    succeeded_last_minute: int | None = None
    succeeded_last_hour: int | None = None
    dead_letter_last_hour: int | None = None
    max_attempts: int | None = None
    lease_seconds: int | None = None
    retention_succeeded_days: int | None = None
    retention_dead_letter_days: int | None = None

    @classmethod
    def from_row(cls, row: Any) -> QueueStats:
        return _by_name(cls, row)


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """A row of the ``workers`` view: a worker by its last heartbeat; ``status`` is alive or stale."""

    worker: str
    host: str | None
    pid: int | None
    queues: list[str] | None
    started_at: datetime
    last_seen: datetime
    leased: int
    status: str | None = None
    lease_seconds: int | None = None
    waiting: bool = False   # found nothing to claim and waits for a NOTIFY (pgrelay.idle)

    @classmethod
    def from_row(cls, row: Any) -> WorkerInfo:
        return _by_name(cls, row)


@dataclass(frozen=True, slots=True)
class ExpiredLease:
    """A row of the ``expired_leases`` view: a lease that ran out and that recover() has not handled yet."""

    id: int
    queue: str
    task: str
    attempt: int
    leased_by: str
    leased_at: datetime
    lease_expires_at: datetime
    expired_for: timedelta

    @classmethod
    def from_row(cls, row: Any) -> ExpiredLease:
        return _by_name(cls, row)


@dataclass(frozen=True, slots=True)
class RecentFailure:
    """A row of the ``recent_failures`` view: failures of one task of a queue, with the last error."""

    queue: str
    task: str
    failures: int
    last_error: str | None
    last_failed_at: datetime | None

    @classmethod
    def from_row(cls, row: Any) -> RecentFailure:
        return _by_name(cls, row)


@dataclass(frozen=True, slots=True)
class Schedule:
    """A row of the ``schedules`` view: a periodic job's expression, what each tick enqueues, and its latest
    tick and job. ``next_run`` None: the expression runs no more; ``last_job_status`` None: no job yet, or it
    was purged; ``declared_by``: ``sql`` (``schedule()``) or ``worker`` (declared next to a handler)."""

    name: str
    cron: str
    timezone: str
    task: str
    queue: str
    catch_up: str
    paused: bool
    last_tick: datetime | None
    next_run: datetime | None
    last_job_id: int | None
    last_job_status: str | None
    payload: Any
    priority: int | None
    max_attempts: int | None
    timeout_seconds: int | None
    declared_by: str
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_row(cls, row: Any) -> Schedule:
        """A row of the view with payload as text."""
        return _by_name(cls, row, payload=_json(row["payload"]))


@dataclass(frozen=True, slots=True)
class Maintenance:
    """What ``maintain()`` did: leases recovered, finished jobs purged, jobs the schedules' ticks made."""

    recovered: int
    purged: int
    ticked: int = 0  # (0 before pgrelay 0.4.0, which had no schedules)

    @classmethod
    def from_row(cls, row: Any) -> Maintenance:
        return _by_name(cls, row)
