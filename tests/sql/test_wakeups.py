"""Who is woken: producers NOTIFY only for queues a worker waits on (idle()), and no wakeup is lost.

A worker that found nothing to claim LISTENs, calls idle(), claims once more, and claims again when a
transaction idle() returned as in progress has ended (idle_check()). Every job is then either seen by that
claim, made by one of those transactions, or announced by a NOTIFY: the race test below checks it with
eight producers committing while the worker goes idle.
"""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import psycopg
import pytest

from tests.sql.helpers import bulk
from tests.sql.factory import call, call_rows, connect_in_transaction, consume, raises_sqlstate, scalar

CHANNEL = "pgrelay_jobs"
QUIET = 0.3   # seconds to wait when no notification is expected
XID = "SELECT backend_xid::text::bigint FROM pg_stat_activity WHERE pid = pg_backend_pid()"   # as idle() gives it


def received(listener, *, timeout=QUIET, stop_after=None) -> list[str]:
    return [n.payload for n in listener.notifies(timeout=timeout, stop_after=stop_after)]


def enqueue(conn, queue: str = "default", **args) -> int:
    return call(conn, "enqueue", task="t", queue=queue, **args)


def idle(conn, worker: str = "w1", **args) -> dict:
    [row] = call_rows(conn, "idle", worker=worker, **args)
    return row


@pytest.fixture
def listener(connect):
    conn = connect()
    conn.execute(f"LISTEN {CHANNEL}")
    return conn


def distinct_bits(db, *candidates: str) -> tuple[str, str]:
    """Two queue names whose wakeup bits differ (distinct queues may share one)."""
    bits = {q: scalar(db, "SELECT pgrelay._wakeup_bit(%s)", (q,)) for q in candidates}
    first = candidates[0]
    second = next(q for q in candidates[1:] if bits[q] != bits[first])
    return first, second


def test_with_no_worker_waiting_an_enqueue_sends_no_notify(db, listener):
    enqueue(db, "mail")
    bulk(db, [{"task": "t", "queue": "mail"}])

    assert received(listener) == []
    assert scalar(db, "SELECT count(*) FROM pgrelay.jobs WHERE queue = 'mail'") == 2


def test_a_worker_waiting_on_a_queue_is_notified_for_that_queue_only(db, listener):
    mine, other = distinct_bits(db, "mail", "sms", "push", "fax", "post")
    idle(listener, queues=[mine])

    enqueue(db, other)
    assert received(listener) == []
    enqueue(db, mine)
    assert received(listener, timeout=5, stop_after=1) == [mine]


def test_a_worker_of_every_queue_is_notified_for_any(db, listener):
    idle(listener, queues=None)
    enqueue(db, "mail")
    enqueue(db, "sms")
    assert received(listener, timeout=5, stop_after=2) == ["mail", "sms"]


def test_an_awake_worker_is_no_longer_notified_but_one_still_waiting_is(db, listener, connect):
    other = connect()
    idle(listener, "w1", queues=["mail"])
    idle(other, "w2", queues=["mail"])

    assert call(listener, "awake", worker="w1") is True
    enqueue(db, "mail")
    assert received(listener, timeout=5, stop_after=1) == ["mail"]   # w2 waits on the same queue

    assert call(other, "awake", worker="w2") is True
    enqueue(db, "mail")
    assert received(listener) == []
    assert call(other, "awake", worker="w2") is False   # it was not waiting


def test_waiting_again_replaces_the_queues_waited_on(db, listener):
    first, second = distinct_bits(db, "mail", "sms", "push", "fax", "post")
    idle(listener, queues=[first])
    idle(listener, queues=[second])

    enqueue(db, first)
    assert received(listener) == []
    enqueue(db, second)
    assert received(listener, timeout=5, stop_after=1) == [second]


def test_a_lapsed_wait_is_forgotten_by_maintain_and_by_the_next_idle(db, listener, connect):
    idle(listener, "w1", queues=["mail"], seconds=1)
    db.execute("UPDATE pgrelay._waiting SET until = now() - interval '1 second'")   # as if it died waiting

    call(db, "maintain")
    enqueue(db, "mail")
    assert received(listener) == []
    assert scalar(db, "SELECT count(*) FROM pgrelay._waiting") == 0

    idle(listener, "w1", queues=["mail"], seconds=1)
    db.execute("UPDATE pgrelay._waiting SET until = now() - interval '1 second'")
    idle(connect(), "w2", queues=["sms"])     # any change to who waits drops lapsed waits
    assert scalar(db, "SELECT array_agg(worker) FROM pgrelay._waiting") == ["w2"]


def test_notify_always_sends_with_no_worker_waiting_and_off_sends_none(db, listener):
    db.execute("SET pgrelay.notify = always")
    enqueue(db, "mail")
    assert received(listener, timeout=5, stop_after=1) == ["mail"]

    idle(listener, queues=None)
    db.execute("SET pgrelay.notify = off")
    enqueue(db, "mail")
    assert received(listener) == []


