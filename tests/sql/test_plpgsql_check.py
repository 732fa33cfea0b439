"""plpgsql_check over every PL/pgSQL function of the schema: no error and no warning.

plpgsql_check (Debian's postgresql-15-plpgsql-check; `make test` installs it) reads each function's
SQL against the catalog: a misspelt column, a type that does not fit, an unused variable, a dead
branch. Trigger functions are checked with a table they fire on. A false positive is silenced
inside the function it occurs in, with a comment saying why (``@plpgsql_check_options`` or a
``PRAGMA`` string), never by a switch here. Performance hints are printed, not enforced.
"""

from __future__ import annotations

import psycopg
import pytest

from tests.harness.tools import missing

CHECK = """
SELECT p.oid::regprocedure::text, r.lineno, r.statement, r.sqlstate, r.message, r.detail, r.hint, r.level
FROM pg_proc p
JOIN pg_language l ON l.oid = p.prolang AND l.lanname = 'plpgsql'
LEFT JOIN LATERAL (SELECT t.tgrelid FROM pg_trigger t WHERE t.tgfoid = p.oid ORDER BY t.tgrelid LIMIT 1) tg ON true
CROSS JOIN LATERAL plpgsql_check_function_tb(
    p.oid::regprocedure,
    coalesce(tg.tgrelid, CASE WHEN p.prorettype = 'trigger'::regtype THEN %(scratch)s::regclass END, 0)::regclass,
    fatal_errors => false, other_warnings => true, extra_warnings => true, performance_warnings => %(hints)s,
    security_warnings => true) r
WHERE p.pronamespace = 'pgrelay'::regnamespace
ORDER BY 1, 2
"""


@pytest.fixture
def checker(db: psycopg.Connection) -> psycopg.Connection:
    available = db.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'plpgsql_check'").fetchone()
    if available is None:
        message = ("plpgsql_check is not installed on this server (Debian: apt-get install "
                   "postgresql-15-plpgsql-check; `make test` does it when run as root)")
        missing(message)
    db.execute("CREATE EXTENSION plpgsql_check")
    # a table like an application's, for the trigger functions no pgrelay table fires
    db.execute("CREATE TABLE public.orders (id bigint PRIMARY KEY, status text)")
    db.execute("CREATE TRIGGER orders_enqueue AFTER INSERT ON public.orders "
               "FOR EACH ROW EXECUTE FUNCTION pgrelay.enqueue_trigger('orders.changed')")
    return db


def test_every_plpgsql_function_passes_plpgsql_check_without_a_warning(checker, capsys):
    functions = checker.execute(
        "SELECT count(*) FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang "
        "WHERE l.lanname = 'plpgsql' AND p.pronamespace = 'pgrelay'::regnamespace").fetchone()[0]
    assert functions > 20, "the check found (almost) no PL/pgSQL functions to read"

    findings = checker.execute(CHECK, {"scratch": "public.orders", "hints": False}).fetchall()
    with_hints = checker.execute(CHECK, {"scratch": "public.orders", "hints": True}).fetchall()

    with capsys.disabled():  # the performance hints, for whoever reads the test output
        for sig, line, _, state, message, *_ in sorted(set(with_hints) - set(findings)):
            print(f"\nplpgsql_check performance hint: {sig}:{line} {state} {message}", end="")
    problems = [f"{sig} line {line}: {level} {state} {message} {detail or ''} {hint or ''}".rstrip()
                for sig, line, _, state, message, detail, hint, level in findings]
    assert problems == [], "plpgsql_check:\n" + "\n".join(problems)
