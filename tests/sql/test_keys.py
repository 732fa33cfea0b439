"""enqueue's keys: an idempotency key returns the job it created, forever (as long as the job or its history is
kept); a dedupe key returns the queue's ACTIVE (pending or leased) job with that key."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import psycopg

from tests.sql.helpers import ack_all, call, job, job_count, wait_until_blocked

# ---------------------------------------------------------------------------------------------
# idempotency_key
# ---------------------------------------------------------------------------------------------


def test_same_idempotency_key_returns_the_first_job_and_creates_nothing(db):
    first = call(db, "enqueue", task="orders.confirm", payload={"n": 1}, idempotency_key="order-42")
    again = call(db, "enqueue", task="orders.confirm", payload={"n": 2}, idempotency_key="order-42")

    assert again == first
    assert job_count(db) == 1
    assert job(db, first)["payload"] == {"n": 1}


def test_idempotency_key_still_returns_the_job_after_it_was_acked(db):
    first = call(db, "enqueue", task="t", idempotency_key="order-42")
    assert ack_all(db) == [first]
    assert job(db, first)["status"] == "succeeded"

    assert call(db, "enqueue", task="t", idempotency_key="order-42") == first
    assert job_count(db) == 1


def test_idempotency_key_holds_across_tasks_and_kinds_within_its_queue(db):
    first = call(db, "enqueue", task="t", queue="mail", idempotency_key="k")

    assert call(db, "enqueue", task="other", queue="mail", idempotency_key="k") == first
    assert call(db, "enqueue_http", url="https://example.com/", queue="mail", idempotency_key="k") == first
    assert call(db, "enqueue_bulk", jobs=[{"task": "bulk", "queue": "mail", "idempotency_key": "k"}]) == first
    assert job_count(db) == 1


def test_the_same_idempotency_key_in_another_queue_is_another_job(db):
    """A key belongs to its queue: a caller of one queue can neither take nor probe another queue's key."""
    mail = call(db, "enqueue", task="t", queue="mail", idempotency_key="order-42")

    billing = call(db, "enqueue", task="t", queue="billing", idempotency_key="order-42")

    assert billing != mail
    assert call(db, "enqueue", task="t", queue="billing", idempotency_key="order-42") == billing
    assert call(db, "enqueue", task="t", queue="mail", idempotency_key="order-42") == mail
    assert job_count(db) == 2


def test_purge_frees_a_key_of_its_own_queue_only(db):
    mail = call(db, "enqueue", task="t", queue="mail", idempotency_key="k")
    billing = call(db, "enqueue", task="t", queue="billing", idempotency_key="k")
    assert db.execute("SELECT pgrelay.cancel(%s)", (mail,)).fetchone() == (True,)
    assert db.execute("SELECT pgrelay.purge(older_than_days => 0)").fetchone()[0] >= 1

    again = call(db, "enqueue", task="t", queue="mail", idempotency_key="k")

    assert again not in (mail, billing)
    assert call(db, "enqueue", task="t", queue="billing", idempotency_key="k") == billing


def test_different_idempotency_keys_make_different_jobs(db):
    assert call(db, "enqueue", task="t", idempotency_key="a") != call(db, "enqueue", task="t", idempotency_key="b")
    assert job_count(db) == 2


def test_same_idempotency_key_twice_in_one_transaction_returns_the_same_job(db):
    with db.transaction():
        first = call(db, "enqueue", task="t", idempotency_key="k")
        again = call(db, "enqueue", task="t", idempotency_key="k")
    assert again == first
    assert job_count(db) == 1


def test_a_rolled_back_idempotency_key_can_be_used_again(db):
    with db.transaction() as tx:
        rolled_back = call(db, "enqueue", task="t", idempotency_key="k")
        raise psycopg.Rollback(tx)  # the job and its key go together
    created = call(db, "enqueue", task="t", idempotency_key="k")

    assert created != rolled_back
    assert job(db, created)["idempotency_key"] == "k"
    assert job_count(db) == 1


def _concurrent_enqueue(db, connect, *, finish_first: str, **key):
    """First connection enqueues in an open transaction; the second enqueues the same key and must block
    until the first ends with `finish_first` (COMMIT or ROLLBACK). Returns (first id, second id)."""
    first, second = connect(), connect()
    second.execute("SET statement_timeout = '5s'")   # never hang the test run
    first.execute("BEGIN")
    first_id = call(first, "enqueue", task="t", **key)
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(call, second, "enqueue", task="t", **key)
        wait_until_blocked(db, second.info.backend_pid)
        assert not pending.done()
        first.execute(finish_first)
        second_id = pending.result(timeout=5)
    return first_id, second_id


