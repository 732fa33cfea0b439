"""The four group roles: each member can do exactly its part, through functions and views only.

Every public function and view is called as a login member of each role; a call that is refused
raises 42501 (insufficient_privilege), any other outcome means the role got through. The matrix
covers the whole public API: a new function or view fails the first test until it is placed here.
"""

from __future__ import annotations

import psycopg
import pytest

from tests.sql.factory import make_job

PRODUCE = {"version", "enqueue", "enqueue_http", "enqueue_bulk", "enqueue_many", "get_job"}
WORK = {"version", "consume", "ack", "ack_many", "ack_each", "nack", "heartbeat", "release", "recover", "maintain",
        "maintenance_scheduled", "enqueue", "enqueue_http", "enqueue_bulk", "enqueue_many", "get_job", "get_attempts"}
VIEWS = {"jobs", "queue_stats", "expired_leases", "dead_letters", "workers", "recent_failures"}
READ = {"version", "get_job", "get_attempts"} | VIEWS
ADMIN = {"version", "get_job", "get_attempts", "recover", "configure_queue", "pause", "resume", "replay",
         "replay_dead_letters", "cancel", "purge", "maintain", "maintenance_scheduled"} | VIEWS
EXPECTED = {"pgrelay_producer": PRODUCE, "pgrelay_worker": WORK, "pgrelay_reader": READ, "pgrelay_admin": ADMIN}

# one call per public function and view; {job} stands for a dead-lettered job's id
CALLS = {
    "version": "SELECT pgrelay.version()",
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


def test_the_matrix_covers_every_public_function_and_view(db):
    public = {r[0] for r in db.execute(
        """SELECT p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
           WHERE n.nspname = 'pgrelay' AND p.proname NOT LIKE '\\_%' AND p.prorettype <> 'trigger'::regtype
           UNION SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE n.nspname = 'pgrelay' AND c.relkind = 'v'""").fetchall()}

    assert public == set(CALLS)


@pytest.mark.parametrize("role", sorted(EXPECTED))
def test_each_role_can_do_exactly_its_part(db, member, role):
    job = make_job(db, "dead_letter")
    conn = member(role)

    got = {name for name, sql in CALLS.items() if allowed(conn, sql.replace("{job}", str(job.id)))}

    assert got == EXPECTED[role]


@pytest.mark.parametrize("role", sorted(EXPECTED))
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
