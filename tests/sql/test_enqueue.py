"""pgrelay.enqueue: one handler job, stored as given, in the caller's transaction; bad input is refused (PR001)."""

from __future__ import annotations

import re
from datetime import datetime, timezone

import psycopg
from psycopg.types.json import Jsonb

from tests.sql.helpers import call, error_of, job, job_count, raises_sqlstate


def test_defaults_make_a_pending_handler_job_in_the_default_queue_due_now(db):
    with db.transaction():
        job_id = call(db, "enqueue", task="mail.send")
        now = db.execute("SELECT now()").fetchone()[0]

    stored = job(db, job_id)
    assert stored["run_at"] == now
    assert {key: stored[key] for key in (
        "id", "task", "queue", "kind", "status", "payload", "priority", "attempt", "max_attempts",
        "timeout_seconds", "idempotency_key", "dedupe_key", "trace_id", "leased_by", "finished_at",
    )} == {
        "id": job_id, "task": "mail.send", "queue": "default", "kind": "handler", "status": "pending",
        "payload": {}, "priority": 0, "attempt": 0, "max_attempts": 10, "timeout_seconds": None,
        "idempotency_key": None, "dedupe_key": None, "trace_id": None, "leased_by": None, "finished_at": None,
    }


def test_null_for_an_optional_argument_takes_its_default(db):
    with db.transaction():
        job_id = call(db, "enqueue", task="t", payload=None, queue=None, run_at=None, priority=None, max_attempts=None,
                      timeout_seconds=None, idempotency_key=None, dedupe_key=None, trace_id=None)
        now = db.execute("SELECT now()").fetchone()[0]

    stored = job(db, job_id)
    assert {key: stored[key] for key in (
        "payload", "queue", "run_at", "priority", "max_attempts", "timeout_seconds", "idempotency_key", "dedupe_key",
        "trace_id")} == {
        "payload": {}, "queue": "default", "run_at": now, "priority": 0, "max_attempts": 10, "timeout_seconds": None,
        "idempotency_key": None, "dedupe_key": None, "trace_id": None}


def test_every_optional_argument_is_stored(db):
    run_at = datetime(2031, 1, 2, 3, 4, 5, 123456, tzinfo=timezone.utc)
    job_id = call(
        db, "enqueue", task="billing/invoice:send-1", payload={"order": 42, "lines": [1, 2], "note": None},
        queue="billing", run_at=run_at, priority=-7, max_attempts=3, timeout_seconds=90,
        idempotency_key="invoice-42", dedupe_key="invoice-42-active", trace_id="00-abc-01",
    )

    stored = job(db, job_id)
    assert {key: stored[key] for key in (
        "task", "payload", "queue", "run_at", "priority", "max_attempts", "timeout_seconds",
        "idempotency_key", "dedupe_key", "trace_id", "kind", "status",
    )} == {
        "task": "billing/invoice:send-1", "payload": {"order": 42, "lines": [1, 2], "note": None},
        "queue": "billing", "run_at": run_at, "priority": -7, "max_attempts": 3, "timeout_seconds": 90,
        "idempotency_key": "invoice-42", "dedupe_key": "invoice-42-active", "trace_id": "00-abc-01",
        "kind": "handler", "status": "pending",
    }


def test_payload_may_be_any_json_value(db):
    payloads = [[1, "two"], "just a string", 17, True, None]   # None: the JSON null, not SQL NULL
    ids = [call(db, "enqueue", task="t", payload=Jsonb(payload)) for payload in payloads]
    assert [job(db, job_id)["payload"] for job_id in ids] == payloads


def test_each_call_creates_a_new_job_with_a_new_id(db):
    ids = [call(db, "enqueue", task="t") for _ in range(3)]
    assert len(set(ids)) == 3
    assert job_count(db) == 3


def test_a_rollback_leaves_no_job(db):
    with db.transaction() as tx:
        job_id = call(db, "enqueue", task="t")
        assert job_count(db) == 1
        raise psycopg.Rollback(tx)

    assert job_count(db) == 0
    assert job(db, job_id) is None


def test_the_job_is_invisible_to_others_until_the_caller_commits(db, connect):
    other = connect()
    with db.transaction():
        job_id = call(db, "enqueue", task="t")
        assert job_count(other) == 0
    assert job_count(other) == 1
    assert job(other, job_id)["status"] == "pending"


def test_the_business_row_and_its_job_commit_or_roll_back_together(db):
    db.execute("CREATE TABLE orders (id int PRIMARY KEY, total numeric)")

    with db.transaction():
        db.execute("INSERT INTO orders VALUES (1, 10)")
        kept = call(db, "enqueue", task="orders.confirm", payload={"order_id": 1})
    with db.transaction() as tx:
        db.execute("INSERT INTO orders VALUES (2, 20)")
        call(db, "enqueue", task="orders.confirm", payload={"order_id": 2})
        raise psycopg.Rollback(tx)

    assert db.execute("SELECT array_agg(id) FROM orders").fetchone()[0] == [1]
    assert db.execute("SELECT array_agg(id) FROM pgrelay.jobs").fetchone()[0] == [kept]


