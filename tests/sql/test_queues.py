"""pgrelay.configure_queue, pgrelay.pause and pgrelay.resume: per-queue settings."""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

import pytest
from psycopg.types.json import Jsonb

from tests.sql.factory import (
    call,
    call_rows,
    connect_in_transaction,
    consume,
    enqueue,
    get_job,
    make_job,
    raises_sqlstate,
    scalar,
)

DEFAULTS = {
    "paused": False,
    "concurrency": None,
    "max_attempts": 10,
    "lease_seconds": 30,
    "backoff_base_seconds": 1.0,
    "backoff_max_seconds": 3600.0,
    "retention_succeeded_days": 7,
    "retention_dead_letter_days": 30,
}


def configure(db, queue="mail", **args):
    [settings] = call_rows(db, "configure_queue", queue=queue, **args)
    return settings


def settings_of(db, queue="mail"):
    """The effective settings, read through configure_queue with nothing to change."""
    return configure(db, queue)


def test_a_queue_without_settings_has_the_defaults(db):
    assert configure(db, "mail") == {"queue": "mail", **DEFAULTS}


def test_returns_the_effective_settings_after_the_change(db):
    settings = configure(db, concurrency=3, max_attempts=5, lease_seconds=60,
                         backoff_base_seconds=0.5, backoff_max_seconds=120)

    assert settings == {"queue": "mail", "paused": False, "concurrency": 3, "max_attempts": 5, "lease_seconds": 60,
                        "backoff_base_seconds": 0.5, "backoff_max_seconds": 120.0,
                        "retention_succeeded_days": 7, "retention_dead_letter_days": 30}


def test_null_leaves_a_setting_as_it_is(db):
    configure(db, concurrency=3, max_attempts=5, lease_seconds=60, backoff_base_seconds=2, backoff_max_seconds=100)

    settings = configure(db, lease_seconds=90)

    assert settings == {"queue": "mail", "paused": False, "concurrency": 3, "max_attempts": 5, "lease_seconds": 90,
                        "backoff_base_seconds": 2.0, "backoff_max_seconds": 100.0,
                        "retention_succeeded_days": 7, "retention_dead_letter_days": 30}


def test_reset_returns_a_setting_to_its_default(db):
    configure(db, concurrency=3, max_attempts=5)

    settings = configure(db, reset=["concurrency"])

    assert settings["concurrency"] is None
    assert settings["max_attempts"] == 5


def test_reset_several_settings_while_setting_another(db):
    configure(db, concurrency=3, max_attempts=5, lease_seconds=60, backoff_base_seconds=2, backoff_max_seconds=100)

    settings = configure(db, concurrency=7, reset=["max_attempts", "lease_seconds", "backoff_base_seconds", "backoff_max_seconds"])

    assert settings == {"queue": "mail", **DEFAULTS, "concurrency": 7}


def test_retention_is_set_and_reset_per_queue(db):
    settings = configure(db, retention_succeeded_days=1, retention_dead_letter_days=0)
    assert (settings["retention_succeeded_days"], settings["retention_dead_letter_days"]) == (1, 0)

    settings = configure(db, reset=["retention_succeeded_days"])

    assert (settings["retention_succeeded_days"], settings["retention_dead_letter_days"]) == (7, 0)


@pytest.mark.parametrize("field", ["retention_succeeded_days", "retention_dead_letter_days"])
@pytest.mark.parametrize("value", [-1, 36501])
def test_retention_out_of_range_is_refused(db, field, value):
    with raises_sqlstate("PR001") as info:
        configure(db, **{field: value})
    assert field in str(info.value)


def test_settings_of_one_queue_do_not_touch_another(db):
    configure(db, "mail", concurrency=2, max_attempts=3)

    assert configure(db, "sms") == {"queue": "sms", **DEFAULTS}


def test_a_changed_max_attempts_applies_to_jobs_already_enqueued(db):
    job = enqueue(db, queue="mail")
    own = enqueue(db, queue="mail", max_attempts=7)

    configure(db, max_attempts=3)
    assert get_job(db, job)["max_attempts"] == 3
    assert get_job(db, own)["max_attempts"] == 7

    configure(db, reset=["max_attempts"])
    assert get_job(db, job)["max_attempts"] == 10


