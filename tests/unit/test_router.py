"""Handlers are registered by name; nothing else can run. A handler may declare a schedule of its name."""

from __future__ import annotations

import dataclasses

import pytest

import pgrelay
from pgrelay.router import ScheduleDeclaration


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


def test_a_task_with_cron_declares_a_schedule_of_its_name():
    router = pgrelay.Router()
    payload = {"format": "pdf"}

    @router.task("reports.daily", cron="0 6 * * *", timezone="Europe/Berlin", payload=payload, queue="reports",
                 catch_up="all", priority=5, max_attempts=3, timeout_seconds=60, timeout=30)
    async def daily(ctx):
        return None

    router.add("reports.hourly", lambda ctx: None, cron="@hourly")
    router.add("orders.confirm", lambda ctx: None)
    payload["format"] = "csv"  # the declaration kept a copy

    assert router.schedules == [
        ScheduleDeclaration("reports.daily", "0 6 * * *", "reports.daily", {"format": "pdf"}, "reports",
                            "Europe/Berlin", "all", 5, 3, 60),
        ScheduleDeclaration("reports.hourly", "@hourly", "reports.hourly"),
    ]
    assert router.get("reports.daily").timeout == 30 and router.tasks == ["orders.confirm", "reports.daily",
                                                                          "reports.hourly"]
    # the defaults are those of pgrelay.schedule(): None leaves the SQL's
    assert (router.schedules[1].payload, router.schedules[1].queue, router.schedules[1].timezone,
            router.schedules[1].catch_up) == (None, None, "UTC", "latest")
    with pytest.raises(dataclasses.FrozenInstanceError):
        router.schedules[0].cron = "* * * * *"


def test_a_declaration_is_not_checked_in_python():
    # what makes a valid expression, time zone or payload is the database's rule, asked when a worker starts
    # (tests/integration/test_worker_schedules.py)
    router = pgrelay.Router()
    router.add("odd", lambda ctx: None, cron="not cron", timezone="Mars/Olympus", catch_up="sometimes", payload=[1])
    assert router.schedules == [ScheduleDeclaration("odd", "not cron", "odd", [1], None, "Mars/Olympus", "sometimes")]


def test_schedule_options_without_cron_are_refused():
    # queue= reads like "this handler's queue"; it only says where a schedule's jobs go
    router = pgrelay.Router()
    for options in ({"queue": "mail"}, {"timezone": "Europe/Berlin"}, {"payload": {}}, {"catch_up": "all"},
                    {"priority": 1}, {"max_attempts": 2}, {"timeout_seconds": 3}):
        with pytest.raises(ValueError, match="give cron too"):
            router.add("a", lambda ctx: None, **options)
    assert router.tasks == [] and router.schedules == []


def test_include_router_carries_schedules_over_with_the_prefix():
    reports = pgrelay.Router()
    reports.add("daily", lambda ctx: None, cron="0 6 * * *", timezone="Europe/Berlin", queue="reports", timeout=5)
    reports.add("adhoc", lambda ctx: None)
    app = pgrelay.Router()
    app.include_router(reports, prefix="reports.")
    assert app.tasks == ["reports.adhoc", "reports.daily"] and app.get("reports.daily").timeout == 5
    assert app.schedules == [ScheduleDeclaration("reports.daily", "0 6 * * *", "reports.daily", None, "reports",
                                                 "Europe/Berlin")]
    assert reports.schedules[0].name == "daily"  # the included router is unchanged


def test_a_duplicate_is_refused_with_its_schedule_and_changes_nothing():
    router = pgrelay.Router()
    router.add("reports.daily", lambda ctx: None, cron="0 6 * * *")
    with pytest.raises(ValueError, match="already has a handler"):
        router.add("reports.daily", lambda ctx: None, cron="0 7 * * *")
    other = pgrelay.Router()
    other.add("daily", lambda ctx: None, cron="0 8 * * *")
    with pytest.raises(ValueError, match="already has a handler"):
        router.include_router(other, prefix="reports.")
    assert [s.cron for s in router.schedules] == ["0 6 * * *"]
    with pytest.raises(ValueError, match="timeout"):
        router.add("b", lambda ctx: None, timeout=0, cron="* * * * *")
    assert [s.name for s in router.schedules] == ["reports.daily"]


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
