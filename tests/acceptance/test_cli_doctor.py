"""`pgrelay doctor`, and what every operator command shares: --help with an example, the DSN from
--dsn / PGRELAY_DSN / libpq variables, one-line errors, and the installed console script itself."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import click
import psycopg
import pytest
from click.testing import CliRunner, Result

import pgrelay
from pgrelay import cli, schema
from tests.harness.releases import next_version
from tests.sql.factory import call, enqueue, expire, lease

BIN = Path(sys.executable).parent
LINE = re.compile(r"^(PASS|WARN|FAIL)  (\w+): (.+)$")


def pgrelay_cli(dsn: str, *args: str) -> Result:
    result = CliRunner().invoke(cli.main, [*args, "--dsn", dsn])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception  # a traceback is a bug, never an answer
    return result


def doctor(dsn: str) -> tuple[int, dict[str, tuple[str, str]]]:
    """Exit code and {check: (status, detail)}; every line must have the documented shape."""
    result = pgrelay_cli(dsn, "doctor")
    checks = {}
    for line in result.stdout.splitlines():
        match = LINE.match(line)
        assert match, f"not a check line: {line!r}"
        checks[match.group(2)] = (match.group(1), match.group(3))
    return result.exit_code, checks


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The installed console script, with no PG* or PGRELAY_* variables but those given."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "PGRELAY_"))}
    return subprocess.run([str(BIN / "pgrelay"), *args], capture_output=True, text=True, timeout=60,
                          env={**clean, **(env or {})})


# --- doctor -------------------------------------------------------------------------------------


def test_doctor_passes_every_check_on_a_fresh_install(dsn):
    code, checks = doctor(dsn)
    assert code == 0
    assert list(checks) == ["server", "schema", "upgrade", "roles", "autovacuum", "indexes", "leases", "workers"]
    assert {status for status, _ in checks.values()} == {"PASS"}, checks
    assert checks["schema"][1] == f"pgrelay {pgrelay.__version__} is installed"


def test_doctor_fails_where_pgrelay_is_not_installed(empty_dsn):
    code, checks = doctor(empty_dsn)
    assert code == 1
    assert checks["schema"] == ("FAIL", "pgrelay is not installed in this database (pgrelay_empty); fix: run pgrelay migrate")
    assert checks["server"][0] == "PASS" and "indexes" not in checks


def test_doctor_warns_when_autovacuum_is_off_on_the_hot_table(db, dsn):
    db.execute("ALTER TABLE pgrelay._jobs SET (autovacuum_enabled = false, autovacuum_vacuum_scale_factor = 0.01)")
    code, checks = doctor(dsn)
    assert code == 0
    status, detail = checks["autovacuum"]
    assert status == "WARN" and detail.endswith("fix: ALTER TABLE pgrelay._jobs RESET (autovacuum_enabled)")
    db.execute("ALTER TABLE pgrelay._jobs RESET (autovacuum_enabled)")
    assert doctor(dsn)[1]["autovacuum"] == (
        "PASS", "enabled on pgrelay._jobs (autovacuum_vacuum_threshold=1000, autovacuum_vacuum_cost_delay=0, "
                "autovacuum_vacuum_scale_factor=0.01)")


def test_doctor_fails_on_a_missing_index_and_its_fix_restores_it(db, dsn):
    db.execute("DROP INDEX pgrelay._jobs_dedupe_key_idx")
    code, checks = doctor(dsn)
    status, detail = checks["indexes"]
    assert (code, status) == (1, "FAIL")
    problem, fix = detail.split("; fix: ")
    assert problem == "_jobs_dedupe_key_idx on _jobs is missing"
    db.execute(fix)
    assert doctor(dsn)[1]["indexes"][0] == "PASS"
    assert call(db, "enqueue", task="t", dedupe_key="k") == call(db, "enqueue", task="t", dedupe_key="k")


def test_doctor_reads_the_expected_indexes_from_the_install_script(db):
    expected = {(table, index) for table, index, _ in cli.expected_indexes()}
    installed = set(db.execute(
        """SELECT t.relname, c.relname FROM pg_index i
           JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_class t ON t.oid = i.indrelid
           WHERE t.relnamespace = 'pgrelay'::regnamespace
             AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid)""").fetchall())
    assert expected == installed
    # (the history's day partitions get theirs as they are made; these are the partitions made at install)
    assert {"_jobs", "_finished_default", "_attempts_active", "_attempts_default"} <= {table for table, _ in expected}


def test_doctor_warns_about_stuck_leases_and_stale_workers(db, dsn):
    job = lease(db, enqueue(db, queue="mail"), worker="worker-gone")
    call(db, "heartbeat", worker="worker-gone", ids=[job.id])
    call(db, "heartbeat", worker="worker-here")
    expire(db, job, ago_seconds=600)
    db.execute("UPDATE pgrelay._workers SET last_seen = now() - interval '1 hour' WHERE worker = 'worker-gone'")  # white box
    code, checks = doctor(dsn)
    assert code == 0
    status, detail = checks["leases"]
    assert status == "WARN" and f"1 leases expired more than 5 minutes ago (oldest: job {job.id} of queue mail" in detail
    assert detail.endswith("fix: run SELECT pgrelay.recover() / start a worker")
    status, detail = checks["workers"]
    assert status == "WARN" and "1 of 2 not seen for longer than their lease: worker-gone;" in detail
    # a lease expired a moment ago is recover()'s normal work, not a warning
    call(db, "recover")
    assert doctor(dsn)[1]["leases"][0] == "PASS"


def test_doctor_warns_about_a_missing_role(db, dsn):
    # the schema's matrix names a role the cluster does not have (as when the installer lacked CREATEROLE)
    db.execute("""CREATE OR REPLACE FUNCTION pgrelay._privileges() RETURNS TABLE (role name, object name)
                  LANGUAGE sql IMMUTABLE AS $$ VALUES ('pgrelay_admin'::name, 'version'::name),
                                                   ('pgrelay_nobody', 'version') $$""")
    status, detail = doctor(dsn)[1]["roles"]
    assert status == "WARN" and detail.startswith("missing: pgrelay_nobody ")


def test_doctor_names_every_role_the_schema_grants_to(dsn):
    status, detail = doctor(dsn)[1]["roles"]
    assert (status, detail) == ("PASS", "pgrelay_admin, pgrelay_producer, pgrelay_reader, pgrelay_worker exist")


def test_doctor_reports_a_pending_upgrade(dsn, tmp_path, monkeypatch):
    # this package as if it shipped the next release, with an upgrade script from the installed version
    new = next_version(pgrelay.__version__)
    (tmp_path / "pgrelay.control").write_text(f"default_version = '{new}'\n")
    (tmp_path / f"pgrelay--{pgrelay.__version__}--{new}.sql").write_text("")
    monkeypatch.setattr(schema, "sql_files", lambda: tmp_path)
    code, checks = doctor(dsn)
    assert code == 0
    assert checks["upgrade"] == ("WARN", f"the schema is {pgrelay.__version__}, this package installs {new} "
                                         f"(pgrelay--{pgrelay.__version__}--{new}.sql); fix: run pgrelay migrate")


def test_doctor_fails_on_a_schema_newer_than_the_package(db, dsn):
    db.execute("CREATE OR REPLACE FUNCTION pgrelay.version() RETURNS text LANGUAGE sql AS $$ SELECT '99.0.0' $$")
    code, checks = doctor(dsn)
    assert code == 1
    assert checks["upgrade"][0] == "FAIL" and "newer than this package" in checks["upgrade"][1]
    assert checks["upgrade"][1].endswith("fix: upgrade the pgrelay package")


# --- what every command shares ------------------------------------------------------------------


def every_command(group: click.Group = cli.main, path: tuple[str, ...] = ()):
    yield path, group
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            yield from every_command(command, (*path, name))
        else:
            yield (*path, name), command


@pytest.mark.parametrize(("path", "command"), [(" ".join(p), c) for p, c in every_command()],
                         ids=[" ".join(p) or "pgrelay" for p, _ in every_command()])
def test_every_command_has_help_with_an_example(path, command):
    written = command.help.split("Example:\n", 1)
    assert len(written) == 2, f"pgrelay {path}: no example in its help"
    example = [line.strip() for line in written[1].splitlines() if line.strip()]
    assert example and all(line.startswith(("pgrelay ", "export ")) for line in example), example
    result = CliRunner().invoke(cli.main, [*path.split(), "--help"], terminal_width=60)
    assert result.exit_code == 0
    shown = [line.strip() for line in result.stdout.split("Example:\n", 1)[1].splitlines()]
    assert shown[:len(example)] == example  # as written, never rewrapped (\b)


def test_the_console_script_prints_stats_json_and_reads_pgrelay_dsn(db, dsn):
    enqueue(db, queue="mail")
    result = run("stats", "--json", env={"PGRELAY_DSN": dsn})
    assert result.returncode == 0, result.stderr
    assert [(row["queue"], row["pending"]) for row in json.loads(result.stdout)] == [("mail", 1)]


def test_the_console_script_runs_doctor_with_libpq_variables(dsn, postgresql_proc):
    env = {"PGHOST": postgresql_proc.host, "PGPORT": str(postgresql_proc.port), "PGUSER": postgresql_proc.user,
           "PGDATABASE": dsn.rsplit("/", 1)[1]}
    result = run("doctor", env=env)
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == 8 and all(line.startswith("PASS  ") for line in result.stdout.splitlines())


@pytest.mark.parametrize(("args", "command"), [
    (["stats"], "stats"), (["jobs", "list"], "jobs list"), (["doctor"], "doctor"), (["replay", "1"], "replay"),
])
def test_an_unreachable_database_is_one_line(args, command):
    result = run(*args, "--dsn", "postgresql://postgres@127.0.0.1:1/db")
    assert result.returncode == 1 and result.stdout == ""
    assert re.fullmatch(rf"pgrelay {command}: error: cannot connect to the database: .+\n", result.stderr), result.stderr


@pytest.fixture
def login_role(db, dsn):
    """``login_role(name, *groups)``: a DSN for a new login role, member of those groups (dropped after)."""
    created = []

    def create(name: str, *groups: str) -> str:
        db.execute(f"CREATE ROLE {name} LOGIN")
        created.append(name)
        for group in groups:
            db.execute(f"GRANT {group} TO {name}")
        return dsn.replace("//postgres@", f"//{name}@")

    yield create
    for name in created:
        db.execute(f"DROP OWNED BY {name}")
        db.execute(f"DROP ROLE {name}")


def test_a_reader_can_look_but_not_act(db, login_role):
    enqueue(db, queue="mail")
    call(db, "heartbeat", worker="worker-1")
    reader = login_role("pgrelay_cli_reader", "pgrelay_reader")
    assert json.loads(pgrelay_cli(reader, "stats", "--json").stdout)[0]["queue"] == "mail"
    assert len(json.loads(pgrelay_cli(reader, "jobs", "list", "--json").stdout)) == 1
    assert "worker-1" in pgrelay_cli(reader, "top", "--iterations", "1").stdout
    assert doctor(reader)[0] == 0
    result = pgrelay_cli(reader, "queues", "pause", "mail")
    assert result.exit_code == 1 and result.stderr.startswith("pgrelay queues pause: error: permission denied")
    assert "pgrelay_admin" in result.stderr and len(result.stderr.splitlines()) == 1


def test_an_admin_can_act(db, login_role):
    job = enqueue(db, queue="mail")
    admin = login_role("pgrelay_cli_admin", "pgrelay_admin")
    assert pgrelay_cli(admin, "queues", "pause", "mail").exit_code == 0
    assert pgrelay_cli(admin, "cancel", str(job.id)).exit_code == 0
    assert pgrelay_cli(admin, "replay", str(job.id)).exit_code == 0
    assert pgrelay_cli(admin, "purge", "--older-than-days", "0").stdout.strip() == "1"


def test_a_role_without_grants_gets_one_line(login_role):
    nobody = login_role("pgrelay_cli_nobody")
    result = pgrelay_cli(nobody, "stats")
    assert result.exit_code == 1
    assert result.stderr.startswith("pgrelay stats: error: permission denied") and len(result.stderr.splitlines()) == 1


def test_pgrelay_without_the_schema_says_how_to_install_it(empty_dsn):
    result = pgrelay_cli(empty_dsn, "jobs", "show", "1")
    assert result.exit_code == 1
    assert "pgrelay migrate installs it" in result.stderr and len(result.stderr.splitlines()) == 1
    with psycopg.connect(empty_dsn) as conn:
        assert conn.execute("SELECT to_regnamespace('pgrelay')").fetchone()[0] is None