def test_removing_the_concurrency_limit_lets_consume_take_everything(db):
    configure(db, concurrency=1)
    for _ in range(3):
        enqueue(db, queue="mail")
    assert len(consume(db, batch=10)) == 1

    configure(db, reset=["concurrency"])

    assert len(consume(db, batch=10)) == 2


def test_lowering_the_limit_below_the_current_leases_stops_claims_until_enough_finish(db):
    for _ in range(5):
        enqueue(db, queue="mail")
    held = consume(db, batch=3)
    configure(db, concurrency=1)

    assert consume(db, batch=10) == []
    for row in held[:2]:
        call(db, "ack", id=row["id"], attempt=row["attempt"])
    assert consume(db, batch=10) == []
    call(db, "ack", id=held[2]["id"], attempt=held[2]["attempt"])
    assert len(consume(db, batch=10)) == 1


def _assert_rejected_and_unchanged(db, **args):
    before = settings_of(db)
    with raises_sqlstate("PR001"):
        configure(db, **args)
    assert settings_of(db) == before


@pytest.mark.parametrize("name", ["concurrency", "max_attempts", "lease_seconds", "backoff_base_seconds", "backoff_max_seconds"])
def test_setting_and_resetting_the_same_setting_is_rejected(db, name):
    configure(db, concurrency=3, max_attempts=5, lease_seconds=60, backoff_base_seconds=2, backoff_max_seconds=100)

    _assert_rejected_and_unchanged(db, **{name: 4, "reset": [name]})


@pytest.mark.parametrize("reset", [["paused"], ["queue"], ["bogus"], ["concurrency", None], ["Concurrency"]])
def test_unknown_reset_name_is_rejected(db, reset):
    configure(db, concurrency=3)

    _assert_rejected_and_unchanged(db, reset=reset)


@pytest.mark.parametrize(
    "args",
    [
        {"concurrency": 0},
        {"concurrency": -1},
        {"concurrency": 100001},
        {"max_attempts": 0},
        {"max_attempts": 1001},
        {"lease_seconds": 0},
        {"lease_seconds": 86401},
        {"backoff_base_seconds": 0},
        {"backoff_base_seconds": -1},
        {"backoff_base_seconds": math.nan},
        {"backoff_base_seconds": math.inf},
        {"backoff_max_seconds": 0},
        {"backoff_max_seconds": math.nan},
        {"backoff_max_seconds": 604801},
        {"backoff_base_seconds": 10, "backoff_max_seconds": 5},
    ],
    ids=lambda a: repr(a)[:50],
)
def test_out_of_range_values_are_rejected_and_change_nothing(db, args):
    configure(db, concurrency=3, max_attempts=5, lease_seconds=60, backoff_base_seconds=2, backoff_max_seconds=100)

    _assert_rejected_and_unchanged(db, **args)


def test_backoff_base_above_the_stored_max_is_rejected_and_changes_nothing(db):
    configure(db, backoff_base_seconds=1, backoff_max_seconds=5)

    _assert_rejected_and_unchanged(db, backoff_base_seconds=6)
    _assert_rejected_and_unchanged(db, backoff_max_seconds=0.5)


def test_backoff_base_above_the_default_max_on_a_new_queue_leaves_no_trace(db):
    with raises_sqlstate("PR001"):
        configure(db, "fresh", backoff_base_seconds=7200)

    assert db.execute("SELECT count(*) FROM pgrelay.queue_stats WHERE queue = 'fresh'").fetchone()[0] == 0
    assert configure(db, "fresh") == {"queue": "fresh", **DEFAULTS}


def test_backoff_base_equal_to_max_is_accepted(db):
    settings = configure(db, backoff_base_seconds=5, backoff_max_seconds=5)

    assert (settings["backoff_base_seconds"], settings["backoff_max_seconds"]) == (5.0, 5.0)


def test_the_bounds_themselves_are_accepted(db):
    settings = configure(db, concurrency=100000, max_attempts=1000, lease_seconds=86400,
                         backoff_base_seconds=0.001, backoff_max_seconds=604800)

    assert (settings["concurrency"], settings["max_attempts"], settings["lease_seconds"]) == (100000, 1000, 86400)
    assert configure(db, concurrency=1, max_attempts=1, lease_seconds=1)["concurrency"] == 1


