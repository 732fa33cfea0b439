"""`pgrelay schedules list|add|remove|pause|resume|run-now` as an operator runs them (click's CliRunner in this
process, against the test's database).

Each command prints what its SQL function returns; a failure is one line on stderr and exit code 1, with the
database's own message for what it refused; bad usage (malformed JSON) is click's exit code 2.
"""

from __future__ import annotations

import json
from datetime import datetime

import psycopg
import pytest
from click.testing import CliRunner, Result
from psycopg.types.json import Jsonb

from pgrelay import cli
from tests.sql.factory import call, dicts, get_job, scalar


def pgrelay(dsn: str, *args: str) -> Result:
    result = CliRunner().invoke(cli.main, [*args, "--dsn", dsn])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception  # a traceback is a bug, never an answer
    return result


def one_line_error(result: Result, command: str) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 1 and len(lines) == 1, (result.exit_code, result.stderr)
    assert lines[0].startswith(f"pgrelay {command}: error: "), lines[0]
    assert result.stdout == ""
    return lines[0]


def schedule_row(db, name: str) -> dict | None:
    rows = dicts(db, "SELECT * FROM pgrelay.schedules WHERE name = %s", (name,))
    return rows[0] if rows else None


def refusal(db, **arguments) -> str:
    """The message pgrelay.schedule() itself gives for these arguments (the CLI must show the same)."""
    with pytest.raises(psycopg.Error) as info:
        call(db, "schedule", **arguments)
    assert info.value.sqlstate == "PR001"
    return info.value.diag.message_primary


# --- add ----------------------------------------------------------------------------------------


def test_add_prints_the_next_run_and_stores_every_option(db, dsn):
    result = pgrelay(dsn, "schedules", "add", "reports.daily", "0 6 * * *", "reports.build", "--payload",
                     '{"format": "pdf"}', "--queue", "reports", "--timezone", "Europe/Berlin", "--catch-up", "all",
                     "--priority", "5", "--max-attempts", "3", "--timeout-seconds", "60")
    assert result.exit_code == 0, result.stderr
    row = schedule_row(db, "reports.daily")
    assert datetime.fromisoformat(result.stdout.strip()) == row["next_run"]
    assert (row["cron"], row["task"], row["payload"], row["queue"], row["timezone"], row["catch_up"], row["priority"],
            row["max_attempts"], row["timeout_seconds"], row["paused"], row["declared_by"]) == (
        "0 6 * * *", "reports.build", {"format": "pdf"}, "reports", "Europe/Berlin", "all", 5, 3, 60, False, "sql")
    # 06:00 on the wall clock of Berlin, in the future
    wall_clock = "SELECT to_char(next_run AT TIME ZONE 'Europe/Berlin', 'HH24:MI') FROM pgrelay.schedules"
    assert scalar(db, wall_clock) == "06:00"
    assert scalar(db, "SELECT next_run > now() FROM pgrelay.schedules")


def test_add_leaves_the_rest_to_the_sql_defaults_and_replaces_by_name(db, dsn):
    assert pgrelay(dsn, "schedules", "add", "cleanup", "@hourly", "cleanup.run").exit_code == 0
    row = schedule_row(db, "cleanup")
    assert (row["payload"], row["queue"], row["timezone"], row["catch_up"], row["priority"], row["max_attempts"]) == (
        {}, "default", "UTC", "latest", None, None)
    again = pgrelay(dsn, "schedules", "add", "cleanup", "*/15 * * * *", "cleanup.run", "--queue", "maintenance")
    assert again.exit_code == 0, again.stderr
    assert scalar(db, "SELECT count(*) FROM pgrelay.schedules") == 1
    row = schedule_row(db, "cleanup")
    assert (row["cron"], row["queue"]) == ("*/15 * * * *", "maintenance")
    assert datetime.fromisoformat(again.stdout.strip()) == row["next_run"]


@pytest.mark.parametrize(("args", "arguments"), [
    (["nightly", "not a cron", "t"], {"name": "nightly", "cron": "not a cron", "task": "t"}),
    (["nightly", "61 * * * *", "t"], {"name": "nightly", "cron": "61 * * * *", "task": "t"}),
    (["nightly", "0 2 * * *", "t", "--timezone", "Mars/Olympus"],
     {"name": "nightly", "cron": "0 2 * * *", "task": "t", "timezone": "Mars/Olympus"}),
    (["nightly", "0 2 * * *", "t", "--catch-up", "sometimes"],
     {"name": "nightly", "cron": "0 2 * * *", "task": "t", "catch_up": "sometimes"}),
    (["nightly", "0 2 * * *", "t", "--payload", "[1]"],
     {"name": "nightly", "cron": "0 2 * * *", "task": "t", "payload": Jsonb([1])}),
], ids=["not cron", "minute 61", "time zone", "catch-up", "payload"])
def test_add_refused_by_the_sql_is_one_line_with_its_message_and_changes_nothing(db, dsn, args, arguments):
    line = one_line_error(pgrelay(dsn, "schedules", "add", *args), "schedules add")
    assert line.endswith(refusal(db, **arguments)), line
    assert scalar(db, "SELECT count(*) FROM pgrelay.schedules") == 0


