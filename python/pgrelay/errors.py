"""Errors raised by pgrelay.

    PgRelayError
    ├── SchemaError                  the database holds no pgrelay, a newer one, or something else
    └── SqlError                     raised by a pgrelay SQL function; ``sqlstate`` says which
        ├── InvalidArgument          PR001
        ├── InvalidBulkJob           PR002
        ├── InvalidUrl               PR003
        ├── InvalidHttpRequest       PR004
        ├── UnsupportedIsolation     PR005
        ├── JobNotFound              PT404  (PostgREST answers HTTP 404)
        └── Conflict                 PT409  the job's state does not allow this (HTTP 409)

The SQLSTATEs are declared at the top of sql/pgrelay.sql; errors are matched by SQLSTATE, never by
message text.
"""

from __future__ import annotations

__all__ = [
    "Conflict",
    "InvalidArgument",
    "InvalidBulkJob",
    "InvalidHttpRequest",
    "InvalidUrl",
    "JobNotFound",
    "PgRelayError",
    "SchemaError",
    "SqlError",
    "UnsupportedIsolation",
    "from_sqlstate",
]


class PgRelayError(Exception):
    """Base class of every error pgrelay raises."""


class SchemaError(PgRelayError):
    """The pgrelay schema is missing, newer than this package, or the schema name is taken."""


class SqlError(PgRelayError):
    """An error raised by a pgrelay SQL function."""

    sqlstate: str = ""

    def __init__(self, message: str, *, hint: str | None = None, sqlstate: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint or None
        if sqlstate is not None:
            self.sqlstate = sqlstate

    def __str__(self) -> str:
        return f"{self.message} (hint: {self.hint})" if self.hint else self.message


class InvalidArgument(SqlError):
    sqlstate = "PR001"


class InvalidBulkJob(SqlError):
    sqlstate = "PR002"


class InvalidUrl(SqlError):
    sqlstate = "PR003"


class InvalidHttpRequest(SqlError):
    sqlstate = "PR004"


class UnsupportedIsolation(SqlError):
    sqlstate = "PR005"


class JobNotFound(SqlError):
    """No job has this id (it never existed, or it was purged)."""

    sqlstate = "PT404"


class Conflict(SqlError):
    """The job is in a state that does not allow this (e.g. replaying a job that is still pending)."""

    sqlstate = "PT409"


_BY_SQLSTATE: dict[str, type[SqlError]] = {
    cls.sqlstate: cls
    for cls in (InvalidArgument, InvalidBulkJob, InvalidUrl, InvalidHttpRequest, UnsupportedIsolation, JobNotFound,
                Conflict)
}


def from_sqlstate(sqlstate: str, message: str, hint: str | None = None) -> SqlError | None:
    """The pgrelay exception for a SQLSTATE raised by a pgrelay function, or None for any other."""
    cls = _BY_SQLSTATE.get(sqlstate)
    return cls(message, hint=hint) if cls else None
