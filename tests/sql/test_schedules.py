"""Schedules: schedule(), tick() and the rest. Time is injected (tick(now => ...)); nothing sleeps.

A schedule's first tick is the first after its creation; tests read it (next_run) and tick at or after it.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from psycopg.types.json import Jsonb

from tests.sql.factory import (
    call,
    connect_in_transaction,
    consume,
    dicts,
    in_thread,
    raises_sqlstate,
    scalar,
)

MINUTE = timedelta(minutes=1)


def schedule(db, name: str = "every.minute", cron: str = "* * * * *", task: str = "reports.build", **args) -> datetime:
    return call(db, "schedule", name=name, cron=cron, task=task, **args)


def row(db, name: str = "every.minute") -> dict:
    [found] = dicts(db, "SELECT * FROM pgrelay.schedules WHERE name = %s", (name,))
    return found


def tick(db, now: datetime) -> int:
    return call(db, "tick", now=now)


def ticks_enqueued(db, task: str = "reports.build") -> list[datetime]:
    """The scheduled_for of every job of this task, in order (duplicates kept)."""
    return [r[0] for r in db.execute(
        "SELECT (payload->>'scheduled_for')::timestamptz FROM pgrelay.jobs WHERE task = %s ORDER BY 1", (task,))]


def test_a_new_schedule_runs_from_its_first_tick_after_now_never_the_past(db):
    first = schedule(db)

    assert first > scalar(db, "SELECT now()") and first.second == 0 and first - scalar(db, "SELECT now()") <= MINUTE
    assert tick(db, first - timedelta(seconds=1)) == 0
    assert ticks_enqueued(db) == []


def test_each_tick_becomes_one_job_that_knows_its_tick(db):
    first = schedule(db, payload={"report": "sales"}, queue="reports", priority=5)

    assert tick(db, first) == 1
    assert tick(db, first) == 0
    assert tick(db, first + MINUTE) == 1

    [job] = dicts(db, "SELECT * FROM pgrelay.jobs WHERE task = 'reports.build' ORDER BY id LIMIT 1")
    assert job["payload"] == {"report": "sales", "scheduled_for": job["payload"]["scheduled_for"]}
    assert datetime.fromisoformat(job["payload"]["scheduled_for"]) == first == job["run_at"]
    assert (job["queue"], job["priority"]) == ("reports", 5)
    assert job["idempotency_key"] == f"schedule:every.minute@{first.astimezone(UTC):%Y-%m-%dT%H:%M:%S}Z"
    state = row(db)
    assert (state["last_tick"], state["next_run"], state["last_job_status"]) == (first + MINUTE, first + 2 * MINUTE, "pending")


def test_catch_up_all_enqueues_every_missed_tick_a_thousand_a_call(db):
    first = schedule(db, catch_up="all")

    assert tick(db, first + 10 * MINUTE + timedelta(seconds=30)) == 11
    assert ticks_enqueued(db) == [first + i * MINUTE for i in range(11)]

    later = first + 2000 * MINUTE
    assert [tick(db, later), tick(db, later), tick(db, later), tick(db, later)] == [1000, 990, 0, 0]
    assert ticks_enqueued(db) == [first + i * MINUTE for i in range(2001)]


def test_catch_up_latest_enqueues_only_the_newest_missed_tick(db):
    first = schedule(db)   # latest is the default

    assert tick(db, first + 10 * MINUTE + timedelta(seconds=30)) == 1

    assert ticks_enqueued(db) == [first + 10 * MINUTE]
    assert row(db)["next_run"] == first + 11 * MINUTE


def test_catch_up_none_enqueues_the_newest_tick_only_while_it_is_a_minute_old_at_most(db):
    first = schedule(db, cron="*/5 * * * *", catch_up="none")

    assert tick(db, first + 10 * MINUTE + timedelta(seconds=60)) == 1
    assert tick(db, first + 20 * MINUTE + timedelta(seconds=61)) == 0

    assert ticks_enqueued(db) == [first + 10 * MINUTE]
    assert row(db)["next_run"] == first + 25 * MINUTE


@pytest.mark.parametrize("catch_up", ["latest", "none"])
def test_after_months_without_ticks_latest_and_none_cost_one_call(db, catch_up):
    first = schedule(db, name="hourly", cron="@hourly", catch_up=catch_up)
    months_later = first + timedelta(days=200, minutes=30)

    assert tick(db, months_later) == (1 if catch_up == "latest" else 0)
    assert row(db, "hourly")["next_run"] == first + timedelta(days=200, hours=1)


def test_a_paused_schedule_enqueues_nothing_and_resumes_from_its_next_tick_after_now(db):
    first = schedule(db, cron="@yearly", catch_up="all")
    assert call(db, "pause_schedule", name="every.minute") is True

    assert tick(db, first + timedelta(days=800)) == 0
    assert row(db)["paused"] is True
    assert call(db, "resume_schedule", name="every.minute") is True

    assert row(db)["next_run"] == first   # the next tick after now is still the first
    assert call(db, "pause_schedule", name="nope") is False and call(db, "resume_schedule", name="nope") is False


def test_resume_does_not_make_up_the_ticks_of_the_pause(db):
    first = schedule(db, catch_up="all")
    assert tick(db, first) == 1
    call(db, "pause_schedule", name="every.minute")
    db.execute("UPDATE pgrelay._schedules SET last_tick = now() + interval '1 hour'")  # white box: an hour of pause

    call(db, "resume_schedule", name="every.minute")

    assert row(db)["next_run"] > scalar(db, "SELECT now() + interval '1 hour'")


def test_changing_the_expression_never_enqueues_a_tick_twice(db):
    first = schedule(db, name="r", cron="*/2 * * * *")
    assert tick(db, first) == 1

    nxt = schedule(db, name="r", cron="* * * * *")   # the tick just made is due again under the new one

    assert nxt == first + MINUTE
    assert tick(db, first) == 0
    assert tick(db, first + MINUTE) == 1
    assert ticks_enqueued(db) == [first, first + MINUTE]


def test_a_change_that_keeps_the_expression_keeps_the_next_run(db):
    first = schedule(db)
    assert schedule(db, payload={"v": 2}, queue="other") == first
    assert schedule(db, payload={"v": 2}, queue="other") == first   # again: no change at all
    assert (row(db)["queue"], row(db)["payload"]) == ("other", {"v": 2})


def test_sixteen_sessions_ticking_at_the_same_instants_make_exactly_one_job_per_tick(db, connect):
    first = schedule(db, catch_up="all")
    schedule(db, name="every.two", cron="*/2 * * * *", task="reports.other", catch_up="all")
    sessions = [connect() for _ in range(16)]
    instants = [first + i * MINUTE + timedelta(seconds=s) for i in range(12) for s in (0, 20)]
    made = [0] * 16
    barrier = threading.Barrier(16)

    def run(n: int) -> None:
        for instant in instants:
            barrier.wait(timeout=30)
            made[n] += sessions[n].execute("SELECT pgrelay.tick(%s)", (instant,)).fetchone()[0]

    threads = [threading.Thread(target=run, args=(n,)) for n in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)

    assert ticks_enqueued(db) == [first + i * MINUTE for i in range(12)]
    other = ticks_enqueued(db, "reports.other")
    assert other == sorted(set(other)) and len(other) >= 5
    assert sum(made) == 12 + len(other)


def test_a_tick_whose_session_dies_before_commit_is_made_once_by_the_next(db, connect):
    first = schedule(db, catch_up="all")
    dying = connect_in_transaction(connect)
    assert dying.execute("SELECT pgrelay.tick(%s)", (first + MINUTE,)).fetchone()[0] == 2
    pid = dying.info.backend_pid

    assert tick(db, first + MINUTE) == 0   # its ticks are locked, not yet made
    db.execute("SELECT pg_terminate_backend(%s)", (pid,))
    in_thread(lambda: wait_gone(db, pid))

    assert tick(db, first + 2 * MINUTE) == 3
    assert ticks_enqueued(db) == [first, first + MINUTE, first + 2 * MINUTE]


def wait_gone(db, pid: int) -> None:
    while scalar(db, "SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,)):
        pass


def test_unschedule_while_a_tick_runs_waits_for_it_and_its_job_stays(db, connect):
    first = schedule(db)
    ticking = connect_in_transaction(connect)
    assert ticking.execute("SELECT pgrelay.tick(%s)", (first,)).fetchone()[0] == 1
    other = connect()
    removing = threading.Thread(target=lambda: other.execute("SELECT pgrelay.unschedule('every.minute')"))
    removing.start()
    removing.join(0.5)
    assert removing.is_alive()   # it waits for the tick's transaction

    ticking.commit()
    removing.join(10)

    assert ticks_enqueued(db) == [first]
    assert dicts(db, "SELECT * FROM pgrelay.schedules") == []
    assert call(db, "unschedule", name="every.minute") is False


def test_run_schedule_now_is_one_extra_run_outside_the_ticks(db):
    first = schedule(db)

    job_id = call(db, "run_schedule_now", name="every.minute")

    assert row(db)["last_job_id"] == job_id and row(db)["next_run"] == first
    assert tick(db, first) == 1
    with raises_sqlstate("PT404"):
        call(db, "run_schedule_now", name="nope")


def test_a_worker_declaration_never_changes_a_schedule_made_in_sql(db):
    first = schedule(db)

    assert call(db, "declare_schedule", name="every.minute", cron="0 6 * * *", task="other") is None
    assert (row(db)["cron"], row(db)["declared_by"]) == ("* * * * *", "sql")

    assert call(db, "declare_schedule", name="declared", cron="* * * * *", task="t") == first
    assert call(db, "declare_schedule", name="declared", cron="*/5 * * * *", task="t") is not None   # the last wins
    assert row(db, "declared")["cron"] == "*/5 * * * *"
    schedule(db, name="declared", cron="* * * * *", task="t")   # SQL takes it over
    assert call(db, "declare_schedule", name="declared", cron="*/5 * * * *", task="t") is None
    assert (row(db, "declared")["cron"], row(db, "declared")["declared_by"]) == ("* * * * *", "sql")


def test_maintain_ticks_the_schedules(db):
    schedule(db)
    db.execute("UPDATE pgrelay._schedules SET next_run = now() - interval '1 second'")  # white box: due now

    [done] = dicts(db, "SELECT * FROM pgrelay.maintain()")

    assert done["ticked"] == 1


@pytest.mark.parametrize(("args", "message"), [
    ({"cron": "61 * * * *"}, "61"),
    ({"cron": "* * * *"}, "5 fields"),
    ({"cron": None}, "cron"),
    ({"timezone": "Mars/Olympus"}, "Mars/Olympus"),
    ({"catch_up": "some"}, "catch_up must be all, latest or none"),
    ({"payload": Jsonb([1])}, "payload must be a JSON object"),
    ({"payload": {"scheduled_for": 1}}, "scheduled_for"),
    ({"name": "has space"}, "schedule name"),
    ({"task": "has space"}, "task"),
    ({"max_attempts": 0}, "max_attempts"),
])
def test_bad_arguments_are_refused_with_what_to_fix_and_change_nothing(db, args, message):
    schedule(db)
    before = dicts(db, "SELECT * FROM pgrelay.schedules")

    with raises_sqlstate("PR001") as info:
        schedule(db, **{"name": "every.minute", **args})

    assert message in str(info.value)
    assert dicts(db, "SELECT * FROM pgrelay.schedules") == before


def test_tick_refuses_an_infinite_now(db):
    with raises_sqlstate("PR001"):
        tick(db, "infinity")


def test_jobs_from_schedules_are_ordinary_jobs_and_the_view_shows_their_status(db):
    schedule(db)
    db.execute("UPDATE pgrelay._schedules SET next_run = now() - interval '1 second'")  # white box: due now
    assert call(db, "tick") == 1
    job_id = row(db)["last_job_id"]
    assert [r["id"] for r in consume(db, batch=10)] == [job_id]
    assert call(db, "ack", id=job_id, attempt=1) is True

    assert row(db)["last_job_status"] == "succeeded"


def test_a_rolled_back_schedule_leaves_nothing(db):
    with pytest.raises(psycopg.errors.RaiseException), db.transaction():
        schedule(db)
        db.execute("DO $$ BEGIN RAISE EXCEPTION 'rollback'; END $$")
    assert dicts(db, "SELECT * FROM pgrelay.schedules") == []
