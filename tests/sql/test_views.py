"""What operators read: the views queue_stats, expired_leases, dead_letters, workers and jobs, and
the functions get_job and get_attempts."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.sql.factory import (
    STATES,
    attempts,
    call,
    consume,
    dicts,
    enqueue,
    expire,
    get_job,
    make_due,
    make_job,
    scalar,
)

# the status each factory state shows to operators
SHOWN_AS = {
    "pending": "pending",
    "scheduled": "pending",
    "leased": "leased",
    "expired": "leased",
    "succeeded": "succeeded",
    "retrying": "pending",
    "recovered": "pending",
    "dead_letter": "dead_letter",
    "cancelled": "cancelled",
}


def stats(db) -> dict[str, dict]:
    return {r["queue"]: r for r in dicts(db, "SELECT * FROM pgrelay.queue_stats")}


# ---------------------------------------------------------------------------------------------
# queue_stats
# ---------------------------------------------------------------------------------------------


def test_queue_stats_counts_each_state_per_queue(db):
    for _ in range(2):
        make_job(db, "pending", queue="mail")
    make_job(db, "scheduled", queue="mail")
    make_job(db, "retrying", queue="mail")
    for _ in range(2):
        make_job(db, "leased", queue="mail")
    make_job(db, "expired", queue="mail")
    for _ in range(3):
        make_job(db, "succeeded", queue="mail")
    make_job(db, "dead_letter", queue="mail")
    make_job(db, "pending", queue="sms")
    make_job(db, "succeeded", queue="sms")

    mail, sms = stats(db)["mail"], stats(db)["sms"]

    assert {k: mail[k] for k in ("pending", "scheduled", "leased", "succeeded", "dead_letter", "cancelled")} == {
        "pending": 2, "scheduled": 2, "leased": 3, "succeeded": 3, "dead_letter": 1, "cancelled": 0}
    assert {k: sms[k] for k in ("pending", "scheduled", "leased", "succeeded", "dead_letter", "cancelled")} == {
        "pending": 1, "scheduled": 0, "leased": 0, "succeeded": 1, "dead_letter": 0, "cancelled": 0}


def test_queue_stats_follows_a_job_through_its_states(db):
    make_job(db, "pending", queue="mail")
    assert (stats(db)["mail"]["pending"], stats(db)["mail"]["leased"]) == (1, 0)

    [row] = consume(db)
    assert (stats(db)["mail"]["pending"], stats(db)["mail"]["leased"]) == (0, 1)

    call(db, "ack", id=row["id"], attempt=row["attempt"])
    assert (stats(db)["mail"]["pending"], stats(db)["mail"]["leased"], stats(db)["mail"]["succeeded"]) == (0, 0, 1)


def test_queue_stats_shows_paused_and_concurrency(db):
    make_job(db, "pending", queue="mail")
    make_job(db, "pending", queue="sms")
    call(db, "pause", queue="mail")
    call(db, "configure_queue", queue="sms", concurrency=4)

    all_stats = stats(db)

    assert (all_stats["mail"]["paused"], all_stats["mail"]["concurrency"]) == (True, None)
    assert (all_stats["sms"]["paused"], all_stats["sms"]["concurrency"]) == (False, 4)


def test_queue_stats_lists_a_configured_queue_without_jobs(db):
    call(db, "configure_queue", queue="idle", concurrency=2)

    idle = stats(db)["idle"]

    assert (idle["pending"], idle["leased"], idle["succeeded"], idle["concurrency"]) == (0, 0, 0, 2)
    assert idle["oldest_pending_age"] is None


def test_queue_stats_lists_a_queue_whose_jobs_all_finished(db):
    make_job(db, "dead_letter", queue="old")

    assert stats(db)["old"]["dead_letter"] == 1
    assert stats(db)["old"]["pending"] == 0


def test_queue_stats_oldest_pending_age_is_that_of_the_oldest_due_job(db):
    enqueue(db, queue="mail", run_in=-120)
    enqueue(db, queue="mail", run_in=-10)
    enqueue(db, queue="mail", run_in=3600)

    age = stats(db)["mail"]["oldest_pending_age"]

    assert timedelta(seconds=120) <= age < timedelta(seconds=180)


def test_queue_stats_is_empty_without_queues(db):
    assert stats(db) == {}


# ---------------------------------------------------------------------------------------------
# expired_leases
# ---------------------------------------------------------------------------------------------


def test_expired_leases_lists_leases_that_ran_out(db):
    expired = make_job(db, "leased", queue="mail", worker="worker-x")
    expire(db, expired, ago_seconds=90)
    make_job(db, "leased")
    make_job(db, "pending")

    [row] = dicts(db, "SELECT * FROM pgrelay.expired_leases")

    assert (row["id"], row["queue"], row["task"], row["attempt"], row["leased_by"]) == (
        expired.id, "mail", expired.task, 1, "worker-x")
    assert timedelta(seconds=90) <= row["expired_for"] < timedelta(seconds=150)
    assert row["lease_expires_at"] < row["leased_at"] + timedelta(seconds=30)


def test_expired_leases_is_empty_after_recover(db):
    make_job(db, "expired")

    call(db, "recover")

    assert dicts(db, "SELECT * FROM pgrelay.expired_leases") == []


# ---------------------------------------------------------------------------------------------
# dead_letters
# ---------------------------------------------------------------------------------------------


def test_dead_letters_lists_failed_jobs_with_their_last_error(db):
    nacked = make_job(db, "leased", queue="mail", payload={"to": "x"}, trace_id="t-1")
    call(db, "nack", id=nacked.id, attempt=nacked.attempt, error="550 no such user", permanent=True)
    exhausted = make_job(db, "expired", max_attempts=1)
    call(db, "recover")
    make_job(db, "succeeded")
    make_job(db, "retrying")

    rows = {r["id"]: r for r in dicts(db, "SELECT * FROM pgrelay.dead_letters")}

    assert set(rows) == {nacked.id, exhausted.id}
    row = rows[nacked.id]
    assert (row["queue"], row["task"], row["kind"], row["attempt"], row["last_error"], row["payload"], row["trace_id"]) == (
        "mail", nacked.task, "handler", 1, "550 no such user", {"to": "x"}, "t-1")
    assert row["finished_at"] >= row["created_at"]
    assert rows[exhausted.id]["last_error"]


def test_dead_letters_shows_the_error_of_the_last_attempt(db):
    job = make_job(db, "leased", failures=2, max_attempts=3)

    call(db, "nack", id=job.id, attempt=job.attempt, error="third and last")

    [row] = dicts(db, "SELECT * FROM pgrelay.dead_letters")
    assert (row["id"], row["attempt"], row["last_error"]) == (job.id, 3, "third and last")


# ---------------------------------------------------------------------------------------------
# workers
# ---------------------------------------------------------------------------------------------


def test_workers_counts_the_leases_each_holds(db):
    a = make_job(db, "leased", worker="worker-a")
    make_job(db, "leased", worker="worker-a")
    make_job(db, "leased", worker="worker-b")
    make_job(db, "succeeded", worker="worker-b")
    call(db, "ack", id=a.id, attempt=a.attempt)
    for worker in ("worker-a", "worker-b", "worker-c"):
        call(db, "heartbeat", worker=worker)

    counts = dict(db.execute("SELECT worker, leased FROM pgrelay.workers").fetchall())

    assert counts == {"worker-a": 1, "worker-b": 1, "worker-c": 0}


def test_workers_lists_only_workers_that_sent_a_heartbeat(db):
    make_job(db, "leased", worker="silent")

    assert dicts(db, "SELECT * FROM pgrelay.workers") == []


# ---------------------------------------------------------------------------------------------
# jobs and get_job
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("state", STATES)
def test_every_job_appears_once_in_jobs_with_its_status(db, state):
    job = make_job(db, state)

    rows = dicts(db, "SELECT * FROM pgrelay.jobs")

    assert [(r["id"], r["status"]) for r in rows] == [(job.id, SHOWN_AS[state])]
    assert get_job(db, job)["status"] == SHOWN_AS[state]


def test_get_job_returns_the_documented_keys(db):
    job = make_job(db, "leased", queue="mail", payload={"a": 1}, priority=2, trace_id="t", dedupe_key="d",
                   idempotency_key="k", timeout_seconds=9)

    found = get_job(db, job)

    assert set(found) == {
        "id", "queue", "task", "kind", "status", "priority", "run_at", "attempt", "max_attempts", "timeout_seconds",
        "payload", "idempotency_key", "dedupe_key", "trace_id", "replayed_from", "last_error", "result", "leased_by",
        "lease_expires_at", "created_at", "finished_at", "enqueued_by"}
    assert (found["id"], found["queue"], found["task"], found["payload"], found["priority"]) == (
        job.id, "mail", job.task, {"a": 1}, 2)
    assert (found["trace_id"], found["dedupe_key"], found["idempotency_key"], found["timeout_seconds"]) == ("t", "d", "k", 9)
    assert found["leased_by"] == job.worker
    assert found["finished_at"] is None
    assert found["enqueued_by"] == "postgres"  # the test's login


def test_get_job_of_a_finished_job_keeps_what_it_was(db):
    job = make_job(db, "succeeded", queue="mail", payload={"a": 1}, priority=2, trace_id="t")

    found = get_job(db, job)

    assert (found["status"], found["queue"], found["payload"], found["priority"], found["trace_id"]) == (
        "succeeded", "mail", {"a": 1}, 2, "t")
    assert found["result"] == {"factory": True}
    assert found["leased_by"] is None


def test_get_job_resolves_max_attempts(db):
    call(db, "configure_queue", queue="mail", max_attempts=4)

    assert get_job(db, enqueue(db))["max_attempts"] == 10
    assert get_job(db, enqueue(db, queue="mail"))["max_attempts"] == 4
    assert get_job(db, enqueue(db, queue="mail", max_attempts=2))["max_attempts"] == 2


def test_get_job_of_an_unknown_id_is_null(db):
    assert get_job(db, 424242) is None
    assert call(db, "get_job", id=None) is None


# ---------------------------------------------------------------------------------------------
# get_attempts
# ---------------------------------------------------------------------------------------------


def test_get_attempts_lists_attempts_oldest_first_with_the_running_one_last(db):
    job = make_job(db, "expired", worker="worker-a", failures=2)
    call(db, "recover")
    make_due(db, job)
    consume(db, "worker-b")

    history = attempts(db, job)

    assert [(a["attempt"], a["worker"], a["outcome"]) for a in history] == [
        (1, "worker-a", "failed"), (2, "worker-a", "failed"), (3, "worker-a", "lease_expired"), (4, "worker-b", "running")]
    assert [a["error"] for a in history[:2]] == ["failure 1", "failure 2"]
    starts = [a["started_at"] for a in history]
    assert starts == sorted(starts)
    assert all(a["finished_at"] >= a["started_at"] for a in history[:3])
    assert all(a["job_id"] == job.id for a in history)


def test_get_attempts_of_a_job_never_run_is_empty(db):
    job = make_job(db, "pending")

    assert attempts(db, job) == []
    assert attempts(db, 424242) == []


def test_get_attempts_keeps_the_history_of_a_dead_letter(db):
    job = make_job(db, "dead_letter", failures=1)

    assert [(a["attempt"], a["outcome"], a["error"]) for a in attempts(db, job)] == [
        (1, "failed", "failure 1"), (2, "failed", "give up")]
    assert scalar(db, "SELECT count(*) FROM pgrelay.jobs WHERE id = %s", (job.id,)) == 1


# counters, throughput and the bounded views


def test_queue_stats_counts_finished_jobs_without_reading_the_history(db):
    for state in ("succeeded", "succeeded", "dead_letter", "cancelled"):
        make_job(db, state, queue="q")
    db.execute("ANALYZE pgrelay._finished")

    row = stats(db)["q"]
    plan = "\n".join(r[0] for r in db.execute("EXPLAIN SELECT * FROM pgrelay.queue_stats").fetchall())

    assert (row["succeeded"], row["dead_letter"], row["cancelled"]) == (2, 1, 1)
    assert "_finished" not in plan, plan
    assert "_counts" in plan


def test_queue_stats_counts_one_call_that_finishes_jobs_of_several_queues(db):
    # one ack_many over three queues, and one recover() that dead-letters jobs of two: each queue
    # gets its own count (a batch of one queue is counted another way than a mixed one)
    acked = [make_job(db, "leased", queue=q) for q in ("b", "a", "b", "c", "b")]
    assert call(db, "ack_many", ids=[j.id for j in acked], attempts=[j.attempt for j in acked]) == 5
    exhausted = [make_job(db, "leased", queue=q, max_attempts=1) for q in ("a", "c", "c")]
    expire(db, *exhausted)
    assert call(db, "recover") == 3
    single = make_job(db, "leased", queue="d")
    assert call(db, "ack_many", ids=[single.id], attempts=[single.attempt]) == 1

    counted = {q: (r["succeeded"], r["dead_letter"]) for q, r in stats(db).items()}

    assert counted == {"a": (1, 1), "b": (3, 0), "c": (1, 2), "d": (1, 0)}


def test_queue_stats_throughput_counts_whole_minutes(db):
    for _ in range(3):
        make_job(db, "succeeded", queue="q")
    make_job(db, "dead_letter", queue="q")
    assert (stats(db)["q"]["succeeded_last_minute"], stats(db)["q"]["succeeded_last_hour"]) == (0, 0)  # this minute

    # white box: the counters as they will be read a minute, then an hour and a minute, from now
    db.execute("UPDATE pgrelay._counts SET minute = date_trunc('minute', now()) - interval '1 minute'")
    row = stats(db)["q"]
    assert (row["succeeded_last_minute"], row["succeeded_last_hour"], row["dead_letter_last_hour"]) == (3, 3, 1)

    db.execute("UPDATE pgrelay._counts SET minute = date_trunc('minute', now()) - interval '61 minutes'")
    row = stats(db)["q"]
    assert (row["succeeded_last_minute"], row["succeeded_last_hour"], row["succeeded"]) == (0, 0, 3)


def test_queue_stats_shows_the_effective_limits(db):
    call(db, "configure_queue", queue="q", max_attempts=3, retention_succeeded_days=2)

    row = stats(db)["q"]

    assert (row["max_attempts"], row["lease_seconds"], row["retention_succeeded_days"], row["retention_dead_letter_days"]) == (3, 30, 2, 30)


def test_counting_from_many_connections_never_waits(db, connect):
    # every backend counts into its own row: two open transactions finishing jobs of one queue in
    # the same minute do not block each other
    first, second = make_job(db, "leased", queue="q"), make_job(db, "leased", queue="q")
    a, b = connect(), connect()
    a.execute("BEGIN")
    b.execute("BEGIN")
    b.execute("SET LOCAL lock_timeout = '2s'")
    assert a.execute("SELECT pgrelay.ack(%s, %s)", (first.id, first.attempt)).fetchone()[0] is True
    assert b.execute("SELECT pgrelay.ack(%s, %s)", (second.id, second.attempt)).fetchone()[0] is True
    a.execute("COMMIT")
    b.execute("COMMIT")

    assert stats(db)["q"]["succeeded"] == 2


def test_workers_are_stale_after_a_lease_period_of_silence(db):
    call(db, "heartbeat", worker="quick", lease_seconds=10)
    call(db, "heartbeat", worker="slow", lease_seconds=600)
    db.execute("UPDATE pgrelay._workers SET last_seen = now() - interval '1 minute'")

    shown = {r["worker"]: (r["status"], r["lease_seconds"]) for r in dicts(db, "SELECT * FROM pgrelay.workers")}

    assert shown == {"quick": ("stale", 10), "slow": ("alive", 600)}


def test_recent_failures_groups_the_last_hours_failed_attempts_by_task(db):
    make_job(db, "dead_letter", queue="q", task="mail.send")
    make_job(db, "pending", queue="q", task="mail.send", failures=2)
    old = make_job(db, "dead_letter", queue="q", task="sms.send")
    db.execute("UPDATE pgrelay._attempts SET finished_at = now() - interval '2 hours' WHERE job_id = %s", (old.id,))

    rows = dicts(db, "SELECT * FROM pgrelay.recent_failures")

    assert [(r["queue"], r["task"], r["failures"], r["last_error"]) for r in rows] == [("q", "mail.send", 3, "failure 2")]