def test_add_with_malformed_json_is_a_usage_error(db, dsn):
    result = pgrelay(dsn, "schedules", "add", "nightly", "0 2 * * *", "t", "--payload", "{nope")
    assert result.exit_code == 2 and "not valid JSON" in result.stderr
    assert scalar(db, "SELECT count(*) FROM pgrelay.schedules") == 0


# --- list ---------------------------------------------------------------------------------------


def test_list_shows_each_schedule_by_name(db, dsn):
    call(db, "schedule", name="reports.daily", cron="0 6 * * *", task="reports.build", timezone="Europe/Berlin")
    call(db, "schedule", name="cleanup", cron="@hourly", task="cleanup.run", queue="maintenance")
    call(db, "pause_schedule", name="cleanup")
    table = pgrelay(dsn, "schedules", "list")
    assert table.exit_code == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split()[:4] == ["name", "cron", "timezone", "task"]
    assert [line.split()[0] for line in lines[2:]] == ["cleanup", "reports.daily"]
    assert lines[2].split()[1:6] == ["@hourly", "UTC", "cleanup.run", "maintenance", "latest"]
    assert lines[3].split()[1:8] == ["0", "6", "*", "*", "*", "Europe/Berlin", "reports.build"]

    listed = json.loads(pgrelay(dsn, "schedules", "list", "--json").stdout)
    assert [(s["name"], s["paused"], s["declared_by"], s["payload"]) for s in listed] == [
        ("cleanup", True, "sql", {}), ("reports.daily", False, "sql", {})]
    columns = [r[0] for r in db.execute(
        "SELECT attname FROM pg_attribute WHERE attrelid = 'pgrelay.schedules'::regclass AND attnum > 0"
        " ORDER BY attnum")]
    assert list(listed[0]) == columns
    assert datetime.fromisoformat(listed[1]["next_run"]) == schedule_row(db, "reports.daily")["next_run"]


def test_list_without_schedules_says_so(dsn):
    result = pgrelay(dsn, "schedules", "list")
    assert (result.exit_code, result.stdout) == (0, "") and "no schedules yet" in result.stderr
    assert json.loads(pgrelay(dsn, "schedules", "list", "--json").stdout) == []


# --- pause / resume / remove / run-now ------------------------------------------------------------


def test_pause_and_resume_change_the_schedule(db, dsn):
    call(db, "schedule", name="cleanup", cron="@hourly", task="cleanup.run")
    assert pgrelay(dsn, "schedules", "pause", "cleanup").stdout.strip() == "paused schedule cleanup"
    assert schedule_row(db, "cleanup")["paused"] is True
    assert call(db, "tick", now=scalar(db, "SELECT now() + interval '1 day'")) == 0  # paused: no ticks
    assert pgrelay(dsn, "schedules", "resume", "cleanup").stdout.strip() == "resumed schedule cleanup"
    assert schedule_row(db, "cleanup")["paused"] is False


def test_remove_deletes_the_schedule_and_keeps_its_jobs(db, dsn):
    call(db, "schedule", name="cleanup", cron="@hourly", task="cleanup.run")
    job_id = call(db, "run_schedule_now", name="cleanup")
    assert pgrelay(dsn, "schedules", "remove", "cleanup").stdout.strip() == "removed schedule cleanup"
    assert schedule_row(db, "cleanup") is None
    assert get_job(db, job_id)["status"] == "pending"


@pytest.mark.parametrize("command", ["pause", "resume", "remove"])
def test_an_unknown_name_is_one_line(db, dsn, command):
    line = one_line_error(pgrelay(dsn, "schedules", command, "nope"), f"schedules {command}")
    assert "no schedule is named 'nope'" in line


def test_run_now_prints_the_id_of_a_job_for_now(db, dsn):
    call(db, "schedule", name="reports.daily", cron="0 6 * * *", task="reports.build", payload={"format": "pdf"},
         queue="reports")
    result = pgrelay(dsn, "schedules", "run-now", "reports.daily")
    assert result.exit_code == 0, result.stderr
    job = get_job(db, int(result.stdout))
    assert (job["task"], job["queue"], job["status"], job["payload"]["format"]) == (
        "reports.build", "reports", "pending", "pdf")
    assert datetime.fromisoformat(job["payload"]["scheduled_for"]) <= scalar(db, "SELECT now()")
    row = schedule_row(db, "reports.daily")
    assert (row["last_job_id"], row["last_job_status"], row["last_tick"]) == (job["id"], "pending", None)
    # the database's message for an unknown name (PT404)
    line = one_line_error(pgrelay(dsn, "schedules", "run-now", "nope"), "schedules run-now")
    with pytest.raises(psycopg.Error) as info:
        call(db, "run_schedule_now", name="nope")
    assert info.value.sqlstate == "PT404" and line.endswith(info.value.diag.message_primary)
