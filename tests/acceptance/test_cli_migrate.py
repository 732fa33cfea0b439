"""`jobs-migrate` and `pgrelay migrate` as a user runs them: a subprocess with a DSN."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

import pgrelay
from pgrelay.schema import released_versions

BIN = Path(sys.executable).parent


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "PGRELAY_DSN"))}
    full_env.update(env or {})
    return subprocess.run(args, capture_output=True, text=True, env=full_env, timeout=60)


def test_jobs_migrate_installs_then_reports_nothing_to_do(empty_dsn):
    first = run(str(BIN / "jobs-migrate"), empty_dsn)
    assert first.returncode == 0, first.stderr
    assert f"installed pgrelay {pgrelay.__version__}" in first.stdout
    second = run(str(BIN / "jobs-migrate"), empty_dsn)
    assert second.returncode == 0, second.stderr
    assert "already installed; nothing to do" in second.stdout


def test_pgrelay_migrate_reads_the_dsn_from_pgrelay_dsn(empty_dsn):
    result = run(str(BIN / "pgrelay"), "migrate", env={"PGRELAY_DSN": empty_dsn})
    assert result.returncode == 0, result.stderr
    with psycopg.connect(empty_dsn) as conn:
        assert conn.execute("SELECT pgrelay.version()").fetchone()[0] == pgrelay.__version__


def test_jobs_migrate_falls_back_to_libpq_variables(empty_dsn, postgresql_proc):
    env = {
        "PGHOST": postgresql_proc.host,
        "PGPORT": str(postgresql_proc.port),
        "PGUSER": postgresql_proc.user,
        "PGDATABASE": empty_dsn.rsplit("/", 1)[1],
    }
    result = run(str(BIN / "jobs-migrate"), env=env)
    assert result.returncode == 0, result.stderr
    assert "installed pgrelay" in result.stdout


@pytest.mark.parametrize(
    ("dsn", "expected"),
    [
        ("not-a-dsn", "invalid DSN"),
        ("mysql://user@host/db", "invalid DSN"),
        ("postgresql://postgres@127.0.0.1:1/db", "cannot connect to the database"),
        ("postgresql://postgres@pgrelay-no-such-host.invalid/db", "cannot resolve the database host"),
    ],
)
def test_bad_dsn_or_unreachable_server_gives_one_line(dsn, expected):
    result = run(str(BIN / "jobs-migrate"), dsn)
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("jobs-migrate: error: ") and expected in lines[0]


def test_unknown_database_gives_one_line(postgresql_proc):
    dsn = f"postgresql://postgres@{postgresql_proc.host}:{postgresql_proc.port}/pgrelay_missing_db"
    result = run(str(BIN / "jobs-migrate"), dsn)
    assert result.returncode == 1
    assert result.stderr.strip() == 'jobs-migrate: error: database "pgrelay_missing_db" does not exist'


def test_missing_privileges_give_one_line_and_change_nothing(empty_dsn, postgresql_proc):
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        conn.execute("DROP ROLE IF EXISTS pgrelay_cli_nobody")
        conn.execute("CREATE ROLE pgrelay_cli_nobody LOGIN")
        conn.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
    try:
        host, rest = empty_dsn.split("@", 1)
        result = run(str(BIN / "jobs-migrate"), f"postgresql://pgrelay_cli_nobody@{rest}")
        assert result.returncode == 1
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "permission denied" in lines[0], result.stderr
        with psycopg.connect(empty_dsn) as conn:
            assert conn.execute("SELECT to_regnamespace('pgrelay')").fetchone()[0] is None
    finally:
        with psycopg.connect(empty_dsn, autocommit=True) as conn:
            conn.execute("DROP OWNED BY pgrelay_cli_nobody")
            conn.execute("DROP ROLE pgrelay_cli_nobody")


def test_a_newer_schema_is_refused_with_one_line(db, dsn):
    db.execute("CREATE OR REPLACE FUNCTION pgrelay.version() RETURNS text LANGUAGE sql AS $$ SELECT '99.0.0' $$")
    result = run(str(BIN / "jobs-migrate"), dsn)
    assert result.returncode == 1
    assert "newer than this package" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_jobs_worker_exists_as_a_console_script():
    result = run(str(BIN / "jobs-worker"), "--help")
    assert result.returncode == 0
    assert "jobs-worker" in result.stdout


def test_jobs_migrate_to_a_release_then_up_the_chain(empty_dsn):
    oldest = released_versions()[0]
    first = run(str(BIN / "jobs-migrate"), empty_dsn, "--to", oldest)
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == f"jobs-migrate: installed pgrelay {oldest} (pgrelay--{oldest}.sql)"
    rest = run(str(BIN / "jobs-migrate"), empty_dsn)
    assert rest.returncode == 0, rest.stderr
    assert rest.stdout.startswith(f"jobs-migrate: upgraded pgrelay {oldest} -> {pgrelay.__version__} (pgrelay--{oldest}--")
    with psycopg.connect(empty_dsn) as conn:
        assert conn.execute("SELECT pgrelay.version()").fetchone()[0] == pgrelay.__version__


@pytest.mark.parametrize(("target", "expected"), [
    ("banana", "'banana' is not a pgrelay version"),
    ("99.0.0", "this package goes up to pgrelay"),
])
def test_jobs_migrate_to_a_version_it_cannot_reach_gives_one_line_and_changes_nothing(empty_dsn, target, expected):
    result = run(str(BIN / "jobs-migrate"), empty_dsn, "--to", target)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], result.stderr
    with psycopg.connect(empty_dsn) as conn:
        assert conn.execute("SELECT to_regnamespace('pgrelay')").fetchone()[0] is None
