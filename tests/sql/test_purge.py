"""pgrelay.purge and pgrelay.maintain: retention of finished jobs, in bounded batches."""

from __future__ import annotations

import pytest

from tests.sql.factory import (
    age_finished,
    attempts,
    call,
    call_rows,
    enqueue,
    expire,
    get_job,
    lease,
    make_job,
    raises_sqlstate,
    scalar,
    status,
)


def finished_ids(db) -> set[int]:
    return {r[0] for r in db.execute("SELECT id FROM pgrelay.jobs WHERE finished_at IS NOT NULL").fetchall()}


def test_purge_removes_finished_jobs_older_than_their_retention(db):
    old_success = make_job(db, "succeeded", failures=1)
    new_success = make_job(db, "succeeded")
    old_dead = make_job(db, "dead_letter")
    young_dead = make_job(db, "dead_letter")
    age_finished(db, old_success, days=8)
    age_finished(db, new_success, days=6)
    age_finished(db, old_dead, days=31)
    age_finished(db, young_dead, days=29)

    assert call(db, "purge") == 2

    assert finished_ids(db) == {new_success.id, young_dead.id}
    assert attempts(db, old_success) == []
    assert len(attempts(db, new_success)) == 1


def test_purge_never_touches_active_jobs(db):
    active = [make_job(db, state) for state in ("pending", "scheduled", "leased", "expired", "retrying")]

    assert call(db, "purge", older_than_days=0) == 0

    assert [status(db, j) for j in active] == ["pending", "pending", "leased", "leased", "pending"]


def test_older_than_days_overrides_the_retention(db):
    jobs = [make_job(db, state) for state in ("succeeded", "dead_letter", "cancelled")]
    age_finished(db, *jobs, days=2)

    assert call(db, "purge", older_than_days=3) == 0
    assert call(db, "purge", older_than_days=1) == 3
    assert finished_ids(db) == set()


def test_each_queue_keeps_its_own_retention(db):
    call(db, "configure_queue", queue="short", retention_succeeded_days=1, retention_dead_letter_days=2)
    short_ok, short_dead, short_cancelled = (make_job(db, s, queue="short") for s in ("succeeded", "dead_letter", "cancelled"))
    default_ok = make_job(db, "succeeded", queue="default")
    age_finished(db, short_ok, short_dead, short_cancelled, default_ok, days=1.5)

    assert call(db, "purge") == 1

    assert get_job(db, short_ok) is None
    assert {get_job(db, j)["status"] for j in (short_dead, short_cancelled, default_ok)} == {"dead_letter", "cancelled", "succeeded"}


def test_purge_frees_the_idempotency_key_of_the_jobs_it_removes(db):
    job = make_job(db, "succeeded", idempotency_key="invoice-1")
    age_finished(db, job, days=10)
    assert enqueue(db, idempotency_key="invoice-1").id == job.id

    call(db, "purge")

    assert enqueue(db, idempotency_key="invoice-1").id != job.id


def finish_many(db, n: int, queue: str = "default") -> list[int]:
    """n jobs enqueued in one call and acked: their ids, in the order they were created."""
    db.execute("""SELECT count(*) FROM pgrelay.enqueue_bulk(
                      (SELECT jsonb_agg(jsonb_build_object('task', 'bulk', 'queue', %s::text))
                       FROM generate_series(1, %s::int)))""", (queue, n))
    ids = [r["id"] for r in call_rows(db, "consume", worker="w", queues=[queue], batch=n)]
    assert call(db, "ack_many", ids=ids, attempts=[1] * len(ids)) == n
    return sorted(ids)


def test_purge_stops_after_max_jobs_and_continues_on_the_next_call_oldest_first(db):
    ids = finish_many(db, 2500)
    age_finished(db, *ids, days=30)

    assert call(db, "purge", max_jobs=1200) == 1200
    assert finished_ids(db) == set(ids[1200:])
    assert call(db, "purge", max_jobs=1000) == 1000
    assert call(db, "purge", max_jobs=1000) == 300
    assert call(db, "purge", max_jobs=1000) == 0


def test_one_purge_walks_the_whole_due_history_past_jobs_kept_longer(db):
    """Jobs kept longer than those after them (a dead letter, a queue with a longer retention) do
    not stop the walk, however many thousands of due jobs follow them."""
    kept_dead = make_job(db, "dead_letter")
    call(db, "configure_queue", queue="long", retention_succeeded_days=90)
    kept_long = finish_many(db, 1500, queue="long")
    due = finish_many(db, 2500)
    young = make_job(db, "succeeded")
    age_finished(db, kept_dead, *kept_long, *due, days=10)

    assert call(db, "purge") == 2500

    assert finished_ids(db) == {kept_dead.id, *kept_long, young.id}
    assert not set(due) & finished_ids(db)


