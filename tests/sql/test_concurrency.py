"""The invariants of DESIGN.md that only show under concurrency, with many real connections at once.

2. A claim is exclusive: two workers never hold the same lease.
3. Fencing: an ack/nack for an attempt that is no longer current changes nothing and says so.
4. A queue's concurrency limit holds globally, across any number of workers, at every instant.
(1. No job is lost: every job here ends succeeded, checked at the end of each test.)

Each worker thread has its own autocommit connection. Threads are joined with a deadline, every
exception in a thread fails the test, and a deadlock (SQLSTATE 40P01) is named separately.
"""

from __future__ import annotations

import collections
import random
import threading
import time
from collections.abc import Callable

import psycopg
from psycopg.types.json import Jsonb

from tests.sql.factory import (
    Job,
    attempts,
    call,
    consume,
    expire,
    get_job,
    lease,
    make_due,
    make_job,
    scalar,
)

DEADLINE_SECONDS = 60


def _open(connect, n: int) -> list[psycopg.Connection]:
    conns = [connect() for _ in range(n)]
    for conn in conns:
        # a bug that blocks shows up as an error, not as a hung test run
        conn.execute("SET lock_timeout = '20s'")
        conn.execute("SET statement_timeout = '30s'")
    return conns


def run_concurrently(targets: list[Callable[[], None]], stop: threading.Event | None = None) -> list[BaseException]:
    """Start every target at once, join them all before the deadline; returns what they raised."""
    errors: list[BaseException] = []
    start = threading.Barrier(len(targets))

    def wrap(fn: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                start.wait(10)
                fn()
            except BaseException as exc:
                errors.append(exc)
                if stop is not None:
                    stop.set()

        return run

    threads = [threading.Thread(target=wrap(t), daemon=True) for t in targets]
    for t in threads:
        t.start()
    deadline = time.monotonic() + DEADLINE_SECONDS
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    if stop is not None:
        stop.set()
    hung = [t.name for t in threads if t.is_alive()]
    assert not hung, f"threads still running after {DEADLINE_SECONDS} s: {hung}"
    return errors


def assert_no_errors(errors: list[BaseException]) -> None:
    deadlocks = [e for e in errors if getattr(e, "sqlstate", None) == "40P01"]
    assert deadlocks == [], f"deadlocks: {deadlocks}"
    assert errors == [], f"errors in threads: {errors!r}"


def enqueue_many(db, n: int, queue: str, **job: object) -> list[int]:
    rows = db.execute(
        "SELECT * FROM pgrelay.enqueue_bulk((SELECT jsonb_agg(jsonb_build_object('task', 'work', 'queue', %s::text) || %s::jsonb)"
        " FROM generate_series(1, %s)))",
        (queue, Jsonb(job), n),
    ).fetchall()
    return [r[0] for r in rows]


def active_in(db, queue: str) -> int:
    return scalar(db, "SELECT count(*) FROM pgrelay._jobs WHERE queue = %s", (queue,))


# ---------------------------------------------------------------------------------------------
# 2. claims are exclusive
# ---------------------------------------------------------------------------------------------


def test_concurrent_consumers_lease_every_job_exactly_once(db, connect):
    n, workers = 500, 16
    ids = enqueue_many(db, n, "q")
    conns = _open(connect, workers)
    claimed: list[list[tuple[int, int]]] = [[] for _ in range(workers)]
    acked = [0] * workers

    def worker(i: int) -> Callable[[], None]:
        # half the workers name the queue (one-queue claim path), half take any queue
        queues = ["q"] if i % 2 else None

        def run() -> None:
            conn, name = conns[i], f"worker-{i}"
            while True:
                rows = consume(conn, name, queues=queues, batch=5)
                if not rows:
                    return
                claimed[i].extend((r["id"], r["attempt"]) for r in rows)
                acked[i] += call(conn, "ack_many", ids=[r["id"] for r in rows], attempts=[r["attempt"] for r in rows])

        return run

    assert_no_errors(run_concurrently([worker(i) for i in range(workers)]))

    every_claim = [c for per_worker in claimed for c in per_worker]
    counts = collections.Counter(job_id for job_id, _ in every_claim)
    assert [job_id for job_id, c in counts.items() if c > 1] == [], "a job was leased twice"
    assert sorted(counts) == sorted(ids)
    assert {attempt for _, attempt in every_claim} == {1}
    assert acked == [len(c) for c in claimed], "an ack of a held lease was refused"
    assert dict(db.execute("SELECT status, count(*) FROM pgrelay.jobs GROUP BY status").fetchall()) == {"succeeded": n}
    # the audit trail names the worker that held each lease
    holder = {job_id: f"worker-{i}" for i, per_worker in enumerate(claimed) for job_id, _ in per_worker}
    recorded = dict(db.execute(
        "SELECT a.job_id, a.worker FROM pgrelay.jobs j, pgrelay.get_attempts(j.id) a WHERE a.outcome = 'succeeded'").fetchall())
    assert recorded == holder
    assert sum(1 for c in claimed if c) > 1, "only one worker ever got a job: nothing ran concurrently"


def test_consumers_with_task_patterns_and_several_queues_never_share_a_job(db, connect):
    workers = 10
    ids = enqueue_many(db, 150, "a") + enqueue_many(db, 150, "b")
    ids += [r[0] for r in db.execute(
        "SELECT * FROM pgrelay.enqueue_bulk((SELECT jsonb_agg(jsonb_build_object('task', 'orders.' || i, 'queue', 'a',"
        " 'priority', mod(i, 3))) FROM generate_series(1, 150) i))").fetchall()]
    conns = _open(connect, workers)
    claimed: list[list[int]] = [[] for _ in range(workers)]
    filters = [{"queues": ["a", "b"]}, {"tasks": ["orders.%"]}, {"queues": ["a"]}, {}, {"queues": ["b"], "batch": 7}]

    def worker(i: int) -> Callable[[], None]:
        def run() -> None:
            conn, args = conns[i], {"batch": 3, **filters[i % len(filters)]}
            while rows := consume(conn, f"worker-{i}", **args):
                claimed[i].extend(r["id"] for r in rows)
                call(conn, "ack_many", ids=[r["id"] for r in rows], attempts=[r["attempt"] for r in rows])

        return run

    assert_no_errors(run_concurrently([worker(i) for i in range(workers)]))

    every_claim = [job_id for per_worker in claimed for job_id in per_worker]
    assert len(every_claim) == len(set(every_claim)) == len(ids)
    assert scalar(db, "SELECT count(*) FROM pgrelay.jobs WHERE status = 'succeeded'") == len(ids)


# ---------------------------------------------------------------------------------------------
# 4. a queue's concurrency limit holds at every instant
# ---------------------------------------------------------------------------------------------


def test_concurrency_limit_holds_across_many_workers_at_every_instant(db, connect):
    limit, n, workers = 3, 150, 12
    call(db, "configure_queue", queue="q", concurrency=limit)
    ids = enqueue_many(db, n, "q", max_attempts=1000)
    enqueue_many(db, 60, "free")  # workers that take any queue also lease these, without a limit
    conns = _open(connect, workers + 1)
    stop = threading.Event()
    samples: list[int] = []
    in_claim: list[int] = []  # leases of q seen by a claimer, inside its claim transaction
    per_claim: list[int] = []  # leases of q a single consume returned
    acked: set[int] = set()
    lock = threading.Lock()
    count_leased = "SELECT count(*) FROM pgrelay._jobs WHERE queue = 'q' AND leased_by IS NOT NULL"

    def sampler() -> None:
        conn = conns[workers]
        while not stop.is_set() and active_in(conn, "q"):
            samples.append(scalar(conn, count_leased))

    def worker(i: int) -> Callable[[], None]:
        rng = random.Random(i)
        queues = ["q"] if i % 3 else None

        def run() -> None:
            conn, name = conns[i], f"worker-{i}"
            while not stop.is_set():
                with conn.transaction():
                    rows = consume(conn, name, queues=queues, batch=rng.randint(1, 4))
                    seen = scalar(conn, count_leased)
                mine = [r for r in rows if r["queue"] == "q"]
                with lock:
                    in_claim.append(seen)
                    per_claim.append(len(mine))
                if not rows:
                    if active_in(conn, "q") == 0:
                        return
                    time.sleep(0.001)
                    continue
                time.sleep(rng.uniform(0, 0.004))  # the handler runs while the lease is held
                fail = [r for r in rows if rng.random() < 0.1]
                done = [r for r in rows if r not in fail]
                for r in fail:
                    assert call(conn, "nack", id=r["id"], attempt=r["attempt"], error="flaky",
                                retry_after_seconds=0) == "pending"
                assert call(conn, "ack_many", ids=[r["id"] for r in done], attempts=[r["attempt"] for r in done]) == len(done)
                with lock:
                    acked.update(r["id"] for r in done if r["queue"] == "q")

        return run

    errors = run_concurrently([sampler] + [worker(i) for i in range(workers)], stop=stop)

    assert_no_errors(errors)
    assert max(per_claim) <= limit
    assert max(in_claim) <= limit, "a claim pushed the queue over its limit"
    assert len(samples) > 50, "the sampler hardly ran"
    assert max(samples) <= limit, f"saw {max(samples)} leases of a queue limited to {limit}"
    assert max(samples) == limit, "the limit was never reached: the test did not load the queue"
    assert acked == set(ids)
    assert scalar(db, "SELECT count(*) FROM pgrelay.jobs WHERE status = 'succeeded'") == n + 60


def test_concurrency_limit_of_one_serialises_a_queue(db, connect):
    n, workers = 40, 8
    call(db, "configure_queue", queue="serial", concurrency=1)
    enqueue_many(db, n, "serial")
    conns = _open(connect, workers)
    holding = [0]
    overlap = []
    lock = threading.Lock()

    def worker(i: int) -> Callable[[], None]:
        def run() -> None:
            conn = conns[i]
            while True:
                rows = consume(conn, f"worker-{i}", queues=["serial"], batch=5)
                if not rows:
                    if active_in(conn, "serial") == 0:
                        return
                    time.sleep(0.001)
                    continue
                with lock:
                    holding[0] += len(rows)
                    overlap.append(holding[0])
                time.sleep(0.002)
                with lock:
                    holding[0] -= len(rows)
                call(conn, "ack_many", ids=[r["id"] for r in rows], attempts=[r["attempt"] for r in rows])

        return run

    assert_no_errors(run_concurrently([worker(i) for i in range(workers)]))

    assert len(overlap) == n
    assert max(overlap) == 1


# ---------------------------------------------------------------------------------------------
# 3. fencing
# ---------------------------------------------------------------------------------------------


def _recovered_and_leased_again(db, n: int):
    """n jobs whose lease by worker-a expired and was recovered, now leased again to worker-b."""
    jobs = []
    for _ in range(n):
        first = make_job(db, "recovered", worker="worker-a")
        make_due(db, first)
        jobs.append((first, lease(db, first, worker="worker-b")))
    return jobs


def _stale_calls(conns, jobs, results):
    """Worker A's calls for its lost attempts, one thread (and connection) per kind of call."""

    def stale_ack() -> None:
        for a, _ in jobs:
            results["a_ack"].append(call(conns[0], "ack", id=a.id, attempt=a.attempt, result={"by": "a"}))

    def stale_ack_many() -> None:
        for a, _ in jobs:
            results["a_ack_many"].append(call(conns[1], "ack_many", ids=[a.id], attempts=[a.attempt]))

    def stale_nack() -> None:
        for a, _ in jobs:
            results["a_nack"].append(call(conns[2], "nack", id=a.id, attempt=a.attempt, error="a failed",
                                          retry_after_seconds=0))

    def stale_dead_letter() -> None:
        for a, _ in jobs:
            results["a_dead"].append(call(conns[3], "nack", id=a.id, attempt=a.attempt, error="a gives up", permanent=True))

    def stale_heartbeat() -> None:
        for a, _ in jobs:
            results["a_heartbeat"].append(call(conns[4], "heartbeat", worker="worker-a", ids=[a.id]))

    return [stale_ack, stale_ack_many, stale_nack, stale_dead_letter, stale_heartbeat]


def _assert_all_refused(results, jobs):
    n = len(jobs)
    assert results["a_ack"] == [False] * n
    assert results["a_ack_many"] == [0] * n
    assert results["a_nack"] == ["stale"] * n
    assert results["a_dead"] == ["stale"] * n
    assert results["a_heartbeat"] == [[a.id] for a, _ in jobs]


def test_stale_calls_of_the_old_holder_change_nothing_while_the_new_holder_works(db, connect):
    jobs = _recovered_and_leased_again(db, 15)
    before = {a.id: get_job(db, a) for a, _ in jobs}
    conns = _open(connect, 6)
    results: dict[str, list] = collections.defaultdict(list)

    def holder_heartbeats() -> None:
        for _ in range(3):
            results["b_heartbeat"].append(call(conns[5], "heartbeat", worker="worker-b", ids=[b.id for _, b in jobs]))

    assert_no_errors(run_concurrently(_stale_calls(conns, jobs, results) + [holder_heartbeats]))

    _assert_all_refused(results, jobs)
    assert results["b_heartbeat"] == [[]] * 3
    for a, b in jobs:
        held = get_job(db, a)
        assert (held["status"], held["attempt"], held["leased_by"]) == ("leased", 2, "worker-b")
        assert {k: v for k, v in held.items() if k != "lease_expires_at"} == {
            k: v for k, v in before[a.id].items() if k != "lease_expires_at"}
        assert [(x["attempt"], x["worker"], x["outcome"]) for x in attempts(db, a)] == [
            (1, "worker-a", "lease_expired"), (2, "worker-b", "running")]


def test_stale_calls_racing_the_new_holders_ack_change_nothing(db, connect):
    jobs = _recovered_and_leased_again(db, 15)
    conns = _open(connect, 6)
    results: dict[str, list] = collections.defaultdict(list)

    def holder_ack() -> None:
        for _, b in jobs:
            results["b_ack"].append(call(conns[5], "ack", id=b.id, attempt=b.attempt, result={"by": "b"}))

    assert_no_errors(run_concurrently(_stale_calls(conns, jobs, results) + [holder_ack]))

    assert results["b_ack"] == [True] * len(jobs)
    _assert_all_refused(results, jobs)
    for a, _ in jobs:
        done = get_job(db, a)
        assert (done["status"], done["attempt"], done["result"]) == ("succeeded", 2, {"by": "b"})
        assert [(x["attempt"], x["worker"], x["outcome"]) for x in attempts(db, a)] == [
            (1, "worker-a", "lease_expired"), (2, "worker-b", "succeeded")]


def test_late_acks_racing_recover_either_win_or_are_refused_never_both(db, connect):
    """Workers whose leases run out keep acking while recover() runs; each ack must either win
    (the attempt is recorded succeeded) or be refused (recorded lease_expired), never both."""
    n, workers = 200, 8
    ids = enqueue_many(db, n, "q", max_attempts=1000)
    conns = _open(connect, workers + 1)
    stop = threading.Event()
    outcomes: dict[tuple[int, int], str] = {}  # (id, attempt) -> what its worker saw
    lock = threading.Lock()

    def worker(i: int) -> Callable[[], None]:
        rng = random.Random(i)

        def run() -> None:
            conn = conns[i]
            while not stop.is_set():
                rows = consume(conn, f"worker-{i}", queues=["q"], batch=3)
                if not rows:
                    if active_in(conn, "q") == 0:
                        return
                    time.sleep(0.001)
                    continue
                for r in rows:
                    key = (r["id"], r["attempt"])
                    with lock:
                        assert key not in outcomes, f"attempt {key} leased twice"
                    roll = rng.random()
                    if roll < 0.15:  # the worker died: its lease runs out
                        expire(conn, _job(r))
                        seen = "crashed"
                    elif roll < 0.45:  # the worker was slow: its lease ran out, then it acks
                        expire(conn, _job(r))
                        seen = "acked" if call(conn, "ack", id=r["id"], attempt=r["attempt"]) else "refused"
                    else:
                        seen = "acked" if call(conn, "ack", id=r["id"], attempt=r["attempt"]) else "refused"
                    with lock:
                        outcomes[key] = seen

        return run

    def recoverer() -> None:
        conn = conns[workers]
        while not stop.is_set() and active_in(conn, "q"):
            call(conn, "recover")
            conn.execute("UPDATE pgrelay._jobs SET run_at = now() WHERE leased_by IS NULL AND run_at > now()")

    assert_no_errors(run_concurrently([recoverer] + [worker(i) for i in range(workers)], stop=stop))

    recorded = {(j, a): o for j, a, o in db.execute(
        "SELECT a.job_id, a.attempt, a.outcome FROM pgrelay.jobs j, pgrelay.get_attempts(j.id) a WHERE a.outcome <> 'running'").fetchall()}
    assert set(recorded) == set(outcomes), "every leased attempt ends in exactly one recorded outcome"
    wrong = {k: (seen, recorded[k]) for k, seen in outcomes.items()
             if (seen == "acked") != (recorded[k] == "succeeded")}
    assert wrong == {}, "an ack was reported one way and recorded another"
    assert {recorded[k] for k, seen in outcomes.items() if seen != "acked"} <= {"lease_expired"}
    wins = collections.Counter(j for (j, _), seen in outcomes.items() if seen == "acked")
    assert sorted(wins) == sorted(ids) and set(wins.values()) == {1}, "each job is acked successfully exactly once"
    assert scalar(db, "SELECT count(*) FROM pgrelay.jobs WHERE status = 'succeeded'") == n
    assert "refused" in outcomes.values() or "crashed" in outcomes.values()


def _job(row) -> Job:
    return Job(row["id"], row["queue"], row["task"], row["attempt"])
