"""Typed results of the SQL API: small frozen dataclasses built from the rows pgrelay returns."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

__all__ = ["Attempt", "ClaimedJob", "Job", "QueueSettings", "QueueStats"]


def _json(value: Any) -> Any:
    """jsonb arrives as text (the client casts it, so a caller's own codecs never interfere)."""
    return json.loads(value) if isinstance(value, str) else value


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

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> Job:
        values = {name: document.get(name) for name in cls.__dataclass_fields__}
        for name in ("run_at", "lease_expires_at", "created_at", "finished_at"):
            if values[name] is not None:
                values[name] = datetime.fromisoformat(values[name])
        return cls(**values)


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

    @classmethod
    def from_row(cls, row: Any) -> QueueSettings:
        return cls(**dict(row))


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
    oldest_pending_age: Any
    paused: bool
    concurrency: int | None

    @classmethod
    def from_row(cls, row: Any) -> QueueStats:
        return cls(**dict(row))
