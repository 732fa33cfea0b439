"""The setup of docs/postgrest.md: the binary, the roles, the config, the schema cache."""

from __future__ import annotations

from pathlib import Path

import psycopg
from psycopg import sql

from tests.postgrest import docs, server
from tests.postgrest.api import make_jwt, wait_for

REPO = Path(__file__).resolve().parents[2]


def test_the_binary_is_postgrest_12_0_2_cached_outside_the_repository(postgrest_binary):
    assert server.binary_version(postgrest_binary) == f"PostgREST {server.POSTGREST_VERSION}"
    assert postgrest_binary.parent == server.cache_dir()
    assert not postgrest_binary.resolve().is_relative_to(REPO)
    # a second install finds the cached binary and leaves it as it is
    before = postgrest_binary.stat().st_mtime_ns
    assert server.install_postgrest() == postgrest_binary
    assert postgrest_binary.stat().st_mtime_ns == before


def test_the_roles_are_the_documented_ones(pg):
    rows = pg.execute(
        """SELECT rolname, rolcanlogin, rolinherit, rolsuper, rolcreaterole, rolcreatedb, rolbypassrls
           FROM pg_roles WHERE rolname IN ('pgrelay_authenticator', 'pgrelay_anon') ORDER BY rolname""").fetchall()
    assert rows == [
        ("pgrelay_anon", False, True, False, False, False, False),
        ("pgrelay_authenticator", True, False, False, False, False, False),
    ]
    members = pg.execute(
        """SELECT r.rolname FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.roleid
           WHERE m.member = 'pgrelay_authenticator'::regrole ORDER BY 1""").fetchall()
    assert [r for (r,) in members] == ["pgrelay_admin", "pgrelay_anon", "pgrelay_producer", "pgrelay_reader",
                                       "pgrelay_worker"]


def test_the_anon_role_has_no_privilege_on_anything_of_pgrelay(pg):
    assert pg.execute("SELECT has_schema_privilege('pgrelay_anon', 'pgrelay', 'USAGE')").fetchone() == (False,)
    assert pg.execute("SELECT count(*) FROM pg_auth_members WHERE member = 'pgrelay_anon'::regrole").fetchone() == (0,)
    granted = pg.execute(
        """SELECT p.proname FROM pg_proc p WHERE p.pronamespace = 'pgrelay'::regnamespace
             AND has_function_privilege('pgrelay_anon', p.oid, 'EXECUTE')
           UNION ALL
           SELECT c.relname FROM pg_class c WHERE c.relnamespace = 'pgrelay'::regnamespace
             AND c.relkind IN ('r', 'v', 'm', 'p', 'f')
             AND has_table_privilege('pgrelay_anon', c.oid, 'SELECT, INSERT, UPDATE, DELETE')""").fetchall()
    assert granted == []


def test_the_role_sql_of_the_doc_can_run_again_and_changes_nothing(pg, doc):
    def snapshot() -> list[tuple]:
        return pg.execute(
            """SELECT r.rolname, r.rolcanlogin, r.rolinherit, r.rolpassword IS NOT NULL,
                      ARRAY(SELECT g.rolname FROM pg_auth_members m JOIN pg_authid g ON g.oid = m.roleid
                            WHERE m.member = r.oid ORDER BY 1)
               FROM pg_authid r WHERE r.rolname IN ('pgrelay_authenticator', 'pgrelay_anon') ORDER BY 1""").fetchall()

    before = snapshot()
    pg.execute(docs.marked_block(doc, "postgrest-roles").text)
    assert snapshot() == before
    assert [row[0] for row in before] == ["pgrelay_anon", "pgrelay_authenticator"]


def test_the_server_runs_on_the_documented_config_with_only_address_port_and_secret_replaced(
        postgrest_server, pgrst_db, doc):
    documented = docs.parse_config(docs.marked_block(doc, "postgrest-conf").text)
    assert set(documented) == {"db-uri", "db-schemas", "db-anon-role", "jwt-secret", "server-host", "server-port",
                               "db-max-rows"}
    assert documented["db-schemas"] == "pgrelay" and documented["db-anon-role"] == "pgrelay_anon"
    assert documented["server-host"] == "127.0.0.1"
    assert len(str(documented["jwt-secret"])) >= 32  # PostgREST refuses a shorter HS256 secret
    used = docs.parse_config(postgrest_server.config_path.read_text())
    replaced = {name for name in documented if used[name] != documented[name]}
    assert replaced == {"db-uri", "jwt-secret", "server-port"}
    assert used.keys() == documented.keys()
    assert "Listening on port" in postgrest_server.log()


def test_the_openapi_description_shows_each_role_what_it_may_call(api):
    def paths(role: str | None) -> set[str]:
        response = api.call(role, "GET", "/")
        assert response.status == 200, response
        return set(response.json["paths"])

    producer, worker, reader = paths("producer"), paths("worker"), paths("reader")
    assert {"/rpc/enqueue", "/rpc/enqueue_bulk", "/rpc/get_job"} <= producer
    assert not {"/rpc/consume", "/rpc/replay", "/queue_stats"} & producer
    assert {"/rpc/consume", "/rpc/ack", "/rpc/nack", "/rpc/heartbeat"} <= worker
    assert "/rpc/pause" not in worker
    assert {"/queue_stats", "/dead_letters", "/workers"} <= reader
    assert not any(p.startswith("/rpc/enqueue") for p in reader)
    assert paths(None) == {"/"}


