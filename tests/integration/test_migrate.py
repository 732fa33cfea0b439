"""The installer: install, install again, two at once, and the refusals."""

from __future__ import annotations

import asyncio

import asyncpg
import psycopg
import pytest

import pgrelay
from pgrelay.errors import SchemaError
from pgrelay.schema import installed_version, migrate


async def _migrate(dsn: str) -> pgrelay.MigrationResult:
    conn = await asyncpg.connect(dsn)
    try:
        return await migrate(conn)
    finally:
        await conn.close()


def _dump(dsn: str) -> list[tuple]:
    """Every object of schema pgrelay with its definition, and the recorded migrations."""
    with psycopg.connect(dsn) as conn:
        objects = conn.execute(
            """
            SELECT c.relkind::text, c.relname, coalesce(pg_get_viewdef(c.oid), ''), ''
            FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'pgrelay'
            UNION ALL
            SELECT 'f', p.oid::regprocedure::text, pg_get_functiondef(p.oid), coalesce(obj_description(p.oid, 'pg_proc'), '')
            FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'pgrelay'
            UNION ALL
            SELECT 'i', indexrelid::regclass::text, pg_get_indexdef(indexrelid), ''
            FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = 'pgrelay'
            ORDER BY 1, 2
            """
        ).fetchall()
        migrations = conn.execute("SELECT version, method FROM pgrelay._migrations ORDER BY version").fetchall()
    return objects + migrations


def test_installs_into_an_empty_database(empty_dsn):
    result = asyncio.run(_migrate(empty_dsn))
    assert (result.action, result.previous, result.current) == ("installed", None, pgrelay.__version__)
    with psycopg.connect(empty_dsn) as conn:
        assert conn.execute("SELECT pgrelay.version()").fetchone()[0] == pgrelay.__version__
        assert conn.execute("SELECT pgrelay.enqueue('smoke.test')").fetchone()[0] > 0


def test_second_install_changes_nothing(empty_dsn):
    asyncio.run(_migrate(empty_dsn))
    before = _dump(empty_dsn)
    result = asyncio.run(_migrate(empty_dsn))
    assert result.action == "unchanged"
    assert _dump(empty_dsn) == before


def test_two_concurrent_installs_both_succeed_and_install_once(empty_dsn, postgresql_proc):
    async def both():
        return await asyncio.gather(_migrate(empty_dsn), _migrate(empty_dsn))

    results = asyncio.run(both())
    assert sorted(r.action for r in results) == ["installed", "unchanged"]
    reference_dsn = empty_dsn.rsplit("/", 1)[0] + "/" + "pgrelay_reference"
    with psycopg.connect(empty_dsn.rsplit("/", 1)[0] + "/postgres", autocommit=True) as admin:
        admin.execute("DROP DATABASE IF EXISTS pgrelay_reference")
        admin.execute("CREATE DATABASE pgrelay_reference")
    try:
        asyncio.run(_migrate(reference_dsn))
        assert _dump(empty_dsn) == _dump(reference_dsn)
    finally:
        with psycopg.connect(empty_dsn.rsplit("/", 1)[0] + "/postgres", autocommit=True) as admin:
            admin.execute("DROP DATABASE pgrelay_reference")


def test_keeps_existing_jobs_when_run_again(db, dsn):
    job = db.execute("SELECT pgrelay.enqueue('keep.me')").fetchone()[0]
    assert asyncio.run(_migrate(dsn)).action == "unchanged"
    assert db.execute("SELECT pgrelay.get_job(%s)->>'task'", [job]).fetchone()[0] == "keep.me"


def test_refuses_a_newer_schema(db, dsn):
    db.execute("CREATE OR REPLACE FUNCTION pgrelay.version() RETURNS text LANGUAGE sql AS $$ SELECT '99.0.0' $$")
    with pytest.raises(SchemaError, match="newer than this package"):
        asyncio.run(_migrate(dsn))
    assert db.execute("SELECT pgrelay.version()").fetchone()[0] == "99.0.0"


def test_refuses_a_schema_named_pgrelay_that_is_not_pgrelay(empty_dsn):
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA pgrelay")
        conn.execute("CREATE TABLE pgrelay.mine (x int)")
    with pytest.raises(SchemaError, match="not an installed pgrelay"):
        asyncio.run(_migrate(empty_dsn))
    with psycopg.connect(empty_dsn) as conn:
        assert conn.execute("SELECT to_regclass('pgrelay.mine') IS NOT NULL").fetchone()[0]
        assert conn.execute("SELECT to_regclass('pgrelay._jobs')").fetchone()[0] is None


def test_installs_into_an_empty_schema_named_pgrelay(empty_dsn):
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA pgrelay")
    assert asyncio.run(_migrate(empty_dsn)).action == "installed"


def test_a_failed_install_leaves_nothing_behind(empty_dsn, monkeypatch):
    import pgrelay.schema as schema

    real_read = schema._read
    monkeypatch.setattr(schema, "_read", lambda name: real_read(name) + "\nSELECT 1/0;")
    with pytest.raises(asyncpg.DivisionByZeroError):
        asyncio.run(_migrate(empty_dsn))
    with psycopg.connect(empty_dsn) as conn:
        assert conn.execute("SELECT to_regnamespace('pgrelay')").fetchone()[0] is None


def test_installed_version_is_none_without_pgrelay(empty_dsn):
    async def check():
        conn = await asyncpg.connect(empty_dsn)
        try:
            return await installed_version(conn)
        finally:
            await conn.close()

    assert asyncio.run(check()) is None
