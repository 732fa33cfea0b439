"""pgrelay.nack: failed attempts are retried with backoff or dead-lettered, fenced by the attempt."""

from __future__ import annotations

import math
import pytest

from tests.sql.factory import (
    attempts,
    call,
    consume,
    enqueue,
    expire,
    get_job,
    lease,
    make_due,
    make_job,
    raises_sqlstate,
    scalar,
)


def _nack_and_delay(db, job, **args) -> tuple[str, float]:
    """nack in one transaction; returns its answer and run_at - now() in seconds."""
    with db.transaction():
        answer = call(db, "nack", id=job.id, attempt=job.attempt, **{"error": "boom", **args})
        delay = scalar(db, "SELECT extract(epoch FROM run_at - now())::float8 FROM pgrelay.jobs WHERE id = %s", (job.id,))
    return answer, delay


def test_nack_puts_the_job_back_to_pending_with_its_error(db):
    job = make_job(db, "leased")

    answer = call(db, "nack", id=job.id, attempt=job.attempt, error="SMTP 451")

    assert answer == "pending"
    pending = get_job(db, job)
    assert pending["status"] == "pending"
    assert pending["last_error"] == "SMTP 451"
    assert pending["leased_by"] is None
    assert pending["lease_expires_at"] is None
    assert pending["attempt"] == 1


def test_first_retry_waits_between_half_a_second_and_a_second(db):
    job = make_job(db, "leased")

    answer, delay = _nack_and_delay(db, job)

    assert answer == "pending"
    assert 0.5 <= delay <= 1.0


@pytest.mark.parametrize("attempt", [2, 3, 5, 8])
def test_retry_n_waits_between_half_and_all_of_base_times_two_to_the_n_minus_one(db, attempt):
    job = make_job(db, "leased", failures=attempt - 1)
    assert job.attempt == attempt
    d = 1.0 * 2 ** (attempt - 1)

    _, delay = _nack_and_delay(db, job)

    assert d / 2 <= delay <= d


def test_backoff_is_capped_at_one_hour_by_default(db):
    # attempt 14: 2^13 s is more than an hour
    job = make_job(db, "leased", failures=13, max_attempts=20)

    _, delay = _nack_and_delay(db, job)

    assert 1800 <= delay <= 3600


@pytest.mark.parametrize("attempt, d", [(1, 2.0), (2, 4.0), (3, 5.0), (4, 5.0)])
def test_backoff_uses_the_queue_settings(db, attempt, d):
    call(db, "configure_queue", queue="mail", backoff_base_seconds=2, backoff_max_seconds=5)
    job = make_job(db, "leased", queue="mail", failures=attempt - 1)

    _, delay = _nack_and_delay(db, job)

    assert d / 2 <= delay <= d


def test_backoff_has_jitter(db):
    jobs = [make_job(db, "leased") for _ in range(12)]

    delays = {_nack_and_delay(db, job)[1] for job in jobs}

    assert len(delays) > 1
    assert all(0.5 <= d <= 1.0 for d in delays)


@pytest.mark.parametrize("seconds", [0, 2.5, 3600, 31536000])
def test_retry_after_seconds_is_honoured_exactly(db, seconds):
    job = make_job(db, "leased")

    answer, delay = _nack_and_delay(db, job, retry_after_seconds=seconds)

    assert answer == "pending"
    assert delay == pytest.approx(seconds, abs=1e-6)


def test_retry_after_zero_makes_the_job_due_at_once(db):
    job = make_job(db, "leased")
    call(db, "nack", id=job.id, attempt=job.attempt, error="busy", retry_after_seconds=0)

    [row] = consume(db, "worker-b")

    assert row["id"] == job.id
    assert row["attempt"] == 2


def test_a_retrying_job_is_not_consumed_before_its_backoff_ends(db):
    job = make_job(db, "retrying")
    assert consume(db, batch=10) == []

    make_due(db, job)

    [row] = consume(db)
    assert (row["id"], row["attempt"]) == (job.id, 2)