def test_a_producer_that_enqueued_before_idle_is_returned_until_it_ends(db, listener, connect):
    producer = connect_in_transaction(connect)
    enqueue(producer, "mail")                       # read the bits before anyone waited: sends no NOTIFY
    xid = scalar(producer, XID)

    waiting = idle(listener, queues=["mail"])
    assert xid in waiting["running"]
    assert consume(db, queues=["mail"]) == []           # the worker's claim after idle() cannot see it yet
    [check] = call_rows(listener, "idle_check", transactions=waiting["running"], queues=["mail"])
    assert xid in check["running"]

    producer.commit()
    [check] = call_rows(listener, "idle_check", transactions=waiting["running"], queues=["mail"])
    assert xid not in check["running"]              # so the worker claims again, and finds it
    assert received(listener) == []
    assert len(consume(db, queues=["mail"])) == 1


def test_a_producer_whose_snapshot_predates_idle_still_notifies(db, listener, connect):
    producer = connect_in_transaction(connect)
    producer.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
    producer.execute("SELECT 1")                        # its snapshot, taken before anyone waited

    waiting = idle(listener, queues=["mail"])
    enqueue(producer, "mail")
    xid = scalar(producer, XID)
    producer.commit()

    assert xid not in waiting["running"]
    assert received(listener, timeout=5, stop_after=1) == ["mail"]


def test_idle_returns_when_the_next_job_not_yet_due_becomes_due(db, listener):
    now = scalar(db, "SELECT now()")
    assert idle(listener, queues=["mail"])["next_due"] is None
    enqueue(db, "mail")                                  # due now: claimed, not waited for
    enqueue(db, "mail", run_at=now + timedelta(hours=3), priority=5)
    enqueue(db, "mail", run_at=now + timedelta(hours=1), priority=-2)
    enqueue(db, "mail", run_at=now + timedelta(hours=2))
    enqueue(db, "sms", run_at=now + timedelta(minutes=5))

    assert idle(listener, queues=["mail"])["next_due"] == now + timedelta(hours=1)
    assert idle(listener, queues=None)["next_due"] == now + timedelta(minutes=5)
    [check] = call_rows(listener, "idle_check", transactions=[], queues=["mail", "sms"])
    assert check == {"running": [], "next_due": now + timedelta(minutes=5)}


@pytest.mark.parametrize(("args", "message"), [
    ({"worker": "bad worker"}, "invalid worker"),
    ({"worker": None}, "worker must not be NULL"),
    ({"worker": "w", "seconds": 0}, "seconds must be between 1 and 86400"),
    ({"worker": "w", "seconds": 86401}, "seconds must be between 1 and 86400"),
    ({"worker": "w", "queues": ["bad queue"]}, "invalid queue"),
    ({"worker": "w", "queues": [f"q{i}" for i in range(1001)]}, "at most 1000 queues"),
])
def test_idle_refuses_bad_arguments_and_changes_nothing(db, args, message):
    with raises_sqlstate("PR001") as info:
        idle(db, **args)
    assert message in str(info.value)
    assert scalar(db, "SELECT count(*) FROM pgrelay._waiting") == 0
    assert scalar(db, "SELECT coalesce(pg_sequence_last_value('pgrelay._wakeup_bits'), 0)") == 0


def test_idle_check_and_awake_refuse_bad_arguments(db):
    with raises_sqlstate("PR001") as info:
        call_rows(db, "idle_check", transactions=list(range(100001)))
    assert "at most 100000" in str(info.value)
    with raises_sqlstate("PR001"):
        call(db, "awake", worker="bad worker")
    [check] = call_rows(db, "idle_check", transactions=[-5, 3, 2**62])   # not running transactions: dropped
    assert check["running"] == []


def test_no_wakeup_is_lost_while_producers_commit_as_the_worker_goes_idle(db, listener, connect):
    """Eight producers enqueue one job per transaction; meanwhile the worker goes idle. Each job committed
    after idle() was either seen by the claim right after it, made by a transaction idle() returned, or
    followed by a NOTIFY of its own transaction (each transaction sends its own)."""
    stop = threading.Event()
    made: list[tuple[int, int]] = []      # (job id, its transaction's id)
    lock = threading.Lock()

    def produce() -> None:
        conn = connect()
        while not stop.is_set():
            with conn.transaction():
                job = enqueue(conn, "race")
                xid = scalar(conn, XID)
            with lock:
                made.append((job, xid))
        conn.close()

    threads = [threading.Thread(target=produce, daemon=True) for _ in range(8)]
    for t in threads:
        t.start()
    worker = connect()     # the listener only listens: its notifications are read at the end
    time.sleep(0.3)
    waiting = idle(worker, queues=["race"])
    seen = {j["id"] for j in consume(worker, worker="w1", queues=["race"], batch=10000)}
    time.sleep(0.3)
    stop.set()
    for t in threads:
        t.join(10)

    notified = len(received(listener, timeout=1))
    returned = set(waiting["running"])
    remaining = {j["id"] for j in consume(db, worker="w2", queues=["race"], batch=10000)}
    unseen = [(job, xid) for job, xid in made if job in remaining]
    uncovered = [job for job, xid in unseen if xid not in returned]
    assert len(made) == len(seen) + len(remaining) and seen
    assert unseen and notified >= len(uncovered), (len(unseen), len(uncovered), notified)

