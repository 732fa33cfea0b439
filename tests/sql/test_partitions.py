"""The history's partitions: a job finishes into its day's partition (succeeded, or the rest), its attempts
follow it, and retention drops whole days instead of deleting rows.

purge() makes the partitions of the next three days (never one that has begun: see _make_partitions);
until then jobs finish into the default partition, which purge() handles row by row. A test that needs
today's or a past day makes it with the private _make_partitions, and moves jobs into a past one (white
box: finished_at is what routes a row).
"""

from __future__ import annotations

import threading

import pytest

from tests.sql.factory import (
    attempts,
    call,
    call_rows,
    consume,
    enqueue,
    get_job,
    make_job,
    scalar,
)

PARTITION_OF = "SELECT tableoid::regclass::text FROM pgrelay._finished WHERE id = %s"
ATTEMPTS_IN = "SELECT array_agg(DISTINCT tableoid::regclass::text) FROM pgrelay._attempts WHERE job_id = %s"


@pytest.fixture(autouse=True)
def no_kept_history(db):
    """A database upgraded from 0.4 (make test's second run) starts with the history the upgrade kept in
    place, here empty: gone, as the first purge() would drop it, so that today can have its partitions."""
    db.execute("SELECT pgrelay._drop_legacy_history()")


def day(db, days_ago: int = 0) -> str:
    return scalar(db, "SELECT to_char((now() - make_interval(days => %s)) AT TIME ZONE 'UTC', 'YYYYMMDD')",
                  (days_ago,))


def leaves(db, table: str = "_finished") -> set[str]:
    return {r[0] for r in db.execute(
        "SELECT relid::text FROM pg_partition_tree(%s::regclass) WHERE isleaf", (f"pgrelay.{table}",))}


def into_the_past(db, ids: list[int], days_ago: int) -> None:
    """White box: make that day's partitions, and move these finished jobs and their attempts into it."""
    db.execute("SELECT pgrelay._make_partitions(now() - make_interval(days => %s), 1)", (days_ago,))
    moved = db.execute("UPDATE pgrelay._finished SET finished_at = now() - make_interval(days => %s),"
                       " created_at = now() - make_interval(days => %s + 1) WHERE id = ANY (%s)",
                       (days_ago, days_ago, ids)).rowcount
    assert moved == len(ids)
    db.execute("UPDATE pgrelay._attempts SET job_finished_at = now() - make_interval(days => %s) WHERE job_id = ANY (%s)",
               (days_ago, ids))


def today(db) -> None:
    """White box: today's partitions, as purge() would have made them three days ago."""
    db.execute("SELECT pgrelay._make_partitions(now(), 1)")


def test_purge_makes_the_days_ahead_and_jobs_finish_into_their_day_and_kind(db):
    call(db, "purge")
    assert not {f"pgrelay._finished_{day(db)}_s"} & leaves(db)   # not today's, which has begun
    for n in range(1, 4):
        ahead = scalar(db, "SELECT to_char((now() + make_interval(days => %s)) AT TIME ZONE 'UTC', 'YYYYMMDD')", (n,))
        assert {f"pgrelay._finished_{ahead}_s", f"pgrelay._finished_{ahead}_x"} <= leaves(db)
        assert {f"pgrelay._attempts_{ahead}_s", f"pgrelay._attempts_{ahead}_x"} <= leaves(db, "_attempts")

    today(db)
    ok = make_job(db, "succeeded", failures=1)
    dead = make_job(db, "dead_letter")
    cancelled = make_job(db, "cancelled")

    now = day(db)
    assert scalar(db, PARTITION_OF, (ok.id,)) == f"pgrelay._finished_{now}_s"
    assert scalar(db, PARTITION_OF, (dead.id,)) == f"pgrelay._finished_{now}_x"
    assert scalar(db, PARTITION_OF, (cancelled.id,)) == f"pgrelay._finished_{now}_x"
    # the failed attempt moved from the active jobs' partition to its job's day
    assert scalar(db, ATTEMPTS_IN, (ok.id,)) == [f"pgrelay._attempts_{now}_s"]
    assert scalar(db, ATTEMPTS_IN, (dead.id,)) == [f"pgrelay._attempts_{now}_x"]
    assert [a["outcome"] for a in attempts(db, ok)] == ["failed", "succeeded"]