def test_permanent_failure_dead_letters_the_job(db):
    job = make_job(db, "leased")

    with db.transaction():
        answer = call(db, "nack", id=job.id, attempt=job.attempt, error="400 Bad Request", permanent=True)
        now = scalar(db, "SELECT now()")

    assert answer == "dead_letter"
    dead = get_job(db, job)
    assert dead["status"] == "dead_letter"
    assert dead["last_error"] == "400 Bad Request"
    assert scalar(db, "SELECT finished_at FROM pgrelay.jobs WHERE id = %s", (job.id,)) == now
    [attempt] = attempts(db, job)
    assert (attempt["outcome"], attempt["error"]) == ("failed", "400 Bad Request")
    assert consume(db, batch=10) == []


def test_permanent_failure_ignores_retry_after(db):
    job = make_job(db, "leased")

    assert call(db, "nack", id=job.id, attempt=job.attempt, error="gone", permanent=True, retry_after_seconds=5) == "dead_letter"


def test_the_last_attempt_failing_dead_letters_the_job(db):
    job = make_job(db, "leased", max_attempts=2)
    assert call(db, "nack", id=job.id, attempt=job.attempt, error="first", retry_after_seconds=0) == "pending"
    job = lease(db, job)
    assert job.attempt == 2

    answer = call(db, "nack", id=job.id, attempt=job.attempt, error="second", retry_after_seconds=0)

    assert answer == "dead_letter"
    dead = get_job(db, job)
    assert dead["status"] == "dead_letter"
    assert dead["last_error"] == "second"
    assert [(a["attempt"], a["outcome"], a["error"]) for a in attempts(db, job)] == [
        (1, "failed", "first"), (2, "failed", "second")]


def test_max_attempts_one_dead_letters_on_the_first_failure(db):
    job = make_job(db, "leased", max_attempts=1)

    assert call(db, "nack", id=job.id, attempt=job.attempt, error="once") == "dead_letter"


def test_the_queue_max_attempts_is_used_when_the_job_has_none(db):
    call(db, "configure_queue", queue="mail", max_attempts=2)
    job = make_job(db, "leased", queue="mail", failures=1)

    assert call(db, "nack", id=job.id, attempt=job.attempt, error="again") == "dead_letter"


def test_the_default_is_ten_attempts(db):
    job = make_job(db, "leased", failures=8)
    assert job.attempt == 9
    assert call(db, "nack", id=job.id, attempt=job.attempt, error="ninth", retry_after_seconds=0) == "pending"
    job = lease(db, job)

    assert call(db, "nack", id=job.id, attempt=job.attempt, error="tenth") == "dead_letter"


def test_outcome_and_details_are_recorded_in_the_attempt(db):
    job = make_job(db, "leased", worker="worker-3")

    call(db, "nack", id=job.id, attempt=job.attempt, error="504 Gateway Timeout", outcome="timeout",
         details={"status": 504, "elapsed_ms": 30000})

    [attempt] = attempts(db, job)
    assert attempt["outcome"] == "timeout"
    assert attempt["error"] == "504 Gateway Timeout"
    assert attempt["details"] == {"status": 504, "elapsed_ms": 30000}
    assert attempt["worker"] == "worker-3"
    assert attempt["finished_at"] >= attempt["started_at"]


def test_cancelled_outcome_on_a_dead_letter_is_recorded(db):
    job = make_job(db, "leased")

    call(db, "nack", id=job.id, attempt=job.attempt, error="stopped by operator", outcome="cancelled", permanent=True)

    assert [a["outcome"] for a in attempts(db, job)] == ["cancelled"]


def test_a_very_long_error_is_kept_truncated(db):
    job = make_job(db, "leased")
    error = "x" * 50000

    assert call(db, "nack", id=job.id, attempt=job.attempt, error=error) == "pending"

    kept = get_job(db, job)["last_error"]
    assert 0 < len(kept) <= 10000
    assert error.startswith(kept)