def history_read_by_purge(db, **args) -> tuple[int, int]:
    """(jobs removed, rows of the history read) by one purge, the reads as PostgreSQL counts them."""
    db.execute("VACUUM pgrelay._finished")   # (an index scan also counts the dead versions it visits)
    # the days ahead made first (once a day, purge() makes one, which reads the default partition, where
    # the jobs these tests backdate are)
    db.execute("SELECT pgrelay._make_partitions(now() + interval '1 day', 3)")
    reads = ("SELECT sum(seq_tup_read + idx_tup_fetch) FROM pg_stat_xact_user_tables"   # over its partitions
             " WHERE relid IN (SELECT relid FROM pg_partition_tree('pgrelay._finished') WHERE isleaf)")
    with db.transaction():   # (what the backend has not yet reported counts too: hence before and after)
        before = scalar(db, reads)
        removed = call(db, "purge", **args)
        return removed, scalar(db, reads) - before


def dead_letters(db, n: int, *, days: float) -> list[int]:
    ids = finish_many(db, n)
    # white box: the history of n dead letters (kept 30 days) that finished `days` ago
    db.execute("UPDATE pgrelay._finished SET status = 'd', last_error = 'gave up' WHERE id = ANY (%s)", (ids,))
    age_finished(db, *ids, days=days)
    return ids


def test_a_routine_purge_reads_what_aged_since_the_last_one_not_the_kept_history(db):
    kept = dead_letters(db, 3000, days=10)
    assert history_read_by_purge(db) == (0, 3000)   # read once, and noted as kept until day 30

    assert history_read_by_purge(db) == (0, 0)
    due = finish_many(db, 20)
    age_finished(db, *due, days=8)
    removed, read = history_read_by_purge(db)
    assert removed == 20
    assert read <= 3 * 20   # each job that aged: read by the walk, then locked and deleted
    assert finished_ids(db) == set(kept)


def test_a_job_kept_longer_is_removed_when_its_own_retention_comes(db):
    kept = dead_letters(db, 5, days=10)
    assert call(db, "purge") == 0

    call(db, "configure_queue", queue="default", retention_dead_letter_days=20)
    assert call(db, "purge") == 0
    call(db, "configure_queue", queue="default", retention_dead_letter_days=9)
    assert call(db, "purge") == 5

    assert not set(kept) & finished_ids(db)


def test_a_job_that_finishes_after_the_walk_passed_its_id_is_removed_by_the_next_pass(db):
    late = make_job(db, "pending", queue="slow")
    early = finish_many(db, 3)
    age_finished(db, *early, days=8)
    assert call(db, "purge") == 3          # the walk is past the pending job's id
    job = lease(db, late)
    assert call(db, "ack", id=job.id, attempt=job.attempt) is True
    age_finished(db, late, days=8)          # it ran long after it was enqueued

    assert call(db, "purge") == 0           # the walk does not go back for it ...
    db.execute("UPDATE pgrelay._purge_state SET pass_started = now() - interval '25 hours'")  # white box: a day on
    assert call(db, "purge") + call(db, "purge") == 1   # ... the next pass, starting a day later, does

    assert get_job(db, late) is None


def test_with_a_retention_of_zero_days_a_pass_starts_every_hour(db):
    call(db, "configure_queue", queue="slow", retention_succeeded_days=0)
    late = make_job(db, "pending", queue="slow")
    make_job(db, "succeeded", queue="slow")
    assert call(db, "purge") == 1
    job = lease(db, late)
    call(db, "ack", id=job.id, attempt=job.attempt)
    assert call(db, "purge") == 0

    db.execute("UPDATE pgrelay._purge_state SET pass_started = now() - interval '61 minutes'")  # white box
    assert call(db, "purge") + call(db, "purge") == 1