@pytest.mark.parametrize("queue", [None, "", "has space", "q" * 129])
def test_invalid_queue_name_is_rejected(db, queue):
    with raises_sqlstate("PR001"):
        call_rows(db, "configure_queue", queue=queue, concurrency=1)
    with raises_sqlstate("PR001"):
        call(db, "pause", queue=queue)
    with raises_sqlstate("PR001"):
        call(db, "resume", queue=queue)


# ---------------------------------------------------------------------------------------------
# pause / resume
# ---------------------------------------------------------------------------------------------


def test_pause_returns_true_when_the_queue_was_running(db):
    assert call(db, "pause", queue="mail") is True
    assert settings_of(db)["paused"] is True


def test_pause_of_a_paused_queue_returns_false(db):
    call(db, "pause", queue="mail")

    assert call(db, "pause", queue="mail") is False
    assert settings_of(db)["paused"] is True


def test_pause_of_a_configured_queue_keeps_its_settings(db):
    configure(db, concurrency=3, max_attempts=5)

    assert call(db, "pause", queue="mail") is True

    assert settings_of(db) == {"queue": "mail", **DEFAULTS, "paused": True, "concurrency": 3, "max_attempts": 5}


def test_configure_queue_keeps_the_queue_paused(db):
    call(db, "pause", queue="mail")

    assert configure(db, concurrency=2, reset=["max_attempts"])["paused"] is True


def test_resume_returns_true_when_the_queue_was_paused(db):
    call(db, "pause", queue="mail")

    assert call(db, "resume", queue="mail") is True
    assert settings_of(db)["paused"] is False


def test_resume_of_a_running_queue_returns_false(db):
    configure(db, concurrency=2)

    assert call(db, "resume", queue="mail") is False
    assert call(db, "resume", queue="never-seen") is False
    assert settings_of(db)["concurrency"] == 2


def test_resume_keeps_the_settings(db):
    configure(db, concurrency=3)
    call(db, "pause", queue="mail")

    call(db, "resume", queue="mail")

    assert settings_of(db) == {"queue": "mail", **DEFAULTS, "concurrency": 3}


def test_pause_does_not_touch_leased_jobs(db):
    job = make_job(db, "leased", queue="mail")

    call(db, "pause", queue="mail")

    assert get_job(db, job)["status"] == "leased"
    assert call(db, "ack", id=job.id, attempt=job.attempt) is True


def test_enqueue_into_a_paused_queue_still_works(db):
    call(db, "pause", queue="mail")

    job = enqueue(db, queue="mail")

    assert get_job(db, job)["status"] == "pending"


def test_resume_of_a_paused_queue_wakes_the_workers(db, connect):
    enqueue(db, queue="mail")
    listener = connect()
    listener.execute("LISTEN pgrelay_jobs")
    listener.execute("SELECT * FROM pgrelay.idle('listener')")   # a worker waiting for NOTIFY
    call(db, "pause", queue="mail")
    call(db, "resume", queue="other")

    call(db, "resume", queue="mail")

    payloads = [n.payload for n in listener.notifies(timeout=5, stop_after=1)]
    payloads += [n.payload for n in listener.notifies(timeout=0.2)]
    assert payloads == ["mail"]



# ---------------------------------------------------------------------------------------------
# A queue's row: made by its first job, shared by concurrent first jobs
# ---------------------------------------------------------------------------------------------


def _enqueue_waiting_for(first, connect, queue):
    """Start enqueueing into `queue` from another connection while `first` holds the queue's new,
    uncommitted row; returns the future, after checking that it waits."""
    pool = ThreadPoolExecutor(1)
    second = pool.submit(lambda: enqueue(connect(), queue=queue))
    pool.shutdown(wait=False)
    with pytest.raises(FutureTimeout):
        second.result(0.5)
    return second


def test_first_jobs_of_a_new_queue_from_two_transactions_both_land_in_it(db, connect):
    first = connect_in_transaction(connect)
    one = enqueue(first, queue="fresh")
    second = _enqueue_waiting_for(first, connect, "fresh")
    first.commit()
    two = second.result(10)
    assert sorted(row["id"] for row in consume(db, queues=["fresh"], batch=10)) == sorted([one.id, two.id])
    assert scalar(db, "SELECT count(*) FROM pgrelay._queues WHERE queue = 'fresh'") == 1


