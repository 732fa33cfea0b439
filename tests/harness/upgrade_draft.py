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

import asyncio
import sys
from pathlib import Path

import asyncpg
import psycopg

from pgrelay.schema import migrate, released_versions, schema_version, sql_files
from tests.harness.catalog import schema_snapshot, snapshot_differences
from tests.harness.cluster import throwaway_cluster


async def _install(dsn: str, walk: bool) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        if walk:
            await migrate(conn, target=released_versions()[0])
        await migrate(conn)
    finally:
        await conn.close()


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
    script.write_text(head + BEGIN_MARK + END_MARK + tail, encoding="utf-8")
    functions, others = draft()
    script.write_text(head + BEGIN_MARK + "\n".join(functions) + END_MARK + tail, encoding="utf-8")
    print(f"{script.name}: {len(functions)} function(s) written; other differences: {len(others)}")
    for line in others:
        print("  " + line)
    return 0


def draft() -> tuple[list[str], list[str]]:
    with throwaway_cluster() as cluster:
        with psycopg.connect(cluster.dsn(), autocommit=True) as admin:
            admin.execute("CREATE DATABASE upgraded")
        asyncio.run(_install(cluster.dsn(), walk=False))
        asyncio.run(_install(cluster.dsn("upgraded"), walk=True))
        with psycopg.connect(cluster.dsn(), autocommit=True) as fresh, \
                psycopg.connect(cluster.dsn("upgraded"), autocommit=True) as upgraded:
            differences = snapshot_differences(schema_snapshot(fresh), schema_snapshot(upgraded))
            functions = sorted({d.split("/")[1].split(": only in the ")[0].removesuffix(":")
                                for d in differences if d.startswith("functions/")})
            definitions = []
            for signature in functions:
                name, args = signature.split("(", 1)
                row = fresh.execute(
                    "SELECT pg_get_functiondef(p.oid) FROM pg_proc p WHERE p.pronamespace = 'pgrelay'::regnamespace "
                    "AND p.proname = %s AND pg_get_function_identity_arguments(p.oid) = %s", (name, args[:-1])
                ).fetchone()
                if row is None:
                    definitions.append(f"-- {signature}: only in the upgraded database; DROP FUNCTION it\n")
                else:
                    definitions.append(row[0].rstrip() + ";\n")
            others = [d for d in differences if not d.startswith("functions/")]
    return definitions, others


if __name__ == "__main__":
    sys.exit(main())