def test_a_routine_purge_reads_a_bounded_share_of_a_long_pass(db):
    # white box: 25,000 dead letters finished 10 days ago (kept 30), written straight into the history
    db.execute("SELECT pgrelay._queue_id('default')")
    db.execute("""INSERT INTO pgrelay._finished (id, queue, task, kind, status, priority, run_at, attempt, payload,
                                                 last_error, created_at, finished_at)
                  SELECT nextval('pgrelay._job_id_seq'), 'default', 't', 'h', 'd', 0, now(), 1, '{}', 'gave up',
                         now() - interval '11 days', now() - interval '10 days'
                  FROM generate_series(1, 25000)""")
    due = finish_many(db, 10)
    age_finished(db, *due, days=8)

    removed, read = history_read_by_purge(db)   # reads about 10,000 jobs it keeps, a batch of 1,000 at a time

    assert (removed, read) == (0, 10000)
    for _ in range(2):   # the walk goes on where it stopped: 25,010 jobs in three calls
        removed += history_read_by_purge(db)[0]
    assert removed == 10
    assert not set(due) & finished_ids(db)


def test_queue_stats_count_what_is_left_after_a_purge(db):
    jobs = [make_job(db, "succeeded", queue="q") for _ in range(3)] + [make_job(db, "dead_letter", queue="q")]
    age_finished(db, jobs[0], jobs[1], days=10)
    stats = lambda: scalar(db, "SELECT (succeeded, dead_letter)::text FROM pgrelay.queue_stats WHERE queue = 'q'")  # noqa: E731
    assert stats() == "(3,1)"

    call(db, "purge")

    assert stats() == "(1,1)"


def test_purge_folds_old_counters_without_changing_the_totals(db):
    for _ in range(3):
        make_job(db, "succeeded", queue="q")
    db.execute("UPDATE pgrelay._counts SET minute = minute - interval '3 hours'")  # white box: history from 3 h ago
    make_job(db, "succeeded", queue="q")

    call(db, "purge")

    rows = db.execute("SELECT minute = '-infinity', succeeded FROM pgrelay._counts WHERE queue = 'q' ORDER BY 1").fetchall()
    assert rows == [(False, 1), (True, 3)]
    assert scalar(db, "SELECT succeeded FROM pgrelay.queue_stats WHERE queue = 'q'") == 4


def test_only_one_purge_runs_at_a_time(db, connect):
    job = make_job(db, "succeeded")
    age_finished(db, job, days=10)
    first = connect()
    first.execute("BEGIN")
    assert first.execute("SELECT pgrelay.purge()").fetchone()[0] == 1

    assert call(db, "purge") == 0

    first.execute("COMMIT")
    assert get_job(db, job) is None


def test_purge_forgets_workers_gone_for_a_week(db):
    call(db, "heartbeat", worker="old")
    call(db, "heartbeat", worker="recent")
    db.execute("UPDATE pgrelay._workers SET last_seen = now() - interval '8 days' WHERE worker = 'old'")

    call(db, "purge")

    assert [r[0] for r in db.execute("SELECT worker FROM pgrelay.workers").fetchall()] == ["recent"]


@pytest.mark.parametrize(("args", "message"), [
    ({"older_than_days": -1}, "older_than_days"),
    ({"older_than_days": 36501}, "older_than_days"),
    ({"max_jobs": 0}, "max_jobs"),
])
def test_purge_refuses_bad_input_and_removes_nothing(db, args, message):
    job = make_job(db, "succeeded")
    age_finished(db, job, days=100)

    with raises_sqlstate("PR001") as info:
        call(db, "purge", **args)

    assert message in str(info.value)
    assert get_job(db, job) is not None


def test_a_null_max_jobs_means_ten_thousand(db):
    job = make_job(db, "succeeded")
    age_finished(db, job, days=100)

    assert call(db, "purge", max_jobs=None) == 1


def test_maintain_recovers_expired_leases_and_purges_by_retention(db):
    expired = make_job(db, "leased")
    expire(db, expired)
    old = make_job(db, "succeeded")
    age_finished(db, old, days=8)

    [done] = call_rows(db, "maintain")

    assert done == {"recovered": 1, "purged": 1, "ticked": 0}
    assert status(db, expired) == "pending"
    assert get_job(db, old) is None


def test_without_pg_cron_maintenance_is_not_scheduled(db):
    assert call(db, "maintenance_scheduled") is False


def test_maintain_takes_what_purge_takes_and_recovers_at_most_what_recover_takes(db):
    expired = make_job(db, "leased")
    expire(db, expired)

    [done] = call_rows(db, "maintain", max_jobs=10_000_000)   # more than recover() takes in a call

    assert done == {"recovered": 1, "purged": 0, "ticked": 0}
    for bad in (0, 10_000_001):
        with raises_sqlstate("PR001") as info:
            call(db, "maintain", max_jobs=bad)
        assert "max_jobs must be between 1 and 10000000" in str(info.value)
