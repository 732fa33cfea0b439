"""pgrelay.enqueue_many: one job per payload for one task, the other arguments shared and checked once;
ids in input order; a bad argument (PR001) enqueues nothing."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from psycopg.types.json import Jsonb

from tests.sql.helpers import job, job_count, raises_sqlstate

CHANNEL = "pgrelay_jobs"


def many(db, task, payloads, **args):
    named = "".join(f", {name} => %({name})s" for name in args)
    return [row[0] for row in db.execute(
        f"SELECT * FROM pgrelay.enqueue_many(task => %(task)s, payloads => %(payloads)s::jsonb[]{named})",
        {"task": task, "payloads": [None if p is None else Jsonb(p) for p in payloads], **args}).fetchall()]


def test_one_job_per_payload_with_ids_in_input_order(db):
    payloads = [{"n": n} for n in (3, 1, 2)] + [[1, 2], "text", None]
    ids = many(db, "mail.send", payloads)

    assert len(ids) == len(set(ids)) == 6
    assert [job(db, i)["payload"] for i in ids] == [{"n": 3}, {"n": 1}, {"n": 2}, [1, 2], "text", {}]
    assert {job(db, i)["task"] for i in ids} == {"mail.send"}


def test_every_job_takes_the_shared_arguments(db):
    run_at = datetime(2031, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    ids = many(db, "billing/invoice", [{}, {}], queue="billing", run_at=run_at, priority=4, max_attempts=2,
               timeout_seconds=30, trace_id="tr")

    for job_id in ids:
        stored = job(db, job_id)
        assert {k: stored[k] for k in ("queue", "run_at", "priority", "max_attempts", "timeout_seconds", "trace_id",
                                       "kind", "status")} == {
            "queue": "billing", "run_at": run_at, "priority": 4, "max_attempts": 2, "timeout_seconds": 30,
            "trace_id": "tr", "kind": "handler", "status": "pending"}


def test_null_arguments_take_their_defaults(db):
    [job_id] = many(db, "t", [{}], queue=None, run_at=None, priority=None)
    stored = job(db, job_id)
    assert (stored["queue"], stored["priority"], stored["status"]) == ("default", 0, "pending")


def test_an_empty_array_enqueues_nothing(db):
    assert many(db, "t", []) == []
    assert job_count(db) == 0


@pytest.mark.parametrize("task, args, word", [
    ("bad task", {}, "task"),
    (None, {}, "task"),
    ("t", {"queue": "bad/queue"}, "queue"),
    ("t", {"max_attempts": 0}, "max_attempts"),
    ("t", {"timeout_seconds": -1}, "timeout_seconds"),
    ("t", {"trace_id": ""}, "trace_id"),
], ids=["task", "null-task", "queue", "max-attempts", "timeout", "trace-id"])
def test_a_bad_shared_argument_is_refused_with_pr001_and_nothing_is_enqueued(db, task, args, word):
    with raises_sqlstate("PR001") as error:
        many(db, task, [{}, {}], **args)
    assert word in error.value.diag.message_primary
    assert job_count(db) == 0


def test_payloads_must_be_a_one_dimensional_array_of_at_most_10000(db):
    with raises_sqlstate("PR001") as error:
        db.execute("SELECT pgrelay.enqueue_many('t', NULL)")
    assert "payloads" in error.value.diag.message_primary
    with raises_sqlstate("PR001"):
        db.execute("SELECT pgrelay.enqueue_many('t', ARRAY[ARRAY['{}'::jsonb], ARRAY['{}'::jsonb]])")
    with raises_sqlstate("PR001") as error:
        db.execute("SELECT pgrelay.enqueue_many('t', array_fill('{}'::jsonb, ARRAY[10001]))")
    assert "10000" in error.value.diag.message_primary
    assert db.execute("SELECT count(*) FROM pgrelay.enqueue_many('t', array_fill('{}'::jsonb, ARRAY[10000]))"
                      ).fetchone()[0] == 10000


def test_one_call_sends_one_notification_after_commit(db, connect):
    listener = connect()
    listener.execute(f"LISTEN {CHANNEL}")
    listener.execute("SELECT * FROM pgrelay.idle('listener')")   # a worker waiting for NOTIFY
    many(db, "t", [{}] * 50, queue="mail")
    got = [(n.channel, n.payload) for n in listener.notifies(timeout=1, stop_after=2)]
    assert got == [(CHANNEL, "mail")]
