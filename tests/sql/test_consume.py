"""pgrelay.consume: leasing due jobs to a worker."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest

from tests.sql.factory import (
    WORKER,
    attempts,
    call,
    consume,
    enqueue,
    expire,
    get_job,
    make_due,
    make_job,
    raises_sqlstate,
    scalar,
)


def test_returns_the_claimed_job_with_its_first_attempt(db):
    job = enqueue(db, queue="mail", payload={"to": "a@example.com"}, priority=3, trace_id="trace-1",
                  idempotency_key="key-1", timeout_seconds=20)

    [row] = consume(db)

    assert row["id"] == job.id
    assert row["queue"] == "mail"
    assert row["task"] == job.task
    assert row["kind"] == "handler"
    assert row["payload"] == {"to": "a@example.com"}
    assert row["attempt"] == 1
    assert row["priority"] == 3
    assert row["trace_id"] == "trace-1"
    assert row["idempotency_key"] == "key-1"
    assert row["timeout_seconds"] == 20
    leased = get_job(db, job)
    assert leased["status"] == "leased"
    assert leased["leased_by"] == WORKER
    assert leased["attempt"] == 1


def test_attempt_counts_up_on_each_lease(db):
    job = make_job(db, "pending", failures=2)

    [row] = consume(db)

    assert row["id"] == job.id
    assert row["attempt"] == 3


def test_returns_nothing_when_no_job_is_due(db):
    make_job(db, "scheduled")
    make_job(db, "leased")
    make_job(db, "succeeded")

    assert consume(db, batch=10) == []


# consume has two ways to lease: one statement for a single queue that is neither paused nor limited,
# and _pick with a lease per queue's settings for the rest. The settings must come out the same.
CLAIM_PATHS = ["one-queue", "several-queues", "limited-queue"]


def _claim(db, path, queue, **consume_args):
    """Lease the one due job of ``queue`` (the only one, or the first in claim order) through ``path``."""
    queues = [queue]
    if path == "several-queues":
        enqueue(db, queue="zz-other", priority=-1)
        queues.append("zz-other")
    elif path == "limited-queue":
        call(db, "configure_queue", queue=queue, concurrency=100)   # (settings merge: the others stay)
    [row] = consume(db, queues=queues, **consume_args)
    assert row["queue"] == queue
    return row


def _lease_expiry_and_now(db, path, queue, **consume_args):
    with db.transaction():
        row = _claim(db, path, queue, **consume_args)
        now = scalar(db, "SELECT now()")
    return row["lease_expires_at"], now


@pytest.mark.parametrize("path", CLAIM_PATHS)
def test_max_attempts_defaults_to_ten(db, path):
    enqueue(db, queue="mail")

    row = _claim(db, path, "mail")

    assert row["max_attempts"] == 10


@pytest.mark.parametrize("path", CLAIM_PATHS)
def test_max_attempts_comes_from_the_queue_setting(db, path):
    call(db, "configure_queue", queue="mail", max_attempts=4)
    enqueue(db, queue="mail")

    row = _claim(db, path, "mail")

    assert row["max_attempts"] == 4


@pytest.mark.parametrize("path", CLAIM_PATHS)
def test_max_attempts_of_the_job_wins_over_the_queue_setting(db, path):
    call(db, "configure_queue", queue="mail", max_attempts=4)
    enqueue(db, queue="mail", max_attempts=2)

    row = _claim(db, path, "mail")

    assert row["max_attempts"] == 2


@pytest.mark.parametrize("path", CLAIM_PATHS)
def test_lease_defaults_to_30_seconds(db, path):
    enqueue(db, queue="mail")

    expires_at, now = _lease_expiry_and_now(db, path, "mail")

    assert expires_at == now + timedelta(seconds=30)


@pytest.mark.parametrize("path", CLAIM_PATHS)
def test_lease_seconds_argument_sets_the_lease(db, path):
    enqueue(db, queue="mail")

    expires_at, now = _lease_expiry_and_now(db, path, "mail", lease_seconds=90)

    assert expires_at == now + timedelta(seconds=90)


@pytest.mark.parametrize("path", CLAIM_PATHS)
def test_lease_comes_from_the_queue_setting(db, path):
    call(db, "configure_queue", queue="slow", lease_seconds=600)
    enqueue(db, queue="slow")

    expires_at, now = _lease_expiry_and_now(db, path, "slow")

    assert expires_at == now + timedelta(seconds=600)


@pytest.mark.parametrize("path", CLAIM_PATHS)
def test_lease_seconds_argument_wins_over_the_queue_setting(db, path):
    call(db, "configure_queue", queue="slow", lease_seconds=600)
    enqueue(db, queue="slow")

    expires_at, now = _lease_expiry_and_now(db, path, "slow", lease_seconds=5)

    assert expires_at == now + timedelta(seconds=5)


def test_the_lease_is_recorded_as_a_running_attempt(db):
    job = enqueue(db)

    with db.transaction():
        consume(db, "worker-7")
        now = scalar(db, "SELECT now()")

    [attempt] = attempts(db, job)
    assert attempt["attempt"] == 1
    assert attempt["outcome"] == "running"
    assert attempt["worker"] == "worker-7"
    assert attempt["started_at"] == now
    assert attempt["finished_at"] is None


def test_only_due_jobs_are_leased(db):
    due = enqueue(db, run_in=-5)
    now_job = enqueue(db)
    enqueue(db, run_in=60)

    rows = consume(db, batch=10)

    assert sorted(r["id"] for r in rows) == sorted([due.id, now_job.id])


@pytest.mark.parametrize("queues", [["default"], None, ["default", "other"]], ids=["one-queue", "all-queues", "two-queues"])
def test_leases_by_priority_then_run_at_then_id(db, queues):
    # (priority, seconds ago); two jobs share both so that id breaks the tie
    specs = [(0, 30), (0, 10), (5, 1), (5, 20), (5, 20), (-3, 100), (0, 10), (10, 0.5), (-3, 50)]
    random.Random(7).shuffle(specs)
    jobs = []
    for priority, ago in specs:
        job = enqueue(db, priority=priority, run_in=-ago)
        run_at = scalar(db, "SELECT run_at FROM pgrelay.jobs WHERE id = %s", (job.id,))
        jobs.append((job.id, priority, run_at))
    expected = [job_id for job_id, _, _ in sorted(jobs, key=lambda j: (-j[1], j[2], j[0]))]

    leased = [consume(db, queues=queues)[0]["id"] for _ in jobs]

    assert leased == expected
    assert consume(db, queues=queues) == []


@pytest.mark.parametrize("queues", [None, ["a", "b", "c"], ["a"]], ids=["all-queues", "three-queues", "one-queue"])
def test_a_batch_across_queues_is_the_first_jobs_in_claim_order_and_locks_no_others(db, connect, queues):
    # three queues with backlogs of mixed priority: one batch must be exactly the first 5 of the
    # queues asked for (one queue is claimed by a single statement, several through _pick)
    jobs = []
    for i in range(18):
        queue = "abc"[i % 3]
        job = enqueue(db, queue=queue, priority=(i * 7) % 4, run_in=-(100 - i))
        if queues is None or queue in queues:
            jobs.append((job.id, (i * 7) % 4, i))
    expected = [job_id for job_id, _, _ in sorted(jobs, key=lambda j: (-j[1], j[2]))][:5]
    other = connect()

    with db.transaction():
        rows = consume(db, queues=queues, batch=5)
        # a row locked but not leased would be skipped by every other consumer until this commits
        free = other.execute("SELECT count(*) FROM (SELECT 1 FROM pgrelay._jobs WHERE leased_by IS NULL"
                             " FOR UPDATE SKIP LOCKED) t").fetchone()[0]
        other.rollback()

    assert [r["id"] for r in rows] == expected
    assert free == 13


def test_a_batch_comes_back_in_claim_order(db):
    low = enqueue(db, priority=1)
    high = enqueue(db, priority=9)
    mid = enqueue(db, priority=5)

    rows = consume(db, batch=3)

    assert [r["id"] for r in rows] == [high.id, mid.id, low.id]


@pytest.mark.parametrize("limited", [False, True], ids=["unlimited", "one-queue-limited"])
@pytest.mark.parametrize("queues", [["a"], ["b"], None, ["a", "b", "c"]],
                         ids=["one-queue", "queue-b", "all-queues", "three-queues"])
def test_a_large_batch_comes_back_in_claim_order_whatever_the_insert_order(db, queues, limited):
    # consume returns its rows without sorting them: they must come in claim order from the way they
    # are picked and leased, across queues and a limited queue's separate pick too (queue b, when
    # limited, is picked on its own: alone, or merged with the others)
    if limited:
        call(db, "configure_queue", queue="b", concurrency=100)  # (a limit that never binds here)
    names = queues or ["a", "b", "c"]
    rng = random.Random(11)
    jobs = []
    for i in range(60):
        priority, ago = rng.choice([-2, 0, 0, 3, 7]), rng.choice([5, 40, 40, 90])
        job = enqueue(db, queue=names[i % len(names)], priority=priority, run_in=-ago)
        run_at = scalar(db, "SELECT run_at FROM pgrelay.jobs WHERE id = %s", (job.id,))
        jobs.append((job.id, priority, run_at))
    expected = [job_id for job_id, _, _ in sorted(jobs, key=lambda j: (-j[1], j[2], j[0]))]

    first = consume(db, queues=queues, batch=25)
    rest = consume(db, queues=queues, batch=100)

    assert [r["id"] for r in first] == expected[:25]
    assert [r["id"] for r in rest] == expected[25:]


def test_batch_limits_how_many_are_leased(db):
    for _ in range(7):
        enqueue(db)

    first = consume(db, batch=5)
    second = consume(db, batch=5)

    assert len(first) == 5
    assert len(second) == 2
    assert not {r["id"] for r in first} & {r["id"] for r in second}


def test_queues_filter_leases_only_those_queues(db):
    mail = enqueue(db, queue="mail")
    sms = enqueue(db, queue="sms")
    other = enqueue(db, queue="other")

    rows = consume(db, queues=["mail", "sms"], batch=10)

    assert sorted(r["id"] for r in rows) == sorted([mail.id, sms.id])
    assert get_job(db, other)["status"] == "pending"


def test_one_queue_filter_ignores_other_queues(db):
    enqueue(db, queue="other", priority=100)
    mail = enqueue(db, queue="mail")

    rows = consume(db, queues=["mail"], batch=10)

    assert [r["id"] for r in rows] == [mail.id]


def test_tasks_filter_takes_like_patterns(db):
    created = enqueue(db, task="orders.created")
    shipped = enqueue(db, task="orders.shipped")
    enqueue(db, task="ordersXcreated")
    enqueue(db, task="mail.send")
    refund = enqueue(db, task="payments.refund")

    rows = consume(db, tasks=["orders.%", "payments.refund"], batch=10)

    assert sorted(r["id"] for r in rows) == sorted([created.id, shipped.id, refund.id])


def test_tasks_filter_and_queues_filter_combine(db):
    wanted = enqueue(db, task="orders.created", queue="a")
    enqueue(db, task="orders.created", queue="b")
    enqueue(db, task="mail.send", queue="a")

    rows = consume(db, queues=["a"], tasks=["orders.%"], batch=10)

    assert [r["id"] for r in rows] == [wanted.id]


def test_paused_queue_is_skipped(db):
    call(db, "pause", queue="mail")
    paused = enqueue(db, queue="mail", priority=10)
    running = enqueue(db, queue="other")

    rows = consume(db, batch=10)
    named = consume(db, queues=["mail"], batch=10)

    assert [r["id"] for r in rows] == [running.id]
    assert named == []
    assert get_job(db, paused)["status"] == "pending"


def test_resumed_queue_is_consumed_again(db):
    call(db, "pause", queue="mail")
    job = enqueue(db, queue="mail")
    assert consume(db, queues=["mail"]) == []

    call(db, "resume", queue="mail")

    assert [r["id"] for r in consume(db, queues=["mail"])] == [job.id]


def test_a_leased_job_is_not_leased_again(db):
    job = make_job(db, "leased")

    assert consume(db, "worker-b", batch=10) == []
    assert get_job(db, job)["leased_by"] == job.worker


def test_a_job_whose_lease_expired_is_not_leased_before_recover(db):
    job = make_job(db, "expired")

    assert consume(db, "worker-b", batch=10) == []
    assert get_job(db, job)["attempt"] == 1


def test_concurrency_limit_caps_leases_of_the_queue(db):
    call(db, "configure_queue", queue="limited", concurrency=2)
    for _ in range(5):
        enqueue(db, queue="limited")

    first = consume(db, queues=["limited"], batch=10)
    second = consume(db, batch=10)

    assert len(first) == 2
    assert second == []


def test_a_paused_queue_with_a_concurrency_limit_is_skipped(db):
    call(db, "configure_queue", queue="limited", concurrency=2)
    call(db, "pause", queue="limited")
    enqueue(db, queue="limited")

    assert consume(db, batch=10) == []
    assert consume(db, queues=["limited"], batch=10) == []


def test_concurrency_limit_frees_a_slot_when_a_job_is_acked(db):
    call(db, "configure_queue", queue="limited", concurrency=1)
    enqueue(db, queue="limited")
    enqueue(db, queue="limited")
    [row] = consume(db, queues=["limited"], batch=10)
    assert consume(db, queues=["limited"], batch=10) == []

    call(db, "ack", id=row["id"], attempt=row["attempt"])

    assert len(consume(db, queues=["limited"], batch=10)) == 1


def test_a_batch_fills_from_limited_and_unlimited_queues(db):
    call(db, "configure_queue", queue="limited", concurrency=2)
    for _ in range(4):
        enqueue(db, queue="limited")
        enqueue(db, queue="free")

    rows = consume(db, batch=10)

    queues = [r["queue"] for r in rows]
    assert queues.count("limited") == 2
    assert queues.count("free") == 4


def test_priority_order_holds_across_a_limited_and_an_unlimited_queue(db):
    """A concurrency limit on one queue must not let its low-priority jobs jump the claim order."""
    call(db, "configure_queue", queue="limited", concurrency=5)
    enqueue(db, queue="limited", priority=0)
    urgent = enqueue(db, queue="free", priority=10)

    [row] = consume(db, batch=1)

    assert row["id"] == urgent.id


@pytest.mark.parametrize(
    "worker",
    [None, "", "has space", "semi;colon", "-leading-dash", "x" * 201],
    ids=["null", "empty", "space", "semicolon", "leading-dash", "too-long"],
)
def test_invalid_worker_is_rejected(db, worker):
    enqueue(db)

    with raises_sqlstate("PR001"):
        call(db, "consume", worker=worker)

    assert scalar(db, "SELECT count(*) FROM pgrelay.jobs WHERE status = 'leased'") == 0


@pytest.mark.parametrize("worker", ["w", "host-1:4242", "pod/abc@node", "x" * 200])
def test_worker_may_name_host_pid_and_path(db, worker):
    job = enqueue(db)

    [row] = consume(db, worker)

    assert row["id"] == job.id
    assert get_job(db, job)["leased_by"] == worker


@pytest.mark.parametrize(
    "args",
    [
        {"batch": 0},
        {"batch": -1},
        {"batch": 10001},
        {"lease_seconds": 0},
        {"lease_seconds": 86401},
        {"queues": ["mail", None]},
        {"queues": ["bad queue"]},
        {"queues": [""]},
        {"queues": ["q" * 129]},
        {"tasks": [None]},
        {"tasks": [""]},
        {"tasks": ["t" * 201]},
        {"tasks": ["orders.\\"]},  # a lone escape at the end: PostgreSQL's LIKE would raise 22025
        {"tasks": ["a\\\\\\"]},
    ],
    ids=lambda a: repr(a)[:40],
)
def test_invalid_arguments_are_rejected(db, args):
    enqueue(db, queue="mail")

    with raises_sqlstate("PR001"):
        consume(db, **args)

    assert scalar(db, "SELECT count(*) FROM pgrelay.jobs WHERE status = 'leased'") == 0


def test_escapes_in_task_patterns_work_as_in_like(db):
    wanted = enqueue(db, task="mail_x")
    enqueue(db, task="mailyx")

    assert consume(db, tasks=["mail\\\\"]) == []  # an escaped backslash at the end is a valid pattern
    assert [row["id"] for row in consume(db, tasks=["mail\\_%"])] == [wanted.id]


def test_batch_bounds_are_accepted(db):
    for _ in range(3):
        enqueue(db)

    assert len(consume(db, batch=1)) == 1
    assert len(consume(db, batch=10000)) == 2


def test_lease_bounds_are_accepted(db):
    enqueue(db)
    enqueue(db)

    assert len(consume(db, lease_seconds=1)) == 1
    assert len(consume(db, lease_seconds=86400)) == 1


@pytest.mark.parametrize("isolation", ["REPEATABLE READ", "SERIALIZABLE"])
def test_refuses_isolation_other_than_read_committed(db, isolation):
    job = enqueue(db)

    with raises_sqlstate("PR005"):
        with db.transaction():
            db.execute(f"SET TRANSACTION ISOLATION LEVEL {isolation}")
            consume(db)

    assert get_job(db, job)["status"] == "pending"


def test_inside_a_read_committed_transaction_the_lease_rolls_back_with_it(db):
    job = enqueue(db)

    class Rollback(Exception):
        pass

    with pytest.raises(Rollback):
        with db.transaction():
            assert [r["id"] for r in consume(db)] == [job.id]
            raise Rollback

    assert get_job(db, job)["status"] == "pending"
    assert get_job(db, job)["attempt"] == 0
    assert [r["id"] for r in consume(db)] == [job.id]


def test_after_recover_the_job_is_leased_with_the_next_attempt(db):
    job = make_job(db, "leased")
    expire(db, job)
    call(db, "recover")
    make_due(db, job)

    [row] = consume(db, "worker-b")

    assert row["id"] == job.id
    assert row["attempt"] == 2


@pytest.mark.parametrize("change", [
    "leased_by = 'someone'",                                     # a worker without a lease
    "lease_expires_at = now() + interval '30 seconds'",          # an expiry without a worker
    "leased_by = 'w', leased_at = now(), lease_expires_at = now()",  # a lease at attempt 0
])
def test_the_hot_table_refuses_half_a_lease(db, change):
    """A job's lease is all there (worker, start, expiry, an attempt) or not at all: the table itself
    refuses anything in between, whatever writes it (white box: only pgrelay's functions do)."""
    job = enqueue(db)
    with raises_sqlstate("23514"):
        db.execute(f"UPDATE pgrelay._jobs SET {change} WHERE id = %s", (job.id,))
    assert get_job(db, job)["status"] == "pending"
