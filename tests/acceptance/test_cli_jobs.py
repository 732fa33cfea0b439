"""`pgrelay enqueue`, `jobs ...`, `replay`, `replay-dead`, `cancel` and `purge` as an operator runs them
(click's CliRunner in this process, against the test's database).

Each command prints what its SQL function returns; a failure is one line on stderr and exit code 1;
bad usage (malformed JSON, a time) is click's exit code 2.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
from click.testing import CliRunner, Result

from pgrelay import cli
from tests.sql.factory import call, enqueue, fail, get_job, lease, make_due, scalar, succeed


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


def dead_letter(db, **args):
    job = lease(db, enqueue(db, max_attempts=1, **args))
    assert fail(db, job, "SMTP 550") == "dead_letter"
    return job


# --- enqueue ------------------------------------------------------------------------------------


def test_enqueue_prints_the_id_and_stores_every_option(db, dsn):
    result = pgrelay(dsn, "enqueue", "mail.send", "--payload", '{"to": "a@example.com"}', "--queue", "mail",
                     "--priority", "5", "--max-attempts", "3", "--idempotency-key", "k1", "--dedupe-key", "d1")
    assert result.exit_code == 0, result.stderr
    job = get_job(db, int(result.stdout))
    assert (job["task"], job["payload"], job["queue"], job["priority"], job["max_attempts"], job["idempotency_key"],
            job["dedupe_key"], job["status"]) == ("mail.send", {"to": "a@example.com"}, "mail", 5, 3, "k1", "d1", "pending")


def test_enqueue_with_a_known_idempotency_key_prints_the_first_id(dsn):
    first = pgrelay(dsn, "enqueue", "mail.send", "--idempotency-key", "order-42")
    again = pgrelay(dsn, "enqueue", "mail.send", "--idempotency-key", "order-42", "--payload", "[1]")
    assert first.exit_code == again.exit_code == 0
    assert first.stdout == again.stdout


def test_enqueue_delay_counts_from_the_database_clock(db, dsn):
    result = pgrelay(dsn, "enqueue", "mail.send", "--delay-seconds", "90")
    job_id = int(result.stdout)
    # run_at and created_at come from the same transaction's now()
    assert scalar(db, "SELECT run_at - created_at FROM pgrelay.jobs WHERE id = %s", (job_id,)) == timedelta(seconds=90)


def test_enqueue_run_at_takes_an_iso_time(db, dsn):
    result = pgrelay(dsn, "enqueue", "mail.send", "--run-at", "2031-01-02T03:04:05+01:00")
    job = get_job(db, int(result.stdout))
    assert datetime.fromisoformat(job["run_at"]) == datetime(2031, 1, 2, 2, 4, 5, tzinfo=timezone.utc)


@pytest.mark.parametrize(("args", "message"), [
    (["--payload", "{not json"], "not valid JSON"),
    (["--run-at", "next tuesday"], "not an ISO 8601 time"),
    (["--run-at", "2031-01-01T00:00:00Z", "--delay-seconds", "5"], "not both"),
    (["--priority", "high"], "is not a valid integer"),
])
def test_enqueue_bad_usage_exits_2_and_enqueues_nothing(db, dsn, args, message):
    result = pgrelay(dsn, "enqueue", "mail.send", *args)
    assert result.exit_code == 2 and message in result.stderr, result.stderr
    assert scalar(db, "SELECT count(*) FROM pgrelay.jobs") == 0


@pytest.mark.parametrize(("args", "names"), [
    (["bad task name"], "task"),
    (["mail.send", "--queue", "no spaces"], "queue"),
    (["mail.send", "--max-attempts", "0"], "max_attempts"),
])
def test_enqueue_rejected_by_the_sql_is_one_line(db, dsn, args, names):
    line = one_line_error(pgrelay(dsn, "enqueue", *args), "enqueue")
    assert names in line
    assert scalar(db, "SELECT count(*) FROM pgrelay.jobs") == 0


# --- jobs list / show / attempts ----------------------------------------------------------------


def test_jobs_list_is_newest_first_filtered_and_bounded(db, dsn):
    a1 = enqueue(db, queue="a", task="orders.created")
    a2 = lease(db, enqueue(db, queue="a"))
    succeed(db, a2)
    b1 = enqueue(db, queue="b", task="orders.paid")
    a3 = enqueue(db, queue="a", task="mail.send")

    def ids(*args: str) -> list[int]:
        result = pgrelay(dsn, "jobs", "list", "--json", *args)
        assert result.exit_code == 0, result.stderr
        return [job["id"] for job in json.loads(result.stdout)]

    assert ids() == [a3.id, b1.id, a2.id, a1.id]
    assert ids("--queue", "a") == [a3.id, a2.id, a1.id]
    assert ids("--status", "succeeded") == [a2.id]
    assert ids("--task", "orders.%") == [b1.id, a1.id]
    assert ids("--queue", "a", "--task", "orders.%", "--status", "pending") == [a1.id]
    assert ids("--queue", "nowhere") == []
    limited = pgrelay(dsn, "jobs", "list", "--limit", "2")
    assert "mail.send" in limited.stdout and "orders.paid" in limited.stdout and "orders.created" not in limited.stdout
    assert "--limit shows more" in limited.stderr


def test_jobs_list_json_has_the_views_columns(db, dsn):
    enqueue(db, task="mail.send", payload={"to": 1})
    [job] = json.loads(pgrelay(dsn, "jobs", "list", "--json").stdout)
    assert (job["task"], job["payload"], job["status"], job["finished_at"]) == ("mail.send", {"to": 1}, "pending", None)
    datetime.fromisoformat(job["created_at"])


def test_jobs_list_with_an_unknown_status_says_which_the_database_knows(dsn):
    result = pgrelay(dsn, "jobs", "list", "--status", "done")
    assert result.exit_code == 1
    assert "status must be one of pending, leased, succeeded, dead_letter, cancelled, not 'done'" in result.stderr


def test_jobs_list_of_nothing_says_so(dsn):
    result = pgrelay(dsn, "jobs", "list")
    assert (result.exit_code, result.stdout, result.stderr.strip()) == (0, "", "no jobs match")


def test_jobs_show_prints_the_job_wherever_it_is(db, dsn):
    job = lease(db, enqueue(db, queue="mail", task="mail.send", payload={"to": "x"}))
    succeed(db, job, {"sent": True})
    shown = pgrelay(dsn, "jobs", "show", str(job.id))
    assert shown.exit_code == 0
    lines = shown.stdout.splitlines()
    assert f"id: {job.id}" in lines and "status: succeeded" in lines and 'result: {"sent": true}' in lines
    document = json.loads(pgrelay(dsn, "jobs", "show", str(job.id), "--json").stdout)
    assert (document["id"], document["status"], document["result"], document["max_attempts"]) == (
        job.id, "succeeded", {"sent": True}, 10)


def test_jobs_show_an_unknown_id_is_one_line(dsn):
    assert "no job has id 424242" in one_line_error(pgrelay(dsn, "jobs", "show", "424242"), "jobs show")
    assert pgrelay(dsn, "jobs", "show", "forty-two").exit_code == 2


def test_jobs_attempts_lists_each_attempt_and_the_running_one(db, dsn):
    job = lease(db, enqueue(db))
    fail(db, job, "SMTP 451 try later", retry_after_seconds=0)
    make_due(db, job)
    lease(db, job, worker="worker-b")
    table = pgrelay(dsn, "jobs", "attempts", str(job.id))
    assert table.exit_code == 0 and "SMTP 451 try later" in table.stdout and "worker-b" in table.stdout
    attempts = json.loads(pgrelay(dsn, "jobs", "attempts", str(job.id), "--json").stdout)
    assert [(a["attempt"], a["outcome"], a["worker"]) for a in attempts] == [
        (1, "failed", "worker-a"), (2, "running", "worker-b")]


def test_jobs_attempts_of_a_job_never_run_and_of_no_job(db, dsn):
    job = enqueue(db)
    result = pgrelay(dsn, "jobs", "attempts", str(job.id))
    assert (result.exit_code, result.stdout) == (0, "") and "not been attempted" in result.stderr
    assert json.loads(pgrelay(dsn, "jobs", "attempts", str(job.id), "--json").stdout) == []
    assert "no job has id 424242" in one_line_error(pgrelay(dsn, "jobs", "attempts", "424242"), "jobs attempts")


# --- replay / replay-dead -----------------------------------------------------------------------


def test_replay_prints_the_new_job_which_points_back(db, dsn):
    job = dead_letter(db)
    result = pgrelay(dsn, "replay", str(job.id))
    assert result.exit_code == 0, result.stderr
    new = get_job(db, int(result.stdout))
    assert (new["status"], new["replayed_from"], new["task"]) == ("pending", job.id, job.task)


def test_replay_a_job_that_cannot_be_replayed_is_one_line(db, dsn):
    pending = enqueue(db)
    assert one_line_error(pgrelay(dsn, "replay", str(pending.id)), "replay")
    done = lease(db, enqueue(db))
    succeed(db, done)
    assert one_line_error(pgrelay(dsn, "replay", str(done.id)), "replay")
    forced = pgrelay(dsn, "replay", str(done.id), "--force")
    assert forced.exit_code == 0 and get_job(db, int(forced.stdout))["replayed_from"] == done.id
    assert one_line_error(pgrelay(dsn, "replay", "424242"), "replay")
    assert scalar(db, "SELECT count(*) FROM pgrelay.jobs WHERE replayed_from IS NOT NULL") == 1


def test_replay_a_job_twice_is_refused(db, dsn):
    job = dead_letter(db)
    assert pgrelay(dsn, "replay", str(job.id)).exit_code == 0
    assert one_line_error(pgrelay(dsn, "replay", str(job.id)), "replay")


def test_replay_dead_prints_how_many_and_filters(db, dsn):
    first = dead_letter(db, queue="mail", task="mail.send")
    dead_letter(db, queue="mail", task="sms.send")
    dead_letter(db, queue="other", task="mail.send")
    result = pgrelay(dsn, "replay-dead", "mail", "--task", "mail.%")
    assert (result.exit_code, result.stdout.strip()) == (0, "1")
    assert scalar(db, "SELECT replayed_from FROM pgrelay.jobs WHERE status = 'pending'") == first.id
    assert pgrelay(dsn, "replay-dead", "mail").stdout.strip() == "1"  # the sms job; mail.send was replayed
    assert pgrelay(dsn, "replay-dead", "other", "--since", "2999-01-01T00:00:00Z").stdout.strip() == "0"


def test_replay_dead_bad_input(dsn):
    assert "queue" in one_line_error(pgrelay(dsn, "replay-dead", "no spaces"), "replay-dead")
    assert pgrelay(dsn, "replay-dead", "mail", "--since", "yesterday").exit_code == 2


# --- cancel -------------------------------------------------------------------------------------


def test_cancel_a_pending_job_then_again(db, dsn):
    job = enqueue(db)
    result = pgrelay(dsn, "cancel", str(job.id))
    assert (result.exit_code, result.stdout.strip()) == (0, f"cancelled job {job.id}")
    assert get_job(db, job)["status"] == "cancelled"
    again = pgrelay(dsn, "cancel", str(job.id))
    assert (again.exit_code, again.stdout.strip()) == (0, f"job {job.id} was already cancelled")


def test_cancel_a_running_job_asks_its_worker_to_stop(db, dsn):
    job = lease(db, enqueue(db))
    result = pgrelay(dsn, "cancel", str(job.id))
    assert result.exit_code == 0 and "next heartbeat" in result.stdout
    # the worker learns at its heartbeat, which ends the job cancelled
    assert call(db, "heartbeat", worker=job.worker, ids=[job.id]) == [job.id]
    assert get_job(db, job)["status"] == "cancelled"


def test_cancel_a_finished_or_unknown_job_is_one_line(db, dsn):
    job = lease(db, enqueue(db))
    succeed(db, job)
    assert "already finished (succeeded)" in one_line_error(pgrelay(dsn, "cancel", str(job.id)), "cancel")
    assert get_job(db, job)["status"] == "succeeded"
    assert "424242" in one_line_error(pgrelay(dsn, "cancel", "424242"), "cancel")
    assert pgrelay(dsn, "cancel", "42x").exit_code == 2


# --- purge --------------------------------------------------------------------------------------


def test_purge_repeats_until_every_old_job_is_gone(db, dsn):
    old = []
    for _ in range(5):
        job = lease(db, enqueue(db))
        succeed(db, job)
        old.append(job.id)
    recent = lease(db, enqueue(db))
    succeed(db, recent)
    active = enqueue(db)
    # white box: let 40 days pass for the first five
    db.execute("UPDATE pgrelay._finished SET finished_at = now() - interval '40 days' WHERE id = ANY (%s)", (old,))
    result = pgrelay(dsn, "purge", "--older-than-days", "30", "--max-jobs", "2")
    assert (result.exit_code, result.stdout.strip()) == (0, "5"), result.stderr
    assert [r[0] for r in db.execute("SELECT id FROM pgrelay.jobs ORDER BY id").fetchall()] == [recent.id, active.id]
    assert pgrelay(dsn, "purge", "--older-than-days", "30").stdout.strip() == "0"


def test_purge_bad_input(dsn):
    assert pgrelay(dsn, "purge", "--max-jobs", "0").exit_code == 2
    assert one_line_error(pgrelay(dsn, "purge", "--older-than-days", "-1"), "purge")


def test_a_job_purged_is_gone_for_show(db, dsn):
    job = lease(db, enqueue(db))
    succeed(db, job)
    db.execute("UPDATE pgrelay._finished SET finished_at = now() - interval '400 days' WHERE id = %s", (job.id,))
    assert pgrelay(dsn, "purge", "--older-than-days", "1").stdout.strip() == "1"
    assert "purged" in one_line_error(pgrelay(dsn, "jobs", "show", str(job.id)), "jobs show")

