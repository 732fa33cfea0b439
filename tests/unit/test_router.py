"""Handlers are registered by name; nothing else can run."""

from __future__ import annotations

import pytest

import pgrelay


def test_task_registers_by_name_with_timeout_and_kind_of_call():
    router = pgrelay.Router()

    @router.task("orders.recalc", timeout=30)
    async def recalc(ctx):
        return None

    @router.task("orders.plain")
    def plain(ctx):
        return None

    assert router.tasks == ["orders.plain", "orders.recalc"]
    assert router.get("orders.recalc").timeout == 30 and router.get("orders.recalc").is_async
    assert not router.get("orders.plain").is_async
    assert router.get("missing") is None and "missing" not in router


def test_include_router_prefixes_names():
    billing = pgrelay.Router()
    billing.add("invoice", lambda ctx: None, timeout=5)
    app = pgrelay.Router()
    app.include_router(billing, prefix="billing.")
    assert app.tasks == ["billing.invoice"] and app.get("billing.invoice").timeout == 5


@pytest.mark.parametrize("name", ["", None, 7])
def test_a_name_that_is_no_string_is_refused_at_once(name):
    # (whether a string is a valid task name is the database's rule, asked when a worker starts:
    # tests/integration/test_worker_failures.py)
    with pytest.raises(ValueError, match="a task name must be a non-empty string"):
        pgrelay.Router().add(name, lambda ctx: None)


def test_duplicates_and_bad_timeouts_are_refused():
    router = pgrelay.Router()
    router.add("a", lambda ctx: None)
    with pytest.raises(ValueError, match="already has a handler"):
        router.add("a", lambda ctx: None)
    with pytest.raises(ValueError, match="timeout"):
        router.add("b", lambda ctx: None, timeout=0)


def test_retry_after_carries_seconds():
    assert pgrelay.RetryAfter(2.5).seconds == 2.5


def test_public_names_are_pinned():
    assert sorted(pgrelay.__all__) == sorted([
        "Attempt", "ClaimedJob", "Conflict", "InvalidArgument", "InvalidBulkJob", "InvalidHttpRequest", "InvalidUrl", "Job",
        "JobContext", "JobNotFound", "LeaseLost", "MigrationResult", "Permanent", "PgRelayError", "QueueSettings", "QueueStats",
        "RetryAfter", "Router", "SchemaError", "SqlError", "UnreadableJson", "UnsupportedIsolation", "Worker", "__version__", "client",
        "enqueue", "enqueue_bulk", "enqueue_http", "enqueue_many", "get_job", "installed_version", "migrate", "schema_version",
    ])
    for name in pgrelay.__all__:
        assert hasattr(pgrelay, name)
