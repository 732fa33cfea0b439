"""pgrelay.enqueue_bulk: many jobs in one call, ids in input order; one bad element (PR002, "jobs[<index>]: ...")
rejects the whole call and nothing is enqueued."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import psycopg

from tests.sql.helpers import ack_all, bulk, call, error_of, job, job_count, raises_sqlstate


def test_ids_come_back_in_input_order(db):
    # priorities, queues and run_at deliberately disagree with the input order
    jobs = [
        {"task": "c.third", "priority": 1},
        {"task": "a.first", "queue": "zz", "priority": 9},
        {"task": "b.second", "run_at": "2000-01-01T00:00:00Z", "priority": -3},
        {"task": "d.fourth", "queue": "aa"},
    ]
    ids = bulk(db, jobs)

    assert len(ids) == len(set(ids)) == 4
    assert [job(db, job_id)["task"] for job_id in ids] == [j["task"] for j in jobs]
    assert job_count(db) == 4


def test_each_element_takes_enqueues_arguments_and_defaults(db):
    run_at = datetime(2031, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    full, plain = bulk(db, [
        {"task": "billing/invoice", "payload": {"n": 1}, "queue": "billing", "run_at": run_at.isoformat(),
         "priority": 4, "max_attempts": 2, "timeout_seconds": 30, "trace_id": "tr"},
        {"task": "mail.send"},
    ])

    stored = job(db, full)
    assert {key: stored[key] for key in (
        "task", "payload", "queue", "run_at", "priority", "max_attempts", "timeout_seconds", "trace_id", "kind",
        "status")} == {
        "task": "billing/invoice", "payload": {"n": 1}, "queue": "billing", "run_at": run_at, "priority": 4,
        "max_attempts": 2, "timeout_seconds": 30, "trace_id": "tr", "kind": "handler", "status": "pending"}
    stored = job(db, plain)
    assert {key: stored[key] for key in ("payload", "queue", "priority", "max_attempts", "timeout_seconds", "kind")} == {
        "payload": {}, "queue": "default", "priority": 0, "max_attempts": 10, "timeout_seconds": None, "kind": "handler"}


def test_handler_and_http_elements_mix(db):
    ids = bulk(db, [
        {"task": "mail.send", "payload": {"to": "a@example.com"}},
        {"url": "https://hooks.example.com/x", "method": "put", "headers": {"Authorization": {"env": "TOKEN"}},
         "body": {"id": 1}},
        {"url": "http://[::1]:8080/y", "task": "webhooks.y", "queue": "hooks"},
    ])

    stored = [job(db, job_id) for job_id in ids]
    assert [(s["kind"], s["task"], s["queue"]) for s in stored] == [
        ("handler", "mail.send", "default"), ("http", "http", "default"), ("http", "webhooks.y", "hooks")]
    assert stored[0]["payload"] == {"to": "a@example.com"}
    assert stored[1]["payload"] == {"url": "https://hooks.example.com/x", "method": "PUT",
                                    "headers": {"Authorization": {"env": "TOKEN"}}, "body": {"id": 1}}
    assert stored[2]["payload"] == {"url": "http://[::1]:8080/y", "method": "POST", "headers": {}, "body": None}


def test_an_empty_array_enqueues_nothing(db):
    assert bulk(db, []) == []
    assert job_count(db) == 0


def test_anything_but_an_array_is_refused_with_pr001(db):
    wrong = []
    for jobs in [None, {"task": "t"}, '"[]"', "42", "null"]:
        error = error_of(lambda: bulk(db, jobs))
        if error is None or error.sqlstate != "PR001" or "jobs" not in (error.diag.message_primary or ""):
            wrong.append((jobs, error and error.sqlstate, error and error.diag.message_primary))
    assert wrong == []
    assert job_count(db) == 0


def test_more_than_10000_jobs_are_refused_with_pr001_and_10000_are_taken(db):
    too_many = "SELECT * FROM pgrelay.enqueue_bulk((SELECT jsonb_agg(jsonb_build_object('task', 't')) FROM generate_series(1, %s)))"

    with raises_sqlstate("PR001") as error:
        db.execute(too_many, [10001])
    assert "10000" in error.value.diag.message_primary
    assert job_count(db) == 0

    assert len(db.execute(too_many, [10000]).fetchall()) == 10000
    assert job_count(db) == 10000


# Each is put at index 2 of an otherwise good array; (element, a word the message must contain after the index)
BAD_ELEMENTS = [
    ({"task": "t", "colour": "red"}, "colour"),
    ({"task": "t", "priority": "abc"}, ""),
    ({"task": "t", "priority": 1.5}, ""),
    ({"task": "t", "priority": 99999999999}, ""),
    ({"task": "t", "max_attempts": "x"}, ""),
    ({"task": "t", "timeout_seconds": [1]}, ""),
    ({"task": "t", "run_at": "not a date"}, ""),
    ({"task": "t", "run_at": "infinity"}, "run_at"),
    ({"task": "bad task"}, "task"),
    ({"payload": {"x": 1}}, "task"),
    ({"task": None}, "task"),
    ({"task": "t", "queue": "a/b"}, "queue"),
    ({"task": "t", "max_attempts": 0}, "max_attempts"),
    ({"task": "t", "timeout_seconds": 86401}, "timeout_seconds"),
    ({"task": "t", "idempotency_key": ""}, "idempotency_key"),
    ({"task": "t", "dedupe_key": ""}, "dedupe_key"),
    ({"task": "t", "trace_id": ""}, "trace_id"),
    ({"task": 5}, "task must be a JSON string, not number"),  # not the task "5"
    ({"task": "t", "queue": True}, "queue must be a JSON string"),
    ({"task": "t", "idempotency_key": 7}, "idempotency_key must be a JSON string"),
    ({"task": "t", "dedupe_key": ["k"]}, "dedupe_key must be a JSON string"),
    ({"task": "t", "trace_id": {"id": 1}}, "trace_id must be a JSON string"),
    ({"url": 80}, "url must be a JSON string"),
    ({"url": "https://example.com/", "method": 1}, "method must be a JSON string"),
    ({"task": "t", "body": {"x": 1}}, "url"),
    ({"task": "t", "method": "GET"}, "url"),
    ({"url": "ftp://example.com/"}, "url"),
    ({"url": "http://"}, "url"),
    ({"url": None}, "url"),
    ({"url": "https://example.com/", "payload": {"x": 1}}, "payload"),
    ({"url": "https://example.com/", "method": "FETCH"}, "method"),
    ({"url": "https://example.com/", "headers": {"X A": "b"}}, "header"),
    ({"url": "https://example.com/", "headers": "x"}, "headers"),
    ({"url": "https://example.com/", "task": "bad task"}, "task"),
    ("just a string", "object"),
    (42, "object"),
    ([{"task": "t"}], "object"),
    (None, "object"),
]


def test_a_bad_element_is_refused_with_pr002_naming_its_index_and_nothing_is_enqueued(db):
    call(db, "enqueue", task="existing")

    wrong = []
    for element, word in BAD_ELEMENTS:
        jobs = [{"task": "good.0"}, {"url": "https://example.com/1"}, element, {"task": "good.3"}]
        error = error_of(lambda: bulk(db, jobs))
        message = error.diag.message_primary or "" if error else ""
        if error is None or error.sqlstate != "PR002" or not message.startswith("jobs[2]: ") or word not in message[9:]:
            wrong.append((element, error and error.sqlstate, message))

    assert wrong == []
    assert job_count(db) == 1


def test_the_first_of_several_bad_elements_is_named(db):
    with raises_sqlstate("PR002") as error:
        bulk(db, [{"task": "ok"}, {"task": "bad one"}, {"task": "ok"}, {"task": "bad two"}])
    assert error.value.diag.message_primary.startswith("jobs[1]: ")

    with raises_sqlstate("PR002") as error:
        bulk(db, [{"task": "bad zero"}, {"task": "ok", "priority": "x"}])
    assert error.value.diag.message_primary.startswith(("jobs[0]: ", "jobs[1]: "))   # either is a bad element


def test_a_bad_element_index_counts_from_zero(db):
    with raises_sqlstate("PR002") as error:
        bulk(db, [{"task": "t", "priority": "abc"}])
    assert error.value.diag.message_primary.startswith("jobs[0]: ")

    with raises_sqlstate("PR002") as error:
        bulk(db, [{"task": "t"}] * 11 + [{"task": "t", "nope": 1}])
    assert error.value.diag.message_primary.startswith("jobs[11]: ")


def test_keyed_elements_return_existing_jobs(db):
    by_key = call(db, "enqueue", task="t", idempotency_key="existing")
    by_dedupe = call(db, "enqueue", task="t", queue="q", dedupe_key="active")

    ids = bulk(db, [
        {"task": "t", "idempotency_key": "existing"},
        {"task": "t", "queue": "q", "dedupe_key": "active"},
        {"task": "t", "dedupe_key": "active"},          # another queue: a new job
        {"task": "new"},
    ])

    assert ids[:2] == [by_key, by_dedupe]
    assert len({by_key, by_dedupe, ids[2], ids[3]}) == 4
    assert [job(db, job_id)["task"] for job_id in ids[2:]] == ["t", "new"]
    assert job_count(db) == 4


def test_duplicate_keys_inside_one_array_make_one_job_each(db):
    ids = bulk(db, [
        {"task": "a", "idempotency_key": "k"},
        {"task": "b", "dedupe_key": "d"},
        {"task": "c", "idempotency_key": "k"},
        {"task": "d", "dedupe_key": "d"},
        {"url": "https://example.com/", "idempotency_key": "k"},
        {"task": "e"},
    ])

    assert ids[0] == ids[2] == ids[4]
    assert ids[1] == ids[3]
    assert len(set(ids)) == 3
    assert [job(db, job_id)["task"] for job_id in ids] == ["a", "b", "a", "b", "a", "e"]
    assert job_count(db) == 3


def test_a_keyed_idempotency_key_still_returns_its_job_after_it_was_acked(db):
    (first,) = bulk(db, [{"task": "t", "idempotency_key": "k"}])
    ack_all(db)
    assert bulk(db, [{"task": "t", "idempotency_key": "k"}]) == [first]
    assert job_count(db) == 1


def test_a_bad_element_in_a_keyed_array_enqueues_nothing_and_takes_no_key(db):
    with raises_sqlstate("PR002"):
        bulk(db, [{"task": "t", "idempotency_key": "k"}, {"task": "t", "dedupe_key": "d"}, {"task": "t", "priority": "x"}])
    assert job_count(db) == 0

    (created,) = bulk(db, [{"task": "t", "idempotency_key": "k"}])
    assert job(db, created)["idempotency_key"] == "k"


def test_scheduled_elements_keep_their_run_at_and_are_not_due_yet(db):
    later = datetime.now(timezone.utc) + timedelta(hours=1)
    due, scheduled = bulk(db, [{"task": "now"}, {"task": "later", "run_at": later.isoformat()}])

    assert job(db, scheduled)["run_at"] == later
    assert job(db, scheduled)["status"] == "pending"
    assert [row[0] for row in db.execute("SELECT id FROM pgrelay.consume('w', batch => 10)")] == [due]


def test_a_rollback_removes_the_whole_batch(db):
    with db.transaction() as tx:
        assert len(bulk(db, [{"task": "a"}, {"task": "b", "idempotency_key": "k"}])) == 2
        raise psycopg.Rollback(tx)
    assert job_count(db) == 0
    assert len(bulk(db, [{"task": "b", "idempotency_key": "k"}])) == 1
