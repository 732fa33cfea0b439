"""What a test does when a tool it needs is missing: skip here, fail in CI.

    from tests.harness.tools import missing
    if pgbouncer_binary() is None:
        missing("PgBouncer is not installed (apt-get install pgbouncer)")

`make test` installs every tool the README promises (PgBouncer, pg_cron, plpgsql_check, PostgREST, the
extension files; see the Makefile's test-extras). On a developer's machine a missing one skips the
tests that need it, saying why. Where the environment variable ``CI`` is set (any value but empty,
``0``, ``false`` or ``no``), the same thing fails the test: a CI run that silently skipped PgBouncer
would pass without having tested what the README promises.
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def in_ci() -> bool:
    """Is this a CI run (``CI`` set, as GitHub Actions, GitLab and .ci/run's callers set it)?"""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def missing(reason: str) -> NoReturn:
    """A tool this test needs is missing: skip with ``reason`` locally, fail with it under CI."""
    if in_ci():
        pytest.fail(f"{reason}; CI is set, where `make test` must have installed it, so this is a failure, "
                    f"not a skip", pytrace=False)
    pytest.skip(reason)
