"""The upgrade to 0.5.0 partitions the history in place: a history of 1,000,000 finished jobs (and their
attempts) stays where it is, in the same files, as the partitions of everything that finished before
tomorrow; nothing is copied, every job is still found, and purge() empties those partitions row by row
as their retention ends, then drops them.

How long the upgrade holds its lock is measured in bench/partition_bench.py, not here.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import psycopg
import pytest

from tests.harness.releases import migrate_dsn
from tests.sql.factory import attempts, call, make_job

BEFORE = "0.4.1"      # the last release with an unpartitioned history
HISTORY = 1_000_000


@pytest.fixture
def databases(new_database: Callable[[str], contextlib.AbstractContextManager[str]]) -> Iterator[
        Callable[[str], str]]:
    with contextlib.ExitStack() as stack:
        yield lambda name: stack.enter_context(new_database(name))


def legacy(conn: psycopg.Connection) -> tuple[str, str]:
    return conn.execute("SELECT finished::text, attempts::text FROM pgrelay._legacy_history()").fetchone()


def test_a_history_of_a_million_jobs_is_partitioned_in_place(databases):
    dsn = databases("pgrelay_history")
    migrate_dsn(dsn, BEFORE)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pgrelay._queue_id('default')")
        # white box: the history a busy 0.4 database holds, written straight into its tables; every
        # tenth job a dead letter with an attempt
        conn.execute(f"""
            INSERT INTO pgrelay._finished (id, queue, task, kind, status, priority, run_at, attempt, payload,
                                           last_error, leased_by, leased_at, created_at, finished_at)
            SELECT nextval('pgrelay._job_id_seq'), 'default', 'orders.sync', 'h',
                   CASE WHEN i % 10 = 0 THEN 'd' ELSE 's' END, 0, now(), 1, jsonb_build_object('order', i),
                   CASE WHEN i % 10 = 0 THEN 'gave up' END, 'w1', now() - interval '1 minute',
                   now() - make_interval(secs => i), now() - make_interval(secs => i / 2.0)
            FROM generate_series(1, {HISTORY}) i""")
        conn.execute("""
            INSERT INTO pgrelay._attempts (job_id, attempt, worker, started_at, finished_at, outcome, error)
            SELECT f.id, 1, 'w1', f.leased_at, f.finished_at, 'failed', 'gave up'
            FROM pgrelay._finished f WHERE f.status = 'd'""")
        waiting = make_job(conn, "leased", failures=1)    # active across the upgrade, one attempt behind it
        conn.execute("VACUUM ANALYZE pgrelay._finished, pgrelay._attempts")
        files = conn.execute("SELECT pg_relation_filenode('pgrelay._finished'),"
                             " pg_relation_filenode('pgrelay._attempts')").fetchone()
        before = conn.execute("SELECT count(*), sum(id), sum(hashtext(payload::text)) FROM pgrelay._finished").fetchone()

    assert migrate_dsn(dsn).action == "upgraded"

    with psycopg.connect(dsn, autocommit=True) as conn:
        finished, attempted = legacy(conn)
        tomorrow = conn.execute("SELECT to_char(now() AT TIME ZONE 'UTC' + interval '1 day', 'YYYYMMDD')").fetchone()[0]
        assert (finished, attempted) == (f"pgrelay._finished_before_{tomorrow}", f"pgrelay._attempts_before_{tomorrow}")
        # the same files: attached, not copied
        assert conn.execute("SELECT pg_relation_filenode(%s::regclass), pg_relation_filenode(%s::regclass)",
                            (finished, attempted)).fetchone() == files
        assert conn.execute("SELECT count(*), sum(id), sum(hashtext(payload::text)) FROM pgrelay._finished"
                            ).fetchone() == before
        assert conn.execute("SELECT count(*) FROM pgrelay._attempts").fetchone() == (HISTORY // 10 + 1,)
        some = conn.execute("SELECT min(id), max(id) FROM pgrelay._finished").fetchone()
        assert [call(conn, "get_job", id=i)["status"] for i in some] == ["succeeded", "dead_letter"]
        assert conn.execute("SELECT count(*) FROM pgrelay.dead_letters").fetchone() == (HISTORY // 10,)
        assert len(attempts(conn, some[1])) == 1

        # jobs finishing today still go to the kept tables (they hold the days before tomorrow) ...
        assert call(conn, "ack", id=waiting.id, attempt=waiting.attempt) is True
        assert conn.execute("SELECT tableoid::regclass::text FROM pgrelay._finished WHERE id = %s",
                            (waiting.id,)).fetchone() == (finished,)
        assert [a["outcome"] for a in attempts(conn, waiting)] == ["failed", "succeeded"]
        # ... and purge() makes the days from tomorrow on
        call(conn, "purge", max_jobs=1)
        assert conn.execute("SELECT count(*) FROM pg_partition_tree('pgrelay._finished')"
                            " WHERE relid::text LIKE %s", (f"pgrelay._finished_{tomorrow}%",)).fetchone() == (3,)


def test_the_kept_history_is_purged_row_by_row_then_dropped(databases):
    dsn = databases("pgrelay_history_small")
    migrate_dsn(dsn, BEFORE)
    with psycopg.connect(dsn, autocommit=True) as conn:
        done = [make_job(conn, "succeeded"), make_job(conn, "dead_letter")]
        active = make_job(conn, "leased", failures=1)
    migrate_dsn(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        finished, attempted = legacy(conn)
        assert call(conn, "purge", older_than_days=0) == 2     # row by row: the kept tables are emptied ...
        assert legacy(conn) == (None, attempted)                # ... and the one left empty dropped
        # the active job's attempt from before the upgrade stays with it when it finishes
        assert call(conn, "ack", id=active.id, attempt=active.attempt) is True
        assert call(conn, "purge", older_than_days=0) == 1
        assert legacy(conn) == (None, None)
        assert attempts(conn, active) == []
