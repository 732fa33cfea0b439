"""The upgrade chain: a database that installed any release and walked the chain is the same as one
that installed the current version, and keeps every job where it was.

Both ways a database gets pgrelay are covered: jobs-migrate (``pgrelay.schema.migrate``) and the
extension machinery (``CREATE EXTENSION pgrelay VERSION ...`` then ``ALTER EXTENSION pgrelay UPDATE``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.rows import dict_row

from pgrelay.errors import SchemaError
from pgrelay.schema import released_versions, schema_version
from tests.harness.catalog import schema_snapshot, snapshot_differences
from tests.harness.extension import install_extension
from tests.harness.releases import migrate_dsn, package_with_next_release, upgrade_chain
from tests.sql.factory import attempts, call, consume, make_job

OLDEST = released_versions()[0]

# Every private table, read whole, in a stable order: what "every job is where it was" means.
TABLES = {
    "_jobs": "id", "_finished": "id", "_attempts": "job_id, attempt", "_idempotency_keys": "key",
    "_queues": "id", "_workers": "worker", "_counts": "queue, minute, backend",
}


def migrate_to(dsn: str, target: str | None = None) -> str:
    return migrate_dsn(dsn, target).action


def snapshot(dsn: str) -> dict[str, Any]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return schema_snapshot(conn)


def assert_same_schema(first: dict[str, Any], second: dict[str, Any], what: str) -> None:
    assert first["functions"] and first["relations"], "the snapshot found no pgrelay objects"
    differences = snapshot_differences(first, second)
    assert differences == [], f"{what}:\n" + "\n".join(differences)


def kept(before: Any, after: Any) -> bool:
    """Whether ``after`` holds everything ``before`` did: the same values under the same keys, at any
    depth; an upgrade may add keys (new columns, new fields of a composite), never change or drop one."""
    if isinstance(before, dict) and isinstance(after, dict):
        return all(key in after and kept(value, after[key]) for key, value in before.items())
    if isinstance(before, list) and isinstance(after, list):
        return len(before) == len(after) and all(kept(b, a) for b, a in zip(before, after))
    return before == after


def data(conn: psycopg.Connection) -> dict[str, list[Any]]:
    return {table: [row[0] for row in conn.execute(f"SELECT to_jsonb(t) FROM pgrelay.{table} t ORDER BY {order}")]
            for table, order in TABLES.items()}


@pytest.fixture
def databases(new_database: Callable[[str], contextlib.AbstractContextManager[str]]) -> Iterator[
        Callable[[str], str]]:
    """databases(name) -> the DSN of a new empty database, dropped after the test."""
    with contextlib.ExitStack() as stack:
        yield lambda name: stack.enter_context(new_database(name))


@pytest.mark.parametrize("version", upgrade_chain()[1:])
def test_the_oldest_release_upgraded_to_each_version_equals_that_version_installed_fresh(databases, version):
    fresh, upgraded = databases("pgrelay_fresh"), databases("pgrelay_upgraded")
    assert migrate_to(fresh, version) == "installed"
    assert migrate_to(upgraded, OLDEST) == "installed"
    assert migrate_to(upgraded, version) == "upgraded"

    assert_same_schema(snapshot(fresh), snapshot(upgraded), f"{OLDEST} + upgrades vs a fresh {version}")


def test_jobs_migrate_walks_the_chain_one_release_at_a_time(databases):
    dsn = databases("pgrelay_walked")
    migrate_to(dsn, OLDEST)
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert conn.execute("SELECT pgrelay.version()").fetchone() == (OLDEST,)
    assert migrate_to(dsn) == "upgraded"
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert conn.execute("SELECT pgrelay.version()").fetchone() == (schema_version(),)
        assert conn.execute("SELECT version, method FROM pgrelay._migrations ORDER BY installed_at").fetchall() == [
            (version, "jobs-migrate") for version in upgrade_chain()]
    assert migrate_to(dsn) == "unchanged"


def test_jobs_migrate_never_goes_back(databases):
    dsn = databases("pgrelay_back")
    migrate_to(dsn)
    with pytest.raises(SchemaError, match="never goes back"):
        migrate_to(dsn, OLDEST)
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert conn.execute("SELECT pgrelay.version()").fetchone() == (schema_version(),)


def test_create_extension_at_the_oldest_release_then_update_equals_a_fresh_create_extension(databases):
    install_extension()
    fresh, upgraded, migrated = databases("pgrelay_ext_fresh"), databases("pgrelay_ext_up"), databases("pgrelay_mig")
    with psycopg.connect(fresh, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION pgrelay")
    with psycopg.connect(upgraded, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE EXTENSION pgrelay VERSION {}").format(sql.Literal(OLDEST)))
        assert conn.execute("SELECT pgrelay.version()").fetchone() == (OLDEST,)
        conn.execute("ALTER EXTENSION pgrelay UPDATE")
        assert conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'pgrelay'").fetchone() == (
            schema_version(),)
        assert conn.execute("SELECT version, method FROM pgrelay._migrations ORDER BY installed_at").fetchall() == [
            (OLDEST, "create extension")] + [(v, "alter extension update") for v in upgrade_chain()[1:]]
    migrate_to(migrated)

    assert_same_schema(snapshot(fresh), snapshot(upgraded), "CREATE EXTENSION at the oldest release + UPDATE")
    assert_same_schema(snapshot(fresh), snapshot(migrated), "CREATE EXTENSION vs jobs-migrate")
    dumped = "SELECT array_agg(c ORDER BY c) FROM unnest((SELECT extconfig::regclass[]::text[] FROM pg_extension " \
             "WHERE extname = 'pgrelay')) c"
    with psycopg.connect(fresh) as a, psycopg.connect(upgraded) as b:
        assert a.execute(dumped).fetchone() == b.execute(dumped).fetchone()  # pg_dump keeps the same tables' data


def _every_state(conn: psycopg.Connection) -> dict[str, Any]:
    """One job in each state a 0.1.0 database can hold, with keys, attempts and results."""
    jobs: dict[str, Any] = {state: make_job(conn, state) for state in
                            ("pending", "scheduled", "leased", "succeeded", "dead_letter", "cancelled")}
    jobs["keyed"] = make_job(conn, "pending", idempotency_key="order-42", dedupe_key="customer-7", queue="keyed")
    jobs["retried_then_leased"] = make_job(conn, "leased", failures=2, max_attempts=5)
    jobs["expired"] = make_job(conn, "expired")
    jobs["replayed"] = call(conn, "replay", id=jobs["dead_letter"].id)
    jobs["http"] = call(conn, "enqueue_http", url="https://example.com/hook", headers={"X-Token": "secret"})
    call(conn, "heartbeat", worker="worker-a", ids=[jobs["leased"].id])
    return jobs


def test_a_database_of_the_oldest_release_keeps_every_job_through_the_upgrade(databases):
    dsn = databases("pgrelay_data")
    migrate_to(dsn, OLDEST)
    with psycopg.connect(dsn, autocommit=True) as conn:
        jobs = _every_state(conn)
        before = data(conn)
        view_before = conn.cursor(row_factory=dict_row).execute("SELECT * FROM pgrelay.jobs ORDER BY id").fetchall()

    assert migrate_to(dsn) == "upgraded"  # while two jobs are leased and one lease has run out

    with psycopg.connect(dsn, autocommit=True) as conn:
        after = data(conn)
        assert kept(before, after), "\n".join(f"{t}: {before[t]}\n  -> {after[t]}" for t in TABLES
                                               if not kept(before[t], after[t]))
        assert kept(view_before, conn.cursor(row_factory=dict_row).execute("SELECT * FROM pgrelay.jobs ORDER BY id").fetchall())
        # the replay made before the upgrade is delivered with the id of the job it replays
        assert conn.execute("SELECT (options).delivery_id FROM pgrelay._jobs WHERE id = %s",
                            (jobs["replayed"],)).fetchone() == (str(jobs["dead_letter"].id),)
        leased, retried = jobs["leased"], jobs["retried_then_leased"]
        assert retried.attempt == 3
        # the leases given before the upgrade still fence: a stale attempt changes nothing, the current one acks
        assert call(conn, "ack", id=retried.id, attempt=2) is False
        assert call(conn, "ack", id=retried.id, attempt=3, result={"after": "upgrade"}) is True
        assert call(conn, "ack_many", ids=[leased.id], attempts=[leased.attempt]) == 1
        assert call(conn, "recover") == 1  # the expired lease goes back to pending, after its backoff
        assert [a["outcome"] for a in attempts(conn, jobs["expired"].id)] == ["lease_expired"]
        # keys still find the jobs they were given to
        keyed = jobs["keyed"]
        assert call(conn, "enqueue", task="other", queue="keyed", idempotency_key="order-42") == keyed.id
        assert call(conn, "enqueue", task="other", queue="keyed", dedupe_key="customer-7") == keyed.id
        # and the queue goes on: everything due can be claimed and finished
        claimed = consume(conn, "worker-b", queues=["default", "keyed"], batch=100)
        assert {row["id"] for row in claimed} == {jobs["pending"].id, jobs["replayed"], keyed.id, jobs["http"]}
        assert call(conn, "ack_many", ids=[r["id"] for r in claimed], attempts=[r["attempt"] for r in claimed]) == len(
            claimed)
        statuses = dict(conn.execute("SELECT id, status FROM pgrelay.jobs").fetchall())
        assert statuses[retried.id] == "succeeded" and statuses[jobs["scheduled"].id] == "pending"
        assert statuses[jobs["cancelled"].id] == "cancelled" and statuses[jobs["dead_letter"].id] == "dead_letter"
        assert conn.execute("SELECT result FROM pgrelay.jobs WHERE id = %s", (retried.id,)).fetchone() == (
            {"after": "upgrade"},)
        # the key moved to its job's queue: in another queue it is free
        assert call(conn, "enqueue", task="other", queue="default", idempotency_key="order-42") != keyed.id
        assert call(conn, "enqueue", task="other", queue="keyed", idempotency_key="order-42") == keyed.id


def test_jobs_migrate_upgrades_an_extension_install_through_alter_extension(databases):
    install_extension()
    dsn = databases("pgrelay_ext_migrate")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE EXTENSION pgrelay VERSION {}").format(sql.Literal(OLDEST)))
    assert migrate_to(dsn) == "upgraded"
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'pgrelay'").fetchone() == (
            schema_version(),)
        assert conn.execute("SELECT method FROM pgrelay._migrations ORDER BY installed_at").fetchall()[1:] == [
            ("jobs-migrate",)] * (len(upgrade_chain()) - 1)


def test_jobs_migrate_says_what_to_do_when_the_servers_extension_files_are_older(databases, tmp_path, monkeypatch):
    install_extension()
    dsn = databases("pgrelay_ext_stale")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION pgrelay")
    installed = schema_version()
    package_with_next_release(tmp_path, monkeypatch, "")  # this package is a release ahead of the server's files

    with pytest.raises(SchemaError, match=f"extension files stop at {installed}; run `make install-extension`"):
        migrate_to(dsn)

    with psycopg.connect(dsn, autocommit=True) as conn:
        assert conn.execute("SELECT pgrelay.version()").fetchone() == (installed,)