def test_no_role_reaches_private_data_through_its_api(api, pg):
    # Names starting with _ are pgrelay's internals. The views call a few pure helpers (the defaults,
    # the redaction of HTTP secrets) with the reader's privileges, so those show up in /rpc for the
    # roles that read views; nothing else private may, and those helpers must read no data at all.
    exposed = {}
    for role in ("producer", "worker", "admin", "reader"):
        paths = api.call(role, "GET", "/").json["paths"]
        exposed[role] = sorted(p for p in paths if p.startswith(("/_", "/rpc/_")))
    assert not any(p.startswith("/_") for paths in exposed.values() for p in paths), exposed
    assert exposed["producer"] == exposed["worker"] == []

    names = sorted({p.removeprefix("/rpc/") for paths in exposed.values() for p in paths})
    rows = pg.execute("""SELECT p.proname, p.provolatile, p.prosrc FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
                         WHERE n.nspname = 'pgrelay' AND p.proname = ANY (%s)""", (names,)).fetchall()
    assert sorted(r[0] for r in rows) == names
    for name, volatility, source in rows:
        assert volatility == "i", f"{name} is callable over HTTP and not IMMUTABLE"
        assert "pgrelay._" not in source.replace("pgrelay._redact", ""), f"{name} reads pgrelay's tables"


def test_the_openapi_summary_is_the_first_line_of_the_functions_comment(api, pg):
    comment = pg.execute("SELECT obj_description('pgrelay.enqueue_bulk(jsonb)'::regprocedure, 'pg_proc')").fetchone()[0]
    response = api.call("producer", "GET", "/")
    assert response.json["paths"]["/rpc/enqueue_bulk"]["post"]["summary"] == comment.splitlines()[0]


def test_a_new_function_is_served_after_notify_pgrst_reload_schema(api, pg):
    probe = sql.Identifier("pgrelay", "postgrest_reload_probe")
    pg.execute(sql.SQL("CREATE FUNCTION {}(n integer) RETURNS integer LANGUAGE sql IMMUTABLE AS 'SELECT n + 1'")
               .format(probe))
    try:
        pg.execute(sql.SQL("GRANT EXECUTE ON FUNCTION {}(integer) TO pgrelay_reader").format(probe))
        # PostgREST knows only the functions it read at start ...
        assert api.call("reader", "POST", "/rpc/postgrest_reload_probe", {"n": 1}).code == "PGRST202"
        # ... until it is told to read them again
        pg.execute("NOTIFY pgrst, 'reload schema'")
        wait_for(lambda: api.call("reader", "POST", "/rpc/postgrest_reload_probe", {"n": 1}).status == 200,
                 what="the reloaded schema cache")
        assert api.rpc("reader", "postgrest_reload_probe", n=41) == 42
    finally:
        pg.execute(sql.SQL("DROP FUNCTION IF EXISTS {}(integer)").format(probe))
        pg.execute("NOTIFY pgrst, 'reload schema'")
    wait_for(lambda: api.call("reader", "POST", "/rpc/postgrest_reload_probe", {"n": 1}).status == 404,
             what="the probe gone from the schema cache")


def test_the_authenticator_alone_can_do_nothing(pgrst_db):
    # NOINHERIT: logged in as the authenticator, without a role switch, pgrelay is out of reach
    with psycopg.connect(pgrst_db.authenticator_dsn, autocommit=True) as conn:
        for statement in ("SELECT pgrelay.enqueue('t')", "SELECT * FROM pgrelay.queue_stats",
                          "SELECT count(*) FROM pgrelay._jobs"):
            try:
                conn.execute(statement)
            except psycopg.errors.InsufficientPrivilege:
                continue
            raise AssertionError(f"{statement} ran as the authenticator itself")


def test_jwts_that_must_not_work_are_refused(api, queue, pg):
    def enqueue(token: str) -> int:
        return api.call(None, "POST", "/rpc/enqueue", {"task": "t", "queue": queue}, token=token).status

    wrong_secret = make_jwt("another-secret-that-is-long-enough-for-hs256", {"role": "pgrelay_producer"})
    expired = make_jwt(api.jwt_secret, {"role": "pgrelay_producer", "exp": 1_000_000_000})
    assert enqueue(wrong_secret) == 401
    assert enqueue(expired) == 401
    # a role not granted to the authenticator, however mighty, cannot be reached
    assert enqueue(make_jwt(api.jwt_secret, {"role": "postgres"})) == 403
    # an unknown role: PostgREST 12.0.2 answers 400 (22023); later versions answer 401
    assert enqueue(make_jwt(api.jwt_secret, {"role": "pgrelay_nobody"})) == 400
    # no role claim, or the anon role named outright, is the anon role: no privileges, 401
    assert enqueue(make_jwt(api.jwt_secret, {"sub": "someone"})) == 401
    assert enqueue(make_jwt(api.jwt_secret, {"role": "pgrelay_anon"})) == 401
    assert pg.execute("SELECT count(*) FROM pgrelay.jobs WHERE queue = %s", [queue]).fetchone() == (0,)
