"""What the upgrade script into the current version still lacks, for whoever writes it.

Installs the oldest release and walks today's chain in one database, installs the current version
fresh in another, and compares the two catalogs (tests/harness/catalog.py). Prints, for each
function whose definition differs, the ``CREATE OR REPLACE FUNCTION`` that makes it equal (from
``pg_get_functiondef`` of the fresh install), and lists every other difference, which needs a
hand-written statement. It writes nothing: review what it prints and put it into the upgrade
script yourself.

    python -m tests.harness.upgrade_draft
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import psycopg

from pgrelay.schema import released_versions, schema_version, sql_files
from tests.harness.catalog import schema_snapshot, snapshot_differences
from tests.harness.cluster import throwaway_cluster
from tests.harness.releases import migrate_dsn


def _install(dsn: str, walk: bool, target: str | None = None) -> None:
    if walk:
        migrate_dsn(dsn, released_versions()[0])
    migrate_dsn(dsn, target)


BEGIN_MARK = "-- begin: functions whose definition changed (python -m tests.harness.upgrade_draft --write)\n"
END_MARK = "-- end: functions whose definition changed\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv == ["--write"]:
        return write()
    functions, others = draft()
    print("".join(functions), end="")
    print("-- other differences, to write by hand:" if others else "-- no other differences")
    for line in others:
        print("--   " + line.replace("\n", "\n--   "))
    return 0


def write() -> int:
    current = schema_version()
    previous = released_versions()[-1]
    script = Path(str(sql_files())) / f"pgrelay--{previous}--{current}.sql"
    text = script.read_text(encoding="utf-8")
    if previous == current or BEGIN_MARK not in text or END_MARK not in text:
        print(f"{script.name} needs the two lines {BEGIN_MARK.strip()!r} and {END_MARK.strip()!r}", file=sys.stderr)
        return 2
    head, rest = text.split(BEGIN_MARK, 1)
    _, tail = rest.split(END_MARK, 1)
    functions, _ = draft(against=previous)  # every function that differs from the last release's
    script.write_text(head + BEGIN_MARK + "\n".join(functions) + END_MARK + tail, encoding="utf-8")
    _, others = draft()
    print(f"{script.name}: {len(functions)} function(s) written; other differences left: {len(others)}")
    for line in others:
        print("  " + line)
    return 0


def _path(difference: str) -> str:
    """The path of one line of snapshot_differences ("path: a != b", "path:\n  diff", "path: only in ...")."""
    return re.split(r":[ \n]", difference, maxsplit=1)[0]


def draft(against: str | None = None) -> tuple[list[str], list[str]]:
    """The function definitions (and comments) by which a fresh install differs from the database
    that installed the oldest release and walked the chain (``against`` None), or from a fresh
    install of the release ``against``; and every other difference."""
    with throwaway_cluster() as cluster:
        with psycopg.connect(cluster.dsn(), autocommit=True) as admin:
            admin.execute("CREATE DATABASE upgraded")
        _install(cluster.dsn(), walk=False)
        _install(cluster.dsn("upgraded"), walk=against is None, target=against)
        with psycopg.connect(cluster.dsn(), autocommit=True) as fresh, \
                psycopg.connect(cluster.dsn("upgraded"), autocommit=True) as upgraded:
            differences = snapshot_differences(schema_snapshot(fresh), schema_snapshot(upgraded))
            functions = sorted({_path(d).split("/")[1] for d in differences if d.startswith("functions/")})
            # comments on functions travel with their definitions (a function the upgrade creates has none)
            commented = {_path(d).split("/", 1)[1].removeprefix("function ")
                         for d in differences if d.startswith("comments/function ")}
            fresh.execute("SET search_path = pg_catalog")
            definitions = []
            for row in fresh.execute(
                    """SELECT p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')', pg_get_functiondef(p.oid),
                              (pg_identify_object('pg_proc'::regclass, p.oid, 0)).identity,
                              CASE WHEN obj_description(p.oid, 'pg_proc') IS NOT NULL
                                   THEN format('COMMENT ON FUNCTION %s IS %L;', p.oid::regprocedure,
                                               obj_description(p.oid, 'pg_proc')) END
                       FROM pg_proc p WHERE p.pronamespace = 'pgrelay'::regnamespace ORDER BY 1""").fetchall():
                signature, definition, identity, comment = row
                if signature in functions:
                    definitions.append(definition.rstrip() + ";\n" + (comment + "\n" if comment else ""))
                    functions.remove(signature)
                elif identity in commented and comment:
                    definitions.append(comment + "\n")
            definitions += [f"-- {signature}: only in the upgraded database; DROP FUNCTION it\n" for signature in functions]
            others = [d for d in differences if not d.startswith(("functions/", "comments/function "))]
    return definitions, others


if __name__ == "__main__":
    sys.exit(main())