# ---------------------------------------------------------------------------------------------
# Fencing
# ---------------------------------------------------------------------------------------------


def _unchanged(db, job, before):
    assert get_job(db, job) == before


def test_nack_with_a_wrong_attempt_is_stale_and_changes_nothing(db):
    job = make_job(db, "leased")
    before = get_job(db, job)

    assert call(db, "nack", id=job.id, attempt=job.attempt + 1, error="late") == "stale"
    assert call(db, "nack", id=job.id, attempt=job.attempt + 1, error="late", permanent=True) == "stale"

    _unchanged(db, job, before)
    assert [a["outcome"] for a in attempts(db, job)] == ["running"]


def test_nack_after_recover_is_stale(db):
    job = make_job(db, "leased")
    expire(db, job)
    call(db, "recover")
    before = get_job(db, job)

    assert call(db, "nack", id=job.id, attempt=job.attempt, error="late", permanent=True) == "stale"

    _unchanged(db, job, before)
    assert [a["outcome"] for a in attempts(db, job)] == ["lease_expired"]


def test_nack_after_the_job_was_leased_again_is_stale(db):
    first = make_job(db, "leased", worker="worker-a")
    expire(db, first)
    call(db, "recover")
    make_due(db, first)
    second = lease(db, first, worker="worker-b")
    before = get_job(db, second)

    assert call(db, "nack", id=first.id, attempt=first.attempt, error="late", permanent=True) == "stale"

    _unchanged(db, second, before)


@pytest.mark.parametrize("state", ["succeeded", "dead_letter", "pending", "retrying"])
def test_nack_of_a_job_that_is_not_leased_is_stale(db, state):
    job = make_job(db, state, failures=1 if state == "pending" else 0)
    before = get_job(db, job)

    assert call(db, "nack", id=job.id, attempt=job.attempt or 1, error="late") == "stale"

    _unchanged(db, job, before)


def test_nack_of_an_unknown_id_is_stale(db):
    assert call(db, "nack", id=987654, attempt=1, error="who?") == "stale"


# ---------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        {"error": None},
        {"error": ""},
        {"retry_after_seconds": -1},
        {"retry_after_seconds": -0.001},
        {"retry_after_seconds": math.nan},
        {"retry_after_seconds": -math.inf},
        {"outcome": "succeeded"},
        {"outcome": "lease_expired"},
        {"outcome": "bogus"},
        {"id": None},
        {"attempt": None},
    ],
    ids=lambda a: repr(a)[:40],
)
def test_invalid_arguments_are_rejected_and_change_nothing(db, args):
    job = make_job(db, "leased")
    before = get_job(db, job)

    with raises_sqlstate("PR001"):
        call(db, "nack", **{"id": job.id, "attempt": job.attempt, "error": "boom", **args})

    _unchanged(db, job, before)


def test_retry_delay_is_measured_from_the_nack(db):
    # the backoff starts when the attempt failed, not when the job was first due
    job = make_job(db, "leased", run_in=-3600)

    _, delay = _nack_and_delay(db, job, retry_after_seconds=10)

    assert delay == pytest.approx(10, abs=1e-6)


def test_enqueue_then_fail_until_dead_walks_the_whole_lifecycle(db):
    job = enqueue(db, max_attempts=3)
    answers = []
    for _ in range(3):
        job = lease(db, job)
        answers.append(call(db, "nack", id=job.id, attempt=job.attempt, error=f"try {job.attempt}"))
        if answers[-1] == "pending":
            make_due(db, job)

    assert answers == ["pending", "pending", "dead_letter"]
    assert [a["error"] for a in attempts(db, job)] == ["try 1", "try 2", "try 3"]
    assert get_job(db, job)["attempt"] == 3
