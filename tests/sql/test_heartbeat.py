"""pgrelay.heartbeat: a worker says it is alive and keeps its leases."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.sql.factory import (
    call,
    connect_in_transaction,
    dicts,
    expire,
    get_job,
    in_thread,
    lease,
    make_due,
    make_job,
    raises_sqlstate,
    scalar,
)


def _heartbeat_at(db, **args):
    """heartbeat in one transaction; returns its answer and now()."""
    with db.transaction():
        lost = call(db, "heartbeat", **args)
        now = scalar(db, "SELECT now()")
    return lost, now


def test_extends_the_lease_by_the_default_30_seconds(db):
    job = make_job(db, "leased")
    expire(db, job, ago_seconds=-5)  # 5 s left

    lost, now = _heartbeat_at(db, worker=job.worker, ids=[job.id])

    assert lost == []
    assert scalar(db, "SELECT lease_expires_at FROM pgrelay.jobs WHERE id = %s", (job.id,)) == now + timedelta(seconds=30)


def test_extends_the_lease_by_lease_seconds(db):
    job = make_job(db, "leased")

    lost, now = _heartbeat_at(db, worker=job.worker, ids=[job.id], lease_seconds=300)

    assert lost == []
    assert scalar(db, "SELECT lease_expires_at FROM pgrelay.jobs WHERE id = %s", (job.id,)) == now + timedelta(seconds=300)


def test_extends_the_lease_by_the_queue_setting(db):
    call(db, "configure_queue", queue="slow", lease_seconds=120)
    job = make_job(db, "leased", queue="slow")

    _, now = _heartbeat_at(db, worker=job.worker, ids=[job.id])

    assert scalar(db, "SELECT lease_expires_at FROM pgrelay.jobs WHERE id = %s", (job.id,)) == now + timedelta(seconds=120)


def test_a_heartbeat_keeps_recover_away(db):
    job = make_job(db, "expired")

    assert call(db, "heartbeat", worker=job.worker, ids=[job.id]) == []

    assert call(db, "recover") == 0
    assert get_job(db, job)["status"] == "leased"
    assert call(db, "ack", id=job.id, attempt=job.attempt) is True


def test_does_not_change_the_attempt_or_the_holder(db):
    job = make_job(db, "leased")

    call(db, "heartbeat", worker=job.worker, ids=[job.id])

    held = get_job(db, job)
    assert (held["attempt"], held["leased_by"], held["status"]) == (1, job.worker, "leased")


def test_registers_the_worker(db):
    with db.transaction():
        call(db, "heartbeat", worker="worker-1", host="box-1.example", pid=4242, queues=["mail", "sms"])
        now = scalar(db, "SELECT now()")

    [worker] = dicts(db, "SELECT * FROM pgrelay.workers")
    assert worker["worker"] == "worker-1"
    assert worker["host"] == "box-1.example"
    assert worker["pid"] == 4242
    assert worker["queues"] == ["mail", "sms"]
    assert worker["started_at"] == now
    assert worker["last_seen"] == now
    assert worker["leased"] == 0


def test_a_later_heartbeat_updates_last_seen_and_keeps_what_it_does_not_repeat(db):
    call(db, "heartbeat", worker="worker-1", host="box-1", pid=1, queues=["mail"])
    db.execute("UPDATE pgrelay._workers SET last_seen = last_seen - interval '1 minute', started_at = started_at - interval '1 minute'")
    started = scalar(db, "SELECT started_at FROM pgrelay.workers")

    with db.transaction():
        call(db, "heartbeat", worker="worker-1", pid=2)
        now = scalar(db, "SELECT now()")

    [worker] = dicts(db, "SELECT * FROM pgrelay.workers")
    assert worker["last_seen"] == now
    assert worker["started_at"] == started
    assert (worker["host"], worker["pid"], worker["queues"]) == ("box-1", 2, ["mail"])


def test_returns_ids_leased_to_someone_else(db):
    mine = make_job(db, "leased", worker="worker-a")
    theirs = make_job(db, "leased", worker="worker-b")
    before = get_job(db, theirs)["lease_expires_at"]

    lost = call(db, "heartbeat", worker="worker-a", ids=[mine.id, theirs.id], lease_seconds=999)

    assert lost == [theirs.id]
    assert get_job(db, theirs)["lease_expires_at"] == before


def test_returns_acked_nacked_and_dead_ids(db):
    acked = make_job(db, "succeeded")
    retrying = make_job(db, "retrying")
    dead = make_job(db, "dead_letter")
    held = make_job(db, "leased")

    lost = call(db, "heartbeat", worker=held.worker, ids=[held.id, dead.id, acked.id, retrying.id])

    assert lost == sorted([acked.id, retrying.id, dead.id])


def test_returns_recovered_ids(db):
    job = make_job(db, "expired")
    call(db, "recover")

    assert call(db, "heartbeat", worker=job.worker, ids=[job.id]) == [job.id]
    assert get_job(db, job)["status"] == "pending"


def test_returns_ids_recovered_and_leased_again_to_another_worker(db):
    job = make_job(db, "recovered", worker="worker-a")
    make_due(db, job)
    again = lease(db, job, worker="worker-b")

    assert call(db, "heartbeat", worker="worker-a", ids=[job.id]) == [job.id]
    assert call(db, "heartbeat", worker="worker-b", ids=[again.id]) == []


def test_returns_unknown_ids_once_each(db):
    held = make_job(db, "leased")

    lost = call(db, "heartbeat", worker=held.worker, ids=[999999, held.id, 999999, 123456])

    assert lost == [123456, 999999]


def test_without_ids_returns_an_empty_array(db):
    assert call(db, "heartbeat", worker="worker-1") == []
    assert call(db, "heartbeat", worker="worker-1", ids=[]) == []


@pytest.mark.parametrize("worker", [None, "", "has space", "x" * 201], ids=["null", "empty", "space", "too-long"])
def test_invalid_worker_is_rejected(db, worker):
    with raises_sqlstate("PR001"):
        call(db, "heartbeat", worker=worker)

    assert scalar(db, "SELECT count(*) FROM pgrelay.workers") == 0


@pytest.mark.parametrize("queues", [["mail", None], ["bad queue"], [""], ["q" * 129], ["q"] * 1001],
                         ids=["null", "space", "empty", "too-long", "too-many"])
def test_invalid_queues_are_rejected_and_record_nothing(db, queues):
    with raises_sqlstate("PR001"):
        call(db, "heartbeat", worker="worker-1", queues=queues)

    assert scalar(db, "SELECT count(*) FROM pgrelay.workers") == 0


@pytest.mark.parametrize("lease_seconds", [0, -1, 86401])
def test_invalid_lease_seconds_is_rejected_and_changes_nothing(db, lease_seconds):
    job = make_job(db, "leased")
    before = get_job(db, job)

    with raises_sqlstate("PR001"):
        call(db, "heartbeat", worker=job.worker, ids=[job.id], lease_seconds=lease_seconds)

    assert get_job(db, job) == before


def test_does_not_wait_for_a_job_being_acked(db, connect):
    job = make_job(db, "leased")
    acker = connect_in_transaction(connect)
    assert call(acker, "ack", id=job.id, attempt=job.attempt) is True  # not committed yet
    beater = connect()
    beater.execute("SET lock_timeout = '5s'")

    lost = in_thread(lambda: call(beater, "heartbeat", worker=job.worker, ids=[job.id]), timeout=10)

    assert lost == []  # the ack has not committed: still held, as far as anyone can see
    acker.commit()
    assert call(db, "heartbeat", worker=job.worker, ids=[job.id]) == [job.id]
