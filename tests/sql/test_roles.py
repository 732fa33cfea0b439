"""The group roles: each member can do exactly what the schema's matrix (pgrelay._privileges())
declares, through functions and views only, and the matrix keeps least privilege.

Every public function and view is called as a login member of each role; a call that is refused
raises 42501 (insufficient_privilege), any other outcome means the role got through. The calls cover
the whole public API: a new function or view fails the first test until it has a call here and a
row in the matrix.
"""

from __future__ import annotations

import re
from pathlib import Path

import psycopg
import pytest

from tests.sql.factory import make_job

VIEWS = {"jobs", "queue_stats", "expired_leases", "dead_letters", "workers", "recent_failures", "schedules"}
ROLES = ("pgrelay_admin", "pgrelay_producer", "pgrelay_reader", "pgrelay_worker")


def matrix(db: psycopg.Connection) -> dict[str, set[str]]:
    """role -> the functions and views the schema declares for it."""
    granted: dict[str, set[str]] = {}
    for role, name in db.execute("SELECT role, object FROM pgrelay._privileges()"):
        granted.setdefault(role, set()).add(name)
    return granted


# one call per public function and view; {job} stands for a dead-lettered job's id
CALLS = {
    "version": "SELECT pgrelay.version()",
    "job_statuses": "SELECT pgrelay.job_statuses()",
    "check_task_names": "SELECT pgrelay.check_task_names('{roles.t}')",
    "enqueue": "SELECT pgrelay.enqueue('roles.t')",
    "enqueue_http": "SELECT pgrelay.enqueue_http('https://example.com/hook')",
    "enqueue_bulk": """SELECT pgrelay.enqueue_bulk('[{"task": "roles.t"}]')""",
    "enqueue_many": "SELECT pgrelay.enqueue_many('roles.t', ARRAY['{}'::jsonb])",
    "get_job": "SELECT pgrelay.get_job({job})",
    "get_attempts": "SELECT * FROM pgrelay.get_attempts({job})",
    "consume": "SELECT * FROM pgrelay.consume('roles-worker')",
    "ack": "SELECT pgrelay.ack({job}, 1)",
    "ack_many": "SELECT pgrelay.ack_many(ARRAY[{job}::bigint], '{1}')",
    "ack_each": "SELECT * FROM pgrelay.ack_each(ARRAY[{job}::bigint], '{1}')",
    "nack": "SELECT pgrelay.nack({job}, 1, 'boom')",
    "heartbeat": "SELECT pgrelay.heartbeat('roles-worker')",
    "idle": "SELECT * FROM pgrelay.idle('roles-worker')",
    "idle_check": "SELECT * FROM pgrelay.idle_check('{}')",
    "awake": "SELECT pgrelay.awake('roles-worker')",
    "release": "SELECT pgrelay.release({job}, 1)",
    "recover": "SELECT pgrelay.recover()",
    "maintain": "SELECT * FROM pgrelay.maintain()",
    "maintenance_scheduled": "SELECT pgrelay.maintenance_scheduled()",
    "configure_queue": "SELECT * FROM pgrelay.configure_queue('roles', concurrency => 2)",
    "pause": "SELECT pgrelay.pause('roles')",
    "resume": "SELECT pgrelay.resume('roles')",
    "replay": "SELECT pgrelay.replay({job})",
    "replay_dead_letters": "SELECT pgrelay.replay_dead_letters('default')",
    "cancel": "SELECT pgrelay.cancel({job})",
    "purge": "SELECT pgrelay.purge()",
    "schedule": "SELECT pgrelay.schedule('roles.s', '@daily', 'roles.t')",
    "declare_schedule": "SELECT pgrelay.declare_schedule('roles.d', '@daily', 'roles.t')",
    "unschedule": "SELECT pgrelay.unschedule('roles.none')",
    "pause_schedule": "SELECT pgrelay.pause_schedule('roles.none')",
    "resume_schedule": "SELECT pgrelay.resume_schedule('roles.none')",
    "run_schedule_now": "SELECT pgrelay.run_schedule_now('roles.s')",
    "tick": "SELECT pgrelay.tick()",
    "_privileges": "SELECT * FROM pgrelay._privileges()",
    # a trigger function cannot be called; CREATE TRIGGER checks this privilege
    "enqueue_trigger": "DO $$ BEGIN IF NOT has_function_privilege('pgrelay.enqueue_trigger()', 'EXECUTE') "
                       "THEN RAISE insufficient_privilege; END IF; END $$",
    **{view: f"SELECT * FROM pgrelay.{view}" for view in VIEWS},
}


