"""Privileges after an upgrade: what a later version adds is callable by no one the matrix does not
name, and a broken matrix stops the upgrade with nothing changed."""

from __future__ import annotations

import asyncpg
import psycopg
import pytest

from pgrelay.schema import schema_version
from tests.harness.releases import migrate_dsn, package_with_next_release

ROLES = ("pgrelay_producer", "pgrelay_worker", "pgrelay_reader", "pgrelay_admin")


def run_migrate(dsn: str) -> str:
    return migrate_dsn(dsn).action


def who_may_call(db: psycopg.Connection, signature: str) -> list[str]:
    return [r[0] for r in db.execute(
        """SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END
           FROM pg_proc p, aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a
           WHERE p.oid = %s::regprocedure AND a.privilege_type = 'EXECUTE' ORDER BY 1""", (signature,))]


def test_a_function_an_upgrade_adds_is_callable_by_no_one_the_matrix_does_not_name(db, dsn, tmp_path, monkeypatch):
    new = package_with_next_release(tmp_path, monkeypatch, """
        CREATE FUNCTION pgrelay.added_later() RETURNS integer LANGUAGE sql AS 'SELECT 1';
    """)
    assert run_migrate(dsn) == "upgraded"

    assert db.execute("SELECT pgrelay.version()").fetchone() == (new,)
    assert who_may_call(db, "pgrelay.added_later()") == ["postgres"]  # its owner only: not PUBLIC
    db.execute('CREATE ROLE "producer_login" LOGIN IN ROLE pgrelay_producer')
    try:
        with psycopg.connect(dsn, user="producer_login", autocommit=True) as producer:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                producer.execute("SELECT pgrelay.added_later()")
            assert producer.execute("SELECT pgrelay.enqueue('still.allowed')").fetchone()[0] > 0
    finally:
        db.execute('DROP ROLE "producer_login"')


def test_a_function_the_owner_adds_by_hand_loses_public_execute_at_the_next_jobs_migrate(db, dsn):
    db.execute("CREATE FUNCTION pgrelay.by_hand() RETURNS integer LANGUAGE sql AS 'SELECT 1'")
    assert "PUBLIC" in who_may_call(db, "pgrelay.by_hand()")  # PostgreSQL's default, which no schema setting removes

    assert run_migrate(dsn) == "unchanged"

    assert who_may_call(db, "pgrelay.by_hand()") == ["postgres"]


def test_an_upgrade_whose_matrix_names_a_missing_function_fails_and_changes_nothing(db, dsn, tmp_path, monkeypatch):
    before = db.execute("SELECT version FROM pgrelay._migrations ORDER BY installed_at").fetchall()
    installed = schema_version()
    package_with_next_release(tmp_path, monkeypatch, """
        CREATE FUNCTION pgrelay.added_later() RETURNS integer LANGUAGE sql AS 'SELECT 1';
        CREATE OR REPLACE FUNCTION pgrelay._privileges() RETURNS TABLE (role name, object name)
        LANGUAGE sql IMMUTABLE AS $$ VALUES ('pgrelay_admin'::name, 'no_such_function'::name) $$;
    """)

    with pytest.raises(asyncpg.UndefinedObjectError, match="no_such_function"):
        run_migrate(dsn)

    assert db.execute("SELECT pgrelay.version()").fetchone() == (installed,)
    assert db.execute("SELECT to_regprocedure('pgrelay.added_later()')").fetchone() == (None,)
    assert db.execute("SELECT version FROM pgrelay._migrations ORDER BY installed_at").fetchall() == before
    assert set(who_may_call(db, "pgrelay.enqueue_bulk(jsonb)")) == {"postgres", "pgrelay_producer", "pgrelay_worker"}
