"""pgrelay: a PostgreSQL job queue and transactional outbox whose semantics live in PL/pgSQL.

The queue is the SQL API in the ``pgrelay`` schema (``sql/pgrelay.sql``). This package installs it
(``jobs-migrate``) and wraps it; it holds no queue logic of its own.
"""

from ._version import __version__
from .errors import (
    InvalidArgument,
    InvalidBulkJob,
    InvalidHttpRequest,
    InvalidUrl,
    PgRelayError,
    SchemaError,
    SqlError,
    UnsupportedIsolation,
)
from .schema import MigrationResult, installed_version, migrate, schema_version

__all__ = [
    "InvalidArgument",
    "InvalidBulkJob",
    "InvalidHttpRequest",
    "InvalidUrl",
    "MigrationResult",
    "PgRelayError",
    "SchemaError",
    "SqlError",
    "UnsupportedIsolation",
    "__version__",
    "installed_version",
    "migrate",
    "schema_version",
]
