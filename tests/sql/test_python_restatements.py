"""Three rules the SQL owns that Python still restates, each pinned to the SQL until the SQL can say it.

The SQL is the single source of truth (DESIGN.md). Where Python can ask it, Python asks it (the roles
come from ``pgrelay._privileges()``). These three it cannot ask yet, because they are needed where no
connection exists or no public function states them:

- the task name rule: ``Router.add`` checks a handler's name at registration, before any connection;
- the job statuses: ``pgrelay jobs list --status`` offers them as a click.Choice;
- nack's largest ``retry_after_seconds``: the worker and the HTTP executor clamp a delay to it.

Until the SQL offers each one, these tests fail as soon as Python and SQL disagree.
"""

from __future__ import annotations

import psycopg
import pytest

from pgrelay.cli.jobs import JOB_STATUSES
from pgrelay.router import MAX_RETRY_AFTER_SECONDS, Router
from tests.sql.factory import STATES, call, lease, make_job, raises_sqlstate

NAMES = [
    "orders.created", "a", "_", "9", "A.b_c-d:e/f", "x" * 200,             # accepted
    "", "x" * 201, "has space", "-dash", ".dot", "/slash", "semi;colon",   # refused
    "orders.created\n", "orders\ncreated", "tab\t", "caf\u00e9", "\u0661", "a\u200bb", "a%", "a*",
]


def sql_accepts_task(db: psycopg.Connection, name: str) -> bool:
    try:
        call(db, "enqueue", task=name)
    except psycopg.Error as e:
        assert e.sqlstate == "PR001", f"{name!r}: {e.sqlstate} {e}"
        return False
    return True


def router_accepts_task(name: str) -> bool:
    try:
        Router().add(name, lambda ctx: None)
    except ValueError:
        return False
    return True


@pytest.mark.parametrize("name", NAMES)
def test_a_handler_name_is_accepted_exactly_when_enqueue_accepts_it_as_a_task(db, name):
    assert router_accepts_task(name) == sql_accepts_task(db, name)


def test_jobs_list_offers_exactly_the_statuses_the_jobs_view_shows(db):
    for state in STATES:
        make_job(db, state)
    shown = {row[0] for row in db.execute("SELECT DISTINCT status FROM pgrelay.jobs")}
    assert set(JOB_STATUSES) == shown


def test_the_largest_delay_python_clamps_to_is_the_largest_nack_accepts(db):
    job = lease(db, make_job(db, "pending"))
    assert call(db, "nack", id=job.id, attempt=job.attempt, error="e",
                retry_after_seconds=MAX_RETRY_AFTER_SECONDS) == "pending"
    job = lease(db, make_job(db, "pending"))
    with raises_sqlstate("PR001"):
        call(db, "nack", id=job.id, attempt=job.attempt, error="e", retry_after_seconds=MAX_RETRY_AFTER_SECONDS + 1)