@pytest.fixture
def member(db, dsn):
    """connect(role): a connection as a login role that is a member of the group role only."""
    opened = []

    def connect(role: str) -> psycopg.Connection:
        user = f"{role}_member"
        db.execute(f'DROP ROLE IF EXISTS "{user}"')
        db.execute(f'CREATE ROLE "{user}" LOGIN IN ROLE "{role}"')
        conn = psycopg.connect(dsn, user=user, autocommit=True)
        opened.append((conn, user))
        return conn

    yield connect
    for conn, user in opened:
        conn.close()
        db.execute(f'DROP ROLE IF EXISTS "{user}"')


def allowed(conn: psycopg.Connection, sql: str) -> bool:
    """Run sql and roll back; False if the role was refused."""
    try:
        with conn.transaction(force_rollback=True):
            conn.execute(sql)
    except psycopg.errors.InsufficientPrivilege:
        return False
    except psycopg.Error:
        return True
    return True


def test_every_public_function_and_view_has_a_call_here_and_a_row_in_the_matrix(db):
    public = {r[0] for r in db.execute(
        """SELECT p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
           WHERE n.nspname = 'pgrelay' AND p.proname NOT LIKE '\\_%'
           UNION SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE n.nspname = 'pgrelay' AND c.relkind = 'v'""").fetchall()}
    declared = set().union(*matrix(db).values())

    assert public | {"_privileges"} == set(CALLS)
    assert public <= declared, f"no role may call {sorted(public - declared)}: give them a row in _privileges()"
    assert set(matrix(db)) == set(ROLES)


def test_the_matrix_keeps_least_privilege(db):
    granted = matrix(db)
    volatile = {r[0] for r in db.execute(
        "SELECT proname FROM pg_proc WHERE pronamespace = 'pgrelay'::regnamespace AND provolatile = 'v'")}
    # a reader looks: nothing it may call changes anything
    assert not granted["pgrelay_reader"] & volatile
    # a producer records jobs and reads them back; it neither works nor operates
    assert not granted["pgrelay_producer"] & {"consume", "ack", "nack", "heartbeat", "recover", "replay", "cancel",
                                              "purge", "pause", "configure_queue", *VIEWS}
    # a worker never acts on a job it was not given, nor on queues
    assert not granted["pgrelay_worker"] & {"replay", "replay_dead_letters", "cancel", "purge", "pause", "resume",
                                            "configure_queue"}


def test_nothing_in_the_schema_is_granted_to_public(db):
    public = db.execute(
        """SELECT c.oid::regclass::text FROM pg_class c, aclexplode(coalesce(c.relacl, acldefault('r', c.relowner))) a
           WHERE c.relnamespace = 'pgrelay'::regnamespace AND a.grantee = 0
           UNION ALL
           SELECT p.oid::regprocedure::text FROM pg_proc p, aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a
           WHERE p.pronamespace = 'pgrelay'::regnamespace AND a.grantee = 0""").fetchall()
    assert public == []


@pytest.mark.parametrize("role", ROLES)
def test_each_role_can_do_exactly_what_the_matrix_declares(db, member, role):
    job = make_job(db, "dead_letter")
    conn = member(role)

    got = {name for name, sql in CALLS.items() if allowed(conn, sql.replace("{job}", str(job.id)))}

    assert got == matrix(db)[role]


@pytest.mark.parametrize("role", ROLES)
def test_no_role_reaches_a_table(db, member, role):
    conn = member(role)
    tables = [r[0] for r in db.execute(
        "SELECT c.oid::regclass::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = 'pgrelay' AND c.relkind = 'r'").fetchall()]
    assert tables

    reached = [t for t in tables if allowed(conn, f"SELECT 1 FROM {t} LIMIT 1")]

    assert reached == []


def test_an_operator_acts_on_jobs_the_admin_way(db, member):
    job = make_job(db, "dead_letter")
    admin = member("pgrelay_admin")

    new_id = admin.execute("SELECT pgrelay.replay(%s)", (job.id,)).fetchone()[0]
    assert admin.execute("SELECT pgrelay.cancel(%s)", (new_id,)).fetchone()[0] is True
    assert admin.execute("SELECT status FROM pgrelay.jobs WHERE id = %s", (new_id,)).fetchone()[0] == "cancelled"


def test_the_readme_roles_table_is_the_matrix(db):
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    rows = dict(re.findall(r"^\| `(pgrelay_\w+)` \| (.+) \|$", readme, re.MULTILINE))

    assert {role: set(re.findall(r"`(\w+)`", names)) for role, names in rows.items()} == matrix(db)
