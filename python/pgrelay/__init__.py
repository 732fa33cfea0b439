"""pgrelay: a PostgreSQL job queue and transactional outbox whose semantics live in PL/pgSQL.

The queue is the SQL API in the ``pgrelay`` schema (``sql/pgrelay.sql``). This package installs it
(``jobs-migrate``) and wraps it; it holds no queue logic of its own.
"""

from . import client
from ._version import __version__
from .client import enqueue, enqueue_bulk, enqueue_http, enqueue_many, get_job
from .context import JobContext, LeaseLost
from .errors import (
    Conflict,
    InvalidArgument,
    InvalidBulkJob,
    InvalidHttpRequest,
    InvalidUrl,
    JobNotFound,
    PgRelayError,
    SchemaError,
    SqlError,
    UnsupportedIsolation,
)
from .models import Attempt, ClaimedJob, Job, QueueSettings, QueueStats, UnreadableJson
from .router import Permanent, RetryAfter, Router
from .schema import MigrationResult, installed_version, migrate, schema_version
from .worker import Worker

__all__ = [
    "Attempt",
    "ClaimedJob",
    "Conflict",
    "InvalidArgument",
    "InvalidBulkJob",
    "InvalidHttpRequest",
    "InvalidUrl",
    "Job",
    "JobContext",
    "JobNotFound",
    "LeaseLost",
    "MigrationResult",
    "Permanent",
    "PgRelayError",
    "QueueSettings",
    "QueueStats",
    "RetryAfter",
    "Router",
    "SchemaError",
    "SqlError",
    "UnreadableJson",
    "UnsupportedIsolation",
    "Worker",
    "__version__",
    "client",
    "enqueue",
    "enqueue_bulk",
    "enqueue_http",
    "enqueue_many",
    "get_job",
    "installed_version",
    "migrate",
    "schema_version",
]
