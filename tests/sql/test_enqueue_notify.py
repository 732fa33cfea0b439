"""Enqueueing wakes waiting workers: NOTIFY pgrelay_jobs, sent when the enqueueing transaction commits (never
for a rollback). Payload: "<queue>" for a job due now, "<queue> <unix time>" for a job that becomes due later.
The listener here waits on every queue (idle()); tests/sql/test_wakeups.py has who is notified when."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import psycopg
import pytest

from tests.sql.helpers import bulk, call

CHANNEL = "pgrelay_jobs"
QUIET = 0.3   # seconds to wait when no notification is expected
LATER = datetime(2100, 1, 1, 0, 0, 0, 250000, tzinfo=timezone.utc)
LATER_EPOCH = "4102444800.250"   # LATER as unix time, to the millisecond


@pytest.fixture
def listener(connect):
    conn = connect()
    conn.execute(f"LISTEN {CHANNEL}")
    conn.execute("SELECT * FROM pgrelay.idle('listener')")
    return conn


def received(listener, *, timeout=QUIET, stop_after=None):
    return [(n.channel, n.payload) for n in listener.notifies(timeout=timeout, stop_after=stop_after)]


def test_a_committed_enqueue_notifies_the_queue_name(db, listener):
    call(db, "enqueue", task="mail.send", queue="mail")
    assert received(listener, timeout=5, stop_after=1) == [(CHANNEL, "mail")]


def test_the_notification_arrives_only_after_the_commit(db, listener):
    with db.transaction():
        call(db, "enqueue", task="t")
        assert received(listener) == []
    assert received(listener, timeout=5, stop_after=1) == [(CHANNEL, "default")]


def test_a_rolled_back_enqueue_notifies_nothing(db, listener):
    with db.transaction() as tx:
        call(db, "enqueue", task="t")
        raise psycopg.Rollback(tx)
    assert received(listener) == []


def test_a_job_scheduled_for_later_notifies_the_queue_and_when_it_becomes_due(db, listener):
    call(db, "enqueue", task="t", queue="mail", run_at=LATER)
    assert received(listener, timeout=5, stop_after=1) == [(CHANNEL, f"mail {LATER_EPOCH}")]


def test_a_rolled_back_scheduled_job_notifies_nothing(db, listener):
    with db.transaction() as tx:
        call(db, "enqueue", task="t", run_at=datetime.now(timezone.utc) + timedelta(minutes=5))
        raise psycopg.Rollback(tx)
    assert received(listener) == []


def test_setting_pgrelay_notify_off_skips_the_notification(db, listener):
    db.execute("SET pgrelay.notify = off")
    call(db, "enqueue", task="t")
    bulk(db, [{"task": "t", "queue": "other"}])
    assert received(listener) == []


def test_a_job_scheduled_in_the_past_is_due_and_notifies(db, listener):
    call(db, "enqueue", task="t", queue="late", run_at=datetime(2000, 1, 1, tzinfo=timezone.utc))
    assert received(listener, timeout=5, stop_after=1) == [(CHANNEL, "late")]


def test_enqueue_http_notifies(db, listener):
    call(db, "enqueue_http", url="https://example.com/", queue="hooks")
    assert received(listener, timeout=5, stop_after=1) == [(CHANNEL, "hooks")]


def test_a_refused_enqueue_notifies_nothing(db, listener):
    with pytest.raises(psycopg.Error):
        call(db, "enqueue", task="bad task", queue="mail")
    assert received(listener) == []


def test_enqueue_bulk_notifies_each_queue_once_with_its_earliest_job(db, listener):
    later = LATER.isoformat()
    bulk(db, [{"task": "t", "queue": "a"}, {"task": "t", "queue": "b"}, {"task": "t", "queue": "a", "run_at": later},
              {"url": "https://example.com/", "queue": "b"}, {"task": "t", "queue": "scheduled", "run_at": later},
              {"task": "t", "queue": "scheduled", "run_at": "2200-01-01T00:00:00Z"}])

    got = received(listener, timeout=0.5, stop_after=4)   # a fourth one would be a mistake
    assert sorted(got) == [(CHANNEL, "a"), (CHANNEL, "b"), (CHANNEL, f"scheduled {LATER_EPOCH}")]


def test_keyed_enqueue_bulk_notifies_its_queues(db, listener):
    bulk(db, [{"task": "t", "queue": "a", "idempotency_key": "k1"}, {"task": "t", "queue": "b", "dedupe_key": "d"}])

    got = received(listener, timeout=0.5, stop_after=3)
    assert sorted(got) == [(CHANNEL, "a"), (CHANNEL, "b")]


def test_enqueue_trigger_notifies(db, listener):
    db.execute("""
        CREATE TABLE items (id int);
        CREATE TRIGGER t AFTER INSERT ON items FOR EACH ROW EXECUTE FUNCTION pgrelay.enqueue_trigger('x', 'idx');
        INSERT INTO items VALUES (1);
    """)
    assert received(listener, timeout=5, stop_after=1) == [(CHANNEL, "idx")]
