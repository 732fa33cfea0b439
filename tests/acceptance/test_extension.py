"""`make install-extension` then `CREATE EXTENSION pgrelay` gives the schema jobs-migrate installs, and it works.

The extension files are copied into the server's `pg_config --sharedir`/extension (tests/harness/extension.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import asyncpg
import psycopg
import pytest

from pgrelay.schema import migrate, released_versions, schema_version
from tests.harness.catalog import schema_snapshot, snapshot_differences
from tests.harness.extension import ROOT, install_extension


@pytest.fixture(scope="module")
def installed_extension() -> str:
    """`make install-extension` for this server; returns the extension folder."""
    folder = install_extension()
    version = schema_version()
    assert (folder / "pgrelay.control").is_file()
    assert (folder / f"pgrelay--{version}.sql").read_text() == (ROOT / "sql" / "pgrelay.sql").read_text()
    for release in released_versions():
        assert (folder / f"pgrelay--{release}.sql").read_text() == (ROOT / "sql" / f"pgrelay--{release}.sql").read_text()
    return str(folder)


@pytest.fixture
def migrated_dsn(new_database: Any) -> Iterator[str]:
    """A fresh database with pgrelay installed by jobs-migrate's code (pgrelay.schema.migrate)."""
    with new_database("pgrelay_migrated") as dsn:
        asyncio.run(_migrate(dsn))
        yield dsn


async def _migrate(dsn: str) -> str:
    conn = await asyncpg.connect(dsn)
    try:
        return (await migrate(conn)).action
    finally:
        await conn.close()


def _create_extension(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION pgrelay")


def test_create_extension_gives_the_schema_jobs_migrate_installs(installed_extension, empty_dsn, migrated_dsn):
    _create_extension(empty_dsn)
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        assert conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'pgrelay'").fetchone() == (
            schema_version(),)
        assert conn.execute("SELECT version, method FROM pgrelay._migrations").fetchall() == [
            (schema_version(), "create extension")]
        from_extension = schema_snapshot(conn)
    with psycopg.connect(migrated_dsn, autocommit=True) as conn:
        assert conn.execute("SELECT version, method FROM pgrelay._migrations").fetchall() == [
            (schema_version(), "jobs-migrate")]
        from_migrate = schema_snapshot(conn)

    assert from_extension["relations"] and from_extension["functions"], "the snapshot found no pgrelay objects"
    differences = snapshot_differences(from_extension, from_migrate)
    assert differences == [], "CREATE EXTENSION vs jobs-migrate:\n" + "\n".join(differences)
    assert from_extension == from_migrate


def test_every_pgrelay_object_belongs_to_the_extension(installed_extension, empty_dsn):
    """So DROP EXTENSION removes them and pg_dump writes CREATE EXTENSION instead of the objects."""
    _create_extension(empty_dsn)
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        loose = conn.execute(
            """
            WITH ext AS (SELECT oid FROM pg_extension WHERE extname = 'pgrelay'),
            objects AS (
                SELECT 'pg_class'::regclass AS classid, c.oid, c.relname::text AS name
                FROM pg_class c WHERE c.relnamespace = 'pgrelay'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
                UNION ALL
                SELECT 'pg_proc'::regclass, p.oid, p.oid::regprocedure::text
                FROM pg_proc p WHERE p.pronamespace = 'pgrelay'::regnamespace
                UNION ALL
                SELECT 'pg_type'::regclass, t.oid, t.typname::text
                FROM pg_type t LEFT JOIN pg_class c ON c.oid = t.typrelid
                WHERE t.typnamespace = 'pgrelay'::regnamespace AND t.typelem = 0 AND (t.typrelid = 0 OR c.relkind = 'c')
            )
            SELECT o.name FROM objects o
            WHERE NOT EXISTS (SELECT 1 FROM pg_depend d, ext
                              WHERE d.classid = o.classid AND d.objid = o.oid AND d.deptype = 'e'
                                AND d.refclassid = 'pg_extension'::regclass AND d.refobjid = ext.oid)
            ORDER BY 1
            """
        ).fetchall()
    assert loose == []


def test_the_extension_installed_queue_works(installed_extension, empty_dsn):
    _create_extension(empty_dsn)
    assert asyncio.run(_migrate(empty_dsn)) == "unchanged", "jobs-migrate should find this version installed"
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        first = conn.execute("SELECT pgrelay.enqueue('ext.smoke', '{\"n\": 1}')").fetchone()[0]
        second = conn.execute("SELECT pgrelay.enqueue('ext.smoke', '{\"n\": 2}')").fetchone()[0]
        claimed = conn.execute(
            "SELECT id, attempt, payload FROM pgrelay.consume('ext-worker', batch => 10) ORDER BY id").fetchall()
        assert claimed == [(first, 1, {"n": 1}), (second, 1, {"n": 2})]
        assert conn.execute("SELECT pgrelay.ack(%s, 1)", (first,)).fetchone() == (True,)
        assert conn.execute("SELECT pgrelay.ack_many(%s, %s)", ([second], [1])).fetchone() == (1,)
        assert conn.execute("SELECT pgrelay.ack(%s, 1)", (first,)).fetchone() == (False,)  # already acked
        assert conn.execute("SELECT id, status, attempt FROM pgrelay.jobs ORDER BY id").fetchall() == [
            (first, "succeeded", 1), (second, "succeeded", 1)]