def test_a_queue_row_rolled_back_with_its_first_job_is_made_again_by_the_next(db, connect):
    first = connect_in_transaction(connect)
    enqueue(first, queue="fresh")
    second = _enqueue_waiting_for(first, connect, "fresh")
    first.rollback()
    job = second.result(10)
    assert [row["id"] for row in consume(db, queues=["fresh"], batch=10)] == [job.id]
    assert [row["id"] for row in consume(db, batch=10)] == []


@pytest.mark.parametrize("path", ["enqueue", "keyed", "bulk", "many", "statement_trigger", "replay"])
def test_every_way_in_files_the_job_under_its_queue(db, path):
    queue = f"q-{path}"
    if path == "enqueue":
        enqueue(db, queue=queue)
    elif path == "keyed":
        enqueue(db, queue=queue, dedupe_key="k", idempotency_key="key")
    elif path == "bulk":
        call(db, "enqueue_bulk", jobs=Jsonb([{"task": "a", "queue": queue}, {"task": "b", "queue": "q-other"},
                                             {"task": "c", "queue": queue}]))
    elif path == "many":
        call(db, "enqueue_many", task="a", payloads=[Jsonb({}), Jsonb({})], queue=queue)
    elif path == "statement_trigger":
        db.execute(f"""
            CREATE TABLE items (id int);
            CREATE TRIGGER enqueue AFTER INSERT ON items REFERENCING NEW TABLE AS new_rows
                FOR EACH STATEMENT EXECUTE FUNCTION pgrelay.enqueue_trigger('items.added', '{queue}');
            INSERT INTO items VALUES (1), (2);
        """)
    else:
        make_job(db, "dead_letter", queue=queue)
        assert call(db, "replay_dead_letters", queue=queue) == 1
    # the claim index is keyed by the queue's id: a job filed under another queue's id would be
    # claimed from that queue, or never
    assert scalar(db, """SELECT count(*) FROM pgrelay._jobs j LEFT JOIN pgrelay._queues q ON q.id = j.queue_id
                         WHERE q.queue IS DISTINCT FROM j.queue""") == 0
    filed = scalar(db, "SELECT count(*) FROM pgrelay._jobs WHERE queue = %s AND leased_by IS NULL", (queue,))
    assert filed >= 1
    assert len(consume(db, queues=[queue], batch=10)) == filed


@pytest.mark.parametrize("path", ["enqueue", "bulk", "many", "statement_trigger"])
def test_a_job_that_sets_no_option_stores_no_options_value(db, path):
    # white box: the rarely set fields live in one composite column, which must be SQL NULL for a
    # job that sets none of them. A row of NULLs would also pass "options IS NULL", but it is stored
    # (and walked) in every copy of the row, so the test looks at the stored size.
    queue = f"q-{path}"
    if path == "enqueue":
        enqueue(db, queue=queue)
    elif path == "bulk":
        call(db, "enqueue_bulk", jobs=Jsonb([{"task": "a", "queue": queue}, {"task": "b", "queue": queue}]))
    elif path == "many":
        call(db, "enqueue_many", task="a", payloads=[Jsonb({}), Jsonb({})], queue=queue)
    else:
        db.execute(f"""
            CREATE TABLE items (id int);
            CREATE TRIGGER enqueue AFTER INSERT ON items REFERENCING NEW TABLE AS new_rows
                FOR EACH STATEMENT EXECUTE FUNCTION pgrelay.enqueue_trigger('items.added', '{queue}');
            INSERT INTO items VALUES (1), (2);
        """)
    enqueue(db, queue=queue, trace_id="t-1")

    stored = db.execute("SELECT pg_column_size(options), (options).trace_id FROM pgrelay._jobs WHERE queue = %s ORDER BY id",
                        (queue,)).fetchall()

    assert [size is None for size, _ in stored] == [True] * (len(stored) - 1) + [False]
    assert stored[-1][1] == "t-1"
    [claimed] = [j for j in consume(db, queues=[queue], batch=10) if j["trace_id"] is not None]
    assert (claimed["trace_id"], claimed["max_attempts"], claimed["timeout_seconds"]) == ("t-1", 10, None)
