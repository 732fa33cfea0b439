"""pgrelay.recover: expired leases go back to pending, or to dead_letter when out of attempts."""

from __future__ import annotations

import threading

import pytest

from tests.sql.factory import (
    attempts,
    call,
    connect_in_transaction,
    consume,
    dicts,
    enqueue,
    expire,
    get_job,
    in_thread,
    make_due,
    make_job,
    raises_sqlstate,
    scalar,
)


def test_expired_lease_goes_back_to_pending(db):
    job = make_job(db, "expired", worker="worker-a")

    assert call(db, "recover") == 1

    pending = get_job(db, job)
    assert pending["status"] == "pending"
    assert pending["leased_by"] is None
    assert pending["lease_expires_at"] is None
    assert pending["attempt"] == 1
    assert pending["last_error"] == "lease expired"


def test_the_lost_attempt_is_recorded_as_lease_expired(db):
    job = make_job(db, "expired", worker="worker-a")

    with db.transaction():
        call(db, "recover")
        now = scalar(db, "SELECT now()")

    [attempt] = attempts(db, job)
    assert attempt["attempt"] == 1
    assert attempt["outcome"] == "lease_expired"
    assert attempt["worker"] == "worker-a"
    assert attempt["finished_at"] == now
    assert attempt["error"]


def test_a_recovered_job_waits_for_its_backoff_then_runs_again(db):
    job = make_job(db, "expired")

    with db.transaction():
        call(db, "recover")
        delay = scalar(db, "SELECT extract(epoch FROM run_at - now())::float8 FROM pgrelay.jobs WHERE id = %s", (job.id,))

    assert 0.5 <= delay <= 1.0
    assert consume(db, batch=10) == []
    make_due(db, job)
    [row] = consume(db, "worker-b")
    assert (row["id"], row["attempt"]) == (job.id, 2)


def test_expired_lease_of_the_last_attempt_dead_letters_the_job(db):
    job = make_job(db, "expired", max_attempts=2, failures=1)

    assert call(db, "recover") == 1

    dead = get_job(db, job)
    assert dead["status"] == "dead_letter"
    assert dead["last_error"]
    assert dead["finished_at"] is not None
    assert [(a["attempt"], a["outcome"]) for a in attempts(db, job)] == [(1, "failed"), (2, "lease_expired")]
    assert [r["id"] for r in dicts(db, "SELECT id FROM pgrelay.dead_letters")] == [job.id]


def test_the_queue_max_attempts_decides_dead_letter(db):
    call(db, "configure_queue", queue="mail", max_attempts=1)
    job = make_job(db, "expired", queue="mail")

    call(db, "recover")

    assert get_job(db, job)["status"] == "dead_letter"


def test_leases_that_have_not_expired_are_untouched(db):
    held = make_job(db, "leased")
    pending = make_job(db, "pending")
    scheduled = make_job(db, "scheduled")
    done = make_job(db, "succeeded")
    before = [get_job(db, j) for j in (held, pending, scheduled, done)]

    assert call(db, "recover") == 0

    assert [get_job(db, j) for j in (held, pending, scheduled, done)] == before
    assert [a["outcome"] for a in attempts(db, held)] == ["running"]


def test_returns_how_many_it_recovered_and_a_second_call_finds_none(db):
    expired = [make_job(db, "expired") for _ in range(3)]
    last_chance = make_job(db, "expired", max_attempts=1)
    make_job(db, "leased")

    assert call(db, "recover") == 4
    assert call(db, "recover") == 0

    assert [get_job(db, j)["status"] for j in expired] == ["pending"] * 3
    assert get_job(db, last_chance)["status"] == "dead_letter"


