"""The limits docs/postgrest.md sets: db-max-rows in postgrest.conf, a statement_timeout per role."""

from __future__ import annotations

import psycopg
from psycopg import sql

from tests.postgrest.api import ROLES, role_name, wait_for


def test_a_get_of_jobs_answers_at_most_db_max_rows_rows(api, pgrst_db, queue, pg):
    max_rows = pgrst_db.config["db-max-rows"]
    assert isinstance(max_rows, int)
    pg.execute("SELECT pgrelay.enqueue_many(task => 't', payloads => array_fill('{}'::jsonb, ARRAY[%s]), queue => %s)",
               [max_rows + 5, queue])
    response = api.call("reader", "GET", "/jobs", query={"queue": f"eq.{queue}", "select": "id"},
                        headers={"Prefer": "count=exact"})
    assert response.status == 206, response  # Partial Content: there is more
    assert len(response.json) == max_rows
    assert response.headers["content-range"] == f"0-{max_rows - 1}/{max_rows + 5}"
    # the rest is a page away
    rest = api.call("reader", "GET", "/jobs", query={"queue": f"eq.{queue}", "select": "id", "offset": str(max_rows)})
    assert len(rest.json) == 5
    assert {r["id"] for r in response.json}.isdisjoint(r["id"] for r in rest.json)


def test_each_request_runs_with_its_roles_statement_timeout(api, pg):
    """The doc's ALTER ROLE ... SET statement_timeout reaches the requests made as that role.

    A probe function answers the request's own statement_timeout; each role's must be what
    pg_db_role_setting holds for it (PostgreSQL's default, 0, where the role has none)."""
    configured = dict(pg.execute(
        """SELECT r.rolname, split_part(c, '=', 2)
           FROM pg_db_role_setting s JOIN pg_roles r ON r.oid = s.setrole, unnest(s.setconfig) c
           WHERE s.setdatabase = 0 AND c LIKE 'statement_timeout=%'""").fetchall())
    limited = {role for role in ROLES if role_name(role) in configured}
    assert limited >= {"producer", "worker", "reader"}, f"the doc limits only {sorted(limited)}"

    probe = sql.Identifier("pgrelay", "postgrest_timeout_probe")
    pg.execute(sql.SQL("CREATE FUNCTION {}() RETURNS text LANGUAGE sql STABLE "
                       "AS $$SELECT current_setting('statement_timeout')$$").format(probe))
    try:
        pg.execute(sql.SQL("GRANT EXECUTE ON FUNCTION {}() TO {}").format(
            probe, sql.SQL(", ").join(sql.Identifier(role_name(r)) for r in ROLES)))
        pg.execute("NOTIFY pgrst, 'reload schema'")
        wait_for(lambda: api.call("reader", "POST", "/rpc/postgrest_timeout_probe").status == 200,
                 what="the probe in the schema cache")
        seen = {role: api.rpc(role, "postgrest_timeout_probe") for role in ROLES}
    finally:
        pg.execute(sql.SQL("DROP FUNCTION IF EXISTS {}()").format(probe))
        pg.execute("NOTIFY pgrst, 'reload schema'")

    def show(value: str) -> str:  # '5s' as SHOW prints it
        with psycopg.connect(pg.info.dsn, autocommit=True) as conn:
            conn.execute("SELECT set_config('statement_timeout', %s, false)", [value])
            return conn.execute("SHOW statement_timeout").fetchone()[0]

    expected = {role: show(configured.get(role_name(role), "0")) for role in ROLES}
    assert seen == expected


def test_consume_with_a_batch_over_db_max_rows_leases_jobs_it_does_not_answer(api, pgrst_db, queue, pg):
    """The trap the doc warns about: the cap cuts the answer after consume leased the whole batch."""
    max_rows = pgrst_db.config["db-max-rows"]
    pg.execute("SELECT pgrelay.enqueue_many(task => 't', payloads => array_fill('{}'::jsonb, ARRAY[%s]), queue => %s)",
               [max_rows + 5, queue])
    claimed = api.rpc("worker", "consume", worker="w", queues=[queue], batch=max_rows + 5)
    assert len(claimed) == max_rows
    leased = pg.execute("SELECT count(*) FROM pgrelay.jobs WHERE queue = %s AND status = 'leased'", [queue]).fetchone()
    assert leased == (max_rows + 5,)
