"""The reliability suite: real processes against a real PostgreSQL, invariants read from the database.

Every test here is marked ``reliability``. ``make test`` runs each at its short size; ``make
test-reliability`` sets PGRELAY_RELIABILITY=full and runs the full sizes the issue names.
"""

from __future__ import annotations

import os

import pytest

FULL = os.environ.get("PGRELAY_RELIABILITY") == "full"


def size(short: int, full: int) -> int:
    """The short size in make test, the full one in make test-reliability."""
    return full if FULL else short


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = os.path.dirname(__file__)
    for item in items:
        if str(item.fspath).startswith(here):
            item.add_marker(pytest.mark.reliability)