def test_a_failing_enqueue_aborts_the_business_insert_of_its_transaction(db):
    db.execute("CREATE TABLE orders (id int PRIMARY KEY)")

    with raises_sqlstate("PR001"):
        with db.transaction():
            db.execute("INSERT INTO orders VALUES (1)")
            call(db, "enqueue", task="orders confirm")   # a space: not a valid task

    assert db.execute("SELECT count(*) FROM orders").fetchone()[0] == 0
    assert job_count(db) == 0


USER_TRIGGER = """
    CREATE TABLE orders (id int PRIMARY KEY, email text);
    CREATE FUNCTION orders_enqueue_confirm() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM pgrelay.enqueue(TG_ARGV[0], jsonb_build_object('order_id', NEW.id, 'email', NEW.email),
                                queue => 'mail', idempotency_key => 'order-' || NEW.id);
        RETURN NEW;
    END
    $$;
"""


def test_a_user_written_trigger_enqueues_a_job_per_row(db):
    db.execute(USER_TRIGGER)
    db.execute("CREATE TRIGGER confirm AFTER INSERT ON orders FOR EACH ROW EXECUTE FUNCTION orders_enqueue_confirm('orders.confirm')")

    db.execute("INSERT INTO orders VALUES (1, 'a@example.com'), (2, 'b@example.com')")

    rows = db.execute("SELECT task, queue, payload, idempotency_key FROM pgrelay.jobs ORDER BY id").fetchall()
    assert rows == [
        ("orders.confirm", "mail", {"order_id": 1, "email": "a@example.com"}, "order-1"),
        ("orders.confirm", "mail", {"order_id": 2, "email": "b@example.com"}, "order-2"),
    ]


def test_a_user_written_trigger_whose_enqueue_fails_aborts_the_insert(db):
    db.execute(USER_TRIGGER)
    db.execute("CREATE TRIGGER confirm AFTER INSERT ON orders FOR EACH ROW EXECUTE FUNCTION orders_enqueue_confirm('bad task')")

    with raises_sqlstate("PR001"):
        db.execute("INSERT INTO orders VALUES (1, 'a@example.com')")

    assert db.execute("SELECT count(*) FROM orders").fetchone()[0] == 0
    assert job_count(db) == 0


# (arguments, the argument the message must name); task defaults to a good one
BAD_ARGUMENTS = [
    ({"task": None}, "task"),
    ({"task": ""}, "task"),
    ({"task": "mail send"}, "task"),
    ({"task": "mail;drop"}, "task"),
    ({"task": "-mail"}, "task"),
    ({"task": "mäil"}, "task"),
    ({"task": "t" * 201}, "task"),
    ({"queue": ""}, "queue"),
    ({"queue": "a/b"}, "queue"),
    ({"queue": "my queue"}, "queue"),
    ({"queue": "q" * 129}, "queue"),
    ({"run_at": "infinity"}, "run_at"),
    ({"run_at": "-infinity"}, "run_at"),
    ({"max_attempts": 0}, "max_attempts"),
    ({"max_attempts": 1001}, "max_attempts"),
    ({"timeout_seconds": 0}, "timeout_seconds"),
    ({"timeout_seconds": 86401}, "timeout_seconds"),
    ({"idempotency_key": ""}, "idempotency_key"),
    ({"idempotency_key": "k" * 256}, "idempotency_key"),
    ({"dedupe_key": ""}, "dedupe_key"),
    ({"dedupe_key": "k" * 256}, "dedupe_key"),
    ({"trace_id": ""}, "trace_id"),
    ({"trace_id": "t" * 256}, "trace_id"),
]


def test_each_bad_argument_is_refused_with_pr001_naming_it_and_enqueues_nothing(db):
    call(db, "enqueue", task="existing")

    wrong = []
    for bad, argument in BAD_ARGUMENTS:
        error = error_of(lambda: call(db, "enqueue", **{"task": "mail.send", **bad}))
        if (error is None or error.sqlstate != "PR001"
                or not re.search(rf"\b{argument}\b", error.diag.message_primary or "")):
            wrong.append((bad, error and error.sqlstate, error and error.diag.message_primary))

    assert wrong == []
    assert job_count(db) == 1


def test_a_bad_argument_inside_a_transaction_undoes_the_earlier_enqueue_of_that_transaction(db):
    with raises_sqlstate("PR001"):
        with db.transaction():
            call(db, "enqueue", task="first")
            call(db, "enqueue", task="second", max_attempts=0)
    assert job_count(db) == 0


EDGE_VALUES = [
    {"task": "t" * 200},
    {"task": "_a.b-c:d/e"},
    {"queue": "q" * 128},
    {"queue": "_q.b-c:d"},
    {"max_attempts": 1},
    {"max_attempts": 1000},
    {"timeout_seconds": 1},
    {"timeout_seconds": 86400},
    {"priority": -2147483648},
    {"priority": 2147483647},
    {"idempotency_key": "k" * 255},
    {"dedupe_key": "k" * 255},
    {"trace_id": "t" * 255},
    {"run_at": datetime(2000, 1, 1, tzinfo=timezone.utc)},
]


def test_values_at_the_limits_are_accepted_and_stored(db):
    wrong = []
    for edge in EDGE_VALUES:
        job_id = call(db, "enqueue", **{"task": "mail.send", **edge})
        stored = job(db, job_id)
        wrong += [(name, value, stored[name]) for name, value in edge.items() if stored[name] != value]

    assert wrong == []
    assert job_count(db) == len(EDGE_VALUES)