def test_a_concurrent_enqueue_with_the_same_idempotency_key_waits_and_returns_the_committed_job(db, connect):
    first_id, second_id = _concurrent_enqueue(db, connect, finish_first="COMMIT", idempotency_key="k")

    assert second_id == first_id
    assert job_count(db) == 1


def test_a_concurrent_enqueue_with_the_same_idempotency_key_creates_the_job_when_the_first_rolls_back(db, connect):
    first_id, second_id = _concurrent_enqueue(db, connect, finish_first="ROLLBACK", idempotency_key="k")

    assert second_id != first_id
    assert job(db, first_id) is None
    assert job(db, second_id)["idempotency_key"] == "k"
    assert job_count(db) == 1


# ---------------------------------------------------------------------------------------------
# dedupe_key
# ---------------------------------------------------------------------------------------------


def test_same_dedupe_key_in_the_same_queue_returns_the_active_job(db):
    first = call(db, "enqueue", task="search.reindex", payload={"n": 1}, queue="idx", dedupe_key="product-7")
    again = call(db, "enqueue", task="search.reindex", payload={"n": 2}, queue="idx", dedupe_key="product-7")

    assert again == first
    assert job_count(db) == 1
    assert job(db, first)["payload"] == {"n": 1}


def test_same_dedupe_key_in_another_queue_makes_a_new_job(db):
    first = call(db, "enqueue", task="t", queue="a", dedupe_key="k")
    other = call(db, "enqueue", task="t", queue="b", dedupe_key="k")

    assert other != first
    assert job_count(db) == 2


def test_dedupe_key_returns_the_job_while_it_is_leased(db):
    first = call(db, "enqueue", task="t", dedupe_key="k")
    db.execute("SELECT * FROM pgrelay.consume('w')")
    assert job(db, first)["status"] == "leased"

    assert call(db, "enqueue", task="t", dedupe_key="k") == first
    assert job_count(db) == 1


def test_dedupe_key_makes_a_new_job_once_the_old_one_was_acked(db):
    first = call(db, "enqueue", task="t", dedupe_key="k")
    ack_all(db)

    second = call(db, "enqueue", task="t", dedupe_key="k")

    assert second != first
    assert job(db, second)["status"] == "pending"
    assert job(db, second)["dedupe_key"] == "k"
    assert call(db, "enqueue", task="t", dedupe_key="k") == second
    assert job_count(db) == 2


def test_dedupe_key_makes_a_new_job_once_the_old_one_was_dead_lettered(db):
    first = call(db, "enqueue", task="t", dedupe_key="k")
    (job_id, attempt), = db.execute("SELECT id, attempt FROM pgrelay.consume('w')").fetchall()
    assert db.execute("SELECT pgrelay.nack(%s, %s, 'boom', permanent => true)", [job_id, attempt]).fetchone()[0] == "dead_letter"

    second = call(db, "enqueue", task="t", dedupe_key="k")

    assert second != first
    assert job_count(db) == 2


def test_a_concurrent_enqueue_with_the_same_dedupe_key_waits_and_returns_the_committed_job(db, connect):
    first_id, second_id = _concurrent_enqueue(db, connect, finish_first="COMMIT", dedupe_key="k")

    assert second_id == first_id
    assert job_count(db) == 1


def test_a_concurrent_enqueue_with_the_same_dedupe_key_creates_the_job_when_the_first_rolls_back(db, connect):
    first_id, second_id = _concurrent_enqueue(db, connect, finish_first="ROLLBACK", dedupe_key="k")

    assert second_id != first_id
    assert job(db, second_id)["dedupe_key"] == "k"
    assert job_count(db) == 1


# ---------------------------------------------------------------------------------------------
# both keys
# ---------------------------------------------------------------------------------------------


def test_a_new_idempotency_key_with_an_active_dedupe_key_returns_the_active_job_and_keeps_the_key(db):
    first = call(db, "enqueue", task="t", idempotency_key="a", dedupe_key="d")

    assert call(db, "enqueue", task="t", idempotency_key="b", dedupe_key="d") == first
    # the key "b" now names that job, even without the dedupe key and after the job finished
    ack_all(db)
    assert call(db, "enqueue", task="t", idempotency_key="b") == first
    assert job_count(db) == 1


def test_idempotency_key_wins_over_a_free_dedupe_key(db):
    first = call(db, "enqueue", task="t", idempotency_key="a", dedupe_key="d")
    ack_all(db)

    assert call(db, "enqueue", task="t", idempotency_key="a", dedupe_key="d") == first
    fresh = call(db, "enqueue", task="t", idempotency_key="c", dedupe_key="d")

    assert fresh != first
    assert {key: job(db, fresh)[key] for key in ("idempotency_key", "dedupe_key", "status")} == {
        "idempotency_key": "c", "dedupe_key": "d", "status": "pending"}
    assert job_count(db) == 2
