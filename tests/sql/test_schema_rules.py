"""The design rules of the SQL API, checked on the installed catalog."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import pgrelay.errors as errors

SQL = (Path(__file__).parents[2] / "sql" / "pgrelay.sql").read_text()

PUBLIC_FUNCTIONS = """
    SELECT p.proname, p.oid::regprocedure::text AS signature, p.prosecdef, p.provolatile, p.proconfig,
           p.proargnames, p.pronargs, obj_description(p.oid, 'pg_proc') AS comment
    FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
    WHERE n.nspname = 'pgrelay' AND p.proname NOT LIKE '\\_%'
"""


def test_every_public_function_and_view_has_a_comment(db):
    missing = db.execute(
        f"""SELECT signature FROM ({PUBLIC_FUNCTIONS}) f WHERE coalesce(comment, '') = ''
            UNION ALL
            SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = 'pgrelay' AND c.relkind = 'v' AND coalesce(obj_description(c.oid, 'pg_class'), '') = ''
            UNION ALL
            SELECT t.typname FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
            WHERE n.nspname = 'pgrelay' AND t.typtype = 'c' AND t.typname NOT LIKE '\\_%'
              AND NOT EXISTS (SELECT 1 FROM pg_class c WHERE c.oid = t.typrelid AND c.relkind <> 'c')
              AND coalesce(obj_description(t.oid, 'pg_type'), '') = ''"""
    ).fetchall()
    assert missing == []


def test_state_changing_functions_are_security_definer_with_a_fixed_search_path(db):
    rows = db.execute(f"SELECT signature, prosecdef, proconfig FROM ({PUBLIC_FUNCTIONS}) f WHERE provolatile = 'v'").fetchall()
    assert rows, "no volatile public functions found"
    bad = [sig for sig, secdef, config in rows
           if not secdef or not config or "search_path=pg_catalog, pg_temp" not in config]
    assert bad == []


def test_public_functions_have_named_arguments_and_no_overloads(db):
    rows = db.execute(f"SELECT proname, signature, proargnames, pronargs FROM ({PUBLIC_FUNCTIONS}) f").fetchall()
    names = [r[0] for r in rows]
    assert len(names) == len(set(names)), "two public functions share a name"
    unnamed = [sig for _, sig, argnames, nargs in rows if nargs and (not argnames or "" in argnames[:nargs])]
    assert unnamed == []


def test_public_has_no_privileges_on_tables_or_functions(db):
    granted = db.execute(
        """SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE n.nspname = 'pgrelay' AND c.relkind IN ('r', 'v', 'S')
             AND has_table_privilege('public', c.oid, 'SELECT')
           UNION ALL
           SELECT p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
           WHERE n.nspname = 'pgrelay' AND has_function_privilege('public', p.oid, 'EXECUTE')"""
    ).fetchall()
    assert granted == []


def test_no_role_is_granted_a_table(db):
    rows = db.execute(
        """SELECT grantee, table_name FROM information_schema.role_table_grants
           WHERE table_schema = 'pgrelay' AND table_name LIKE '\\_%' AND grantee LIKE 'pgrelay\\_%'"""
    ).fetchall()
    assert rows == []


def test_every_sqlstate_raised_by_the_sql_has_a_python_exception():
    raised = set(re.findall(r"ERRCODE = '([A-Z0-9]{5})'", SQL)) | set(re.findall(r"'(P[RT]\d{3})'", SQL))
    declared = set(re.findall(r"^--\s+(P[RT]\d{3})\s", SQL, re.MULTILINE))
    assert raised <= declared, "a SQLSTATE is raised but not declared in the table at the top of pgrelay.sql"
    for code in declared:
        exc = errors.from_sqlstate(code, "message")
        assert exc is not None and exc.sqlstate == code
    assert errors.from_sqlstate("23505", "unique violation") is None


def test_no_class_40_sqlstate_is_raised():
    assert not re.search(r"ERRCODE = '40", SQL)


@pytest.mark.parametrize("name", ["enqueue", "consume", "ack", "nack", "heartbeat", "recover", "enqueue_bulk"])
def test_contract_names_exist(db, name):
    assert db.execute("SELECT count(*) FROM pg_proc WHERE proname = %s AND pronamespace = 'pgrelay'::regnamespace",
                      [name]).fetchone()[0] == 1


def test_plpgsql_entry_points_plan_once_and_never_jit(db):
    # Re-planning per call was most of consume()'s fixed cost; and a plan carrying a disabled step's
    # cost crossed jit_above_cost, so a claim from two queues spent 120-180 ms in LLVM.
    rows = db.execute(
        f"""SELECT f.signature, f.proconfig FROM ({PUBLIC_FUNCTIONS}) f
            JOIN pg_proc p ON p.oid = f.signature::regprocedure
            JOIN pg_language l ON l.oid = p.prolang
            WHERE l.lanname = 'plpgsql' AND f.prosecdef"""
    ).fetchall()
    assert rows, "no PL/pgSQL entry points found"
    bad = [sig for sig, config in rows
           if "plan_cache_mode=force_generic_plan" not in (config or []) or "jit=off" not in (config or [])]
    assert bad == []
