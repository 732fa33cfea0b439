"""What the Python worker relies on beyond the core calls: handler/kind filters, ack_each,
release, NULL meaning "the default", and the NOTIFY that says when a retried job becomes due."""

from __future__ import annotations

import time

import psycopg

from tests.sql.factory import (
    attempts, call, call_rows, consume, enqueue, get_job, make_job, raises_sqlstate, scalar,
)


def test_handlers_limits_handler_jobs_to_the_named_tasks_but_not_http_jobs(db):
    mine = enqueue(db, task="orders.recalc")
    enqueue(db, task="orders.other")
    http = scalar(db, "SELECT pgrelay.enqueue_http('https://example.com/hook')")
    got = {row["id"] for row in consume(db, batch=10, handlers=["orders.recalc"])}
    assert got == {mine.id, http}


def test_handler_names_are_exact_not_patterns(db):
    enqueue(db, task="orders_x")
    assert consume(db, batch=10, handlers=["orders.x"], kinds=["handler"]) == []


def test_empty_handlers_with_kind_http_claims_only_http_jobs(db):
    enqueue(db, task="orders.recalc")
    http = scalar(db, "SELECT pgrelay.enqueue_http('https://example.com/hook')")
    assert [row["id"] for row in consume(db, batch=10, handlers=[], kinds=["http"])] == [http]


def test_bad_kinds_or_handlers_are_refused(db):
    with raises_sqlstate("PR001"):
        consume(db, kinds=["cron"])
    with raises_sqlstate("PR001"):
        consume(db, handlers=[None])


def test_null_batch_means_one(db):
    enqueue(db)
    enqueue(db)
    assert len(consume(db, batch=None)) == 1


def test_ack_each_returns_only_the_ids_it_acked(db):
    held = make_job(db, "leased")
    stale = make_job(db, "leased")
    acked = call_rows(db, "ack_each", ids=[held.id, stale.id], attempts=[held.attempt, stale.attempt + 1],
                      results=[{"n": 1}, None])
    assert [row["ack_each"] for row in acked] == [held.id]
    assert get_job(db, held)["status"] == "succeeded" and get_job(db, held)["result"] == {"n": 1}
    assert get_job(db, stale)["status"] == "leased"


def test_ack_each_refuses_arrays_of_different_lengths(db):
    job = make_job(db, "leased")
    with raises_sqlstate("PR001"):
        call_rows(db, "ack_each", ids=[job.id], attempts=[job.attempt, 2])
    assert get_job(db, job)["status"] == "leased"


def test_release_hands_the_job_back_at_once_without_spending_it(db):
    job = make_job(db, "leased", max_attempts=1)
    assert call(db, "release", id=job.id, attempt=job.attempt, reason="worker shutting down") is True
    after = get_job(db, job)
    assert after["status"] == "pending"
    assert [(a["outcome"], a["error"]) for a in attempts(db, job)] == [("cancelled", "worker shutting down")]
    [again] = consume(db, tasks=[job.task])
    assert again["attempt"] == job.attempt + 1  # a new fencing token, even though max_attempts was 1


def test_a_long_release_reason_is_cut_to_10000_characters_like_an_error(db):
    job = make_job(db, "leased")
    assert call(db, "release", id=job.id, attempt=job.attempt, reason="r" * 20000) is True
    assert [len(a["error"]) for a in attempts(db, job)] == [10000]


def test_release_of_a_lost_lease_changes_nothing(db):
    job = make_job(db, "leased")
    assert call(db, "release", id=job.id, attempt=job.attempt + 1) is False
    assert get_job(db, job)["status"] == "leased"
    with raises_sqlstate("PR001"):
        call(db, "release", id=None, attempt=1)


def test_null_outcome_and_permanent_take_their_defaults(db):
    job = make_job(db, "leased")
    assert call(db, "nack", id=job.id, attempt=job.attempt, error="boom", outcome=None, permanent=None) == "pending"
    assert attempts(db, job)[-1]["outcome"] == "failed"


def test_a_retry_notifies_when_the_job_becomes_due(db, connect):
    job = make_job(db, "leased", queue="mail")
    listener = connect()
    listener.execute("LISTEN pgrelay_jobs")
    listener.execute("SELECT * FROM pgrelay.idle('listener')")
    before = time.time()
    call(db, "nack", id=job.id, attempt=job.attempt, error="busy", retry_after_seconds=30)
    [note] = list(listener.notifies(timeout=2, stop_after=1))
    queue, due = note.payload.split(" ")
    assert queue == "mail"
    assert before + 29 <= float(due) <= time.time() + 31


def test_notify_can_be_switched_off_per_session(db, connect):
    listener = connect()
    listener.execute("LISTEN pgrelay_jobs")
    listener.execute("SELECT * FROM pgrelay.idle('listener')")
    db.execute("SET pgrelay.notify = off")
    enqueue(db, queue="quiet")
    assert list(listener.notifies(timeout=0.5, stop_after=1)) == []
    assert scalar(db, "SELECT count(*) FROM pgrelay.jobs WHERE queue = 'quiet'") == 1


def test_the_worker_may_run_every_call_it_needs(db, postgresql_proc):
    db.execute("CREATE ROLE pgrelay_test_worker LOGIN IN ROLE pgrelay_worker")
    try:
        job = enqueue(db)
        dsn = f"postgresql://pgrelay_test_worker@{postgresql_proc.host}:{postgresql_proc.port}/{db.info.dbname}"
        with psycopg.connect(dsn, autocommit=True) as worker:
            [row] = worker.execute("SELECT id, attempt FROM pgrelay.consume('w', handlers => %s)", [[job.task]]).fetchall()
            assert worker.execute("SELECT pgrelay.heartbeat('w', %s)", [[row[0]]]).fetchone()[0] == []
            assert worker.execute("SELECT pgrelay.release(%s, %s)", row).fetchone()[0] is True
            [row] = worker.execute("SELECT id, attempt FROM pgrelay.consume('w')").fetchall()
            assert worker.execute("SELECT * FROM pgrelay.ack_each(%s, %s)", [[row[0]], [row[1]]]).fetchall() == [(row[0],)]
            assert worker.execute("SELECT pgrelay.recover()").fetchone()[0] == 0
    finally:
        db.execute("DROP ROLE pgrelay_test_worker")

