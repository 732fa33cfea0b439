"""Rules the SQL owns and states for its clients, so no client restates them (issue 22, item 17).

- the task name rule: ``check_task_names`` refuses exactly what ``enqueue`` refuses (a worker asks it at
  start for its handlers' names; ``Router.add`` only checks for a non-empty string);
- the job statuses: ``job_statuses()`` names exactly those the ``jobs`` view shows (``jobs list --status``
  is checked against it);
- nack's largest delay: nack itself shortens a longer one, so the worker and the HTTP executor pass a
  handler's or a server's delay on as it is.
"""

from __future__ import annotations

import math

import psycopg
import pytest

from tests.sql.factory import STATES, call, make_job, raises_sqlstate, scalar

NAMES = [
    "orders.created", "a", "_", "9", "A.b_c-d:e/f", "x" * 200,             # accepted
    "", "x" * 201, "has space", "-dash", ".dot", "/slash", "semi;colon",   # refused
    "orders.created\n", "orders\ncreated", "tab\t", "caf\u00e9", "\u0661", "a\u200bb", "a%", "a*",
]


def refusal(db: psycopg.Connection, function: str, **args) -> str | None:
    try:
        call(db, function, **args)
    except psycopg.Error as e:
        assert e.sqlstate == "PR001", f"{args!r}: {e.sqlstate} {e}"
        return e.diag.message_primary
    return None


@pytest.mark.parametrize("name", NAMES)
def test_check_task_names_refuses_a_name_exactly_as_enqueue_refuses_it_as_a_task(db, name):
    assert refusal(db, "check_task_names", tasks=["fine", name]) == refusal(db, "enqueue", task=name)


def test_check_task_names_accepts_no_names_and_names_the_first_bad_one(db):
    assert refusal(db, "check_task_names", tasks=[]) is None
    assert "'b c'" in refusal(db, "check_task_names", tasks=["a", "b c", "d e"])


def test_job_statuses_are_exactly_those_the_jobs_view_shows_in_the_order_of_a_jobs_life(db):
    for state in STATES:
        make_job(db, state)
    shown = {row[0] for row in db.execute("SELECT DISTINCT status FROM pgrelay.jobs")}

    statuses = call(db, "job_statuses")

    assert set(statuses) == shown and len(statuses) == len(shown)
    assert statuses[:2] == ["pending", "leased"]


@pytest.mark.parametrize("seconds", [31536000.5, 1e12, math.inf])
def test_nack_waits_a_year_at_most_however_long_the_delay_asked(db, seconds):
    job = make_job(db, "leased")
    with db.transaction():
        assert call(db, "nack", id=job.id, attempt=job.attempt, error="e", retry_after_seconds=seconds) == "pending"
        delay = scalar(db, "SELECT extract(epoch FROM run_at - now())::float8 FROM pgrelay.jobs WHERE id = %s", (job.id,))

    assert delay == pytest.approx(31536000, abs=1e-6)


@pytest.mark.parametrize("seconds", [-0.001, -math.inf, math.nan])
def test_nack_refuses_a_negative_delay_and_changes_nothing(db, seconds):
    job = make_job(db, "leased")

    with raises_sqlstate("PR001") as info:
        call(db, "nack", id=job.id, attempt=job.attempt, error="e", retry_after_seconds=seconds)

    assert "retry_after_seconds must be 0 or more" in str(info.value)
    assert scalar(db, "SELECT status FROM pgrelay.jobs WHERE id = %s", (job.id,)) == "leased"
