"""pgrelay.cancel: pending jobs at once; a leased job ends cancelled when its worker next hears of it."""

from __future__ import annotations

import pytest

from tests.sql.factory import (
    WORKER,
    attempts,
    call,
    consume,
    enqueue,
    expire,
    fail,
    get_job,
    make_job,
    raises_sqlstate,
    status,
    succeed,
)


def heartbeat(db, job, worker=WORKER):
    return call(db, "heartbeat", worker=worker, ids=[job.id])


@pytest.mark.parametrize("state", ["pending", "scheduled", "retrying", "recovered"])
def test_a_pending_job_is_cancelled_at_once(db, state):
    job = make_job(db, state, queue="mail")

    assert call(db, "cancel", id=job.id) is True

    done = get_job(db, job)
    assert done["status"] == "cancelled" and done["finished_at"] is not None
    assert consume(db, queues=["mail"], batch=10) == []


def test_a_leased_job_keeps_running_until_its_worker_heartbeats(db):
    job = make_job(db, "leased")

    assert call(db, "cancel", id=job.id) is True
    assert status(db, job) == "leased"

    assert heartbeat(db, job) == [job.id]
    assert status(db, job) == "cancelled"
    [attempt] = attempts(db, job)
    assert (attempt["outcome"], attempt["error"], attempt["worker"]) == ("cancelled", "cancelled by an operator", WORKER)
    assert succeed(db, job) is False, "the old attempt's ack must be refused"
    assert status(db, job) == "cancelled"


def test_another_workers_heartbeat_does_not_end_the_job(db):
    job = make_job(db, "leased")
    call(db, "cancel", id=job.id)

    assert heartbeat(db, job, worker="someone-else") == [job.id]

    assert status(db, job) == "leased"


def test_a_nack_of_a_cancelled_job_ends_it_cancelled_not_retried(db):
    job = make_job(db, "leased")
    call(db, "cancel", id=job.id)

    assert fail(db, job, error="handler stopped") == "cancelled"

    assert status(db, job) == "cancelled"
    assert attempts(db, job)[-1]["error"] == "handler stopped"


def test_a_release_of_a_cancelled_job_ends_it_cancelled(db):
    job = make_job(db, "leased")
    call(db, "cancel", id=job.id)

    assert call(db, "release", id=job.id, attempt=job.attempt, reason="shutting down") is True

    assert status(db, job) == "cancelled"


def test_a_cancelled_job_whose_lease_expires_is_cancelled_by_recover(db):
    job = make_job(db, "leased")
    call(db, "cancel", id=job.id)
    expire(db, job)

    assert call(db, "recover") == 1

    assert status(db, job) == "cancelled"
    assert attempts(db, job)[-1]["outcome"] == "lease_expired"


def test_an_ack_that_comes_first_wins(db):
    job = make_job(db, "leased")
    call(db, "cancel", id=job.id)

    assert succeed(db, job) is True

    assert status(db, job) == "succeeded"


def test_cancelling_twice_is_harmless(db):
    job = make_job(db, "leased")

    assert call(db, "cancel", id=job.id) is True
    assert call(db, "cancel", id=job.id) is True
    heartbeat(db, job)

    assert call(db, "cancel", id=job.id) is False
    assert status(db, job) == "cancelled"


@pytest.mark.parametrize("state", ["succeeded", "dead_letter", "cancelled"])
def test_a_finished_job_is_not_cancelled(db, state):
    job = make_job(db, state)

    assert call(db, "cancel", id=job.id) is False

    assert status(db, job) == state


def test_cancelling_an_unknown_job_is_not_found(db):
    with raises_sqlstate("PT404"):
        call(db, "cancel", id=424242)


def test_cancel_needs_an_id(db):
    with raises_sqlstate("PR001"):
        db.execute("SELECT pgrelay.cancel(NULL)")


def test_the_idempotency_key_of_a_cancelled_job_still_holds(db):
    job = enqueue(db, idempotency_key="once")
    call(db, "cancel", id=job.id)

    assert enqueue(db, idempotency_key="once").id == job.id


@pytest.mark.parametrize("state", ["pending", "retrying"])
def test_a_pending_job_cancelled_counts_once_and_adds_no_attempt(db, state):
    """cancel() of a job that is not running moves it to the history through the same statement as
    every other finish: queue_stats counts it as cancelled, and no attempt is invented for it."""
    job = make_job(db, state, queue="mail")
    before = attempts(db, job)

    call(db, "cancel", id=job.id)

    stats = db.execute("SELECT cancelled, succeeded, dead_letter FROM pgrelay.queue_stats WHERE queue = 'mail'").fetchone()
    assert tuple(stats) == (1, 0, 0)
    assert attempts(db, job) == before