def test_a_job_still_active_keeps_its_attempts_apart_until_it_finishes(db):
    today(db)
    job = make_job(db, "leased", failures=2)
    assert scalar(db, ATTEMPTS_IN, (job.id,)) == ["pgrelay._attempts_active"]
    assert call(db, "ack", id=job.id, attempt=job.attempt) is True
    assert scalar(db, ATTEMPTS_IN, (job.id,)) == [f"pgrelay._attempts_{day(db)}_s"]
    assert len(attempts(db, job)) == 3


def test_jobs_that_finished_before_their_day_was_made_move_into_it(db):
    job = make_job(db, "succeeded")           # no partition for today
    assert scalar(db, PARTITION_OF, (job.id,)) == "pgrelay._finished_default"

    today(db)

    assert scalar(db, PARTITION_OF, (job.id,)) == f"pgrelay._finished_{day(db)}_s"
    assert get_job(db, job)["status"] == "succeeded"
    assert scalar(db, "SELECT count(*) FROM pgrelay._finished_default") == 0


def test_retention_drops_a_day_of_succeeded_jobs_whole_and_keeps_its_dead_letters_for_their_own(db):
    keyed = make_job(db, "succeeded", idempotency_key="order-1")
    retried = make_job(db, "succeeded", failures=1)
    plain = make_job(db, "succeeded")
    dead = [make_job(db, "dead_letter"), make_job(db, "cancelled")]
    ids = [keyed.id, retried.id, plain.id] + [d.id for d in dead]
    into_the_past(db, ids, 10)
    old = day(db, 10)
    before = db.execute("SELECT succeeded, dead_letter, cancelled FROM pgrelay.queue_stats WHERE queue = 'default'"
                        ).fetchone()

    deletes = ("SELECT coalesce(sum(n_tup_del), 0) FROM pg_stat_xact_user_tables"
               " WHERE relname LIKE '\\_finished%%' OR relname LIKE '\\_attempts%%'")
    with db.transaction():   # (what the backend has not reported yet counts too: hence before and after)
        before_deletes = scalar(db, deletes)
        removed = call(db, "purge")
        deleted = scalar(db, deletes) - before_deletes

    assert removed == 3
    assert deleted == 0                        # no row deleted: the table went
    assert f"pgrelay._finished_{old}_s" not in leaves(db) and f"pgrelay._attempts_{old}_s" not in leaves(db, "_attempts")
    assert [get_job(db, j) for j in (keyed, retried, plain)] == [None, None, None]
    assert attempts(db, retried) == []
    assert {get_job(db, d)["status"] for d in dead} == {"dead_letter", "cancelled"}
    after = db.execute("SELECT succeeded, dead_letter, cancelled FROM pgrelay.queue_stats WHERE queue = 'default'"
                       ).fetchone()
    assert after == (before[0] - 3, before[1], before[2])
    assert enqueue(db, idempotency_key="order-1").id != keyed.id   # its key went with it

    into_the_past(db, [d.id for d in dead], 31)
    assert call(db, "purge") == 2
    assert [get_job(db, d) for d in dead] == [None, None]
    assert not {f"pgrelay._finished_{day(db, 31)}_x", f"pgrelay._attempts_{day(db, 31)}_x"} & (
        leaves(db) | leaves(db, "_attempts"))


def test_the_longest_retention_any_queue_has_keeps_a_day_and_shorter_ones_go_row_by_row(db):
    call(db, "configure_queue", queue="brief", retention_succeeded_days=2)
    call(db, "configure_queue", queue="archive", retention_succeeded_days=20)
    brief = make_job(db, "succeeded", queue="brief")
    usual = make_job(db, "succeeded")
    kept = make_job(db, "succeeded", queue="archive")
    into_the_past(db, [brief.id, usual.id, kept.id], 8)

    assert call(db, "purge") == 2              # brief (2 days) and default (7) row by row; the day stays
    assert get_job(db, kept)["status"] == "succeeded"
    assert f"pgrelay._finished_{day(db, 8)}_s" in leaves(db)

    call(db, "configure_queue", queue="archive", retention_succeeded_days=7)
    assert call(db, "purge") == 1              # now every queue's retention is over for that day
    assert f"pgrelay._finished_{day(db, 8)}_s" not in leaves(db)


