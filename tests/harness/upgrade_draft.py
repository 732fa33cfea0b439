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

import asyncpg
import psycopg

from pgrelay.schema import migrate, released_versions
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


def main() -> int:
    with throwaway_cluster() as cluster:
        with psycopg.connect(cluster.dsn(), autocommit=True) as admin:
            admin.execute("CREATE DATABASE upgraded")
        asyncio.run(_install(cluster.dsn(), walk=False))
        asyncio.run(_install(cluster.dsn("upgraded"), walk=True))
        with psycopg.connect(cluster.dsn(), autocommit=True) as fresh, \
                psycopg.connect(cluster.dsn("upgraded"), autocommit=True) as upgraded:
            differences = snapshot_differences(schema_snapshot(fresh), schema_snapshot(upgraded))
            functions = sorted({d.split("/")[1] for d in differences if d.startswith("functions/")})
            for signature in functions:
                name, args = signature.split("(", 1)
                row = fresh.execute(
                    "SELECT pg_get_functiondef(p.oid) FROM pg_proc p WHERE p.pronamespace = 'pgrelay'::regnamespace "
                    "AND p.proname = %s AND pg_get_function_identity_arguments(p.oid) = %s", (name, args[:-1])
                ).fetchone()
                if row is None:
                    print(f"-- {signature}: only in the upgraded database; DROP FUNCTION it\n")
                else:
                    print(row[0].rstrip() + ";\n")
            others = [d for d in differences if not d.startswith("functions/")]
    print("-- other differences, to write by hand:" if others else "-- no other differences")
    for line in others:
        print("--   " + line.replace("\n", "\n--   "))
    return 0


if __name__ == "__main__":
    sys.exit(main())