def test_one_call_recovers_at_most_max_jobs_and_a_full_count_says_call_again(db):
    """recover() is bounded: a full count (max_jobs) means more may be left; the caller calls again."""
    n = 2500
    ids = [r[0] for r in db.execute(
        "SELECT * FROM pgrelay.enqueue_bulk((SELECT jsonb_agg(jsonb_build_object('task', 'bulk', 'max_attempts', "
        "CASE WHEN i %% 5 = 0 THEN 1 END)) FROM generate_series(1, %s) i))", (n,)).fetchall()]
    assert len(consume(db, batch=n)) == n
    db.execute("UPDATE pgrelay._jobs SET lease_expires_at = now() - interval '1 second'")

    assert call(db, "recover") == 1000  # the default bound, in one call
    assert call(db, "recover", max_jobs=1200) == 1200
    assert scalar(db, "SELECT count(*) FROM pgrelay.expired_leases") == 300
    assert call(db, "recover", max_jobs=1200) == 300  # fewer than asked: none left
    assert call(db, "recover") == 0

    counts = dict(db.execute("SELECT status, count(*) FROM pgrelay.jobs WHERE id = ANY (%s) GROUP BY status", (ids,)).fetchall())
    assert counts == {"pending": n * 4 // 5, "dead_letter": n // 5}
    assert scalar(db, "SELECT count(*) FROM pgrelay.expired_leases") == 0
    assert scalar(db, "SELECT count(*) FROM pgrelay._attempts WHERE outcome = 'lease_expired'") == n


def test_late_ack_after_recover_is_refused_and_the_job_stays_pending(db):
    job = make_job(db, "expired")
    call(db, "recover")

    assert call(db, "ack", id=job.id, attempt=job.attempt, result={"late": True}) is False

    pending = get_job(db, job)
    assert pending["status"] == "pending"
    assert pending["result"] is None
    assert [a["outcome"] for a in attempts(db, job)] == ["lease_expired"]


def test_ack_before_recover_wins_and_recover_leaves_it(db):
    job = make_job(db, "expired")

    assert call(db, "ack", id=job.id, attempt=job.attempt) is True

    assert call(db, "recover") == 0
    assert get_job(db, job)["status"] == "succeeded"
    assert [a["outcome"] for a in attempts(db, job)] == ["succeeded"]


def test_skips_a_job_whose_ack_holds_the_row_without_waiting(db, connect):
    job = make_job(db, "expired")
    other = make_job(db, "expired")
    acker = connect_in_transaction(connect)
    assert call(acker, "ack", id=job.id, attempt=job.attempt) is True  # row locked, not committed
    recoverer = connect()
    recoverer.execute("SET lock_timeout = '5s'")

    recovered = in_thread(lambda: call(recoverer, "recover"), timeout=10)

    assert recovered == 1  # only the other job
    assert get_job(db, other)["status"] == "pending"
    acker.commit()
    assert get_job(db, job)["status"] == "succeeded"
    assert [a["outcome"] for a in attempts(db, job)] == ["succeeded"]
    assert call(db, "recover") == 0


def test_a_job_skipped_for_an_ack_that_rolled_back_is_recovered_next_time(db, connect):
    job = make_job(db, "expired")
    acker = connect_in_transaction(connect)
    assert call(acker, "ack", id=job.id, attempt=job.attempt) is True
    recoverer = connect()
    recoverer.execute("SET lock_timeout = '5s'")
    assert in_thread(lambda: call(recoverer, "recover"), timeout=10) == 0

    acker.rollback()

    assert call(db, "recover") == 1
    assert get_job(db, job)["status"] == "pending"


def test_an_ack_waiting_behind_recover_is_refused(db, connect):
    job = make_job(db, "expired")
    recoverer = connect_in_transaction(connect)
    assert call(recoverer, "recover") == 1  # row locked, not committed
    acker = connect()
    acker.execute("SET lock_timeout = '10s'")

    result: dict[str, bool] = {}
    thread = threading.Thread(
        target=lambda: result.setdefault("ack", call(acker, "ack", id=job.id, attempt=job.attempt)), daemon=True)
    thread.start()
    thread.join(0.3)
    assert thread.is_alive(), "ack should wait for recover's lock"
    recoverer.commit()
    thread.join(10)

    assert result == {"ack": False}
    assert get_job(db, job)["status"] == "pending"
    assert [a["outcome"] for a in attempts(db, job)] == ["lease_expired"]


def test_recover_of_an_empty_queue_returns_zero(db):
    assert call(db, "recover") == 0
    enqueue(db)
    assert call(db, "recover") == 0


def test_expired_leases_of_several_queues_are_all_recovered(db):
    jobs = [make_job(db, "expired", queue=q) for q in ("a", "b", "c")]
    expire(db, make_job(db, "leased", queue="d"), ago_seconds=3600)

    assert call(db, "recover") == 4

    assert all(get_job(db, j)["status"] == "pending" for j in jobs)


def test_recover_oldest_expiry_first(db):
    jobs = [make_job(db, "leased") for _ in range(3)]
    for ago, job in zip((30, 10, 20), jobs):
        db.execute("UPDATE pgrelay._jobs SET lease_expires_at = now() - make_interval(secs => %s) WHERE id = %s",
                   (ago, job.id))

    assert call(db, "recover", max_jobs=2) == 2

    assert [get_job(db, j)["status"] for j in jobs] == ["pending", "leased", "pending"]


@pytest.mark.parametrize("max_jobs", [0, -1, 100001])
def test_recover_refuses_a_bound_out_of_range(db, max_jobs):
    with raises_sqlstate("PR001"):
        call(db, "recover", max_jobs=max_jobs)