def test_purge_older_than_days_drops_whole_days_too(db):
    jobs = [make_job(db, "succeeded"), make_job(db, "dead_letter")]
    into_the_past(db, [j.id for j in jobs], 3)
    assert call(db, "purge", older_than_days=5) == 0
    assert call(db, "purge", older_than_days=2) == 2
    assert f"pgrelay._finished_{day(db, 3)}" not in {r[0] for r in db.execute(
        "SELECT relid::text FROM pg_partition_tree('pgrelay._finished')")}


def test_a_day_that_a_long_query_is_reading_is_dropped_by_a_later_purge(db, connect):
    job = make_job(db, "succeeded")
    into_the_past(db, [job.id], 10)
    reader = connect()
    reader.autocommit = False
    reader.execute("SELECT count(*) FROM pgrelay.jobs")   # holds its lock on every partition until it ends

    assert call(db, "purge") == 0              # not waited for: the workers' acks would queue behind the drop
    assert get_job(db, job)["status"] == "succeeded"
    reader.rollback()
    assert call(db, "purge") == 1


def test_days_drop_while_workers_finish_jobs_and_nothing_is_lost_or_miscounted(db, connect):
    """Four workers enqueue, claim and ack (and nack) while purge drops past days again and again: every
    job acked is in the history once, queue_stats counts exactly what the history holds."""
    succeeded = [make_job(db, "succeeded").id for _ in range(30)]
    dead = [make_job(db, "dead_letter").id for _ in range(10)]
    old = succeeded + dead
    for n, ago in enumerate((10, 12, 40)):
        into_the_past(db, old[n::3], ago)
    due = set(succeeded) | set(old[2::3])   # the dead letters of 40 days ago too
    acked: list[int] = []
    errors: list[BaseException] = []

    def work(name: str) -> None:
        try:
            conn = connect()
            for i in range(60):
                enqueue(conn, queue="default")
                for job in consume(conn, worker=name, batch=5):
                    if (job["id"] + i) % 7 == 0:
                        call(conn, "nack", id=job["id"], attempt=job["attempt"], error="boom", permanent=True)
                    else:
                        assert call(conn, "ack", id=job["id"], attempt=job["attempt"]) is True
                        acked.append(job["id"])
        except BaseException as exc:  # re-raised below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(f"w{n}",)) for n in range(4)]
    for t in threads:
        t.start()
    purged = 0
    while any(t.is_alive() for t in threads):
        purged += call(db, "purge")
    for t in threads:
        t.join()
    purged += call(db, "purge")

    assert errors == []
    assert purged == len(due)                  # three past days of succeeded jobs, and 40 days ago whole
    assert scalar(db, "SELECT count(*) FROM pgrelay.jobs WHERE id = ANY (%s)", (list(due),)) == 0
    history = db.execute("SELECT count(*) FILTER (WHERE status = 'succeeded'), count(*) FILTER (WHERE status ="
                         " 'dead_letter') FROM pgrelay.jobs WHERE finished_at IS NOT NULL").fetchone()
    assert scalar(db, "SELECT count(*) FROM pgrelay.jobs WHERE id = ANY (%s) AND status = 'succeeded'", (acked,)) \
        == len(acked)
    assert db.execute("SELECT succeeded, dead_letter FROM pgrelay.queue_stats WHERE queue = 'default'").fetchone() \
        == history


@pytest.mark.parametrize("days_ago", [0, 1])
def test_replay_and_get_job_find_a_job_in_any_day(db, days_ago):
    dead = make_job(db, "dead_letter")
    today(db)
    if days_ago:
        into_the_past(db, [dead.id], days_ago)
    new = call(db, "replay", id=dead.id)
    assert get_job(db, new)["replayed_from"] == dead.id and get_job(db, new)["status"] == "pending"
    assert scalar(db, "SELECT count(*) FROM pgrelay.dead_letters WHERE id = %s", (dead.id,)) == 0   # marked replayed
